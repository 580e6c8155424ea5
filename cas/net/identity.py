"""Node identity: the Ed25519 key a node is known by, and its node ID.

This module owns the node's long-term signing key: generating it, keeping it
in the repository as a file only the owner can read, loading it back, and
deriving the node ID, which is the BLAKE3-256 of the 32-byte Ed25519 public
key. The same ID is the node's position in the DHT's XOR space, so a node
cannot pick where it sits: it is wherever its key hashes to.

Key file format (``identity.key``, mode 0600): one line of text,
``cas-ed25519-seed-v1 <64 hex digits>\\n``, the 32-byte Ed25519 seed. Text,
so that an operator can recognise the file; versioned, so it can change.

This module never touches the network, and it never writes a key anywhere
but the one path it is given, atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import nacl.exceptions
import nacl.signing

from ..errors import CasError

NODE_ID_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_SEED_SIZE = 32
_KEY_FILE_TAG = "cas-ed25519-seed-v1"
# A key file is one short line; anything bigger is not ours, so refuse to
# read it into memory.
_MAX_KEY_FILE_SIZE = 256


class IdentityError(CasError):
    """The node key file is missing, malformed, or readable by others."""


def node_id_for(public_key: bytes) -> bytes:
    """The node ID of an Ed25519 public key: BLAKE3-256 over its 32 bytes."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes")
    return blake3.blake3(public_key).digest()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    """A node's Ed25519 keypair. ``repr`` never shows the secret."""

    _signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity with this 32-byte Ed25519 seed (tests, known vectors)."""
        if len(seed) != _SEED_SIZE:
            raise ValueError(f"an Ed25519 seed has {_SEED_SIZE} bytes")
        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def node_id(self) -> bytes:
        return node_id_for(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()[:16]}…)"

    # -- the key file -------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to ``path`` with mode 0600, atomically and durably.

        The file is created under a temporary name with 0600 from the start
        (never world-readable, not even for a moment), fsynced, renamed over
        ``path``, and the directory is fsynced so the rename survives a crash.
        """
        path = Path(path)
        seed = bytes(self._signing_key)
        text = f"{_KEY_FILE_TAG} {seed.hex()}\n".encode("ascii")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)  # the umask may only remove bits; be explicit
                os.write(fd, text)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IdentityError(f"cannot write the node key {path}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key written by :meth:`save`.

        Refuses (with :class:`IdentityError`) a missing or unreadable file,
        one that group or others may read or write, one that is not a regular
        file, and one whose contents are not exactly the format above.
        """
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise IdentityError(f"the node key {path} does not exist") from None
        except OSError as exc:
            raise IdentityError(f"cannot open the node key {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IdentityError(f"the node key {path} is not a regular file")
            if info.st_mode & 0o077:
                raise IdentityError(
                    f"the node key {path} is accessible by other users "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
                )
            raw = os.read(fd, _MAX_KEY_FILE_SIZE + 1)
        finally:
            os.close(fd)
        return cls._parse(raw, path)

    @classmethod
    def _parse(cls, raw: bytes, path: Path) -> Identity:
        bad = IdentityError(
            f"the node key {path} is damaged or not a cas key "
            f"(expected one line: '{_KEY_FILE_TAG} <64 hex digits>')"
        )
        if len(raw) > _MAX_KEY_FILE_SIZE:
            raise bad
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise bad from None
        parts = text.rstrip("\n").split(" ")
        if len(parts) != 2 or parts[0] != _KEY_FILE_TAG or len(parts[1]) != 2 * _SEED_SIZE:
            raise bad
        try:
            seed = bytes.fromhex(parts[1])
        except ValueError:
            raise bad from None
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the key at ``path``, generating and saving one if there is none."""
        if not os.path.lexists(path):
            identity = cls.generate()
            identity.save(path)
            return identity
        return cls.load(path)
