"""Keep freed memory in the process (glibc): large activation buffers are reused rather than re-faulted.

PyTorch on the CPU allocates every activation with ``malloc``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap`` when freed, and it trims the top
of its heap back to the system; either way the next forward pass of the same size touches new pages, and the kernel
zero-fills every one of them. For the embedded UNet at the batch sizes it samples at, that page-faulting costs
about as much as the arithmetic (``make bench-generator-speed`` measures it: ~1.9x images/s at 256 prompts per
call). Raising both thresholds keeps freed blocks in the heap for the next pass. It changes no result (the same
kernels run on the same numbers); peak memory stays as it was (the largest pass still sets it), though the process
does not hand memory back to the system until it exits. This is what ``LD_PRELOAD``-ing jemalloc or tcmalloc, which
PyTorch's CPU performance guide recommends, also achieves, without a dependency.

The command line calls :func:`keep_freed_memory` at start; the Python API leaves it to the caller (a
process-wide setting is the application's choice, not a library's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**30  # 1 GiB: larger blocks (none in this package's work) still go to mmap
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; ``True`` where that took effect (glibc only).

    Idempotent; elsewhere (macOS, musl, Windows) it does nothing and returns ``False``.

    Example:
        >>> keep_freed_memory() in (True, False)
        True
    """
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done = bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done
