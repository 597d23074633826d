"""Run folders that cannot be corrupted: one run per folder, resumed only into the run it belongs to.

- A run refuses a non-empty folder unless told to ``resume`` (continue) or ``overwrite`` (start clean).
  Every run marks its folder with ``.textnorm-run`` (its kind); ``overwrite`` clears only a folder marked
  with the same kind, only the files that kind of run writes (:data:`RUN_OUTPUTS`), refuses a folder that
  holds anything else, and clears nothing until the new run has checked its config, models and rewards
  (:meth:`RunFolder.start`).
- A lock (``.lock``, held with ``flock`` for the life of the process, so a killed run never leaves a
  stale lock) stops a second run into the same folder.
- The resolved config is written to ``config.yaml``; checkpoints record it, and a resumed run must
  match it except for the keys declared ``mutable_on_resume`` (e.g. ``epochs``).
- Resuming falls back from a corrupt latest checkpoint to the newest intact one, saying so;
  ``resume_from`` picks one explicitly.
- SIGINT/SIGTERM ask the loop to stop at its next safe point (:class:`GracefulStop`); the loop writes a
  checkpoint and raises :class:`RunInterrupted`, which the CLI prints as one line saying how to resume.
- :func:`hold_point` marks the places where tests interrupt a run: a test names one in ``TEXTNORM_HOLD_AT``
  and the run waits there for a signal, so the test never races the process it interrupts.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from textnorm_t2i import __version__
from textnorm_t2i.config import config_differences, load_yaml_text, mutable_keys
from textnorm_t2i.errors import InputError
from textnorm_t2i.io import write_text_atomic

LOCK_NAME = ".lock"
MARKER_NAME = ".textnorm-run"
# What each kind of run writes at the top of its folder (glob patterns). ``--overwrite`` clears these and
# nothing else; tests check every kind's outputs against its list.
RUN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "finetune": ("config.yaml", "checkpoint-*", "lora", "eval.csv", "samples.jsonl", "base_eval.safetensors",
                 "grids", "ranks", "report.html", "data.json", "bon.csv", "bon.png", "bon_samples.jsonl", "grid.png",
                 "tensorboard", "wandb"),
    "generator": ("config.yaml", "checkpoint-*", "pipeline", "train_log.csv"),
    "reward": ("config.json", "model.safetensors", "train_log.csv", "data.json"),
    "study": ("config.yaml", "stages", "pool", "eval", "sft", "rl", "draft"),
    "benchmark": ("README.md", "benchmark.json", "human_annotations", "images", "prompts", "alignment_scores"),
    "report": ("report.html", "results.json", "samples.jsonl"),  # a study's out folder
}
ASIDE_NAME = ".previous-run.tmp"  # where --overwrite keeps the earlier run until the new one ends
# Files every run may hold besides its outputs: the lock, the marker, temporaries of atomic writes.
HOUSEKEEPING = (LOCK_NAME, MARKER_NAME, ".*.tmp")


class RunInterrupted(Exception):
    """A run stopped at a safe point after SIGINT/SIGTERM, with a checkpoint written (exit code 130)."""


def note(message: str) -> None:
    """A one-line note on stderr."""
    print(f"textnorm: note: {message}", file=sys.stderr, flush=True)


HOLD_ENV = "TEXTNORM_HOLD_AT"


def hold_point(name: str) -> None:
    """Wait here for a signal when the environment variable ``TEXTNORM_HOLD_AT`` equals ``name`` (a test hook).

    The run says ``textnorm: holding at NAME`` on stderr and waits until a signal arrives (SIGINT, SIGTERM,
    SIGKILL); then it carries on, so a graceful stop is taken at the next safe point exactly as it would be
    without the hook. Unset (always, outside tests) it does nothing.

    Example:
        >>> hold_point("pool:0")  # TEXTNORM_HOLD_AT is not set: returns at once
    """
    if os.environ.get(HOLD_ENV) != name:
        return
    import time

    received: list[int] = []
    # Our handler is in place before we announce the hold, so a signal sent the moment the test reads the
    # line is never lost; it is then handed to the handler that was there before (graceful stop or Ctrl-C).
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"textnorm: holding at {name}", file=sys.stderr, flush=True)
        while not received:
            time.sleep(0.01)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    handler = previous[received[0]]
    if callable(handler):
        handler(received[0], None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), received[0])


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock``; the kernel releases it when the process dies.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunLock(folder):
        ...     RunLock(folder).acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: ...: another run (pid ...) is writing to this folder; wait for it ...
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._file: Any = None
        self.created = False  # the lock file did not exist before (so a refused run removes it again)

    def acquire(self) -> RunLock:
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created = not (self.folder / LOCK_NAME).exists()
            f = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 - held for the life of the run
        except OSError as e:
            problem = e.strerror or type(e).__name__
            raise InputError(f"{self.folder}: cannot create the run folder ({problem})") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise InputError(f"{self.folder}: another run (pid {pid}) is writing to this folder; wait for it to "
                             "end or choose another folder") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self, remove: bool = False) -> None:
        """Release the lock; ``remove`` also deletes the lock file (for folders that are shipped, such as a
        trained reward's)."""
        if self._file is not None:
            if remove:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _contents(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []


def run_kind(folder: str | os.PathLike) -> str | None:
    """The kind of run that marked ``folder`` (``.textnorm-run``), or None when no textnorm run did.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> run_kind(folder) is None
        True
        >>> mark_run_dir(folder, "finetune"); run_kind(folder)
        'finetune'
    """
    return read_marker(folder).get("kind")


def read_marker(folder: str | os.PathLike) -> dict:
    """The marker a textnorm run wrote in ``folder`` (``{}`` when there is none or it is not ours)."""
    import json

    try:
        data = json.loads((Path(folder) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else {}


def mark_run_dir(folder: str | os.PathLike, kind: str, **extra: str) -> None:
    """Write the marker that says a textnorm run of ``kind`` made ``folder`` (so ``--overwrite`` may clear it)."""
    import json

    write_text_atomic(Path(folder) / MARKER_NAME,
                      json.dumps({"kind": kind, "textnorm": __version__, **extra}) + "\n")


def clearable_entries(folder: str | os.PathLike, kind: str) -> list[Path]:
    """What ``--overwrite`` would remove from ``folder`` for a new run of ``kind``: every entry, when the folder
    is marked as a run of that kind and holds only what such a run writes; otherwise an error naming why."""
    import fnmatch

    folder = Path(folder)
    existing = _contents(folder)
    if not existing:
        return []
    found = run_kind(folder)
    if found is None:
        raise InputError(f"{folder}: not a folder made by a textnorm run (no {MARKER_NAME}); refusing to clear it "
                         "for --overwrite (delete it yourself, or choose another folder)")
    if found != kind:
        raise InputError(f"{folder}: holds a textnorm {found} run, not a {kind} run; refusing to clear it for "
                         "--overwrite (choose another folder)")
    patterns = RUN_OUTPUTS[kind] + HOUSEKEEPING
    foreign = sorted(p.name for p in existing if not any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputError(f"{folder}: holds files a {kind} run does not write ({', '.join(foreign[:3])}{more}); "
                         "refusing to clear it for --overwrite (move them, or choose another folder)")
    return existing


def remove_entries(entries: list[Path]) -> None:
    """Delete files and folders (a link is removed, never followed); the marker goes last, so a folder cleared
    only in part can still be cleared again."""
    for p in sorted(entries, key=lambda p: p.name == MARKER_NAME):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def prepare_run_dir(folder: str | os.PathLike, *, kind: str, resume: bool = False, overwrite: bool = False,
                    marker: str = "config.yaml", clear: bool = True, resumable: bool = True
                    ) -> tuple[RunLock, list[Path]]:
    """Lock the run folder and check it may be used; for ``overwrite``, clear it (or, with ``clear=False``, return
    what to clear once the new run is known to be valid).

    Returns the held lock (release it when the run ends; a process exit releases it too) and the entries still
    to clear.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> prepare_run_dir(folder, kind="finetune")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        textnorm_t2i.errors.InputError: ...: folder is not empty (an earlier run?); pass --resume to continue it or ...
    """
    folder = Path(folder)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pass one")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder")
    lock = RunLock(folder).acquire()
    stale: list[Path] = []
    try:
        existing = _contents(folder)
        if existing and not resume:
            if not overwrite:
                how = "pass --resume to continue it or --overwrite to start clean" if resumable else \
                    "pass --overwrite to replace it, or choose another folder"
                raise InputError(f"{folder}: folder is not empty (an earlier run?); {how}")
            stale = clearable_entries(folder, kind)
            if clear:
                remove_entries(stale)
                stale = []
        if resume and existing and not (folder / marker).is_file():
            raise InputError(f"{folder}: not a textnorm run folder (no {marker}); nothing to resume")
        if resume and existing and run_kind(folder) not in (None, kind):
            raise InputError(f"{folder}: holds a textnorm {run_kind(folder)} run, not a {kind} run; nothing to resume")
    except BaseException:
        lock.release(remove=lock.created)  # a refused folder is left as it was
        raise
    return lock, stale


def write_run_config(folder: str | os.PathLike, config: dict, name: str = "config.yaml") -> None:
    """The resolved config, as YAML, in the run folder (written once the run is known to be valid)."""
    write_text_atomic(Path(folder) / name, yaml.safe_dump(config, sort_keys=False))


def check_same_config(where: Path, config_cls: type, saved: dict, config: dict) -> None:
    """Refuse to continue ``where`` (a run or study folder) when ``config`` differs from the ``saved`` one beyond
    the keys ``config_cls`` marks as changeable on resume; the error names the first difference."""
    diffs = config_differences(config_cls, saved, config)
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        may = ", ".join(sorted(mutable_keys(config_cls)))
        raise InputError(f"{where}: was made with another config: {diffs[0]}{more}; a resumed run may change "
                         f"only {may}")


def select_checkpoint(folder: str | os.PathLike, config_cls: type | None, config: dict,
                      resume_from: str | os.PathLike | None = None) -> Any:
    """The checkpoint to resume from, read fully (so known intact), or None to start from the beginning.

    Without ``resume_from``, the newest intact ``checkpoint-*`` of ``folder``: a corrupt one is skipped
    with a note. A checkpoint made with another config (beyond the keys that may change on resume) is
    an error naming the first difference.
    """
    # checkpoint imports torch: imported here, not at the top, so that the CLI (which needs this module's
    # RunInterrupted) starts without it.
    from textnorm_t2i.checkpoint import list_checkpoints, read_checkpoint

    if resume_from is not None:
        candidates = [Path(resume_from)]
        if not candidates[0].is_dir():
            raise InputError(f"{resume_from}: no such checkpoint folder")
    else:
        candidates = list_checkpoints(folder)
    chosen = None
    for i, path in enumerate(candidates):
        try:
            chosen = read_checkpoint(path)
            break
        except InputError as e:
            if resume_from is not None:
                raise
            following = f"falling back to {candidates[i + 1].name}" if i + 1 < len(candidates) else "none left"
            note(f"{e}; {following}")
    if chosen is None:
        if candidates:
            raise InputError(f"{folder}: no intact checkpoint to resume from; pass --overwrite to start clean")
        recorded = Path(folder) / "config.yaml"
        if config_cls is not None and recorded.is_file():
            try:
                saved_yaml = load_yaml_text(recorded.read_text())
            except (OSError, yaml.YAMLError):
                saved_yaml = None
            if isinstance(saved_yaml, dict):
                check_same_config(recorded, config_cls, saved_yaml, config)
        note(f"{folder}: no checkpoint yet; starting from the beginning")
        return None
    saved = chosen.state.get("config")
    if saved is not None and config_cls is not None:
        check_same_config(chosen.folder, config_cls, saved, config)
    note(f"resuming from {chosen.folder}")
    return chosen


class GracefulStop:
    """While active, SIGINT and SIGTERM set :attr:`requested` instead of killing the process; a second
    signal stops at once. The loop polls :attr:`requested` at its safe points.

    Example:
        >>> with GracefulStop() as stop:
        ...     stop.requested
        False
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        note(f"{signal.Signals(signum).name} received; stopping at the next safe point (again to stop now)")

    def __enter__(self) -> GracefulStop:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class RunFolder:
    """The lifecycle of one run folder, for a training loop (see the module docstring).

    ``open()`` (main process only) locks and checks the folder; :meth:`select` picks the checkpoint to
    resume (every process, same answer); :meth:`start` clears an earlier run (``overwrite``), marks the folder
    and writes ``config.yaml``; :meth:`checkpoint` saves
    a checkpoint that records the config and prunes old ones; :meth:`close` releases the lock.
    """

    def __init__(self, folder: str | os.PathLike, config: Any, *, kind: str = "finetune", resume: bool = False,
                 overwrite: bool = False, resume_from: str | os.PathLike | None = None, keep: int | None = None,
                 main: bool = True):
        self.folder = Path(folder)
        self.kind = kind
        self._stale: list[Path] = []
        self._aside: Path | None = None  # an earlier run set aside by overwrite until this one ends
        self._created_root: Path | None = None
        self.config = config
        self.config_dict = config.to_dict()
        self.resume = resume or resume_from is not None
        self.overwrite, self.resume_from, self.keep, self.main = overwrite, resume_from, keep, main
        self.lock: RunLock | None = None
        self.created = False

    def open(self) -> RunFolder:
        if self.main:
            self.created = not self.folder.exists()
            # The highest folder this run creates (the run folder or a missing parent): removed again, when
            # empty, by a run that fails early.
            self._created_root = next((a for a in reversed([self.folder, *self.folder.parents]) if not a.exists()),
                                      None)
            self.lock, self._stale = prepare_run_dir(self.folder, kind=self.kind, resume=self.resume,
                                                     overwrite=self.overwrite, clear=False)
        return self

    def select(self) -> Any:
        """The checkpoint to resume from (read and checked), or None for a fresh start."""
        if not self.resume:
            return None
        return select_checkpoint(self.folder, type(self.config), self.config_dict, self.resume_from)

    def start(self) -> None:
        """The run is valid (config, models, rewards checked): set an earlier run aside (``overwrite``), then mark
        the folder and write ``config.yaml``. The earlier run is deleted when this one ends, or put back when this
        one fails with an error (see :meth:`close`)."""
        if self.main:
            if self._stale:
                aside = self.folder / ASIDE_NAME
                remove_entries([aside])
                aside.mkdir()
                for entry in self._stale:
                    os.replace(entry, aside / entry.name)
                self._aside = aside
            self._stale = []
            mark_run_dir(self.folder, self.kind)
            write_run_config(self.folder, self.config_dict)

    def checkpoint(self, name: str, modules: dict, optimizer: Any = None, scheduler: Any = None,
                   state: dict | None = None) -> Path:
        from textnorm_t2i.checkpoint import prune_checkpoints, save_checkpoint  # torch (see select_checkpoint)

        path = save_checkpoint(self.folder / name, modules, optimizer, scheduler,
                               state={**(state or {}), "config": self.config_dict})
        prune_checkpoints(self.folder, self.keep)
        return path

    def interrupted(self, stop: GracefulStop, where: str, checkpoint: Path | None) -> RunInterrupted:
        saved = f"checkpoint written to {checkpoint}" if checkpoint else "no checkpoint yet"
        return RunInterrupted(f"stopped by {stop.name} {where}; {saved}; resume with the same command plus --resume")

    def diverged(self, where: str, checkpoint: Path | None) -> InputError:
        """The error for a non-finite loss or gradient: no update was applied, so the newest checkpoint (if any)
        holds the last finite state."""
        last = (f"the last finite state is {checkpoint}" if checkpoint else
                "no checkpoint was written yet")
        return InputError(f"training diverged {where} (non-finite loss or gradient; the update was not applied); "
                          f"{last}; try a smaller lr or grad_clip")

    def close(self) -> None:
        """Release the lock; a folder this run created and left empty (it failed early) is removed.

        Called from a ``finally`` block: when an error (not a Ctrl-C or a graceful stop) is on its way out, the
        earlier run set aside by ``overwrite`` is put back in place of this run's partial output.
        """
        if self._aside is not None:
            error = sys.exc_info()[1]
            failed = error is not None and not isinstance(error, (RunInterrupted, KeyboardInterrupt))
            if failed:
                remove_entries([p for p in _contents(self.folder) if p.name != ASIDE_NAME])
                for entry in self._aside.iterdir():
                    os.replace(entry, self.folder / entry.name)
                note(f"{self.folder}: this run failed; the earlier run it was to replace is back in place")
            remove_entries([self._aside])
            self._aside = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
            if self.created and self.folder.is_dir() and not _contents(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
                for parent in self.folder.parents:  # missing parents it made, while empty
                    if self._created_root is None or not parent.is_relative_to(self._created_root):
                        break
                    try:
                        parent.rmdir()
                    except OSError:
                        break

    def __enter__(self) -> RunFolder:
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()
