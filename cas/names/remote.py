"""Another node's namespace, read through its published root record.

A path ``/ns/<64 hex digits>/rest`` names ``/rest`` in the namespace held by
that public key, as of the newest valid record found for it (the node looks
it up: cas.dht.publisher). :class:`RemoteNamespace` is an ordinary
:class:`~cas.names.namespace.Namespace` over a read-only repository whose
only root is that record, so every read (resolve, list, ``at=SEQ``) works
as on the local namespace and every write is refused.

Never does I/O by itself: whoever builds one hands it the record bytes and a
block store (the node's, which fetches missing blocks from the network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..blocks import BlockStore
from ..cid import CID
from ..errors import PathNotFoundError, ReadOnlyNamespaceError
from .namespace import Namespace, RootState
from .record import RootRecord, newest_record, parse_public_key

NS_PREFIX = "/ns/"


@dataclass(frozen=True)
class _Row:
    seq: int
    root: CID
    time_ns: int
    record: bytes


@dataclass(frozen=True)
class _PublicKeyOnly:
    public_key: bytes


class _ResolvedRepo:
    """A repository whose namespace roots are the resolved record only."""

    def __init__(self, blocks: BlockStore, public_key: bytes, record: RootRecord) -> None:
        self.blocks = blocks
        self._key = _PublicKeyOnly(public_key)
        self._rows = [_Row(record.seq, record.root, record.time_ns, record.encode())]

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[_Row]:
        rows = [row for row in self._rows if after is None or (row.seq < after if newest_first else row.seq > after)]
        return rows[:limit] if limit is not None else rows

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        raise ReadOnlyNamespaceError("a published namespace is read-only here; change it on its own node")

    def namespace_key(self) -> _PublicKeyOnly:  # only .public_key is read
        return self._key


class RemoteNamespace(Namespace):
    """The namespace of ``public_key`` as of the newest of ``records``
    (raw record bytes from anywhere; forged and foreign ones are skipped).
    Raises :class:`PathNotFoundError` if none is valid."""

    def __init__(self, blocks: BlockStore, public_key: bytes, records: list[bytes]) -> None:
        record = newest_record(records, public_key)
        if record is None:
            raise PathNotFoundError(
                f"no published record found for namespace {public_key.hex()}; "
                "is it published ('cas name publish' on its node) and is this node online?")
        self.record = record
        self.public_key = public_key
        super().__init__(_ResolvedRepo(blocks, public_key, record))  # type: ignore[arg-type]  # read-only: no commit methods, never called here

    def _commit(self, change: Callable[[RootState], CID]) -> RootState:
        raise ReadOnlyNamespaceError(
            f"namespace {self.public_key.hex()[:16]}… is another node's published namespace: read-only")

    def current(self) -> RootState:
        return RootState(self.record.seq, self.record.root, self.record.time_ns, self.public_key)

    def newer(self, records: list[bytes]) -> RemoteNamespace | None:
        """The namespace as of the newest of ``records`` if that is a valid
        record of this key with a *higher* sequence number than the one held
        (what a mount following the namespace switches to); None otherwise,
        so a forged, foreign, equal or lower-sequence record never replaces
        what is held."""
        best = newest_record(records, self.public_key)
        if best is None or best.seq <= self.record.seq:
            return None
        return RemoteNamespace(self.repo.blocks, self.public_key, [best.encode()])


def split_ns_path(path: str) -> tuple[bytes, str] | None:
    """``/ns/<hex key>/a/b`` → (key, ``/a/b``); None for any other path.
    A ``/ns/`` path with a malformed key raises InvalidRecordError."""
    if not path.startswith(NS_PREFIX):
        return None
    rest = path[len(NS_PREFIX):]
    key_text, _, inner = rest.partition("/")
    return parse_public_key(key_text), "/" + inner
