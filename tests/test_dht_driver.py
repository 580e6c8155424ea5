"""The trio DHT driver over real loopback TCP, many nodes in one trio run:
lookups find exactly the k closest, blocks are verified against the CID
asked for (a lying peer is a failed peer), the table learns from every
authenticated message, a full bucket pings its oldest contact, a contact
that proves another identity is forgotten, and a silent peer costs a soft
timeout, not the lookup."""

from __future__ import annotations

import random
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from cas.blocks import AsyncStoreAdapter, Block, MemoryBlockStore
from cas.cid import RAW
from cas.dht import pool as pool_module
from cas.dht.driver import DhtDriver, source_address
from cas.dht.ids import id_from_bytes
from cas.dht.routing import Contact, RoutingTable
from cas.errors import BootstrapError, RemoteProtocolError
from cas.net import connection, noise
from cas.net import messages as msg
from cas.net.admission import Admission
from cas.net.identity import Identity

pytestmark = pytest.mark.timeout(120)


class Net:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.nodes: list[DhtDriver] = []
        self.scopes: dict[int, trio.CancelScope] = {}

    async def add(self, *, cls: type[DhtDriver] = DhtDriver, k: int = 4,
                  table: Callable[[int], RoutingTable] | None = None,
                  store: MemoryBlockStore | None = None, **options: object) -> DhtDriver:
        identity = Identity.generate()
        own = id_from_bytes(identity.node_id)
        # listen_host="127.0.0.N" (an option of the driver) listens there too
        listeners = await trio.open_tcp_listeners(0, host=str(options.get("listen_host", "127.0.0.1")))
        port = listeners[0].socket.getsockname()[1]
        driver = cls(identity, table(own) if table else RoutingTable(own, k=k), k=k, listen_port=port,
                     blocks=AsyncStoreAdapter(MemoryBlockStore() if store is None else store), rng=random.Random(len(self.nodes)),
                     **options)  # type: ignore[arg-type]

        async def run_node(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scopes[driver.own_id] = scope
                async with trio.open_nursery() as inner:
                    await inner.start(driver.run)
                    inner.start_soon(trio.serve_listeners, driver.handle_inbound, listeners)
                    task_status.started()

        await self.nursery.start(run_node)
        self.nodes.append(driver)
        return driver

    def kill(self, driver: DhtDriver) -> None:
        self.scopes[driver.own_id].cancel()

    @staticmethod
    def contact(driver: DhtDriver) -> Contact:
        return Contact(driver.own_id, "127.0.0.1", driver.listen_port or 0)


@asynccontextmanager
async def network() -> AsyncIterator[Net]:
    async with trio.open_nursery() as nursery:
        net = Net(nursery)
        try:
            yield net
        finally:
            nursery.cancel_scope.cancel()


async def build(net: Net, n: int, **options: Any) -> list[DhtDriver]:
    first = await net.add(**options)
    for _ in range(n - 1):
        node = await net.add(**options)
        await node.bootstrap([("127.0.0.1", first.listen_port or 0)])
    for node in net.nodes:
        await node.refresh(force=True)
    return net.nodes


def test_lookups_return_exactly_the_k_closest_other_nodes() -> None:
    async def main() -> None:
        async with network() as net:
            nodes = await build(net, 12)
            rng = random.Random(5)
            for node in nodes:
                for _ in range(5):
                    target = rng.getrandbits(256)
                    found = await node.find_node(target)
                    expected = sorted((n.own_id for n in nodes if n is not node), key=lambda i: i ^ target)[:4]
                    assert [c.node_id for c in found.lookup.closest] == expected
                    assert found.lookup.messages >= 1

    trio.run(main)


def test_a_block_is_found_and_verified_and_a_lying_peer_is_passed_over() -> None:
    class Liar(DhtDriver):
        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            if isinstance(request, msg.FindBlock):
                return msg.Block(b"not the block you asked for")
            return await super().answer(requester, request, contact)

    async def main() -> None:
        block = Block.of(RAW, b"the real block")
        async with network() as net:
            holder_store = MemoryBlockStore()
            holder_store.put(block)
            holder = await net.add(store=holder_store)
            liar = await net.add(cls=Liar)
            seeker = await net.add()
            await liar.bootstrap([("127.0.0.1", holder.listen_port or 0)])
            await seeker.bootstrap([("127.0.0.1", liar.listen_port or 0)])
            found = await seeker.find_block(block.cid)
            assert found.block is not None and found.block.data == b"the real block"
            assert found.holder is not None and found.holder.node_id == holder.own_id
            assert found.lookup.failures >= 1 or seeker.table.failures(liar.own_id) >= 0

    trio.run(main)


def test_a_lying_peer_alone_yields_no_block() -> None:
    class Liar(DhtDriver):
        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            if isinstance(request, msg.FindBlock):
                return msg.Block(b"forged")
            return await super().answer(requester, request, contact)

    async def main() -> None:
        async with network() as net:
            liar = await net.add(cls=Liar)
            seeker = await net.add()
            await seeker.bootstrap([("127.0.0.1", liar.listen_port or 0)])
            found = await seeker.find_block(Block.of(RAW, b"wanted").cid)
            assert found.block is None
            assert seeker.table.failures(liar.own_id) == 1

    trio.run(main)


def test_a_node_learns_peers_from_their_requests() -> None:
    async def main() -> None:
        async with network() as net:
            a = await net.add()
            b = await net.add()
            assert await b.ping(net.contact(a))
            with trio.fail_after(5):
                while b.own_id not in a.table:
                    await trio.sleep(0.01)
            assert a.table.get(b.own_id) == net.contact(b)

    trio.run(main)


def test_a_full_bucket_pings_its_oldest_contact_and_drops_it_if_dead() -> None:
    async def main() -> None:
        async with network() as net:
            def tiny(own: int) -> RoutingTable:
                return RoutingTable(own, k=1, max_failures=1, stale_after=0.0)

            a = await net.add(table=tiny, k=1)
            # Two peers in the same bucket of a's table (the top bit decides bucket 255).
            while True:
                old = await net.add()
                if (old.own_id ^ a.own_id) >> 255:
                    break
                net.kill(old)
            while True:
                new = await net.add()
                if (new.own_id ^ a.own_id) >> 255:
                    break
                net.kill(new)
            a.seen(net.contact(old))
            net.kill(old)
            assert await new.ping(net.contact(a))  # a hears from new: bucket full, ping old
            with trio.fail_after(10):
                while a.table.bucket(255) != [net.contact(new)]:
                    await trio.sleep(0.01)

    trio.run(main)


def test_a_contact_that_proves_another_identity_is_forgotten() -> None:
    async def main() -> None:
        async with network() as net:
            a = await net.add()
            b = await net.add()
            false = Contact(id_from_bytes(Identity.generate().node_id), "127.0.0.1", b.listen_port or 0)
            a.seen(false)
            found = await a.find_node(false.node_id)
            assert found.lookup.closest == ()
            assert false.node_id not in a.table and b.own_id not in a.table

    trio.run(main)


def test_a_silent_peer_costs_a_soft_timeout_not_the_lookup() -> None:
    class Silent(DhtDriver):
        def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
            return None  # nothing is answered at once: every request waits in answer()

        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            await trio.sleep_forever()
            raise AssertionError

    async def main() -> None:
        async with network() as net:
            options: dict[str, Any] = {"soft_timeout": 0.2, "request_timeout": 2.0}
            nodes = [await net.add(**options) for _ in range(5)]
            silent = await net.add(cls=Silent, **options)
            for node in nodes[1:]:
                await node.bootstrap([("127.0.0.1", nodes[0].listen_port or 0)])
            seeker = nodes[-1]
            seeker.seen(net.contact(silent))
            started = trio.current_time()
            found = await seeker.find_node(silent.own_id)
            assert silent.own_id not in [c.node_id for c in found.lookup.closest]
            assert len(found.lookup.closest) == 4
            assert trio.current_time() - started < 2.5  # the hard timeout, not more

    trio.run(main)


def test_a_peer_silent_past_the_hard_timeout_fails_the_query_and_is_counted() -> None:
    class Silent(DhtDriver):
        def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
            return None

        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            await trio.sleep_forever()
            raise AssertionError

    async def main() -> None:
        async with network() as net:
            # The soft timeout never comes first here: the hard one must end the
            # query. The hard one also bounds the dial, so it leaves room for a
            # handshake on a loaded machine (0.3 s did not always: no query sent).
            seeker = await net.add(soft_timeout=30.0, request_timeout=2.0)
            silent = await net.add(cls=Silent)
            seeker.seen(net.contact(silent))
            with trio.fail_after(10):
                found = await seeker.find_node(silent.own_id)
            assert found.lookup.closest == () and found.lookup.failures == 1
            assert seeker.table.failures(silent.own_id) == 1
            assert seeker.messages_sent == 1

    trio.run(main)


def test_a_lookup_cancelled_midway_ignores_the_answers_that_come_after() -> None:
    asked, answered = [0], [0]
    release = trio.Event()

    class Slow(DhtDriver):
        """Answers only once the test releases it (after the lookup is over)."""

        def answer_now(self, requester: int, request: msg.Request) -> msg.Response | None:
            return None

        async def answer(self, requester: int, request: msg.Request, contact: Contact | None = None) -> msg.Response:
            asked[0] += 1
            await release.wait()
            answer = DhtDriver.answer_now(self, requester, request)
            assert answer is not None
            answered[0] += 1
            return answer

    async def main() -> None:
        async with network() as net:
            seeker = await net.add()
            slow = [await net.add(cls=Slow) for _ in range(4)]
            for node in slow[:3]:
                seeker.seen(net.contact(node))
                node.seen(net.contact(slow[3]))  # answers that would open a new query
            scope = trio.CancelScope()

            async def lookup() -> None:
                with scope:
                    await seeker.find_node(slow[0].own_id)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lookup)
                with trio.fail_after(30):  # the lookup's three queries, all waiting
                    while asked[0] < 3:
                        await trio.sleep(0.01)
                scope.cancel()  # the lookup is over
            assert scope.cancelled_caught
            release.set()  # the answers arrive now, for a lookup that is over
            with trio.fail_after(30):
                while answered[0] < 3:
                    await trio.sleep(0.01)
            await trio.sleep(0.3)  # and reach the seeker
            for node in slow[:3]:
                connection = seeker.pool.open_to(node.own_id)
                assert connection is not None  # not closed
                assert connection.statistics().strikes == 0
            found = await seeker.find_node(slow[0].own_id)  # and the node carries on
            assert {c.node_id for c in found.lookup.closest} == {n.own_id for n in slow}

    trio.run(main)


