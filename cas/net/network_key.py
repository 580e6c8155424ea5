"""The network key: the secret that makes a network private.

Every node of a private network holds the same 32-byte key, and uses it as
the Noise pre-shared key of its handshake (:mod:`.noise`,
``Noise_XXpsk0_25519_AESGCM_BLAKE2b``): a node without exactly that key
cannot complete a handshake with any of them, so it never reaches the DHT,
the blocks or the records behind it. A node with no key is on the open
network, as every node was before this existed.

This module owns: the key file (its format, writing a new one, loading one
with an error a person can act on), where a repository keeps its own
(``keys/network.key``), which key a node uses (:func:`network_key_for`), and
the key's **fingerprint**, a short hash that people compare between machines
and that the daemon prints; the key itself is never shown.

Key file format, text, mode 0600 (two lines, the second the key, then the
network's settings if it has any, one per line)::

    cas-network-key v1
    <64 hex digits: the 32-byte key>
    replicas 5
    repair-interval 300
    lease 604800
    id-difficulty 16

The **settings** are the ones every node of a network must share
(:class:`NetworkSettings`: copies per block, seconds between repair rounds,
seconds of a lease, bits of work in a node ID). Written with the key
(``cas network init --replicas 5 ...``), they travel with it to every
machine, and they are part of the handshake's pre-shared key: a node whose
file carries other settings is refused as if it held another key, so a
network cannot drift apart. A file without settings (the defaults) gives
the key itself as the PSK, as before settings existed.

Versioned, so it can change; text, so that an operator recognises the file.
The key is 32 bytes from the operating system's random source, never a
passphrase: the first handshake message of a private network is
authenticated with it, so an eavesdropper could test guesses at a weak key
offline.

Must never: print, log or put in an exception message the key's bytes (only
the fingerprint); overwrite an existing key file (the machines holding the
old key would lose each other); open a socket.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..errors import KeyFileError
from ..keys import read_private_file, write_private_file

KEY_SIZE = 32
"""Bytes in a network key: the Noise PSK size (spec section 9)."""

NETWORK_KEY_PATH = Path("keys") / "network.key"
"""Where a repository keeps its network key, relative to the repository."""

FILE_HEADER = "cas-network-key v1"
_MAX_FILE_SIZE = 512  # header, 64 hex digits, four settings, newlines: anything longer is not ours

# Domain separation: the fingerprint is a hash of the key under a label
# used for nothing else, so it says nothing about any other use of the key.
_FINGERPRINT_LABEL = b"cas network key fingerprint\x00"
_PSK_LABEL = b"cas network psk with settings\x00"
FINGERPRINT_SIZE = 8
"""Bytes of the fingerprint (16 hex digits): enough to tell keys apart by
eye; a preimage of a hash of a 256-bit random key is out of reach."""

NetworkKeyError = KeyFileError
"""The network key file is missing, malformed, readable by others, or
(when writing) already there."""


@dataclass(frozen=True)
class NetworkSettings:
    """What every node of a network must agree on; None: the default."""

    replicas: int | None = None
    repair_interval: int | None = None  # seconds
    lease: int | None = None  # seconds
    id_difficulty: int | None = None  # bits

    LIMITS: ClassVar[dict[str, tuple[str, int, int]]] = {
        # field: (name in the file, least, most)
        "replicas": ("replicas", 1, 20),
        "repair_interval": ("repair-interval", 1, 366 * 86400),
        "lease": ("lease", 1, 3650 * 86400),
        "id_difficulty": ("id-difficulty", 0, 40),
    }

    def __post_init__(self) -> None:
        for name, (key, low, high) in self.LIMITS.items():
            value = getattr(self, name)
            if value is not None and (type(value) is not int or not low <= value <= high):
                raise ValueError(f"{key} must be a whole number from {low} to {high}")

    def lines(self) -> list[str]:
        """The settings as the key file writes them (only those set)."""
        return [f"{key} {getattr(self, name)}" for name, (key, _, _) in self.LIMITS.items()
                if getattr(self, name) is not None]

    def describe(self) -> str:
        """For people: ``replicas 5, lease 604800 s``, or ``defaults``."""
        parts = []
        for name, (key, _, _) in self.LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                unit = " s" if name in ("repair_interval", "lease") else " bits" if name == "id_difficulty" else ""
                parts.append(f"{key} {value}{unit}")
        return ", ".join(parts) or "defaults"


@dataclass(frozen=True, repr=False)
class NetworkKey:
    """A network key. ``repr`` and ``str`` show only its fingerprint."""

    _secret: bytes = field(repr=False)
    source: Path | None = field(default=None, compare=False)
    """The file it was loaded from, if any (for messages)."""
    settings: NetworkSettings = field(default_factory=NetworkSettings)
    """The network's shared settings, part of what makes it this network."""

    def __post_init__(self) -> None:
        if not isinstance(self._secret, bytes) or len(self._secret) != KEY_SIZE:
            raise ValueError(f"a network key has {KEY_SIZE} bytes")

    @classmethod
    def generate(cls, settings: NetworkSettings | None = None) -> NetworkKey:
        """A new random key (with the network's settings, if any)."""
        return cls(os.urandom(KEY_SIZE), settings=settings or NetworkSettings())

    @property
    def psk(self) -> bytes:
        """The 32 bytes the handshake mixes in as its pre-shared key: the
        key itself, or with settings a keyed hash of them under the key
        (as secret as the key, and different for other settings)."""
        lines = self.settings.lines()
        if not lines:
            return self._secret
        return hashlib.blake2b(_PSK_LABEL + "\n".join(lines).encode("ascii"),
                               key=self._secret, digest_size=KEY_SIZE).digest()

    @property
    def fingerprint(self) -> str:
        """16 hex digits that identify the network (its key and settings)
        without revealing the key."""
        return hashlib.blake2b(_FINGERPRINT_LABEL + self.psk,
                               digest_size=FINGERPRINT_SIZE).hexdigest()

    def __repr__(self) -> str:
        return f"NetworkKey(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new file ``path`` (mode 0600, atomically and
        durably). Refuses, with :class:`NetworkKeyError`, if ``path`` exists:
        a network key is never overwritten."""
        path = Path(path)
        if os.path.lexists(path):
            raise NetworkKeyError(f"the network key {path} already exists; it was left as it is")
        text = "".join(f"{line}\n" for line in [FILE_HEADER, self._secret.hex(), *self.settings.lines()]).encode("ascii")
        write_private_file(path, text, "the network key", replace=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NetworkKey:
        """Read a key file written by :meth:`save`.

        Refuses, with :class:`NetworkKeyError`: a missing file, a symlink or
        anything but a regular file, a file group or others may access, and
        any content that is not exactly the format above.
        """
        path = Path(path)
        try:
            raw = read_private_file(path, "the network key", _MAX_FILE_SIZE)
        except KeyFileError as exc:
            if not os.path.lexists(path):
                raise NetworkKeyError(
                    f"{exc}: create one with 'cas network init --out {path}', "
                    "or copy the network's key there") from None
            raise
        secret, settings = _parse(raw, path)
        return cls(secret, path, settings)


def _parse(raw: bytes, path: Path) -> tuple[bytes, NetworkSettings]:
    bad = NetworkKeyError(
        f"the network key {path} is damaged or not a cas network key "
        f"(expected '{FILE_HEADER}', 64 hex digits, then settings such as 'replicas 5', a line each)")
    if len(raw) > _MAX_FILE_SIZE:
        raise bad
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise bad from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline
    if len(lines) < 2 or lines[0] != FILE_HEADER or len(lines[1]) != 2 * KEY_SIZE:
        raise bad
    try:
        secret = bytes.fromhex(lines[1])
    except ValueError:
        raise bad from None
    by_key = {key: name for name, (key, _, _) in NetworkSettings.LIMITS.items()}
    values: dict[str, int] = {}
    for line in lines[2:]:
        words = line.split(" ")
        if len(words) != 2 or words[0] not in by_key or by_key[words[0]] in values \
                or not words[1].isdigit() or words[1] != str(int(words[1])):
            raise NetworkKeyError(f"the network key {path}: {line[:60]!r} is not a setting this cas knows "
                                  f"(one of {', '.join(by_key)}, each once, with a whole number)")
        values[by_key[words[0]]] = int(words[1])
    try:
        settings = NetworkSettings(**values)
    except ValueError as exc:
        raise NetworkKeyError(f"the network key {path}: {exc}") from None
    if settings.lines() != lines[2:]:  # one order, so equal settings are equal files and PSKs
        raise NetworkKeyError(f"the network key {path}: settings must come in the order "
                              + ", ".join(key for key, _, _ in NetworkSettings.LIMITS.values()))
    return secret, settings


def repository_key_path(repo: str | os.PathLike[str]) -> Path:
    """Where the repository ``repo`` keeps its network key."""
    return Path(repo) / NETWORK_KEY_PATH


def network_key_for(repo: str | os.PathLike[str],
                    path: str | os.PathLike[str] | None = None) -> NetworkKey | None:
    """The network key a node of ``repo`` uses: the file ``path`` if one is
    given, else the repository's own (``keys/network.key``) if it has one,
    else None (the open network). So a repository that holds a key never
    joins an open network by accident. A key file that cannot be used
    raises :class:`NetworkKeyError`, never falls back to the open network.
    """
    if path is not None:
        return NetworkKey.load(path)
    own = repository_key_path(repo)
    if os.path.lexists(own):
        return NetworkKey.load(own)
    return None


def describe_network(key: NetworkKey | None) -> str:
    """The line a daemon prints as it starts: which network it is on, and
    the key's fingerprint and file (never the key)."""
    if key is None:
        return "open network (no network key): any cas node can connect"
    where = f" ({key.source})" if key.source is not None else ""
    return (f"private network, key fingerprint {key.fingerprint}{where}, settings: {key.settings.describe()}; "
            "only nodes holding this key can connect")
