"""The FUSE mount: a repository's namespace as an ordinary read-write directory.

``cas mount DIR`` runs :mod:`cas.fuse.mountd`, the process that owns the
repository (a :class:`cas.node.Node`, so ``cas add/cat/ls/...`` keep working
through its control socket) and serves the mount on trio, speaking the kernel's FUSE protocol itself.

Modules, each with one concern:

* :mod:`.inodes`     the inode table: inode numbers <-> namespace names,
  kernel lookup counts, ``forget``; plain Python, no I/O.
* :mod:`.pending`    the overlay of changes not yet committed (sans-IO);
  :mod:`.view` applies changes to it and answers reads from it first.
* :mod:`.links`      where each hard-linked inode's names are (sans-IO).
* :mod:`.acl`        what a POSIX access ACL makes of a file's mode.
* :mod:`.handles`    open files: the shared bounded block cache, one reader
  per open file with read-ahead, and writes staged in a temporary file.
* :mod:`.tree`       the namespace as the mount sees it: path resolution with
  caches, the copy-on-write operations, committing a staged file; synchronous,
  always run in the node's store thread.
* :mod:`.published`  another node's published namespace as the tree
  (``cas mount DIR --name KEY``): read through the node's control
  socket, following newer records.
* :mod:`.operations` the request handlers: thin glue that maps kernel
  requests onto the above and errors onto errno values.
* :mod:`.wire`       the FUSE kernel protocol's bytes, sans-IO.
* :mod:`.session`    the FUSE session: mount, the request loop on trio,
  notifications, unmount.
* :mod:`.mountd`     the process: node + FUSE session, readiness, clean
  unmount on SIGTERM.

The mount needs the kernel's FUSE device and ``fusermount3`` (Debian's
``fuse3``), no Python package beyond trio; :func:`require_fuse` says what
to install.
"""

from __future__ import annotations

import shutil

from ..errors import FuseUnavailableError

INSTALL_HINT = "install FUSE: apt-get install fuse3 (as root)"


def require_fuse() -> None:
    """Raise FuseUnavailableError, saying what to install, if this machine
    lacks ``fusermount3`` (which makes every mount)."""
    from .session import FUSERMOUNT

    if shutil.which(FUSERMOUNT) is None:
        raise FuseUnavailableError(f"{FUSERMOUNT} is not installed; {INSTALL_HINT}")
