"""Writing a small file so that a crash leaves either the old one or the new.

Owns the one recipe every small file cas replaces whole follows (the
repository's ``config.json``, key files, the saved routing table): the bytes
go to a temporary name in the same directory, created mode 0600 from the
start (never readable by others, not even for a moment), and are fsynced;
then the file takes its name, and the directory is fsynced so that the name
survives a crash too.

Must never: leave the temporary file behind on failure, write anywhere but
next to the target, or widen a file's mode. It raises ``OSError`` (and
``FileExistsError`` when asked not to replace): callers say what the file
is in their own errors.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: str | os.PathLike[str], data: bytes, *, replace: bool = True) -> None:
    """Make ``path`` a file of ``data``, mode 0600, atomically and durably.
    With ``replace=False`` the file is linked into place, which fails with
    ``FileExistsError`` if ``path`` exists (so an existing file is never
    overwritten, even by a racing writer)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask may only remove bits; be explicit
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        try:
            tmp.unlink()  # after a link, or after a failure
        except FileNotFoundError:
            pass
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
