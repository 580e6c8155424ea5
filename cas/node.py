"""The node: one trio process that owns a repository and joins the network.

Owns, for as long as it runs: the repository (its lock, the
:class:`~cas.store.LocalStore`), the node identity (``<repo>/keys/node.key``,
mode 0600), the DHT (:class:`~cas.dht.driver.DhtDriver` over a
:class:`~cas.dht.routing.RoutingTable` that is saved as DAG-CBOR to
``<repo>/dht/routing.cbor`` periodically and on shutdown, and reloaded on
start), the TCP listener, the bucket-refresh timer, and the control socket
``<repo>/control.sock`` with the op table (:func:`control_ops`) through which
the CLI, the library and the mount reach the node.

Every task lives in the nursery of :meth:`Node.run`; cancelling it (what
SIGTERM and SIGINT do in :func:`run_daemon`) shuts down in order: stop
accepting, save the routing table, remove the socket file, release the
repository. kill -9 skips all of that and loses nothing but the last few
minutes of routing-table freshness: the lock dies with the process, and a
socket file nobody answers on is ignored by clients and replaced on start.

Must never: interpret wire messages (the DHT driver and cas.net do), hold
protocol logic (the sans-IO objects in cas.dht do), block the event loop on
disk writes that fsync (they run in a worker thread under the store lock),
or pickle anything.
"""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import stat as stat_module
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from . import dagcbor
from .blocks import Block
from .chunker import chunk_stream
from .cid import CID, RAW, parse_cid
from .control import (
    MAX_ITERATE_BATCH,
    MAX_PROBLEMS,
    SOCKET_NAME,
    ClientState,
    Op,
    OpTable,
    bind_socket,
    serve_control,
)
from .dht.driver import BootstrapError, BootstrapRefusedError, DhtDriver, FindResult
from .dht.ids import id_from_bytes, id_to_bytes, key_for_digest
from .dht.publisher import Publisher, StoreRecords, name_ops
from .dht.replication import DEFAULT_REPLICAS
from .dht.replicator import REPAIR_INTERVAL, RETRY_INTERVAL, Replicator
from .dht.routing import REFRESH_INTERVAL, RoutingTable
from .durable import write_atomically
from .errors import (
    BlockNotFoundError,
    CasError,
    CorruptBlockError,
    InvalidInputError,
    RepositoryError,
)
from .files import FileAdd
from .files import write_file as write_file_to  # the op below has the name
from .group_commit import GroupCommitter
from .names.changes import Change, change_from_value
from .names.namespace import Namespace, RootState
from .net.admission import (
    HANDSHAKE_RATE_PER_ADDRESS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    Admission,
)
from .net.connection import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT
from .net.framing import FRAME_MEMORY
from .net.identity import DEFAULT_ID_DIFFICULTY, Identity
from .net.network_key import (
    NetworkKey,
    NetworkSettings,
    describe_network,
    network_key_for,
)
from .scrub import DEFAULT_SCRUB_PERIOD, DEFAULT_SCRUB_RATE, ScrubPace
from .store import DEFAULT_QUOTA, LocalStore, Placed, StorageQuotaError, VerifyReport
from .store._held import DEFAULT_LEASE, DEFAULT_PEER_QUOTA
from .store._links import links_of
from .store._modes import private_dir

DEFAULT_PORT = 4710
KEY_PATH = Path("keys") / "node.key"
TABLE_PATH = Path("dht") / "routing.cbor"
SAVE_INTERVAL = 300.0
"""Seconds between saves of the routing table while running (and once more
at shutdown): a kill -9 loses at most this much table history."""
MAX_TABLE_FILE = 1 << 20
READ_AHEAD = 8
"""Blocks fetched ahead of a reader that is reading from the network: the
next siblings (in file order) of a block fetched, each its own FIND_BLOCK
lookup, all in flight at once, so a sequential read does not pay one
lookup per block in turn."""
MAX_READ_AHEAD_INDEX = 65536
"""Child → (siblings, position) entries remembered for read-ahead."""
ADD_STEP_BYTES = 2 * 1024 * 1024
"""File content ``add_file`` reads and stores per trip to the store thread;
the step's blocks are queued for placement before the next one."""
BOOTSTRAP_RETRY_FIRST = 1.0
BOOTSTRAP_RETRY_MAX = 60.0
"""Seconds between tries to join through the bootstrap peers while none
answers: from the first, doubling after each failure, up to the most."""
REJOIN_CHECK = 5.0
"""Seconds between checks that the routing table still has someone in it."""
MAX_VERIFIED_MEMORY = 1 << 16
"""Blocks whose last verification the node remembers (CID -> when), for
HAVE: beyond it the oldest are forgotten and read again when asked about."""
HAVE_VERIFY_BYTES = 16 * 1024 * 1024
"""Bytes one HAVE may make this node read and hash to verify blocks it has
not verified within the scrub period: a peer's batch of 1024 blocks must
not hold the store thread for a gigabyte of reading (nor be a way to make
it). Blocks past it are answered no."""
SCRUB_FIRST_DELAY = 60.0
"""Seconds after start before the first scrub pass (or the scrub period, if
shorter)."""
SCRUB_PAGE = 16
"""Blocks the scrub looks up, then reads and verifies, per trip to the store
thread: at most 16 MiB, so the store thread is never held long (measured:
one trip per block scrubbed 256 MiB at 244 MiB/s, 16 per trip at 629)."""
MAX_CHANGES_PER_GROUP = 64
"""Namespace changes committed with one barrier, at most: bounds how long
one group holds the store thread (the rest wait for the next group)."""
WRITE_REPORT_BYTES = 4 * 1024 * 1024
"""How often ``write_file`` tells its client how far it is: also how far a
copy runs on after the client has gone (a report is how the op sees it)."""


@dataclass
class NodeConfig:
    """How to run a node. ``listen_port`` 0 picks a free port."""

    repo: Path
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    bootstrap: list[tuple[str, int]] = field(default_factory=list)
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    frame_timeout: float = FRAME_TIMEOUT
    """Seconds a frame may take from its first byte to its last, either way."""
    frame_memory: int = FRAME_MEMORY
    """Bytes of large frames being received at once, over all connections."""
    max_connections: int = MAX_CONNECTIONS
    """Inbound connections held at once (docs/network.md, "Admission")."""
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    handshake_rate_per_address: float = HANDSHAKE_RATE_PER_ADDRESS
    """New inbound handshakes a second from one address, on average (docs/network.md, "Admission")."""
    refresh_interval: float = REFRESH_INTERVAL
    save_interval: float = SAVE_INTERVAL
    quota: int = DEFAULT_QUOTA
    """Bytes of other nodes' blocks this node keeps (STORE_BLOCK and blocks
    fetched to answer reads); beyond it STORE_BLOCK is refused as ``full``."""
    peer_quota: int = DEFAULT_PEER_QUOTA
    """Bytes of blocks any one other node may have placed here."""
    disk_reserve: int | None = None
    """Free disk never given to other nodes' blocks (None: a quarter of the
    disk, at most 10 GiB)."""
    lease: float | None = None
    """Seconds a block held for another node is kept without a renewal; the
    longest lease this node grants, and the one it asks for its own. None:
    the network key's setting, else the default."""
    replicas: int | None = None
    """Copies of every block; None: the network key's setting, else the default."""
    repair_interval: float | None = None
    """Seconds between repair rounds; None: the network key's, else the default."""
    retry_interval: float = RETRY_INTERVAL
    lock_wait: float = 0.0
    """Seconds to wait for the repository while another process uses it."""
    scrub_rate: float = DEFAULT_SCRUB_RATE
    """Bytes per second the scrub re-reads stored blocks at most."""
    scrub_period: float = DEFAULT_SCRUB_PERIOD
    """Seconds within which every stored block is verified again (the scrub
    runs a pass at most this often); also how long a verification stands
    for HAVE before the block is read again."""
    id_difficulty: int | None = None
    """Bits of work a node ID must show (cas.net.identity); None: the
    repository's ``"id_difficulty"`` in config.json, else the default."""
    network_key: Path | None = None
    """The key file of the private network to join; None: the repository's
    ``keys/network.key`` if it has one, else the open network
    (:func:`cas.net.network_key.network_key_for`)."""


