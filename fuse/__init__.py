"""The FUSE mount: a repository's namespace as an ordinary read-write directory.

``cas mount DIR`` runs :mod:`cas.fuse.mountd`, the process that owns the
repository (a :class:`cas.node.Node`, so ``cas add/cat/ls/...`` keep working
through its control socket) and serves the mount with pyfuse3 on trio.

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
* :mod:`.operations` the pyfuse3 ``Operations`` subclass: thin glue that maps
  kernel requests onto the above and errors onto errno values.
* :mod:`.mountd`     the process: node + FUSE session, readiness, clean
  unmount on SIGTERM.

pyfuse3 is an optional dependency (the ``fuse`` extra); importing this
package never needs it, :func:`require_pyfuse3` says what to install.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import FuseUnavailableError

INSTALL_HINT = (
    "install the FUSE extra: apt-get install fuse3 libfuse3-dev pkg-config && pip install 'casnet[fuse]'"
)


def require_pyfuse3() -> ModuleType:
    """The pyfuse3 module, or FuseUnavailableError saying what to install."""
    try:
        import pyfuse3
    except ImportError:
        raise FuseUnavailableError(f"pyfuse3 is not installed; {INSTALL_HINT}") from None
    return pyfuse3
