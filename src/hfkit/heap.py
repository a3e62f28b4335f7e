"""Large host buffers kept in the process heap during CPU inference (glibc only).

glibc serves every allocation above its mmap threshold (128 KiB at start, raised up to 32 MiB as large blocks are
freed) with a fresh `mmap` and gives it back with `munmap` when freed, and trims the heap's free top back to the
OS. A CPU forward allocates and frees tensors of megabytes per operation, so every one of them is page-faulted in
anew: on a 2-core Xeon (AMX), a bfloat16 MiniLM feed-forward input (4800 × 384 → 1536) with its GELU took 11.0 ms
with glibc's defaults and 3.8 ms with freed memory kept, and MiniLM embeddings went 188 → 224 sent/s (bfloat16) and
56 → 69 sent/s (float32) (benchmarks/RESULTS.md, the lever rows). jemalloc or tcmalloc under LD_PRELOAD do the same for a whole
process; this does it for the block only: `keep_freed_memory()` raises both thresholds while it runs, then sets
them back to glibc's starting values, after which glibc trims the heap's free top on the next free as usual (an
explicit `malloc_trim` at the end cost ~3 ms per call, more than a one-text embedding gains).

Process-wide settings: while a block runs, other threads' large allocations stay in the heap too. Afterwards the
thresholds are fixed at 128 KiB (glibc no longer raises them itself). Elsewhere (musl, macOS, Windows) it does
nothing. `KEEP_FREED_MEMORY = False` switches it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator
from functools import lru_cache

KEEP_FREED_MEMORY = True
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
KEPT = (1 << 30, 32 << 20)  # thresholds tried while a block runs: 1 GiB, else glibc's 64-bit maximum 32 MiB
GLIBC_START = 128 << 10  # both thresholds' initial values

_lock = threading.Lock()
_depth = 0


@lru_cache(maxsize=1)
def glibc():
    """The C library when it is glibc (mallopt), else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def set_thresholds(libc, value: int) -> bool:
    """Both thresholds to `value` bytes; False if glibc refuses it."""
    return all(libc.mallopt(parameter, ctypes.c_int(value)) for parameter in (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD))


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """During the block, freed large buffers stay in the heap for the next allocation; nested blocks share one."""
    global _depth
    libc = glibc() if KEEP_FREED_MEMORY else None
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            any(set_thresholds(libc, value) for value in KEPT)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                set_thresholds(libc, GLIBC_START)
