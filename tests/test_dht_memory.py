"""The DHT driver with no sockets: drivers whose pools dial each other over
``trio.testing`` memory streams, on the autojump clock, so that a timeout
of hours takes milliseconds. What is checked is what the TCP tests
(test_dht_driver.py) check, at the driver's public surface: pings, lookups
that find the k closest, stores verified and kept, a silent peer failed
after its timeout, a dead peer found gone by the pool's probe; and the
responder's answers to store failures, by exception type."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from cas.blocks import AsyncStoreAdapter, Block, MemoryBlockStore
from cas.cid import RAW
from cas.dht.driver import DhtDriver
from cas.dht.ids import id_from_bytes
from cas.dht.pool import Dialer
from cas.dht.providers import ProviderRecords
from cas.dht.responder import Responder, error_code
from cas.dht.routing import Contact, RoutingTable
from cas.errors import (
    CasError,
    ConcurrentUpdateError,
    InvalidRecordError,
    RepositoryError,
    RequestTimeoutError,
    StaleRecordError,
    StorageQuotaError,
)
from cas.net import messages as msg
from cas.net.identity import Identity

pytestmark = pytest.mark.timeout(60)

PORT = 4000


def autojump() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class MemoryNet:
    """Nodes at 10.0.0.N:4000, each listening on the net's table of
    addresses; a dial to an address nobody holds is refused."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: list[DhtDriver] = []
        self.listening: dict[tuple[str, int], tuple[DhtDriver, trio.Nursery]] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.ports = iter(range(50000, 60000))

    def dialer(self, source: str) -> Dialer:
        async def dial(host: str, port: int) -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            found = self.listening.get((host, port))
            if found is None:
                raise ConnectionRefusedError(111, "Connection refused")
            node, its_nursery = found
            ours, theirs = trio.testing.memory_stream_pair()
            try:
                its_nursery.start_soon(node.pool.serve, theirs, source, next(self.ports))
            except RuntimeError:  # the node is shutting down: as a listener closing
                raise ConnectionRefusedError(111, "Connection refused") from None
            return ours

        return dial

    async def add(self, *, cls: type[DhtDriver] = DhtDriver, k: int = 4,
                  store: MemoryBlockStore | None = None, **options: object) -> DhtDriver:
        identity = Identity.generate()
        host = f"10.0.0.{len(self.nodes) + 1}"
        driver = cls(identity, RoutingTable(id_from_bytes(identity.node_id), k=k), k=k,
                     listen_port=PORT, dialer=self.dialer(host), rng=random.Random(len(self.nodes)),
                     blocks=AsyncStoreAdapter(MemoryBlockStore() if store is None else store),
                     **options)  # type: ignore[arg-type]

        async def run_node(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scopes[driver.own_id] = scope
                try:
                    async with trio.open_nursery() as inner:
                        await inner.start(driver.run)
                        self.listening[host, PORT] = (driver, inner)
                        task_status.started()
                finally:
                    self.listening.pop((host, PORT), None)

        await self.nursery.start(run_node)
        self.nodes.append(driver)
        return driver

    def kill(self, driver: DhtDriver) -> None:
        """As a process dies: its listener goes, then its connections."""
        self.listening.pop((self.contact(driver).host, PORT), None)
        self.scopes[driver.own_id].cancel()

    def contact(self, driver: DhtDriver) -> Contact:
        return Contact(driver.own_id, f"10.0.0.{self.nodes.index(driver) + 1}", PORT)


@asynccontextmanager
async def memory_network() -> AsyncIterator[MemoryNet]:
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery)
        try:
            yield net
        finally:
            nursery.cancel_scope.cancel()


async def build(net: MemoryNet, n: int, **options: object) -> list[DhtDriver]:
    """``n`` nodes more, each joining by the net's first node; then every
    node refreshes."""
    for _ in range(n):
        node = await net.add(**options)
        if node is not net.nodes[0]:
            await node.bootstrap([("10.0.0.1", PORT)])
    for node in net.nodes:
        await node.refresh(force=True)
    return net.nodes


class MemoryKeeper:
    """A BlockKeeper that keeps blocks in a dict, or refuses each with ``refusal``."""

    def __init__(self, refusal: BaseException | None = None) -> None:
        self.kept: dict[object, bytes] = {}
        self.refusal = refusal

    async def keep_many(self, blocks: list[Block], sender: bytes | None = None,
                        leases: Sequence[int] = ()) -> list[object]:
        await trio.lowlevel.checkpoint()
        if self.refusal is not None:
            return [self.refusal for _ in blocks]
        for block in blocks:
            self.kept[block.cid] = block.data
        return [True for _ in blocks]


def test_two_drivers_ping_each_other_over_memory_streams() -> None:
    async def main() -> None:
        async with memory_network() as net:
            a, b = await net.add(), await net.add()
            assert await a.ping(net.contact(b))
            assert a.connected(b.own_id) and b.own_id in a.table
            assert await b.ping(net.contact(a))  # b learnt a from the request: its listen port
            assert a.handshakes_out == 1 and b.handshakes_in == 1  # one connection, both ways

    trio.run(main, clock=autojump())


def test_lookups_over_memory_streams_find_exactly_the_k_closest() -> None:
    async def main() -> None:
        async with memory_network() as net:
            nodes = await build(net, 10)
            rng = random.Random(3)
            for node in nodes:
                target = rng.getrandbits(256)
                found = await node.find_node(target)
                others = sorted((n.own_id for n in nodes if n is not node), key=lambda i: i ^ target)
                assert [c.node_id for c in found.lookup.closest] == others[:4]

    trio.run(main, clock=autojump())


