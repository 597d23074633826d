"""Interrupting a child process without racing it: the child waits at a named hold point
(``TEXTNORM_HOLD_AT``, see :func:`textnorm_t2i.rundir.hold_point`) until the test signals it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence


def _default_signals() -> None:
    """In the child: Ctrl-C and SIGTERM as a terminal would deliver them. A test runner started in the background
    (``cmd &``, nohup) ignores SIGINT, a child inherits that, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_held(cmd: Sequence[str], env: dict, point: str, timeout: float = 600) -> tuple[subprocess.Popen, str]:
    """Start ``cmd`` and return once it says it is holding at ``point`` (with what it wrote on stderr so far).

    The child stays at the point until it gets a signal, however slow the machine is; a child that ends
    before reaching the point fails the test with its stderr.
    """
    proc = subprocess.Popen(list(cmd), env={**env, "TEXTNORM_HOLD_AT": point}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    seen = []
    # Lines are read until the hold line (it always ends with a newline); a child stuck elsewhere is killed.
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            if line.rstrip("\n").endswith(f"textnorm: holding at {point}"):
                return proc, "".join(seen)
            seen.append(line)
    finally:
        timer.cancel()
    proc.wait()
    raise AssertionError(f"{cmd} ended (exit {proc.returncode}) before holding at {point}:\n{''.join(seen)[-3000:]}")


def free_port() -> int:
    """A TCP port free on this machine now: ``accelerate launch`` rendezvous on one, and two launches at once (test
    workers run in parallel) must not both take the default 29500."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(processes: int) -> list[str]:
    """The start of a command that runs ``-m <module> ...`` in ``processes`` CPU processes under ``accelerate launch``
    (torchrun-style, the gloo backend; ``--multi_gpu`` on a machine without GPUs), one thread each, on a free port."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port()),
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
            "no", "--multi_gpu", "--num_cpu_threads_per_process", "1"]


def environment(**extra: str) -> dict:
    """The test environment for a child: one thread each, the package from this checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.path.join(root, "src"), **extra)