@dataclass
class IntegrityStats:
    """What the node did about damaged blocks since it started."""

    quarantined: int = 0  # stored blocks that failed verification
    restored: int = 0  # of those, replaced by a good copy from the network
    unrecoverable: int = 0  # heals that found no good copy
    scrubbed_bytes: int = 0
    scrub_passes: int = 0


@dataclass(frozen=True)
class NodeAddress:
    node_id: bytes
    host: str
    port: int

    def describe(self) -> str:
        return f"node {self.node_id.hex()} listening on {self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) → (host, port), or InvalidInputError."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", text.strip())
    if not m:
        raise InvalidInputError(f"{text!r} is not an address; write HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"port {port} in {text!r} is out of range")
    return host, port


@dataclass(frozen=True)
class Settings:
    """The settings a node runs with that every node of its network shares."""

    replicas: int
    repair_interval: float
    lease: float
    id_difficulty: int


def network_settings(config: NodeConfig, key: NetworkKey | None, store: LocalStore) -> Settings:
    """Each shared setting from the daemon's flag, else the network key's
    settings, else (the ID difficulty) the repository's config.json, else
    the default. A flag that differs from the key's setting is refused: a
    node that kept its own would not be of that network."""
    from_key = key.settings if key is not None else NetworkSettings()

    def pick(name: str, flag: float | None, default: float, flag_name: str) -> float:
        shared = getattr(from_key, name)
        if flag is not None and shared is not None and flag != shared:
            assert key is not None
            raise InvalidInputError(
                f"{flag_name} {flag:g} differs from the network's {shared:g}, set in its key {key.source}; "
                f"every node of a network uses its key's settings (leave {flag_name} out)")
        return flag if flag is not None else shared if shared is not None else default

    return Settings(
        replicas=int(pick("replicas", config.replicas, DEFAULT_REPLICAS, "--replicas")),
        repair_interval=pick("repair_interval", config.repair_interval, REPAIR_INTERVAL, "--repair-interval"),
        lease=pick("lease", config.lease, DEFAULT_LEASE, "--lease"),
        id_difficulty=int(pick("id_difficulty", config.id_difficulty, id_difficulty(store, config.id_difficulty),
                               "--id-difficulty")))


def id_difficulty(store: LocalStore, configured: int | None = None) -> int:
    """The work node IDs must show: ``configured`` (the daemon's flag), else
    the repository's ``"id_difficulty"``, else DEFAULT_ID_DIFFICULTY."""
    if configured is not None:
        return configured
    value = store.config.get("id_difficulty", DEFAULT_ID_DIFFICULTY)
    if type(value) is not int or not 0 <= value <= 40:
        raise RepositoryError(f"{store.path}/config.json: \"id_difficulty\" must be a whole number of bits, 0 to 40")
    return value


def load_table(path: Path, own_id: int, now: float) -> RoutingTable:
    """The saved table at ``path``, or an empty one if there is none or it
    belongs to another identity. A damaged file raises RepositoryError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RoutingTable(own_id, now=now)
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TABLE_FILE:
        raise RepositoryError(f"{path} is too large to be a routing table; delete it")
    try:
        record = dagcbor.decode(raw)
    except CasError:
        raise RepositoryError(f"{path} is damaged; delete it to start from the bootstrap peers") from None
    if isinstance(record, dict) and record.get("node_id") != id_to_bytes(own_id):
        return RoutingTable(own_id, now=now)  # the key was replaced: the table is someone else's
    return RoutingTable.from_record(record, now)


def save_table(path: Path, table: RoutingTable, now: float) -> None:
    """Write the table atomically and durably (:mod:`cas.durable`)."""
    data = dagcbor.encode(table.to_record(now))
    private_dir(path.parent)  # 0700, and the file 0600, whatever the umask (cas/store/_modes.py)
    write_atomically(path, data)


class Node:
    """A running node; see the module docstring. Use :meth:`run` in a
    nursery (``await nursery.start(node.run)`` returns its address)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.store: LocalStore | None = None
        self.identity: Identity | None = None
        self.dht: DhtDriver | None = None
        self.replicator: Replicator | None = None
        self.publisher: Publisher | None = None
        self.group_commit: GroupCommitter[Placed] | None = None
        self.namespace: Namespace | None = None
        self.namespace_commits: GroupCommitter[Change] | None = None
        self.integrity = IntegrityStats()
        self.settings: Settings | None = None
        self._verified: OrderedDict[CID, float] = OrderedDict()  # CID -> trio time of its last verification
        self._healing: dict[CID, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._fetching: dict[CID, trio.Event] = {}
        self._siblings: dict[CID, tuple[list[CID], int]] = {}
        self._fetched: set[CID] = set()
        self._read_ahead_limit = trio.CapacityLimiter(READ_AHEAD)
        self.read_ahead_count = 0
        self.address: NodeAddress | None = None
        self._store_lock = trio.Lock()
        self._cancel = trio.CancelScope()
        self.internal_errors: list[str] = []

    def stop(self) -> None:
        """Begin a clean shutdown (safe to call from any task)."""
        self._cancel.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        repo = Path(self.config.repo).expanduser().absolute()  # noqa: ASYNC240 (no disk access: a getcwd at most)
        store = await trio.to_thread.run_sync(
            lambda: LocalStore.open(repo, create=True, wait=self.config.lock_wait))
        store.held.quota = self.config.quota
        store.held.peer_quota = self.config.peer_quota
        store.held.reserve = self.config.disk_reserve
        self.store = store
        self.namespace = Namespace(store)
        try:
            await self._run_with_store(store, repo, task_status)
        finally:
            store.close()

    async def _run_with_store(self, store: LocalStore, repo: Path, task_status: Any) -> None:
        (repo / "keys").mkdir(mode=0o700, exist_ok=True)
        network_key = network_key_for(repo, self.config.network_key)
        settings = self.settings = network_settings(self.config, network_key, store)
        store.held.set_lease(settings.lease)  # committed with the first barrier
        difficulty = settings.id_difficulty
        identity, replaced = Identity.for_node(repo / KEY_PATH, difficulty)
        self.identity = identity
        if replaced:
            self._log(f"this node's key did not show the work its network asks for ({difficulty} bits); "
                      f"made a new one (the old is {KEY_PATH}.old): its node ID changes")
        own_id = id_from_bytes(identity.node_id)
        table = load_table(repo / TABLE_PATH, own_id, trio.current_time())
        try:
            listeners = await trio.open_tcp_listeners(self.config.listen_port, host=self.config.listen_host)
        except OSError as exc:
            raise CasError(f"cannot listen on {self.config.listen_host}:{self.config.listen_port}: "
                           f"{exc.strerror or exc}") from None
        bound = listeners[0].socket.getsockname()
        self.address = NodeAddress(identity.node_id, self.config.listen_host, bound[1])
        dht = self.dht = DhtDriver(
            identity, table, blocks=_StoreThreadBlocks(self), keeper=_StoreThreadBlocks(self),
            records=StoreRecords(lambda: store, self.in_store_thread),
            listen_port=bound[1], listen_host=self.config.listen_host,
            handshake_timeout=self.config.handshake_timeout, idle_timeout=self.config.idle_timeout,
            refresh_interval=self.config.refresh_interval,
            network_key=network_key, on_refused=self._log, id_difficulty=difficulty,
            admission=Admission(max_connections=self.config.max_connections,
                                max_connections_per_address=self.config.max_connections_per_address,
                                handshake_rate_per_address=self.config.handshake_rate_per_address),
            frame_timeout=self.config.frame_timeout, frame_memory=self.config.frame_memory)
        replicator = self.replicator = Replicator(
            dht, _StoreThreadBlocks(self), replicas=settings.replicas,
            repair_interval=settings.repair_interval, retry_interval=self.config.retry_interval,
            lease=settings.lease)
        self.publisher = Publisher(dht, lambda: store, self.in_store_thread, replicas=settings.replicas)
        group_commit = self.group_commit = GroupCommitter(
            lambda blocks: self.in_store_thread(store.held.accept_many, blocks),
            weight=lambda item: len(item.block.data))
        namespace_commits = self.namespace_commits = GroupCommitter(
            lambda changes: self.in_store_thread(self.apply_changes, changes),
            weight=lambda change: 1, max_weight=MAX_CHANGES_PER_GROUP)
        control = None
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(group_commit.run)
                    await nursery.start(namespace_commits.run)
                    await nursery.start(dht.run)
                    await nursery.start(replicator.run)
                    await nursery.start(self.publisher.run)
                    nursery.start_soon(trio.serve_listeners, dht.handle_inbound, listeners)
                    if self.config.bootstrap:
                        try:
                            await dht.bootstrap(self.config.bootstrap)
                        except BootstrapRefusedError:
                            raise  # on another network: a configuration to fix, not a peer to wait for
                        except BootstrapError as exc:
                            # Not fatal: nodes may start in any order. The
                            # node serves its own repository meanwhile.
                            self._log(f"{exc}; running alone and retrying")
                        nursery.start_soon(self._keep_joined)
                    elif len(table):
                        nursery.start_soon(self._rejoin)
                    control = bind_socket(repo / SOCKET_NAME)
                    nursery.start_soon(serve_control, control, control_ops(self), self._log_internal)
                    nursery.start_soon(dht.refresh_loop)
                    nursery.start_soon(self._save_loop)
                    nursery.start_soon(self._scrub_loop)
                    # Once, as it starts serving (a start that fails says only why).
                    self._log(describe_network(network_key))
                    task_status.started(self.address)
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            if control is not None:
                control.close()
                try:
                    (repo / SOCKET_NAME).unlink()
                except FileNotFoundError:
                    pass
            self.save()

    async def _rejoin(self) -> None:
        assert self.dht is not None
        await self.dht.refresh(force=True)

    async def _keep_joined(self) -> None:
        """Whenever the routing table is empty (the bootstrap peers were
        down at start, or every peer has gone since), join again through
        the bootstrap peers, waiting 1 s before the first try and twice as
        long after each failure, up to a minute."""
        assert self.dht is not None
        dht = self.dht
        delay = BOOTSTRAP_RETRY_FIRST
        while True:
            if len(dht.table):
                delay = BOOTSTRAP_RETRY_FIRST
                await trio.sleep(REJOIN_CHECK)
                continue
            await trio.sleep(delay)
            try:
                reached = await dht.bootstrap(self.config.bootstrap)
            except BootstrapError as exc:
                delay = min(delay * 2, BOOTSTRAP_RETRY_MAX)
                self._log(f"{exc}; retrying in {delay:g} s")
                continue
            self._log("joined the network through " + ", ".join(f"{c.host}:{c.port}" for c in reached))

    async def _save_loop(self) -> None:
        while True:
            await trio.sleep(self.config.save_interval)
            self.save()

    def save(self) -> None:
        """Save the routing table now."""
        if self.dht is not None:
            try:
                save_table(Path(self.config.repo).expanduser().absolute() / TABLE_PATH,
                           self.dht.table, trio.current_time())
            except OSError as exc:
                self._log(f"cannot save the routing table: {exc}")

    def _log(self, text: str) -> None:
        print(f"cas daemon: {text}", file=sys.stderr, flush=True)

    def _log_internal(self, op: str, exc: BaseException) -> None:
        self.internal_errors.append(f"{op}: {type(exc).__name__}: {exc}")
        self._log(f"internal error in {op}: {type(exc).__name__}: {exc}")

    # -- reading from the network ----------------------------------------------

    async def fetch(self, cid: CID) -> bytes:
        """A block this node lacks, from the network (FIND_BLOCK; the driver
        verifies it and passes over peers that lie), kept as held for the
        network if the quota has room. Raises BlockNotFoundError if no node
        has it. Starts read-ahead of the blocks a sequential reader wants next."""
        pending = self._fetching.get(cid)
        if pending is not None:  # being read ahead: wait for it, then look again
            await pending.wait()
            assert self.store is not None
            try:
                data = bytes(await self.in_store_thread(self.store.blocks.get, cid))
            except BlockNotFoundError:
                pass  # not kept (quota): fetch it ourselves
            else:
                self.after_read(cid, data)
                return data
        data = await self._fetch_and_keep(cid)
        self.after_read(cid, data)
        return data

    def after_read(self, cid: CID, data: bytes) -> None:
        """Read-ahead bookkeeping for a block served to a client: remember
        where a tree node's children sit, and if this block came from the
        network (now or by read-ahead), fetch the next ones in the
        background."""
        if cid.codec != RAW:
            try:
                children = links_of(cid, data)
            except CasError:
                children = []
            if len(self._siblings) > MAX_READ_AHEAD_INDEX:
                self._siblings.clear()
            for i, child in enumerate(children):
                self._siblings[child] = (children, i)
            if cid in self._fetched:
                self._read_ahead(children[:READ_AHEAD])
        if cid in self._fetched:
            self._fetched.discard(cid)
            entry = self._siblings.get(cid)
            if entry is not None:
                siblings, i = entry
                self._read_ahead(siblings[i + 1:i + 1 + READ_AHEAD])

    def _read_ahead(self, cids: list[CID]) -> None:
        if self._nursery is None:
            return
        for cid in cids:
            if cid not in self._fetching and cid not in self._fetched:
                self._fetching[cid] = trio.Event()
                self._nursery.start_soon(self._read_ahead_one, cid)

    async def _read_ahead_one(self, cid: CID) -> None:
        assert self.store is not None
        try:
            async with self._read_ahead_limit:
                if not await self.in_store_thread(self.store.blocks.has, cid):
                    await self._fetch_and_keep(cid)
                    self.read_ahead_count += 1
        except CasError:
            pass  # the reader will ask again and get the error itself
        finally:
            self._fetching.pop(cid).set()

    async def _fetch_and_keep(self, cid: CID) -> bytes:
        data = await self.replicator.fetch(cid) if self.replicator is not None else None
        if data is None:
            raise BlockNotFoundError(cid, "the repository nor on any node of the network")
        block = Block(cid, data)  # verified again: nothing unverified is kept
        assert self.group_commit is not None
        try:
            # Kept with the other blocks arriving meanwhile (read-ahead
            # fetches several at once): one barrier for them all.
            await self.group_commit.keep(Placed(block))
        except StorageQuotaError:
            pass  # served, not kept
        if len(self._fetched) > MAX_READ_AHEAD_INDEX:
            self._fetched.clear()
        self._fetched.add(cid)  # came from the network: reading it reads ahead
        return data

    def dag_blocks(self, root: CID, limit: int = 1 << 20) -> list[CID]:
        """The blocks of the DAG under ``root`` that this repository has (in
        the store thread): what replication reports on for one added item."""
        assert self.store is not None
        seen: set[CID] = set()
        order: list[CID] = []
        stack = [root]
        while stack and len(order) < limit:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            if cid.codec == RAW:  # a leaf links nowhere: whether it is here is all there is to know
                if self.store.blocks.has(cid):
                    order.append(cid)
                continue
            try:
                data = self.store.blocks.get(cid)
            except CasError:
                continue
            order.append(cid)
            try:
                stack.extend(links_of(cid, data))
            except CasError:
                pass
        return order

    # -- integrity: quarantine, healing, scrub ----------------------------------

    def mark_verified(self, cid: CID) -> None:
        """``cid``'s stored copy was read and verified just now."""
        self._verified[cid] = trio.current_time()
        self._verified.move_to_end(cid)
        while len(self._verified) > MAX_VERIFIED_MEMORY:
            self._verified.popitem(last=False)

    def recently_verified(self, cid: CID) -> bool:
        """Whether ``cid`` was verified within the scrub period."""
        when = self._verified.get(cid)
        return when is not None and trio.current_time() - when < self.config.scrub_period

    async def quarantine(self, damage: CorruptBlockError) -> None:
        """Take a stored block that failed verification out of service
        (durably) and log it, once, with where it lay."""
        assert self.store is not None
        store = self.store

        def take_out() -> bool:
            new = store.quarantine.add(damage)
            store.blocks.barrier()
            return new

        self._verified.pop(damage.cid, None)  # type: ignore[call-overload]
        if await self.in_store_thread(take_out):
            self.integrity.quarantined += 1
            self._log(f"block {damage.cid} failed verification in {damage.place}; quarantined, "
                      "a good copy is fetched from the network")

    async def heal(self, cid: CID) -> bytes:
        """A good copy of quarantined ``cid``, fetched from the network and
        kept as the bad one was (own or held). Raises BlockNotFoundError if
        no node has one (the block stays quarantined)."""
        assert self.store is not None
        pending = self._healing.get(cid)
        if pending is not None:  # another reader is healing it: its copy will do
            await pending.wait()
            return bytes(await self.in_store_thread(self.store.blocks.get, cid))
        self._healing[cid] = trio.Event()
        try:
            try:
                block = await self._from_network(cid)
            except BlockNotFoundError:
                self.integrity.unrecoverable += 1
                raise BlockNotFoundError(
                    cid, "the repository (its copy failed verification and is quarantined) nor on any node") from None
            data = block.data
            if await self.in_store_thread(self.store.quarantine.restore, block):
                self.integrity.restored += 1
                self._log(f"block {cid} restored from the network")
            self.mark_verified(cid)
            return data
        finally:
            self._healing.pop(cid).set()

    async def _from_network(self, cid: CID) -> Block:
        """A copy of ``cid`` from another node (FIND_BLOCK), verified here
        again; BlockNotFoundError if no node answers with one."""
        online = self.replicator is not None and self.dht is not None and len(self.dht.table)
        data = await self.replicator.fetch(cid) if online and self.replicator is not None else None
        if data is None:
            raise BlockNotFoundError(cid, "the repository nor on any node of the network")
        return Block(cid, data)  # verified again: nothing unverified is kept

    def heal_soon(self, cid: CID) -> None:
        """Heal ``cid`` in the background (a damage found while serving a peer)."""
        if self._nursery is not None and cid not in self._healing:
            self._nursery.start_soon(self._heal_quietly, cid)

    async def _heal_quietly(self, cid: CID) -> None:
        try:
            await self.heal(cid)
        except CasError as exc:
            self._log(f"block {cid} stays quarantined: {exc}")

    async def verify(self, *, repair: bool = False) -> VerifyReport:
        """``cas repo verify``; with ``repair``, damaged blocks are
        quarantined and every quarantined or missing block that the
        network has is fetched back (own, or held as it was), round after
        round while that finds more (a missing node's children are seen
        once it is back), then everything is verified again."""
        assert self.store is not None
        store = self.store
        report = await self.in_store_thread(lambda: store.verify(repair=repair))
        if not repair:
            return report
        for damage in report.corrupt:
            self._log(f"block {damage.cid} failed verification in {damage.place}; quarantined")
        self.integrity.quarantined += len(report.corrupt)
        repaired = 0
        tried: set[CID] = set()
        while True:
            wanted = [q.cid for q in await self.in_store_thread(store.quarantine.list)]
            wanted += [parse_cid(p.cid) for p in report.problems if p.what.startswith("missing")]
            wanted = [cid for cid in dict.fromkeys(wanted) if cid not in tried]
            if not wanted:
                break
            tried.update(wanted)
            for cid in wanted:
                try:
                    await self._fetch_back(cid)
                    repaired += 1
                except CasError as exc:
                    self._log(f"verify --repair: {exc}")
            report = await self.in_store_thread(store.verify)
        report.repaired = repaired
        return report

    async def _fetch_back(self, cid: CID) -> None:
        """A quarantined or missing block, from the network, kept as own (or
        held, for a quarantined held block)."""
        assert self.store is not None
        store = self.store
        if await self.in_store_thread(store.quarantine.is_quarantined, cid):
            await self.heal(cid)
            return
        block = await self._from_network(cid)

        def keep() -> None:
            store.blocks.put(block)
            store.blocks.barrier()

        await self.in_store_thread(keep)
        self._log(f"block {cid} was missing; fetched from the network")

    async def _scrub_loop(self) -> None:
        """Re-verify every stored block, at the configured rate, once per
        period (cas/scrub.py); what fails is quarantined and healed."""
        assert self.store is not None
        store = self.store
        pace = ScrubPace(self.config.scrub_rate, self.config.scrub_period)
        # Not in the first minute: a node starting (a mount, a daemon after a
        # reboot) has its own reading to do first.
        await trio.sleep(min(SCRUB_FIRST_DELAY, self.config.scrub_period))
        while True:
            pace.start_pass(trio.current_time())
            after: CID | None = None
            while page := await self.in_store_thread(store.blocks.page, after, SCRUB_PAGE):
                after = page[-1][0]
                # Blocks a reader or HAVE verified within the period are not
                # read again; the rest are paced, then read and verified
                # together, in one trip to the store thread per page.
                due = [(cid, size) for cid, size in page if not self.recently_verified(cid)]
                for _cid, size in due:
                    while (wait := pace.wait_before(size, trio.current_time())) > 0:
                        await trio.sleep(wait)
                if not due:
                    continue
                good, damaged = await self.in_store_thread(_verify_stored, store, [cid for cid, _ in due])
                for cid in good:
                    self.mark_verified(cid)
                for damage in damaged:
                    await self.quarantine(damage)
                    self.heal_soon(damage.cid)
                self.integrity.scrubbed_bytes += sum(size for _, size in due)
            self.integrity.scrub_passes += 1
            rest, overran = pace.end_pass(trio.current_time())
            if overran:
                self._log(f"scrub: a pass took longer than the period ({self.config.scrub_period:g} s); "
                          "raise --scrub-rate or --scrub-period")
            await trio.sleep(rest)

    def apply_changes(self, changes: list[Change]) -> list[object]:
        """Apply namespace changes in turn, each committed as its own
        version, all made durable by one barrier at the end (store thread).
        For each, the root it committed or the exception that refused it."""
        assert self.store is not None and self.namespace is not None
        outcomes: list[object] = []
        with self.store.grouped_roots():
            for change in changes:
                try:
                    outcomes.append(self.namespace.apply(change))
                except Exception as exc:
                    outcomes.append(exc)
        return outcomes

    # -- helpers for the op handlers ------------------------------------------

    async def in_store_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread, one at a time: writes fsync,
        and the metadata database is not for concurrent use."""
        async with self._store_lock:
            return await trio.to_thread.run_sync(fn, *args)


class _StoreThreadBlocks:
    """The node's store as the DHT driver reads it (``has``/``get``), every
    call in the store thread like the control ops."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def has(self, cid: CID) -> bool:
        assert self._node.store is not None
        return bool(await self._node.in_store_thread(self._node.store.blocks.has, cid))

    async def get(self, cid: CID) -> bytes:
        """A verified copy, for a peer (FIND_BLOCK) or the repair round; a
        stored copy that fails verification is quarantined, healed in the
        background, and reported as not here."""
        node = self._node
        assert node.store is not None
        try:
            data = bytes(await node.in_store_thread(node.store.blocks.get, cid))
        except CorruptBlockError as damage:
            await node.quarantine(damage)
            node.heal_soon(cid)
            raise BlockNotFoundError(cid) from None
        node.mark_verified(cid)
        return data

    async def have(self, cids: Sequence[CID]) -> list[bool]:
        """HAVE: for each CID, whether a copy here verified within the scrub
        period; one not checked that recently is read and hashed now, and a
        bad one quarantined (and healed in the background). A block held
        for the network whose lease ran out is not claimed: nobody wants
        it kept, and gc will take it."""
        node = self._node
        assert node.store is not None
        store = node.store
        recheck = {cid for cid in cids if not node.recently_verified(cid)}

        def check() -> tuple[list[bool], list[CID], list[CorruptBlockError]]:
            present: list[bool] = []
            read: list[CID] = []
            bad: list[CorruptBlockError] = []
            budget = HAVE_VERIFY_BYTES
            expired = store.held.expired_among(cids)
            for cid in cids:
                ok = store.blocks.has(cid) and cid not in expired
                if ok and cid in recheck:
                    if budget <= 0:
                        # Not verified in time for this answer, so not
                        # claimed: the asker sends a copy (kept as it is)
                        # or asks again, by when the scrub or a later HAVE
                        # has verified more.
                        present.append(False)
                        continue
                    try:
                        budget -= len(store.blocks.get(cid))
                        read.append(cid)
                    except CorruptBlockError as damage:
                        bad.append(damage)
                        ok = False
                    except CasError:
                        ok = False
                present.append(ok)
            return present, read, bad

        present, read, bad = await node.in_store_thread(check)
        for cid in read:
            node.mark_verified(cid)
        for damage in bad:
            await node.quarantine(damage)
            node.heal_soon(damage.cid)
        return present

    async def leases(self) -> dict[CID, float]:
        assert self._node.store is not None
        return dict(await self._node.in_store_thread(self._node.store.held.leases))

    async def renew(self, cids: Sequence[CID], seconds: int) -> None:
        """A HAVE with a lease: keep those held here that much longer."""
        store = self._node.store
        assert store is not None

        def renew() -> None:
            store.held.renew(cids, seconds)
            store.blocks.barrier()

        await self._node.in_store_thread(renew)

    async def all_blocks(self) -> list[CID]:
        store = self._node.store
        assert store is not None
        return list(await self._node.in_store_thread(lambda: list(store.blocks.iterate())))

    async def drop(self, cids: list[CID]) -> list[CID]:
        assert self._node.store is not None
        return list(await self._node.in_store_thread(self._node.store.drop_held, cids))

    async def sizes(self, cids: list[CID]) -> dict[CID, int]:
        assert self._node.store is not None
        return dict(await self._node.in_store_thread(self._node.store.blocks.sizes, cids))

    async def keep_many(self, blocks: list[Block], sender: bytes | None = None,
                        leases: Sequence[int] = ()) -> list[object]:
        """Blocks a peer (``sender``) placed here (verified), each for its
        lease in seconds (none: the network's): held for the network, within
        the quota, the sender's share and the disk reserve, durable on
        return (group-committed with the others arriving at the same time);
        per block, True/False or the quota error that refused it."""
        assert self._node.group_commit is not None
        return await self._node.group_commit.keep_many(
            [Placed(block, sender, leases[i] if leases else None) for i, block in enumerate(blocks)])


def _verify_stored(store: LocalStore, cids: list[CID]) -> tuple[list[CID], list[CorruptBlockError]]:
    """Read and verify each of ``cids`` (store thread): those that verified,
    and the damage of those that did not. Blocks gone meanwhile (gc) or
    unreadable for another reason are in neither: the next pass sees them."""
    good: list[CID] = []
    damaged: list[CorruptBlockError] = []
    for cid in cids:
        try:
            store.blocks.get(cid)
        except CorruptBlockError as damage:
            damaged.append(damage)
        except CasError:
            continue
        else:
            good.append(cid)
    return good, damaged


# -- the op table ---------------------------------------------------------------------


MAX_PUT_BATCH = 1024
"""Blocks one ``put_many`` may carry (the frame limit bounds their bytes)."""


def _cid_arg(args: dict[str, Any], name: str = "cid") -> CID:
    value = args.get(name)
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        return parse_cid(value)
    raise InvalidInputError(f"argument {name!r} must be a CID")


def _bytes_arg(args: dict[str, Any], name: str) -> bytes:
    value = args.get(name)
    if not isinstance(value, bytes):
        raise InvalidInputError(f"argument {name!r} must be bytes")
    return value


def parse_target(text: str) -> tuple[int, CID | None]:
    """A lookup target from the command line: a node ID (64 hex digits) or a
    CID (whose key is its digest)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return id_from_bytes(bytes.fromhex(text)), None
    cid = parse_cid(text)
    return key_for_digest(cid.digest), cid


class _OwnBlocks:
    """A write session whose blocks are the node's own (a local client's),
    even those a peer sent first: what ``add_file`` stores through."""

    def __init__(self, writer: Any, held: Any) -> None:
        self._writer = writer
        self._held = held

    def put(self, block: Block) -> bool:
        new = bool(self._writer.put(block))
        self._held.claim(block.cid)
        return new


class _FileFrom:
    """A regular file read from ``offset`` with ``pread``: the descriptor's
    position, shared with the client that passed it, is never moved."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._at = offset

    def readinto(self, buffer: memoryview) -> int:
        try:
            n = os.preadv(self._fd, [buffer], self._at)
        except OSError as exc:
            raise InvalidInputError(f"cannot read the file being added: {exc.strerror or exc}") from None
        self._at += n
        return n


class _PackFirst:
    """What a worker thread reads a file through for the ``write_file`` op:
    large blocks straight from their packs, in that thread (the one read
    safe from any thread, ``get_file_block``); anything else (small nodes,
    blocks put since the last barrier, blocks on peers) as the ``get`` op
    finds it, on the node's thread."""

    def __init__(self, blocks: Any, get: Callable[[CID], Awaitable[bytes]], token: trio.lowlevel.TrioToken) -> None:
        self._blocks = blocks
        self._get = get
        self._token = token

    def fetchers(self, cids: Sequence[CID]) -> list[Callable[[], bytes | None] | None]:
        # The reader's batched look-ups (files._LeafLookups), through this
        # thread's connection; a copy that fails verification is left to
        # the node's get, which quarantines it and heals it.
        return [None if fetch is None else partial(self._or_none, fetch)
                for fetch in self._blocks.fetchers(cids, committed=True)]

    @staticmethod
    def _or_none(fetch: Callable[[], bytes | None]) -> bytes | None:
        try:
            return fetch()
        except CorruptBlockError:
            return None  # ask get

    def get(self, cid: CID) -> bytes:
        try:
            data = self._blocks.get_file_block(cid)
        except CorruptBlockError:
            data = None
        if data is None:
            data = trio.from_thread.run(self._get, cid, trio_token=self._token)
        return data

    def release(self) -> None:
        self._blocks.release_thread()


def control_ops(node: Node) -> OpTable:
    """The node's op table: block store, pins and reports, then node ops.

    To add ops (the namespace, say), write ``names_ops(node) -> OpTable`` in
    your module and merge it in the ``return`` below; that is the one place.
    """
    def publisher() -> Publisher:
        assert node.publisher is not None
        return node.publisher

    def store() -> LocalStore:
        assert node.store is not None
        return node.store

    return {**_store_ops(node), **_node_ops(node), **_namespace_ops(node),
            **name_ops(publisher, store, node.in_store_thread)}


def _namespace_ops(node: Node) -> OpTable:
    async def namespace_change(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """Apply a client's namespace change here, in the store thread, one
        change at a time: clients' changes never race each other (the rule:
        docs/architecture.md, "Concurrent changes"). Changes that arrive
        together are committed together (:meth:`Node.apply_changes`)."""
        change = change_from_value(args.get("change"))
        assert node.namespace_commits is not None
        state = await node.namespace_commits.keep(change)
        assert isinstance(state, RootState)
        if node.publisher is not None:
            node.publisher.root_changed()  # published namespaces go out now, not at the next interval
        return {"seq": state.seq, "root": state.root, "time_ns": state.time_ns, "public_key": state.public_key}

    async def namespace_resolve(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """What a path names, in one round trip (the client would read one
        directory node per level over the socket)."""
        path, at = args.get("path"), args.get("at")
        if not isinstance(path, str) or not (at is None or (type(at) is int and at >= 0)):
            raise InvalidInputError("arguments 'path' (text) and 'at' (a sequence number or null) are needed")
        assert node.namespace is not None
        found = await node.in_store_thread(node.namespace.resolve, path, at)
        return found.to_value()

    return {"namespace_change": Op(namespace_change), "namespace_resolve": Op(namespace_resolve)}


def _store_ops(node: Node) -> OpTable:
    def store() -> LocalStore:
        assert node.store is not None
        return node.store

    async def ping(args: dict[str, Any], client: ClientState) -> str:
        return "pong"

    async def has(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().blocks.has, _cid_arg(args)))

    async def get_block(cid: CID) -> bytes:
        try:
            data = bytes(await node.in_store_thread(store().blocks.get, cid))
        except CorruptBlockError as damage:
            # A local read heals itself from the network instead of failing.
            await node.quarantine(damage)
            return await node.heal(cid)
        except BlockNotFoundError:
            if await node.in_store_thread(store().quarantine.is_quarantined, cid):
                return await node.heal(cid)  # kept as it was (own or held) when it comes back
            if node.dht is None or not len(node.dht.table):
                raise  # alone: the repository is all there is
            return await node.fetch(cid)
        if (cid.codec != RAW or cid in node._fetched) and node.dht is not None and len(node.dht.table):
            node.after_read(cid, data)  # tree nodes: where their children sit, for read-ahead
        return data

    async def get(args: dict[str, Any], client: ClientState) -> bytes:
        return await get_block(_cid_arg(args))

    async def write_file(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[Any]]:
        """Write bytes [offset, offset + length) of file ``cid`` to the
        descriptor that came with the request: ``{"written": n}`` every
        ``WRITE_REPORT_BYTES`` and at the end (the last is the total), or
        ``{"failed": errno}`` if a write failed (EPIPE: the descriptor's
        reader went away). The bytes never cross the socket: one worker
        thread reads, verifies and writes them (a pipe may block it, never
        the node), asking the node only for blocks that are not in a pack
        (small nodes, blocks from peers). A report is also how the op
        learns that its client has gone; the copy stops then."""
        fd = client.take_fd()
        try:
            cid = _cid_arg(args)
            offset, length = args.get("offset", 0), args.get("length")
            if type(offset) is not int or offset < 0 or (
                    length is not None and (type(length) is not int or length < 0)):
                raise InvalidInputError("arguments 'offset' and 'length' must be byte counts (integers >= 0)")
        except BaseException:
            os.close(fd)
            raise
        token = trio.lowlevel.current_trio_token()
        reader = _PackFirst(store().blocks, get_block, token)
        gone = threading.Event()
        # Who closes fd: the thread once it has begun (a write may outlast
        # the request: a stalled pipe), else the op, if it gives up first.
        closer: list[str] = []
        closer_lock = threading.Lock()
        reports_in, reports = trio.open_memory_channel[tuple[str, Any]](math.inf)

        def report(kind: str, value: Any) -> None:  # from the thread
            token.run_sync_soon(reports_in.send_nowait, (kind, value))

        def copy_out() -> None:
            with closer_lock:
                if closer:
                    return  # the op gave up before this thread began
                closer.append("thread")
            written = 0
            next_report = WRITE_REPORT_BYTES

            def progress(more: int) -> None:
                nonlocal written, next_report
                written += more
                if written >= next_report:
                    report("written", written)
                    next_report = written + WRITE_REPORT_BYTES

            try:
                report("done", write_file_to(reader, cid, fd, offset, length, stopped=gone.is_set,  # type: ignore[arg-type]  # it reads get and fetchers only (issue 15: one reader)
                                             progress=progress))
            except BaseException as exc:
                report("failed", exc)
            finally:
                os.close(fd)
                reader.release()  # a pooled thread: its index connection goes now

        trio.lowlevel.start_thread_soon(copy_out, lambda result: None)
        try:
            async for kind, value in reports:
                if kind == "failed":
                    if isinstance(value, OSError):  # a write: the client raises it as its own
                        yield [{"failed": value.errno or errno.EIO}]
                        return
                    raise value
                # A report on the way lets the op see a client that has gone.
                yield [{"written": value}]
                if kind == "done":
                    return
        finally:
            gone.set()
            with closer_lock:
                if not closer:
                    closer.append("op")
                    os.close(fd)

    async def session(client: ClientState) -> Any:
        """The connection's write session: gc keeps every block it put (or
        protected) until the client disconnects, by which time its pin or
        root is recorded."""
        found = client.values.get("session")
        if found is None:
            found = client.values["session"] = await node.in_store_thread(store().blocks.open_session)

            async def close() -> None:
                await node.in_store_thread(found.close)

            client.on_close.append(close)
        return found

    async def put_blocks(blocks: list[Block], client: ClientState) -> list[bool]:
        writer = await session(client)

        def put_own() -> list[bool]:
            own = _OwnBlocks(writer, store().held)
            return [own.put(block) for block in blocks]

        new = await node.in_store_thread(put_own)  # one trip to the store thread for the batch
        if node.replicator is not None:
            for block in blocks:
                await node.replicator.place(block.cid, block.data)  # queued: the add goes on
        return new

    async def put(args: dict[str, Any], client: ClientState) -> bool:
        block = Block(_cid_arg(args), _bytes_arg(args, "data"))  # verifies, ≤ 1 MiB
        return (await put_blocks([block], client))[0]

    async def put_many(args: dict[str, Any], client: ClientState) -> list[bool]:
        """Several blocks in one request (a frame holds up to 2 MiB), stored
        in order; for each, whether it was new."""
        items = args.get("blocks")
        if not isinstance(items, list) or not 0 < len(items) <= MAX_PUT_BATCH or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[1], bytes) for i in items):
            raise InvalidInputError(
                f"argument 'blocks' must be a list of 1 to {MAX_PUT_BATCH} [cid, bytes] pairs")
        blocks = [Block(_cid_arg({"cid": cid}), data) for cid, data in items]  # verifies each
        return await put_blocks(blocks, client)

    async def add_file(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[Any]]:
        """Add the regular file whose descriptor came with the request, from
        ``offset`` to its end, as the client's own blocks: ``{"read": n}``
        after each step, then the result. The daemon reads the file itself,
        so its bytes never cross the socket, and places each step's blocks
        while it reads the next."""
        fd = client.take_fd()
        try:
            offset = args.get("offset", 0)
            if type(offset) is not int or offset < 0:
                raise InvalidInputError("argument 'offset' must be a byte offset (an integer >= 0)")
            if not stat_module.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInputError("add_file reads regular files only")
            own = _OwnBlocks(await session(client), store().held)
            add = FileAdd(own, chunk_stream(_FileFrom(fd, offset)))
            while add.result is None:
                blocks, read = await node.in_store_thread(add.step, ADD_STEP_BYTES)
                if node.replicator is not None:
                    for block in blocks:
                        await node.replicator.place(block.cid, block.data)  # queued: the add goes on
                yield [{"read": read}]
            done = add.result
            yield [{"cid": done.cid, "size": done.size, "blocks": done.blocks,
                    "new_blocks": done.new_blocks, "new_bytes": done.new_bytes}]
        finally:
            os.close(fd)

    async def protect(args: dict[str, Any], client: ClientState) -> None:
        await node.in_store_thread((await session(client)).protect, _cid_arg(args))

    async def barrier(args: dict[str, Any], client: ClientState) -> None:
        await node.in_store_thread(store().blocks.barrier)

    async def delete(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().blocks.delete, _cid_arg(args)))

    async def iterate(args: dict[str, Any], client: ClientState) -> AsyncIterator[list[CID]]:
        # A snapshot of the CIDs, taken in one go in the store thread (the
        # metadata database is not for concurrent use), streamed in batches.
        cids: list[CID] = await node.in_store_thread(lambda: list(store().blocks.iterate()))
        for start in range(0, len(cids), MAX_ITERATE_BATCH):
            yield cids[start:start + MAX_ITERATE_BATCH]

    async def pin(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().pin, _cid_arg(args)))

    async def unpin(args: dict[str, Any], client: ClientState) -> bool:
        return bool(await node.in_store_thread(store().unpin, _cid_arg(args)))

    async def pins(args: dict[str, Any], client: ClientState) -> list[CID]:
        return list(await node.in_store_thread(store().pins))

    async def stat(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        st = await node.in_store_thread(store().stat)
        return {"path": st.path, "blocks": st.blocks, "bytes": st.bytes, "pinned": st.pinned,
                "pack_bytes": st.pack_bytes, "dead_bytes": st.dead_bytes}

    async def verify(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        repair = args.get("repair", False)
        if type(repair) is not bool:
            raise InvalidInputError("argument 'repair' must be true or false")
        report = await node.verify(repair=repair)
        return {"blocks_checked": report.blocks_checked, "bytes_checked": report.bytes_checked,
                "problems": [{"cid": p.cid, "what": p.what} for p in report.problems[:MAX_PROBLEMS]],
                "repaired": report.repaired}

    async def gc(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        history = args.get("history")
        if history is not None and (type(history) is not int or history < 0):
            raise InvalidInputError("argument 'history' must be a whole number or null")
        report = await node.in_store_thread(lambda: store().gc(history=history))
        return {"blocks_freed": report.blocks_freed, "bytes_freed": report.bytes_freed,
                "roots_dropped": report.roots_dropped, "expired_freed": report.expired_freed}

    async def roots(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        newest_first, limit = args.get("newest_first", True), args.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError("argument 'limit' must be a whole number or null")
        rows = await node.in_store_thread(lambda: store().roots(newest_first=bool(newest_first), limit=limit))
        return [{"seq": r.seq, "root": r.root, "time_ns": r.time_ns, "record": r.record} for r in rows]

    async def commit_root(args: dict[str, Any], client: ClientState) -> None:
        seq, time_ns = args.get("seq"), args.get("time_ns")
        if type(seq) is not int or type(time_ns) is not int:
            raise InvalidInputError("arguments 'seq' and 'time_ns' must be whole numbers")
        root, record = _cid_arg(args, "root"), _bytes_arg(args, "record")
        await node.in_store_thread(store().commit_root, seq, root, time_ns, record)
        if node.publisher is not None:
            node.publisher.root_changed()  # published namespaces go out now, not at the next interval

    return {
        "gc": Op(gc), "roots": Op(roots), "commit_root": Op(commit_root),
        "ping": Op(ping), "has": Op(has), "get": Op(get), "put": Op(put), "put_many": Op(put_many),
        "add_file": Op(add_file, streaming=True), "write_file": Op(write_file, streaming=True),
        "protect": Op(protect),
        "barrier": Op(barrier),
        "delete": Op(delete), "iterate": Op(iterate, streaming=True), "pin": Op(pin),
        "unpin": Op(unpin), "pins": Op(pins), "stat": Op(stat), "verify": Op(verify),
    }


def _node_ops(node: Node) -> OpTable:
    def dht() -> DhtDriver:
        assert node.dht is not None
        return node.dht

    async def id_(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        assert node.address is not None
        return {"id": node.address.node_id.hex(), "host": node.address.host, "port": node.address.port,
                "peers": len(dht().table)}

    async def peers(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        r = node.replicator
        assert node.store is not None
        held = await node.in_store_thread(node.store.held.by_sender)
        out = []
        for p in dht().peers():
            node_id = p.contact.node_id
            held_blocks, held_bytes = held.get(id_to_bytes(node_id), (0, 0))
            ours_blocks, ours_bytes = r.holders.with_peer(node_id) if r is not None else (0, 0)
            out.append({
                "id": id_to_bytes(node_id).hex(), "host": p.contact.host, "port": p.contact.port,
                "connected": p.connected, "failures": p.failures,
                "last_seen_ms": None if p.last_seen is None else int(p.last_seen * 1000),
                # since start: blocks it acknowledged storing, stores it failed, wrong blocks it sent
                "stores": r.stats.peer_stores[node_id] if r is not None else 0,
                "store_failures": r.stats.peer_store_failures[node_id] if r is not None else 0,
                "bad_blocks": dht().bad_blocks[node_id],
                # what we store with it now: our own blocks it is known to hold
                # (the holder index: confirmed by placement or repair, gone if it is found dead)
                "ours_blocks": ours_blocks, "ours_bytes": ours_bytes,
                # what it stores with us now: blocks and bytes it placed here
                "held_blocks": held_blocks, "held_bytes": held_bytes,
            })
        return out

    async def dht_find(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        text = args.get("target")
        if not isinstance(text, str):
            raise InvalidInputError("argument 'target' must be a node ID or a CID")
        target, cid = parse_target(text)
        found: FindResult = await dht().find_node(target)
        closest = list(found.lookup.closest)
        holders: list[list[bool] | None] = [None] * len(closest)
        if cid is not None:
            async with trio.open_nursery() as nursery:
                async def ask(i: int) -> None:
                    holders[i] = await dht().have(closest[i], [cid])
                for i in range(len(closest)):
                    nursery.start_soon(ask, i)
        assert node.store is not None
        local_has = bool(cid is not None and await node.in_store_thread(node.store.blocks.has, cid))
        return {
            "target": id_to_bytes(target).hex(),
            "cid": None if cid is None else cid.encode(),
            "closest": [
                {"id": id_to_bytes(c.node_id).hex(), "host": c.host, "port": c.port,
                 "has": None if h is None else bool(h[0])}
                for c, h in zip(closest, holders)
            ],
            "local_has": local_has if cid is not None else None,
            "hops": found.lookup.hops,
            "messages": found.lookup.messages,
            "failures": found.lookup.failures,
            "elapsed_us": int(found.seconds * 1e6),
        }

    async def dht_refresh(args: dict[str, Any], client: ClientState) -> int:
        return await dht().refresh(force=True)

    def replicator() -> Replicator:
        assert node.replicator is not None
        return node.replicator

    async def replication_status(args: dict[str, Any], client: ClientState) -> list[dict[str, Any]]:
        """Per CID (a file or directory root): how many of the R closest
        nodes hold every one of its blocks, waiting up to ``wait`` seconds
        for placements still in progress."""
        cids = args.get("cids")
        wait = args.get("wait", 0)
        if not isinstance(cids, list) or not all(isinstance(c, CID) for c in cids) or len(cids) > 1024:
            raise InvalidInputError("argument 'cids' must be a list of at most 1024 CIDs")
        if type(wait) is not int or not 0 <= wait <= 3600:  # DAG-CBOR: whole seconds
            raise InvalidInputError("argument 'wait' must be a number of seconds from 0 to 3600")
        out = []
        deadline = trio.current_time() + wait
        for root in cids:
            blocks = await node.in_store_thread(node.dag_blocks, root)
            settled = await replicator().wait_settled(blocks, max(0.0, deadline - trio.current_time()))
            counts = [replicator().copies(cid) for cid in blocks]
            out.append({
                "cid": root, "blocks": len(blocks), "replicas": replicator().replicas,
                # a block never placed (no peers when it was put) has its local copy only
                "copies": min((1 if c is None else c) for c in counts) if counts else 0,
                "settled": settled,
                "reachable": len(dht().table),
            })
        return out

    async def replication_repair(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """Run a repair round now (the same as the periodic one)."""
        report = await replicator().repair()
        return {"blocks": report.blocks, "stores": report.stores, "dropped": report.dropped,
                "short": report.short, "expired": report.expired}

    async def replication_stats(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        store = node.store
        assert store is not None
        r = replicator()
        return {"replicas": r.replicas, "lease_s": math.ceil(r.lease), "queued": r.stats.queued, "placed": r.stats.placed,
                "stores_sent": r.stats.stores_sent, "store_messages": dht().store_messages_sent,
                "repair_rounds": r.stats.rounds,
                "held_blocks": len(store.held), "held_bytes": store.held.bytes,
                "quota": store.held.quota, "read_ahead": node.read_ahead_count,
                # live: as last placed or repaired, less copies on peers found dead since
                "short": r.short_blocks(), "tracked": len(r.holders), "copies_lost": r.stats.copies_lost,
                "placed_bytes": r.stats.placed_bytes,
                "repair_stores": r.stats.repair_stores, "repair_bytes": r.stats.repair_bytes,
                "repair_dropped": r.stats.repair_dropped, "peers": len(dht().table),
                "repair_rounds_after_loss": r.stats.rounds_after_loss,
                "refusals": r.stats.refusals, "store_failures": sum(r.stats.peer_store_failures.values()),
                "last_failure": r.stats.last_failure,
                "quarantined": node.integrity.quarantined, "restored": node.integrity.restored,
                "unrecoverable": node.integrity.unrecoverable,
                "in_quarantine": await node.in_store_thread(lambda: len(store.quarantine)),
                "scrubbed_bytes": node.integrity.scrubbed_bytes, "scrub_passes": node.integrity.scrub_passes}

    async def net_stats(args: dict[str, Any], client: ClientState) -> dict[str, Any]:
        """The transport's own counts: handshakes, admission, the frame budget."""
        driver = dht()
        admission = driver.admission.statistics()
        budget = driver.frame_budget.statistics()
        return {"handshakes_in": driver.handshakes_in, "handshakes_out": driver.handshakes_out,
                "handshakes": admission.handshakes, "connections": admission.connections,
                "addresses": admission.addresses, "admitted": admission.admitted,
                "refused": admission.refused, "rate_limited": admission.rate_limited,
                "evicted_handshakes": admission.evicted_handshakes,
                "evicted_connections": admission.evicted_connections,
                "frame_memory": {"limit": budget.limit, "per_address": budget.per_address,
                                 "used": budget.used, "peak": budget.peak, "waiting": budget.waiting,
                                 "refusals": budget.refusals,
                                 "granted_after_waiting": budget.granted_after_waiting,
                                 "by_address": driver.frame_budget.held_by_address()}}

    return {"id": Op(id_), "peers": Op(peers), "dht_find": Op(dht_find), "dht_refresh": Op(dht_refresh),
            "replication_status": Op(replication_status), "replication_repair": Op(replication_repair),
            "replication_stats": Op(replication_stats), "net_stats": Op(net_stats)}


# -- the process ------------------------------------------------------------------------


def run_daemon(config: NodeConfig, on_ready: Callable[[NodeAddress], None]) -> None:
    """Run a node in this process until SIGTERM or SIGINT, then shut down
    cleanly. ``on_ready`` is called once it listens and has bootstrapped.
    A :class:`CasError` from the node (bootstrap failed, repository in use)
    is raised as itself, not inside an exception group."""

    async def main() -> None:
        node = Node(config)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for _ in signals:
                        node.stop()
                        return

                async def run_node() -> None:
                    try:
                        # Not nursery.start(): a stop before ready (SIGTERM
                        # during bootstrap) is a clean exit, not an error.
                        await node.run(task_status=_Ready(on_ready))
                    finally:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                nursery.start_soon(run_node)

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        raise first_cas_error(group) or group from None


@dataclass
class _Ready:
    """A ``task_status`` that reports readiness to a callback."""

    callback: Callable[[NodeAddress], None]

    def started(self, value: NodeAddress) -> None:
        self.callback(value)


def first_cas_error(error: BaseException) -> CasError | None:
    """The first CasError inside (possibly nested) exception groups."""
    if isinstance(error, CasError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = first_cas_error(inner)
            if found is not None:
                return found
    return None
