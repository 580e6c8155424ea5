"""Keeping glibc's malloc from returning freed buffers to the kernel.

cas moves data in buffers of 64 KiB to 2 MiB (blocks, frames, sealed
messages). glibc hands out allocations above its mmap threshold (128 KiB
at first, adjusted upwards as such buffers are freed) as fresh pages, and
trims freed memory at the top of the heap back to the kernel; every such
buffer then costs a page fault per 4 KiB page when it is first written.
Measured on this project's 2-core VM, that made a 1 MiB `b"".join` 1.1 ms
instead of 0.05 ms, and ChaCha20-Poly1305 of 1 MiB 1.6 ms instead of 0.8.
With a fixed, higher mmap threshold and trim threshold the heap keeps the
memory it has used and reuses it: the process's peak footprint is what it
was, it just stays mapped.

Called once at the start of the ``cas`` commands that move such buffers
(``add``, ``daemon``, ``mount``: cli.main.BUFFER_HEAVY); reading commands
gain nothing from it. The library leaves a host program's allocator alone.

The other side of keeping: what a flood of connections leaves behind (the
objects and small buffers of hundreds of connections, freed in the middle
of the heap, which trimming its top never reaches) would stay mapped for
good. :func:`release_free_memory` (a full garbage collection, then
glibc's ``malloc_trim(0)``: every arena, and the whole free pages inside
them, ~6 ms for 120 MiB here) gives it back; the DHT driver calls it once such a flood is over. Frame buffers
never need it: they are maps of their own (``cas.net.framing.FrameBuffers``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

MMAP_THRESHOLD = 8 * 1024 * 1024
"""Allocations below this come from the heap (the largest cas makes is a
2 MiB frame or batch)."""

TRIM_THRESHOLD = 32 * 1024 * 1024
"""Free memory at the top of the heap kept rather than given back."""

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_buffers() -> bool:
    """Tune glibc's malloc as the module says; False where there is no
    glibc (the defaults then stand)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None


def release_free_memory() -> bool:
    """Free what is garbage and return the free memory malloc holds to the
    kernel; False where there is no glibc (the garbage is still freed).

    First a full collection: a closed connection's objects are often in a
    reference cycle (a task, the exception that ended it, its traceback),
    freed only when the collector gets round to it; then ``malloc_trim(0)``.
    Measured after 500 connections closed at once in a daemon: ~29 000
    objects and 35-45 ms collecting, under 1 ms trimming: for the end of a
    flood, not for every request."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