def test_bootstrap_with_nobody_answering_raises_one_error() -> None:
    async def main() -> None:
        async with network() as net:
            a = await net.add()
            with pytest.raises(BootstrapError, match="127.0.0.1:1"):
                await a.bootstrap([("127.0.0.1", 1)])

    trio.run(main)


async def wait_for(condition: Callable[[], object], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def test_pings_alone_never_make_an_inbound_peer_useful_and_answers_do() -> None:
    async def main() -> None:
        async with network() as net:
            a = await net.add()
            b = await net.add()
            assert await b.ping(net.contact(a))  # b's connection to a: inbound at a
            await wait_for(lambda: a.admission.connections())
            (slot,) = a.admission.connections()
            for _ in range(5):  # pings both ways
                assert await a.ping(net.contact(b)) and await b.ping(net.contact(a))
            assert slot.served == 0
            await a.request(net.contact(b), msg.FindNode(bytes(32)))  # b does work for a
            assert slot.served == 1

    trio.run(main)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 as a source address is Linux's")
def test_a_handshake_over_its_address_rate_is_closed_before_any_cryptography(
        monkeypatch: pytest.MonkeyPatch) -> None:
    responders: list[object] = []  # the handshakes a node began as the responder

    class CountingHandshake(noise.Handshake):
        def __init__(self, identity: Identity, role: noise.Role, **options: Any) -> None:
            if role is noise.Role.RESPONDER:
                responders.append(self)
            super().__init__(identity, role, **options)

    monkeypatch.setattr(connection, "Handshake", CountingHandshake)

    async def dial(port: int, source: str) -> bool:
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        try:
            channel = await connection.open_channel(stream, Identity.generate(), initiator=True)
        except RemoteProtocolError:
            return False  # closed at once: open_channel closed the stream
        await channel.aclose()
        return True

    async def main() -> None:
        async with network() as net:
            node = await net.add(admission=Admission(handshake_rate_per_address=0.001,
                                                     handshake_burst_per_address=3))
            port = node.listen_port or 0
            done = [await dial(port, "127.0.0.2") for _ in range(8)]
            assert done == [True] * 3 + [False] * 5
            assert len(responders) == 3  # the five refused cost no handshake state, so no DH
            assert node.admission.statistics().rate_limited == 5
            assert await dial(port, "127.0.0.3")  # another address is not slowed
            assert node.handshakes_in == 4

    trio.run(main)


def test_a_full_node_evicts_its_least_useful_inbound_connection_for_a_newcomer() -> None:
    async def main() -> None:
        async with network() as net:
            a = await net.add(admission=Admission(max_connections=2, grace=0.0))
            useful, useless, newcomer = await net.add(), await net.add(), await net.add()
            assert await useful.ping(net.contact(a)) and await useless.ping(net.contact(a))
            await wait_for(lambda: len(a.admission.connections()) == 2)
            await a.request(net.contact(useful), msg.FindNode(bytes(32)))
            assert await newcomer.ping(net.contact(a))
            await wait_for(lambda: not useless.connected(a.own_id))  # its connection was closed
            assert useful.connected(a.own_id) and newcomer.connected(a.own_id)
            assert {s.peer for s in a.admission.connections()} == {useful.own_id, newcomer.own_id}
            assert a.admission.statistics().evicted_connections == 1
            assert await useless.ping(net.contact(a))  # it may come back: it is refused or evicts in turn

    trio.run(main)


def test_a_probe_taken_by_a_dying_nodes_listener_and_reset_finds_the_node_dead(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A process being killed closes its sockets one at a time: the
    # connection whose end starts the probe can close before the listener,
    # which takes the probe into its queue and resets it as it closes.
    monkeypatch.setattr(pool_module, "PROBE_SETTLE", 0.5)

    async def main() -> None:
        async with network() as net:
            a = await net.add()
            lost: list[int] = []
            a.peer_lost.append(lost.append)
            for dying in (True, False):
                listener = trio.socket.socket()
                await listener.bind(("127.0.0.1", 0))
                listener.listen(8)
                peer = Contact(id_from_bytes(Identity.generate().node_id), "127.0.0.1",
                               listener.getsockname()[1])
                a.seen(peer)
                a.pool.probe_soon(peer)
                with trio.fail_after(5):
                    await trio.lowlevel.wait_readable(listener)  # the probe is in its queue
                    await trio.testing.wait_all_tasks_blocked()  # and the prober is done connecting
                    if dying:
                        listener.close()
                    while peer.node_id in a.pool.probing:
                        await trio.sleep(0.01)
                if dying:
                    assert lost == [peer.node_id] and peer.node_id not in a.table
                else:  # a listener that stays (a live node, silent until the handshake)
                    assert len(lost) == 1 and peer.node_id in a.table  # still only the first
                    listener.close()

    trio.run(main)
# -- a node bound to one of its host's addresses ------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 and up are Linux's loopback")
def test_nodes_bound_to_one_address_each_are_noted_where_they_listen_and_reach_each_other() -> None:
    """Three nodes on one host, on 127.0.0.2, .3 and .4 (as 40 daemons in
    tests/test_churn.py are): a peer files an inbound contact under the
    connection's source address, so each node dials from the address it
    listens on. Before, they dialled from the kernel's default, 127.0.0.1:
    the first noted the others there, where nothing listens, and a lookup
    through it handed out addresses that refused every dial."""
    async def main() -> None:
        async with network() as net:
            nodes = [await net.add(listen_host=f"127.0.0.{i}") for i in (2, 3, 4)]
            first = nodes[0]
            for node in nodes[1:]:
                await node.bootstrap([("127.0.0.2", first.listen_port or 0)])
            assert {(c.host, c.port) for c in first.table.contacts()} == {
                (f"127.0.0.{i}", n.listen_port) for i, n in zip((3, 4), nodes[1:])}
            found = await nodes[2].find_node(nodes[1].own_id)  # learnt from the first, then dialled
            assert nodes[1].own_id in [c.node_id for c in found.lookup.closest]
            assert found.lookup.failures == 0
            assert nodes[2].table.get(nodes[1].own_id) == Contact(nodes[1].own_id, "127.0.0.3",
                                                                   nodes[1].listen_port or 0)

    trio.run(main)


def test_the_source_address_is_the_listen_address_only_where_it_can_reach_the_target() -> None:
    assert source_address("127.0.0.12", "127.0.0.1") == "127.0.0.12"
    assert source_address("10.0.0.5", "192.0.2.7") == "10.0.0.5"
    assert source_address("::1", "::1") == "::1"
    assert source_address("0.0.0.0", "127.0.0.1") is None  # every address: the kernel chooses
    assert source_address("::", "2001:db8::1") is None
    assert source_address(None, "127.0.0.1") is None
    assert source_address("127.0.0.1", "192.0.2.7") is None  # loopback cannot reach another host
    assert source_address("10.0.0.5", "127.0.0.1") is None
    assert source_address("10.0.0.5", "2001:db8::1") is None  # another family
    assert source_address("localhost", "127.0.0.1") is None  # names are the resolver's
    assert source_address("10.0.0.5", "seed.example.org") is None
