"""The exceptions cas raises: one small hierarchy, in this one module.

Every error a user can cause or meet derives from :class:`CasError` and carries
a message written for that user: what went wrong and, where there is one, what
to do about it. The command line prints ``str(error)`` as one line and exits
with status 1.

The tree is split as h11 splits its errors, by whose fault it is:

- :class:`PeerError`: something about *another node*. It could not be
  reached, did not answer in time, answered with an error
  (:class:`RequestFailedError`), or broke the protocol
  (:class:`RemoteProtocolError`: a malformed message or frame, a handshake
  that does not verify, a ciphertext that fails). Code that talks to peers
  catches ``PeerError`` and tries another peer; a peer's fault never stops
  the node.
- Everything else is *local*: the caller's input (:class:`InvalidInputError`),
  bytes that fail verification (:class:`InvalidBlockError`), the repository
  and its disk (:class:`RepositoryError`), a path operation
  (:class:`NamespaceError`, carrying the errno a file system returns), this
  node's room for others' data (:class:`StorageQuotaError`), the daemon and
  its control socket, the mount.
- :class:`LocalProtocolError` is *our* bug: our own code asked a protocol
  state machine for something the protocol forbids. It is a ``RuntimeError``,
  not a ``CasError``, so nothing that handles users' errors swallows it.

Rules for this file:

1. Every exception class cas raises is declared here (a module may keep a
   private one for its own control flow, never raised past it).
2. A new class earns its place only if some code catches it apart from its
   parent, or a user must act on it differently; otherwise raise the parent
   with a message that says what happened.
3. The daemon sends an error to its clients by class name
   (``cas.control.error_value``), so a class is never renamed lightly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cid import CID


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

    def __init__(self, cid: CID, place: str, message: str) -> None:
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


class UsageError(InvalidInputError):
    """The command line asks for something its options do not allow
    together; the command exits 2, as for any other usage error."""


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


class ReadOnlyNamespaceError(NamespaceError):
    """A published namespace of another key cannot be changed from here."""


class StorageQuotaError(CasError):
    """This node has no room for what another node asked it to keep: a block
    (its quota for others' blocks, the sender's share of it, or the disk
    reserve) or a record (in all, or for that peer)."""


class KeyFileError(CasError):
    """A key file is missing, malformed, or readable by others."""


class NotPublishedError(CasError):
    """There is nothing to publish (no namespace root yet), or nobody to
    publish it to."""


class DaemonNotRunningError(CasError):
    """No daemon answers on the repository's control socket, and the
    command needs one (start it with 'cas daemon')."""


class ControlProtocolError(CasError):
    """The other end of the control socket broke the protocol or went away."""


class UnknownOpError(ControlProtocolError):
    """The daemon has no such operation (an older daemon than the client)."""


class ControlArgumentError(ControlProtocolError, InvalidInputError):
    """A request's argument is missing or has the wrong shape (or value); the
    message names the op and the argument. It is an :class:`InvalidInputError`
    too, as the op's own check raised before the schema did."""


class NodeError(CasError):
    """The daemon failed while serving a request (a bug or a resource problem
    on its side); the message says what it reported."""


class MountError(CasError):
    """A mount could not be started, found or stopped."""


class HttpError(CasError):
    """An HTTP request to the gateway that is answered with ``status`` (a
    bad CID or path, a method or format it does not serve, a range past the
    end...) and this message, plus ``headers`` (``Allow``, ``Content-Range``).
    Caught by the gateway's handler, which turns it into the answer; never
    raised past it."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers or [])


class FUSEError(CasError):
    """What a mount's request handler raises to answer the kernel with
    ``errno`` (cas/fuse/wire.py); the program that made the call sees that
    errno, never this."""

    def __init__(self, errno: int) -> None:
        import errno as errno_codes

        super().__init__(errno_codes.errorcode.get(errno, str(errno)))
        self.errno = errno


class FuseUnavailableError(MountError):
    """fusermount3 (or the FUSE kernel device) is missing on this machine."""


# -- another node's fault or failure ----------------------------------------------


class PeerError(CasError):
    """Another node could not be reached, did not answer, answered with an
    error or broke the protocol. Whoever talks to peers catches this and
    tries another; it is never this node's own failure."""


class ConnectionClosedError(PeerError):
    """The connection closed (or was closed) before the operation finished."""


class RequestTimeoutError(PeerError):
    """The peer did not answer a request in time."""


class RequestFailedError(PeerError):
    """The peer answered a request with an error; ``code`` is the wire
    protocol's error code (``cas.net.messages``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"peer refused the request ({code}): {message}" if message
                         else f"peer refused the request ({code})")
        self.code = code


class PeerUnreachableError(PeerError):
    """A peer could not be dialled or did not complete the handshake."""


class PeerRefusedError(PeerUnreachableError):
    """The handshake was refused: the peer is on another network."""


class BootstrapError(PeerError):
    """No bootstrap peer could be reached."""


class BootstrapRefusedError(BootstrapError):
    """Every bootstrap peer refused the handshake: they are on another
    network (a network key that differs, or none where one is needed)."""


class RemoteProtocolError(PeerError):
    """The peer broke the protocol. The connection or message is dropped and
    the peer is counted against; the node carries on."""


class MalformedMessageError(RemoteProtocolError):
    """Bytes from a peer are not a well-formed message of a known type."""


class FrameError(RemoteProtocolError):
    """The peer sent a frame that breaks the framing rules."""


class FrameTooLargeError(FrameError):
    """A frame header announced more bytes than the limit allows."""


class HandshakeError(RemoteProtocolError):
    """The peer's handshake failed: a malformed message, one that does not
    verify, or one that did not come in time."""


class HandshakeTimeoutError(HandshakeError):
    """The peer did not complete the handshake in time."""


class IncompatibleVersionError(HandshakeError):
    """The peer speaks a protocol version we do not."""


class IdentityProofError(HandshakeError):
    """The peer's identity proof is missing, malformed or has a bad signature."""


class PeerIdMismatchError(HandshakeError):
    """The peer proved an identity, but not the node ID we expected."""

    def __init__(self, expected: bytes, actual: bytes) -> None:
        super().__init__(
            f"peer proved node ID {actual.hex()[:16]}… but {expected.hex()[:16]}… was expected"
        )
        self.expected = expected
        self.actual = actual


class NetworkMismatchError(HandshakeError):
    """The peer is on another network: its network key differs from ours,
    or one side has a key and the other none. Nothing about it was learnt
    (the handshake stopped at message 1 or at the refusal answering it)."""


class DecryptError(RemoteProtocolError):
    """A ciphertext failed authentication (tampered, truncated or out of order)."""


# -- our own bug ------------------------------------------------------------------


class LocalProtocolError(RuntimeError):
    """Our own code tried to do something the protocol forbids (a bug)."""
