"""Another node's published namespace as a read-only mount.

``cas mount DIR --name KEY`` shows the namespace that public key
publishes (docs/replication.md, "Published namespaces") and follows it as
new sequence numbers arrive.

Theory of operation
===================

The mount is a client of the node that owns the repository, through its
control socket (:class:`NodeLink`): the node resolves the record on the
network (``name_resolve``: the newest valid record among the k closest
holders and its own) and serves blocks, fetching from the network those it
lacks (``get``), exactly as for ``cas cat /ns/KEY/path``. When no daemon owns
the repository, the mount process runs the node itself (as the local mount
does) and talks to it the same way.

:class:`PublishedTree` is the tree the FUSE operations read: the root is the
record held, wrapped in a :class:`cas.names.remote.RemoteNamespace`. Every
``refresh`` seconds :func:`follow` resolves again; the answer replaces the
root only through :meth:`RemoteNamespace.newer`, which verifies it again here
(signature, key) and takes it only if its sequence number is higher. So a
forged, foreign, replayed or lower-sequence record never changes what is
mounted, whatever the node or the network answer.

On a switch, the operations (:meth:`CasOperations.root_replaced`) give every
open file an inode of its own, so it keeps reading the version it opened,
and tell the kernel to forget the names and attributes it cached, so new
lookups and listings see the new root at once.

Must never: write anything (every change is EROFS before it gets here), or
take a record without :meth:`RemoteNamespace.newer`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..cid import CID
from ..control import ControlClient, RemoteBlockStore, connect
from ..control.schema import NameResolve
from ..errors import CasError, ControlProtocolError
from ..names.namespace import RootState
from ..names.remote import RemoteNamespace
from .tree import FsStat, TreeReader

if TYPE_CHECKING:
    from .operations import CasOperations

log = logging.getLogger("cas.fuse")

CONNECTIONS = 4
"""Control connections for blocks: BlockFetcher reads up to 4 blocks at
once (cas.fuse.handles.FETCH_THREADS), each on a connection of its own."""

T = TypeVar("T")


class _Pool:
    """Control connections to one repository's node, each used by one thread
    at a time. A call that loses its connection (the daemon was restarted)
    is tried once more on a fresh one, so a mount outlives a daemon restart."""

    def __init__(self, repo: Path, clients: list[ControlClient]) -> None:
        self._repo = repo
        self._clients = clients
        self._lock = threading.Lock()  # guards _clients, the list closed at the end
        self._closed = False
        self._idle: queue.SimpleQueue[ControlClient] = queue.SimpleQueue()
        for client in clients:
            self._idle.put(client)

    def call(self, fn: Callable[[ControlClient], T]) -> T:
        client = self._idle.get()
        try:
            try:
                return fn(client)
            except ControlProtocolError:
                if self._closed:
                    raise  # closed by the mount's end: no fresh connection
                fresh = connect(self._repo)
                if fresh is None:
                    raise
                self._replace(client, fresh)
                client = fresh
                return fn(client)
        finally:
            self._idle.put(client)

    def _replace(self, old: ControlClient, new: ControlClient) -> None:
        old.close()
        with self._lock:
            self._clients = [new if c is old else c for c in self._clients]

    def close(self) -> None:
        """Close every connection; calls blocked on one fail now."""
        with self._lock:
            self._closed = True
            for client in self._clients:
                client.close()


class NodeLink:
    """The node owning a repository, through its control socket: verified
    blocks (the node fetches from the network those it lacks) and namespace
    records. Thread-safe: block reads share a pool of connections, and
    record lookups, which may take seconds, have one of their own."""

    def __init__(self, repo: Path, clients: list[ControlClient]) -> None:
        self._records = _Pool(repo, clients[:1])
        self._blocks = _Pool(repo, clients[1:])

    @classmethod
    def connect(cls, repo: Path, connections: int = CONNECTIONS) -> NodeLink | None:
        """A link to the node owning ``repo``, or None if no node answers."""
        clients: list[ControlClient] = []
        try:
            for _ in range(connections + 1):
                client = connect(repo)
                if client is None:
                    break
                clients.append(client)
        except BaseException:
            for client in clients:
                client.close()
            raise
        if len(clients) < connections + 1:
            for client in clients:
                client.close()
            return None
        return cls(repo, clients)

    def get(self, cid: CID) -> bytes:
        return self._blocks.call(lambda client: RemoteBlockStore(client).get(cid))  # verifies the bytes

    def has(self, cid: CID) -> bool:
        return self._blocks.call(lambda client: RemoteBlockStore(client).has(cid))

    def resolve(self, public_key: bytes) -> bytes | None:
        """The newest record the node finds for ``public_key`` (its bytes,
        unverified here: :class:`RemoteNamespace` verifies them), or None."""
        found = self._records.call(lambda client: client.call(NameResolve(public_key)))["found"]
        record = found.get("record") if isinstance(found, dict) else None
        return record if isinstance(record, bytes) else None

    def close(self) -> None:
        self._records.close()
        self._blocks.close()


class SerialThread:
    """Runs functions in a worker thread one at a time (the tree's caches
    are not for concurrent use), as ``Node.in_store_thread`` does for the
    local mount."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(fn, *args)


class PublishedTree(TreeReader):
    """The mount's tree of a published namespace: read-only, rooted at the
    newest record adopted so far. Raises PathNotFoundError if ``record`` is
    not a valid record of ``public_key``."""

    def __init__(self, link: NodeLink, public_key: bytes, record: bytes, repo: Path) -> None:
        super().__init__(link)
        self.public_key = public_key
        self.namespace = RemoteNamespace(link, public_key, [record])  # type: ignore[arg-type]  # the link reads blocks (get, has), all a namespace reads
        self._repo = repo

    @property
    def seq(self) -> int:
        return self.namespace.record.seq

    def root(self) -> RootState:
        return self.namespace.current()

    def newer(self, records: list[bytes]) -> RemoteNamespace | None:
        """What to switch to, if ``records`` hold a valid, newer record."""
        return self.namespace.newer(records)

    def adopt(self, namespace: RemoteNamespace) -> None:
        self.namespace = namespace

    def statfs(self) -> FsStat:
        st = os.statvfs(self._repo)
        return FsStat(st.f_frsize, st.f_blocks, 0, st.f_files)  # nothing can be written here


async def follow(tree: PublishedTree, link: NodeLink, ops: CasOperations, interval: float) -> None:
    """Resolve the namespace every ``interval`` seconds and switch the mount
    to a newer valid record when one arrives; runs until cancelled."""
    key = tree.public_key.hex()
    while True:
        await trio.sleep(interval)
        try:
            found = await trio.to_thread.run_sync(link.resolve, tree.public_key, abandon_on_cancel=True)
        except CasError as exc:  # the node is busy or went away: keep what is mounted
            log.warning("cannot resolve namespace %s now: %s", key, exc)
            continue
        newer = tree.newer([found]) if found is not None else None
        if newer is None:
            continue
        old = tree.seq
        tree.adopt(newer)
        log.info("namespace %s: sequence %d replaces %d", key, tree.seq, old)
        await ops.root_replaced()
