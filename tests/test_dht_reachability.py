"""AutoNAT's check: peers dial a node back at the port it says it listens
on; the verdict; the rate limit; a node that cannot be reached becomes a
DHT client."""

from __future__ import annotations

import socket

import trio

from cas.dht.providers import ProviderRecords
from cas.dht.reachability import REFUTE, verdict
from cas.dht.responder import DIAL_BACK_BURST, DialRequester, Responder
from cas.dht.routing import RoutingTable
from cas.net import messages as msg

from .test_dht_driver import build, network


def test_one_peer_that_reached_us_is_enough_and_too_few_answers_tell_nothing() -> None:
    assert verdict([False, True]) is True
    assert verdict([False] * REFUTE) is False
    assert verdict([False] * (REFUTE - 1)) is None
    assert verdict([]) is None


def test_a_peer_is_dialled_back_a_few_times_then_once_a_minute() -> None:
    responder = Responder(RoutingTable(1, k=4), ProviderRecords(), k=4)
    answers = [responder.start(7, msg.DialBack(4710), now=0.0) for _ in range(int(DIAL_BACK_BURST) + 1)]
    assert answers[:-1] == [DialRequester(4710)] * int(DIAL_BACK_BURST)
    assert isinstance(answers[-1], msg.Error) and answers[-1].code == "busy"
    assert responder.start(7, msg.DialBack(4710), now=61.0) == DialRequester(4710)
    assert responder.start(8, msg.DialBack(4710), now=0.0) == DialRequester(4710)  # per peer


def test_nodes_that_listen_where_they_say_are_reachable() -> None:
    async def main() -> None:
        async with network() as net:
            nodes = await build(net, 4)
            found = await nodes[-1].check_reachable()
            assert found.reachable is True and found.reached >= 1 and found.asked == 3

    trio.run(main)


def test_a_node_whose_port_leads_nowhere_is_unreachable_and_becomes_a_client_its_peers_forget() -> None:
    async def main() -> None:
        async with network() as net:
            nodes = await build(net, 3)
            hidden = await net.add()
            with socket.socket() as closed:  # a port where nothing listens, as a NAT's outside
                closed.bind(("127.0.0.1", 0))
                nowhere = closed.getsockname()[1]
            hidden.pool.listen_port = nowhere  # what it says in its hellos
            await hidden.bootstrap([("127.0.0.1", nodes[0].listen_port or 0)])
            await hidden.refresh(force=True)
            assert any(hidden.own_id in node.table for node in nodes)
            found = await hidden.check_reachable()
            assert found.reachable is False and found.failed == 3 and found.reached == 0
            await hidden.become_client()
            assert hidden.pool.listen_port is None
            with trio.fail_after(10):  # each peer probes the address it knew, finds nothing there
                while any(hidden.own_id in node.table for node in nodes):
                    await trio.sleep(0.01)
            # It still looks things up through them, and they learn nothing of it.
            result = await hidden.find_node(nodes[0].own_id)
            assert nodes[0].own_id in [c.node_id for c in result.lookup.closest]
            assert all(hidden.own_id not in node.table for node in nodes)

    trio.run(main)


def test_a_node_announcing_an_address_is_filed_under_it_and_dialled_back_there() -> None:
    """``--announce``: its hellos name the host (and port) to dial it at,
    which its peers use instead of where its connections come from."""
    async def main() -> None:
        async with network() as net:
            nodes = await build(net, 3)
            announcing = await net.add()
            port = announcing.pool.listen_port
            announcing.pool.announce_host = "127.0.0.2"  # where nothing of it listens
            await announcing.bootstrap([("127.0.0.1", nodes[0].listen_port or 0)])
            await announcing.refresh(force=True)
            filed = nodes[0].table.get(announcing.own_id)
            assert filed is not None and (filed.host, filed.port) == ("127.0.0.2", port)
            found = await announcing.check_reachable()  # dialled at 127.0.0.2, not 127.0.0.1
            assert found.reachable is False and found.reached == 0
            announcing.pool.announce_host = "127.0.0.1"  # the address it can be dialled at
            await announcing.pool.close_all()  # new hellos
            found = await announcing.check_reachable()
            assert found.reachable is True

    trio.run(main)
