"""Ed25519 signing keys kept in files only their owner can read.

This module owns key files: generating a key, writing it with mode 0600
atomically and durably, loading it back with a clear error when the file is
missing, damaged or readable by others. The node's identity
(:mod:`cas.net.identity`) and the namespace key that signs root records
(:mod:`cas.names.record`) are both such keys; each names itself in errors.
:func:`write_private_file` and :func:`read_private_file` are how every
secret file of cas is written and read (the network key of
:mod:`cas.net.network_key` too).

Key file format: one line of text, ``cas-ed25519-seed-v1 <64 hex digits>\\n``,
the 32-byte Ed25519 seed. Text, so that an operator can recognise the file;
versioned, so it can change.

A key's secret is never printed: ``repr`` shows only the public half.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar

from .durable import write_atomically
from .errors import KeyFileError

if TYPE_CHECKING:
    import nacl.signing

# nacl is imported where it is used: loading libsodium costs a cold start
# ~40 ms, which commands that never sign or verify (cas cat CID) should not pay.

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_SEED_SIZE = 32
_KEY_FILE_TAG = "cas-ed25519-seed-v1"
# A key file is one short line; anything bigger is not ours, so refuse to
# read it into memory.
_MAX_KEY_FILE_SIZE = 256

K = TypeVar("K", bound="Ed25519Key")


def write_private_file(path: str | os.PathLike[str], data: bytes, what: str, *,
                       replace: bool = True) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically and durably.

    The file is created under a temporary name with 0600 from the start
    (never readable by others, not even for a moment) and fsynced; then it
    takes ``path``'s name (renamed over it, or with ``replace=False``
    linked, which fails if ``path`` exists, so an existing file is never
    overwritten, even by a racing writer), and the directory is fsynced so
    the name survives a crash. ``what`` names the file in errors ("the
    node key"); a failure raises :class:`KeyFileError`.
    """
    path = Path(path)
    try:
        write_atomically(path, data, replace=replace)
    except FileExistsError:
        raise KeyFileError(f"{what} {path} already exists; it was left as it is") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {what} {path}: {exc.strerror}") from None


def read_private_file(path: str | os.PathLike[str], what: str, max_size: int) -> bytes:
    """The bytes of a secret file (at most ``max_size + 1`` of them, so the
    caller can tell a file that is too long).

    Refuses, with a :class:`KeyFileError` that names the file as ``what``
    ("the node key") and says what to do: a missing or unreadable file, a
    symlink, a file that is not a regular file, and one that group or
    others may read or write.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot open {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(
                f"{what} {path} is accessible by other users "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        return os.read(fd, max_size + 1)
    finally:
        os.close(fd)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    import nacl.exceptions
    import nacl.signing

    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Ed25519Key:
    """An Ed25519 keypair. ``repr`` never shows the secret."""

    _signing_key: nacl.signing.SigningKey = field(repr=False)

    #: How errors name the key file ("the node key /path ...").
    what: ClassVar[str] = "key"

    @classmethod
    def generate(cls: type[K]) -> K:
        """A fresh random key."""
        import nacl.signing

        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls: type[K], seed: bytes) -> K:
        """The key with this 32-byte Ed25519 seed (tests, known vectors)."""
        if len(seed) != _SEED_SIZE:
            raise ValueError(f"an Ed25519 seed has {_SEED_SIZE} bytes")
        import nacl.signing

        return cls(nacl.signing.SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public_key={self.public_key.hex()[:16]}…)"

    # -- the key file -------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to ``path`` with mode 0600, atomically and durably
        (see :func:`write_private_file`), replacing any file there."""
        seed = bytes(self._signing_key)
        text = f"{_KEY_FILE_TAG} {seed.hex()}\n".encode("ascii")
        write_private_file(path, text, f"the {self.what}")

    @classmethod
    def load(cls: type[K], path: str | os.PathLike[str]) -> K:
        """Read a key written by :meth:`save`.

        Refuses (with :class:`KeyFileError`) what :func:`read_private_file`
        refuses, and a file whose contents are not exactly the format above.
        """
        path = Path(path)
        return cls._parse(read_private_file(path, f"the {cls.what}", _MAX_KEY_FILE_SIZE), path)

    @classmethod
    def _parse(cls: type[K], raw: bytes, path: Path) -> K:
        bad = KeyFileError(
            f"the {cls.what} {path} is damaged or not a cas key "
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
    def load_or_create(cls: type[K], path: str | os.PathLike[str]) -> K:
        """Load the key at ``path``, generating and saving one if there is none."""
        if not os.path.lexists(path):
            key = cls.generate()
            key.save(path)
            return key
        return cls.load(path)


class NamespaceKey(Ed25519Key):
    """The Ed25519 key that signs a repository's namespace roots."""

    what = "namespace key"
