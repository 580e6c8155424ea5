"""The node: one trio process that owns a repository and joins the network.

Owns, for as long as it runs: the repository (its lock, the
:class:`~cas.store.LocalStore`), the node identity (``<repo>/keys/node.key``,
mode 0600), the DHT (:class:`~cas.dht.driver.DhtDriver` over a
:class:`~cas.dht.routing.RoutingTable` that is saved as DAG-CBOR to
``<repo>/dht/routing.cbor`` periodically and on shutdown, and reloaded on
start), the TCP listener, the bucket-refresh timer, and the control socket
``<repo>/control.sock`` with the op table (:func:`control_ops`) through which
the CLI, the library and the mount reach the node; the integrity of what it
stores (quarantine, healing, the scrub, ``verify --repair``); and, on
SIGHUP, the settings it can change while running. What readers read
through the node is :mod:`.network_store`; what peers and the replicator
reach, :mod:`.peer_store`.

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

import math
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ..blocks import Block
from ..cid import CID, RAW, parse_cid
from ..control import (
    SOCKET_NAME,
    bind_socket,
    serve_control,
)
from ..dht.driver import DhtDriver
from ..dht.ids import id_from_bytes
from ..dht.publisher import Publisher, StoreRecords
from ..dht.replicator import Replicator
from ..dht.routing import RoutingTable
from ..errors import (
    BlockNotFoundError,
    BootstrapError,
    BootstrapRefusedError,
    CasError,
    CorruptBlockError,
    InvalidBlockError,
    RepositoryError,
)
from ..group_commit import GroupCommitter
from ..names.changes import Change
from ..names.history import Thin, ThinReport, policy_from_config
from ..names.namespace import Namespace
from ..net.admission import (
    Admission,
)
from ..net.identity import Identity
from ..net.network_key import (
    NetworkKey,
    describe_network,
    network_key_for,
)
from ..scrub import ScrubPace
from ..store import LocalStore, Placed, VerifyReport
from ..store._links import links_of
from .config import (
    BOOTSTRAP_RETRY_FIRST,
    BOOTSTRAP_RETRY_MAX,
    KEY_PATH,
    MAX_CHANGES_PER_GROUP,
    MAX_VERIFIED_MEMORY,
    REACHABILITY_RETRY,
    REACHABILITY_TRIES,
    READERS_NOTICE,
    READERS_POLL,
    RECENT_LOG,
    REJOIN_CHECK,
    RELOADABLE,
    SCRUB_FIRST_DELAY,
    SCRUB_PAGE,
    THIN_FIRST_DELAY,
    NodeAddress,
    NodeConfig,
    Settings,
    format_address,
    network_settings,
)
from .network_store import NetworkBlockStore
from .ops import control_ops
from .peer_store import PeerStore
from .table import TABLE_PATH, load_table, save_table

if TYPE_CHECKING:  # the mount's machinery loads only when a mount is asked for
    from ..fuse.served import ServedMount
    from .gateway import Gateway

T = TypeVar("T")


@dataclass
class IntegrityStats:
    """What the node did about damaged blocks since it started."""

    quarantined: int = 0  # stored blocks that failed verification
    restored: int = 0  # of those, replaced by a good copy from the network
    unrecoverable: int = 0  # heals that found no good copy
    scrubbed_bytes: int = 0
    scrub_passes: int = 0


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
        self.nursery: trio.Nursery | None = None  # the running node's, for background work
        self.blocks = NetworkBlockStore(self)  # what reads through the node read
        self.address: NodeAddress | None = None
        self._store_lock = trio.Lock()
        self._cancel = trio.CancelScope()
        self.internal_errors: list[str] = []
        self.recent_log: deque[tuple[float, str]] = deque(maxlen=RECENT_LOG)
        """The node's last log lines (unix time, line), for the status page."""
        self.gateway: Gateway | None = None  # the HTTP gateway's handler, when one runs
        self.gateway_address: tuple[str, int] | None = None
        self.mount: ServedMount | None = None  # the mount it serves (cas.node.ops_mount)
        self._scrub_pace: ScrubPace | None = None
        self.reachable = {"yes": "yes", "no": "no"}.get(config.reachable, "checking")
        """What this node knows of its reachability: yes, no (a DHT client),
        checking, or unknown (the checks could not tell; it stays a server)."""

    def stop(self) -> None:
        """Begin a clean shutdown (safe to call from any task)."""
        self._cancel.cancel()

    async def reload(self, new: NodeConfig) -> None:
        """Take the settings of ``new`` that can change while the node runs
        (SIGHUP: ``RELOADABLE``); say which others differ, which wait for
        the next start."""
        changed = [f.name for f in fields(NodeConfig) if getattr(new, f.name) != getattr(self.config, f.name)]
        now = [name for name in changed if name in RELOADABLE]
        later = [name for name in changed if name not in RELOADABLE]
        for name in now:
            setattr(self.config, name, getattr(new, name))
        self._apply_reloaded()
        store = self.store
        if store is not None:
            def limits() -> None:
                store.held.quota = self.config.quota
                store.held.peer_quota = self.config.peer_quota
                store.held.reserve = self.config.disk_reserve

            await self.in_store_thread(limits)
        self.log("settings read again: " + (f"applied {', '.join(now)}" if now else "nothing changed that applies now")
                  + (f"; {', '.join(later)} change at the next start" if later else ""))

    def _apply_reloaded(self) -> None:
        """Hand the reloadable settings now in ``config`` to the parts that
        keep their own copy (those read at each use need nothing)."""
        config = self.config
        if self.dht is not None:
            self.dht.refresh_interval = config.refresh_interval
            self.dht.admission.max_connections = config.max_connections
            self.dht.admission.max_connections_per_address = config.max_connections_per_address
        if self.replicator is not None:
            self.replicator.retry_interval = config.retry_interval
        if self._scrub_pace is not None:
            self._scrub_pace.rate, self._scrub_pace.period = config.scrub_rate, config.scrub_period

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        repo = Path(self.config.repo).expanduser().absolute()  # noqa: ASYNC240 (no disk access: a getcwd at most)
        store = await trio.to_thread.run_sync(
            lambda: LocalStore.open(repo, create=True, wait=self.config.lock_wait))
        try:
            # It deletes at any time (repair drops, quarantine): readers go
            # through it, none beside it (those open are waited for).
            await self._keep_out_readers(store)
            store.held.quota = self.config.quota
            store.held.peer_quota = self.config.peer_quota
            store.held.reserve = self.config.disk_reserve
            self.store = store
            self.namespace = Namespace(store)
            await self._run_with_store(store, repo, task_status)
        finally:
            store.close()

    async def _run_with_store(self, store: LocalStore, repo: Path, task_status: Any) -> None:
        (repo / "keys").mkdir(mode=0o700, exist_ok=True)
        network_key = network_key_for(repo, self.config.network_key)
        settings = self.settings = network_settings(self.config, network_key, store)
        store.held.set_lease(settings.lease)  # committed with the first barrier
        identity = self.identity = self._identity(repo, settings.id_difficulty)
        table = load_table(repo / TABLE_PATH, id_from_bytes(identity.node_id), trio.current_time())
        listeners = await self._listen()
        port = listeners[0].socket.getsockname()[1]
        gateway_listeners = await self._listen_gateway()
        self.address = NodeAddress(identity.node_id, self.config.listen_host, port, announce=self.config.announce,
                                   gateway=self.gateway_address)
        self._build_parts(store, identity, table, network_key, settings, port)
        await self._serve(repo, listeners, network_key, task_status, gateway_listeners)

    async def _keep_out_readers(self, store: LocalStore) -> None:
        """Wait (cancellably: SIGTERM still stops it) for the commands
        reading the repository beside its last owner to finish."""
        notice = trio.current_time() + READERS_NOTICE
        while not await self.in_store_thread(store.keep_out_readers):
            if trio.current_time() >= notice:
                notice = math.inf
                self.log("waiting for the commands reading the repository to finish")
            await trio.sleep(READERS_POLL)

    def _identity(self, repo: Path, difficulty: int) -> Identity:
        """The node's key, made anew if it shows less work than the network asks."""
        identity, replaced = Identity.for_node(repo / KEY_PATH, difficulty)
        if replaced:
            self.log(f"this node's key did not show the work its network asks for ({difficulty} bits); "
                      f"made a new one (the old is {KEY_PATH}.old): its node ID changes")
        return identity

    async def _listen(self) -> list[trio.SocketListener]:
        try:
            return await trio.open_tcp_listeners(self.config.listen_port, host=self.config.listen_host)
        except OSError as exc:
            raise CasError(f"cannot listen on {self.config.listen_host}:{self.config.listen_port}: "
                           f"{exc.strerror or exc}") from None

    async def _listen_gateway(self) -> list[trio.SocketListener]:
        if self.config.gateway is None:
            return []
        host, port = self.config.gateway
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise CasError(f"the gateway cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.gateway_address = (host, listeners[0].socket.getsockname()[1])
        return listeners

    def _build_parts(self, store: LocalStore, identity: Identity, table: RoutingTable,
                     network_key: NetworkKey | None, settings: Settings, port: int) -> None:
        """The DHT driver, the replicator, the publisher and the group
        committers, wired to this node's store thread (not yet running)."""
        difficulty = settings.id_difficulty
        announce = self.config.announce
        dht = self.dht = DhtDriver(
            identity, table, blocks=PeerStore(self), keeper=PeerStore(self),
            records=StoreRecords(lambda: store, self.in_store_thread),
            listen_port=None if self.config.reachable == "no" else announce[1] if announce else port,
            listen_host=self.config.listen_host, announce_host=announce[0] if announce else None,
            handshake_timeout=self.config.handshake_timeout, idle_timeout=self.config.idle_timeout,
            refresh_interval=self.config.refresh_interval,
            network_key=network_key, on_refused=self.log, id_difficulty=difficulty,
            admission=Admission(max_connections=self.config.max_connections,
                                max_connections_per_address=self.config.max_connections_per_address,
                                handshake_rate_per_address=self.config.handshake_rate_per_address),
            frame_timeout=self.config.frame_timeout, frame_memory=self.config.frame_memory)
        self.replicator = Replicator(
            dht, PeerStore(self), replicas=settings.replicas,
            repair_interval=settings.repair_interval, retry_interval=self.config.retry_interval,
            lease=settings.lease)
        self.publisher = Publisher(dht, lambda: store, self.in_store_thread, replicas=settings.replicas)
        self.group_commit = GroupCommitter(
            lambda blocks: self.in_store_thread(store.held.accept_many, blocks),
            weight=lambda item: len(item.block.data))
        self.namespace_commits = GroupCommitter(
            lambda changes: self.in_store_thread(self.apply_changes, changes),
            weight=lambda change: 1, max_weight=MAX_CHANGES_PER_GROUP)

    async def _serve(self, repo: Path, listeners: list[trio.SocketListener], network_key: NetworkKey | None,
                     task_status: Any, gateway_listeners: list[trio.SocketListener]) -> None:
        """Run every part until the node stops; then close the listeners and
        the control socket and save the routing table."""
        dht, replicator, publisher = self.dht, self.replicator, self.publisher
        assert dht is not None and replicator is not None and publisher is not None
        assert self.group_commit is not None and self.namespace_commits is not None
        control = None
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    await nursery.start(self.group_commit.run)
                    await nursery.start(self.namespace_commits.run)
                    await nursery.start(dht.run)
                    await nursery.start(replicator.run)
                    await nursery.start(publisher.run)
                    nursery.start_soon(trio.serve_listeners, dht.handle_inbound, listeners)
                    if self.config.bootstrap:
                        try:
                            await dht.bootstrap(self.config.bootstrap)
                        except BootstrapRefusedError:
                            raise  # on another network: a configuration to fix, not a peer to wait for
                        except BootstrapError as exc:
                            # Not fatal: nodes may start in any order. The
                            # node serves its own repository meanwhile.
                            self.log(f"{exc}; running alone and retrying")
                        nursery.start_soon(self._keep_joined)
                    elif len(dht.table):
                        nursery.start_soon(self._rejoin)
                    control = bind_socket(repo / SOCKET_NAME)
                    nursery.start_soon(serve_control, control, control_ops(self), self._log_internal)
                    nursery.start_soon(dht.refresh_loop)
                    nursery.start_soon(dht.revisit_loop)
                    if self.config.reachable == "auto":
                        nursery.start_soon(self._check_reachable)
                    nursery.start_soon(self._save_loop)
                    nursery.start_soon(self._scrub_loop)
                    nursery.start_soon(self._thin_loop)
                    if gateway_listeners:
                        from .gateway import serve_gateway  # loads h11 and prometheus-client only when asked for

                        nursery.start_soon(serve_gateway, self, gateway_listeners, self.log)
                    # Once, as it starts serving (a start that fails says only why).
                    self.log(describe_network(network_key))
                    task_status.started(self.address)
        finally:
            for listener in [*listeners, *gateway_listeners]:
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
                self.log(f"{exc}; retrying in {delay:g} s")
                continue
            self.log("joined the network through " + ", ".join(f"{c.host}:{c.port}" for c in reached))

    async def _check_reachable(self) -> None:
        """``--reachable auto``: once the node knows peers, ask some to dial
        it back; if none can, become a DHT client (and say so)."""
        assert self.dht is not None and self.address is not None
        dht = self.dht
        for _ in range(REACHABILITY_TRIES):
            while not len(dht.table):
                await trio.sleep(BOOTSTRAP_RETRY_FIRST)
            found = await dht.check_reachable()
            if found.reachable is True:
                self.reachable = "yes"
                return
            if found.reachable is False:
                self.reachable = "no"
                await dht.become_client()
                announce = self.address.announce
                where = f"port {self.address.port}" if announce is None else format_address(*announce)
                self.log(f"none of the {found.failed} peers that answered could dial this node back at "
                          f"{where}: running as a DHT client (stores and reads "
                          f"through the network, never offered as a contact); to serve, forward a port "
                          f"to this machine, run with --announce PUBLIC_HOST:PORT and --reachable yes")
                return
            await trio.sleep(REACHABILITY_RETRY)
        self.reachable = "unknown"

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
                self.log(f"cannot save the routing table: {exc}")

    def log(self, text: str) -> None:
        """One line in the node's log (its standard error: the journal under systemd)."""
        self.recent_log.append((time.time(), text))
        print(f"cas daemon: {text}", file=sys.stderr, flush=True)

    def _log_internal(self, op: str, exc: BaseException) -> None:
        self.internal_errors.append(f"{op}: {type(exc).__name__}: {exc}")
        self.log(f"internal error in {op}: {type(exc).__name__}: {exc}")

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
            except (BlockNotFoundError, InvalidBlockError):  # not here, or damaged: not ours to list
                continue
            order.append(cid)
            try:
                stack.extend(links_of(cid, data))
            except InvalidBlockError:
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

        self._verified.pop(damage.cid, None)
        if await self.in_store_thread(take_out):
            self.integrity.quarantined += 1
            self.log(f"block {damage.cid} failed verification in {damage.place}; quarantined, "
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
                self.log(f"block {cid} restored from the network")
            self.mark_verified(cid)
            return data
        finally:
            self._healing.pop(cid).set()

    async def _from_network(self, cid: CID) -> Block:
        """A copy of ``cid`` from another node (FIND_BLOCK), verified as it
        came in; BlockNotFoundError if no node answers with one."""
        online = self.replicator is not None and self.dht is not None and len(self.dht.table)
        block = await self.replicator.fetch(cid) if online and self.replicator is not None else None
        if block is None:
            raise BlockNotFoundError(cid, "the repository nor on any node of the network")
        return block  # a Block: verified by the driver as it came in

    def heal_soon(self, cid: CID) -> None:
        """Heal ``cid`` in the background (a damage found while serving a peer)."""
        if self.nursery is not None and cid not in self._healing:
            self.nursery.start_soon(self._heal_quietly, cid)

    async def _heal_quietly(self, cid: CID) -> None:
        try:
            await self.heal(cid)
        except CasError as exc:  # a background job's edge: said, and tried again at the next scrub
            self.log(f"block {cid} stays quarantined: {exc}")

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
            self.log(f"block {damage.cid} failed verification in {damage.place}; quarantined")
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
                except CasError as exc:  # one block's failure; the report lists what is still wrong
                    self.log(f"verify --repair: {exc}")
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
        self.log(f"block {cid} was missing; fetched from the network")

    async def _scrub_loop(self) -> None:
        """Re-verify every stored block, at the configured rate, once per
        period (cas/scrub.py); what fails is quarantined and healed."""
        assert self.store is not None
        store = self.store
        pace = self._scrub_pace = ScrubPace(self.config.scrub_rate, self.config.scrub_period)
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
                self.log(f"scrub: a pass took longer than the period ({self.config.scrub_period:g} s); "
                          "raise --scrub-rate or --scrub-period")
            await trio.sleep(rest)

    async def thin(self, *, dry_run: bool = False) -> ThinReport:
        """Drop the namespace versions the repository's history policy no
        longer keeps (cas.names.history), in the store thread, so never
        racing a commit (a client's change, the mount's). The policy is read
        from config.json each time: ``cas config set history.keep`` applies
        at the next round. The version last published on the network is
        kept, like the newest and those whose root is pinned. A page of the
        history per trip to the store thread."""
        assert self.store is not None
        store = self.store
        last = self.publisher.last if self.publisher is not None else None
        protected = () if last is None else (last.record.seq,)

        def start() -> Thin:
            policy = policy_from_config(LocalStore.check_config(store.path))
            return Thin(store, policy, time.time_ns(), protected=protected, dry_run=dry_run)

        job = await self.in_store_thread(start)
        # A page per trip to the store thread: changes waiting to commit
        # (clients', the mount's) go in between pages.
        while (report := await self.in_store_thread(job.step)) is None:
            pass
        return report

    async def _thin_loop(self) -> None:
        """Thin the history a minute after the start (a mount or a daemon
        that runs for minutes at a time still thins), then every
        ``thin_interval`` (the mount makes many versions)."""
        wait = min(THIN_FIRST_DELAY, self.config.thin_interval)
        while True:
            await trio.sleep(wait)
            wait = self.config.thin_interval
            try:
                report = await self.thin()
            except CasError as exc:  # a background job's edge: said, and tried again next round
                self.log(f"history not thinned: {exc}")
                continue
            if report.dropped:
                self.log(f"history: dropped {report.dropped} of {report.versions} versions "
                          f"(history.keep = {report.policy})")

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
                except Exception as exc:  # this change's outcome, told to its client; the group goes on
                    outcomes.append(exc)
        return outcomes

    # -- helpers for the op handlers ------------------------------------------

    async def commit_mount(self) -> None:
        """Commit what was changed in the mount this node serves, if any:
        before another writer's change (of two, the later wins) and before
        a read of the namespace (a command sees what the mount did);
        docs/architecture.md, "Concurrent changes"."""
        if self.mount is not None:
            await self.mount.flush()

    async def in_store_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread, one at a time: writes fsync,
        and the metadata database is not for concurrent use."""
        async with self._store_lock:
            return await trio.to_thread.run_sync(fn, *args)


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
        except (BlockNotFoundError, InvalidBlockError, RepositoryError):  # gone meanwhile, or unreadable now
            continue
        else:
            good.append(cid)
    return good, damaged


def run_daemon(config: NodeConfig, on_ready: Callable[[NodeAddress], None],
               reload: Callable[[], NodeConfig] | None = None) -> None:
    """Run a node in this process until SIGTERM or SIGINT, then shut down
    cleanly. ``on_ready`` is called once it listens and has bootstrapped.
    On SIGHUP, ``reload`` gives the settings as they are now, and the node
    takes what it can of them (:meth:`Node.reload`); a reload that fails
    is reported and changes nothing. A :class:`CasError` from the node
    (bootstrap failed, repository in use) is raised as itself, not inside
    an exception group."""

    async def main() -> None:
        node = Node(config)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    async for signum in signals:
                        if signum != signal.SIGHUP:
                            if node.mount is not None:
                                await node.mount.end()  # what programs wrote there is committed first
                            node.stop()
                            return
                        if reload is None:
                            continue
                        try:
                            new = await trio.to_thread.run_sync(reload)
                        except CasError as exc:  # a setting gone bad: keep running as before
                            node.log(f"settings not read again: {exc}")
                            continue
                        await node.reload(new)

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
