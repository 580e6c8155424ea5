"""Small helpers for the repository's disk: directory fsync, turning an
``OSError`` into an error a user can act on, and the Linux calls the os
module lacks (``fallocate``, ``sync_file_range``) with what is built on
them: disk space taken ahead of a file's appends and given back."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..errors import RepositoryError


def fsync_dir(path: Path) -> None:
    """Make the names in directory ``path`` durable (new, renamed, removed)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
"""fallocate(2)'s modes (linux/falloc.h) that this project uses."""
SYNC_FILE_RANGE_WRITE = 2  # start write-out of the range's dirty pages; do not wait

_SIGNATURES = {"fallocate": ("int", "int", "int64", "int64"),
               "sync_file_range": ("int", "int64", "int64", "uint")}


@cache
def libc(name: str) -> Callable[..., int] | None:
    """libc's ``fallocate`` or ``sync_file_range``, or None where there is
    none. Looked up on first use: only writers need them, and importing
    ctypes costs a program that only reads ~1.5 ms."""
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    kinds = {"int": ctypes.c_int, "int64": ctypes.c_int64, "uint": ctypes.c_uint}
    fn.argtypes = [kinds[kind] for kind in _SIGNATURES[name]]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """fallocate(2) (the os module has only posix_fallocate, which changes
    the size); False where the file system or the disk cannot."""
    fn = libc("fallocate")
    return fn is not None and fn(fd, mode, offset, length) == 0


def allocate_ahead(fd: int, start: int, length: int) -> None:
    """Take disk space for a range past the end of a file, its size
    unchanged, so that appends there need no allocation of their own (the
    kernel's write into the file's cache costs ~35 % less). Only a help:
    where the file system or the disk cannot, the appends find out
    themselves."""
    fallocate(fd, FALLOC_FL_KEEP_SIZE, start, length)


def give_back_ahead(fd: int, end: int) -> None:
    """Free what was taken past ``end``, the file's size: a truncate to its
    own size frees the blocks past it (a hole punched there frees none).
    Never raises: it is only space, and the next try frees it."""
    try:
        os.ftruncate(fd, end)
    except OSError:
        pass


def start_writeback(fd: int, start: int, length: int) -> None:
    """Ask the kernel to start writing a range out now. Only a hint: an
    fsync is what makes it durable (and reports any write error, which the
    kernel keeps for it)."""
    fn = libc("sync_file_range")
    if fn is not None:
        fn(fd, start, length, SYNC_FILE_RANGE_WRITE)


def disk_error(exc: OSError, doing: str, where: Path) -> RepositoryError:
    """Turn an OSError from the repository's disk into a user-facing error."""
    if exc.errno == errno.ENOSPC:
        return RepositoryError(
            f"disk full while {doing} in {where}; free some space and retry "
            "(content stored earlier is intact)"
        )
    if exc.errno == errno.EDQUOT:
        return RepositoryError(f"disk quota exceeded while {doing} in {where}")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return RepositoryError(f"cannot write to {where} while {doing}: {exc.strerror}")
    return RepositoryError(f"I/O error while {doing} in {where}: {exc.strerror or exc}")
