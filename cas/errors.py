"""The exceptions cas raises, as one small hierarchy.

Every error a user can cause or meet derives from :class:`CasError` and carries
a message written for that user: what went wrong and, where there is one, what
to do about it. The command line prints ``str(error)`` as one line and exits
with status 1; nothing else in cas catches ``CasError`` broadly.

Errors that are *our* bug (a broken invariant) are plain ``AssertionError`` /
``RuntimeError`` and are never dressed up as one of these.
"""

from __future__ import annotations


class CasError(Exception):
    """Base class of every error cas reports to a user."""


class InvalidCIDError(CasError, ValueError):
    """A string or byte sequence is not a CID that cas understands."""


class InvalidBlockError(CasError):
    """Bytes failed verification or decoding: the hash does not match the CID,
    or a node is malformed or not in canonical form."""


class CorruptBlockError(InvalidBlockError):
    """A block stored here failed verification: its bytes on disk (``place``
    says where) no longer match its hash. Whoever meets one quarantines it
    (``LocalStore.quarantine``) so that it is never served or claimed
    again, and a node fetches a good copy from the network."""

    def __init__(self, cid: object, place: str, message: str) -> None:
        super().__init__(message)
        self.cid = cid
        self.place = place


class BlockNotFoundError(CasError, KeyError):
    """A block is not in the store that was asked for it."""

    def __init__(self, cid: object, where: str = "the repository") -> None:
        super().__init__(f"block {cid} is not in {where}")
        self.cid = cid

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class RepositoryError(CasError):
    """The repository is missing, damaged, of an unknown version, or the disk
    refused a write (full, read-only, permission denied)."""


class RepositoryLockedError(RepositoryError):
    """Another process owns the repository (and kept it for as long as the
    caller was willing to wait)."""

    holder: str | None = None
    """Who holds it, as "process 123 (cas add big.iso)", when known."""


class NotAFileError(CasError):
    """A CID or path names something that is not a file (e.g. a directory)."""


class InvalidInputError(CasError, ValueError):
    """An argument from the user is unusable: a missing path, a bad range, a
    name that is not allowed."""


class InvalidRecordError(CasError):
    """A namespace root record is malformed, badly signed, signed by another
    key, or older than the one already held."""


class StaleRecordError(InvalidRecordError):
    """A namespace root record is valid but not newer than the one already
    held (its sequence number is not above the current one)."""


class ConcurrentUpdateError(CasError):
    """Another writer committed a new namespace root first; retry."""


class NamespaceError(CasError):
    """A path operation cannot be done. ``errno`` is the POSIX error a file
    system reports for it (the FUSE driver returns exactly that)."""

    errno: int = 5  # EIO


class PathNotFoundError(NamespaceError):
    errno = 2  # ENOENT


class PathExistsError(NamespaceError):
    errno = 17  # EEXIST


class NotADirectoryPathError(NamespaceError):
    errno = 20  # ENOTDIR


class IsADirectoryPathError(NamespaceError):
    errno = 21  # EISDIR


class DirectoryNotEmptyError(NamespaceError):
    errno = 39  # ENOTEMPTY


class InvalidMoveError(NamespaceError):
    errno = 22  # EINVAL