def test_a_stored_block_is_kept_and_found_by_lookup() -> None:
    async def main() -> None:
        async with memory_network() as net:
            keeper, served = MemoryKeeper(), MemoryBlockStore()
            # k above the node count: the holder is among the k closest to any
            # key, so the lookup reaches it wherever the random IDs fall.
            holder = await net.add(keeper=keeper, store=served, k=8)
            nodes = await build(net, 5, k=8)
            assert nodes[0] is holder
            block = Block.of(RAW, b"kept over memory streams")
            sender = nodes[-1]
            outcome = await sender.store_block(net.contact(holder), block.cid, block.data)
            assert outcome.status == "stored" and keeper.kept[block.cid] == block.data
            served.put(block)  # the holder serves from its blocks (the node's keeper puts them there)
            found = await nodes[1].find_block(block.cid)
            assert found.block == block and found.holder is not None  # a verified Block
            assert found.holder.node_id == holder.own_id

    trio.run(main, clock=autojump())


def test_a_silent_peer_fails_after_hours_of_fake_time() -> None:
    class Silent(DhtDriver):
        def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
            return None if isinstance(request, msg.FindNode) else super().answer_now(requester, request)

        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    async def main() -> None:
        async with memory_network() as net:
            hours = 3 * 3600.0
            asker = await net.add(request_timeout=hours, idle_timeout=10 * hours)
            target = await net.add(cls=Silent, idle_timeout=10 * hours)
            asker.seen(net.contact(target))
            start = trio.current_time()
            with pytest.raises(RequestTimeoutError):
                await asker.request(net.contact(target), msg.FindNode(bytes(32)))
            assert trio.current_time() - start >= hours
            assert asker.table.failures(target.own_id) == 1

    trio.run(main, clock=autojump())


def test_a_node_that_dies_is_found_gone_by_the_pools_probe() -> None:
    async def main() -> None:
        async with memory_network() as net:
            a, b = await net.add(), await net.add()
            lost: list[int] = []
            a.peer_lost.append(lost.append)
            assert await a.ping(net.contact(b))
            net.kill(b)  # its connections close (the peer closed: a probes) and nobody listens there
            with trio.fail_after(60):
                while b.own_id in a.table:
                    await trio.sleep(0.1)
            assert lost == [b.own_id] and not a.connected(b.own_id)

    trio.run(main, clock=autojump())


# -- the responder: store failures answered by their type ----------------------------


def test_error_codes_follow_the_exception_type_not_its_message() -> None:
    assert error_code(StorageQuotaError("anything")) == "full"
    assert error_code(RepositoryError("disk is read-only")) == "refused"
    assert error_code(StaleRecordError("whatever it says")) == "stale"
    assert error_code(InvalidRecordError("root record has a bad sequence number or time")) == "invalid"
    assert error_code(ConcurrentUpdateError("quota full")) == "error"  # unexpected: ours, not "full"
    assert error_code(CasError("full")) == "error"


def test_store_blocks_answers_each_refusal_by_its_type() -> None:
    async def main() -> list[str]:
        codes = []
        block = Block.of(RAW, b"x")
        for refusal in (StorageQuotaError("no room"), RepositoryError("read-only"), CasError("odd")):
            identity = Identity.generate()
            driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)),
                               keeper=MemoryKeeper(refusal))
            answer = await driver.answer(12345, msg.StoreBlocks.of([(block.cid, block.data)]))
            assert isinstance(answer, msg.Stored)
            codes += answer.codes
        return codes

    assert trio.run(main) == ["full", "refused", "error"]


def test_put_record_answers_full_only_for_a_quota_and_error_for_the_unexpected() -> None:
    class Records:
        def __init__(self, error: CasError) -> None:
            self.error = error

        async def get_record(self, key: bytes) -> bytes | None:
            return None

        async def put_record(self, key: bytes, record: bytes, sender: bytes) -> None:
            raise self.error

    async def main() -> list[str]:
        codes = []
        for error in (StorageQuotaError("no room"), StaleRecordError("older"),
                      InvalidRecordError("forged"), ConcurrentUpdateError("odd")):
            identity = Identity.generate()
            driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)), records=Records(error))
            answer = await driver.answer(12345, msg.PutRecord(bytes(32), b"record"))
            assert isinstance(answer, msg.Error)
            codes.append(answer.code)
        return codes

    assert trio.run(main) == ["full", "stale", "invalid", "error"]


def test_the_responder_decides_without_io() -> None:
    own = id_from_bytes(Identity.generate().node_id)
    table = RoutingTable(own, k=4)
    responder = Responder(table, ProviderRecords(), k=4, keeps_blocks=False)
    assert isinstance(responder.answer_now(1, msg.Ping(), 0.0), msg.Pong)
    assert isinstance(responder.answer_now(1, msg.FindNode(bytes(32)), 0.0), msg.Nodes)
    block = Block.of(RAW, b"y")
    refused = responder.start(1, msg.StoreBlocks.of([(block.cid, block.data)]), 0.0)
    assert isinstance(refused, msg.Error) and refused.code == "refused"


def test_the_driver_module_still_exports_what_its_importers_use() -> None:
    from cas.dht import driver

    for name in driver.__all__:
        assert hasattr(driver, name), name
    # The exceptions moved to the pool are the same classes, not copies.
    from cas.dht import pool
    assert driver.PeerRefusedError is pool.PeerRefusedError
    assert issubclass(driver.PeerRefusedError, driver.PeerUnreachableError)
