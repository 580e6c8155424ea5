"""Small helpers for the repository's disk: directory fsync and turning an
``OSError`` into an error a user can act on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import RepositoryError


def fsync_dir(path: Path) -> None:
    """Make the names in directory ``path`` durable (new, renamed, removed)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
