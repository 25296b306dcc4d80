"""Glibc heap tuning for parsing many large files in one process (ctypes + mallopt; a no-op elsewhere).

Measured side by side with benchmarks/bench_data.py --workers 1 (the second run with this tuning replaced by a
no-op; 40 generated reference files, 344,651 sessions, 1.69 GB, two runs each, alternating, on a shared 2-core
machine): 6.2 and 6.4 CPU-s with the heap kept across files against 7.2 and 7.3 CPU-s with glibc's defaults, a
13% saving of the build's CPU time (the wall time, 26-33 s, was set by the disk and the other load, not by this).
Over the ~10% bar, so it stays, here and only here.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform

# glibc's mallopt parameters. Setting one turns glibc's own adjustment of both off for the process, so afterwards
# they are set to what that adjustment reaches once large blocks have been freed (32 MB, and twice that).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_SETTLED_MMAP_THRESHOLD = 32 * 1024 * 1024


def _keep_heap() -> ctypes.CDLL | None:
    """Raise glibc's mmap and trim thresholds so that freed large buffers stay in the heap. Returns libc, or None
    where that is not possible (not glibc, or an older glibc refusing an mmap threshold above 32 MB: then both are
    left alone rather than the threshold frozen low)."""
    libc = _glibc()
    if libc is None:
        return None
    if not libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30):
        return None
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return libc


@contextlib.contextmanager
def heap_reused_across_files():
    """Keep the memory of one file's buffers in the heap for the next file (glibc; elsewhere a no-op).

    A file's text and its arrays are tens of MB each. glibc serves allocations above its mmap threshold (at most
    32 MB unless set) with fresh mappings, and returns freed memory at the heap's top to the kernel beyond its trim
    threshold: each file then paid for the kernel to map and zero every page again (0.22-0.31 -> 0.15-0.20 CPU-s
    per 42 MB reference file; benchmarks/bench_parse.py). Afterwards the kept memory is released.
    """
    libc = _keep_heap()
    try:
        yield
    finally:  # for the rest of the process (training, when it parsed too): glibc's usual values for large blocks
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _SETTLED_MMAP_THRESHOLD)
            libc.malloc_trim(0)


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim; elsewhere a no-op).

    Scoring frees a batch's activations (hundreds of MB) after every forward pass, in blocks of every size under
    glibc's mmap threshold; the heap keeps them, fragmented, and the resident size crept up with the sessions
    scored. Measured on 20k sessions (`logbert score`'s chunks of 2,048, untrained 2 x 128 model, one run each):
    peak 1,459 -> 2,041 MB trimming after each chunk, 1,242 -> 1,297 MB (the bounded LRU cache) trimming after
    each forward pass, for 4.5% more wall time (174.5 s against 167.0 s); so the pipeline trims after each pass.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    # Looked up once: it runs after every forward pass, and platform.libc_ver() reads the interpreter's binary.
    return ctypes.CDLL(None) if platform.libc_ver()[0] == "glibc" else None


def keep_heap_in_worker() -> None:
    """`ProcessPoolExecutor` initializer: a parsing worker keeps its heap across files until it exits."""
    _keep_heap()
