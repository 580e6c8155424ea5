"""The node's own control ops: identity, peers, the DHT, replication and
network statistics (``cas id``, ``cas peers``, ``cas dht``, ``cas repo
health``...).

Owns one handler per op, ``handler(request, ctx)`` (requests declared in
:mod:`cas.control.schema`), listed in :data:`cas.node.ops.HANDLERS`; and
:func:`parse_target`, what ``cas dht find`` accepts.

Must never: hold state (the node and its parts do), or change what the
node does: these ops report, except ``dht_refresh`` and
``replication_repair``, which run now what the node runs on a timer.
"""

from __future__ import annotations

import math
import re
from typing import Any

import trio

from ..cid import CID, parse_cid
from ..control import schema as ops
from ..dht.driver import FindResult
from ..dht.ids import id_from_bytes, id_to_bytes, key_for_digest
from .config import format_address
from .ops_context import OpContext


def parse_target(text: str) -> tuple[int, CID | None]:
    """A lookup target from the command line: a node ID (64 hex digits) or a
    CID (whose key is its digest)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return id_from_bytes(bytes.fromhex(text)), None
    cid = parse_cid(text)
    return key_for_digest(cid.routing_digest), cid


async def id_(request: ops.Id, ctx: OpContext) -> dict[str, Any]:
    assert ctx.node.address is not None
    announce = ctx.node.address.announce
    return {"id": ctx.node.address.node_id.hex(), "host": ctx.node.address.host, "port": ctx.node.address.port,
            "announce": None if announce is None else format_address(*announce), "reachable": ctx.node.reachable,
            "peers": len(ctx.dht.table)}


async def peers(request: ops.Peers, ctx: OpContext) -> list[dict[str, Any]]:
    r = ctx.node.replicator
    held = await ctx.in_store_thread(ctx.store.held.by_sender)
    out = []
    for p in ctx.dht.peers():
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
            "bad_blocks": ctx.dht.bad_blocks[node_id],
            # what we store with it now: our own blocks it is known to hold
            # (the holder index: confirmed by placement or repair, gone if it is found dead)
            "ours_blocks": ours_blocks, "ours_bytes": ours_bytes,
            # what it stores with us now: blocks and bytes it placed here
            "held_blocks": held_blocks, "held_bytes": held_bytes,
        })
    return out


async def dht_find(request: ops.DhtFind, ctx: OpContext) -> dict[str, Any]:
    target, cid = parse_target(request.target)
    found: FindResult = await ctx.dht.find_node(target)
    closest = list(found.lookup.closest)
    holders: list[list[bool] | None] = [None] * len(closest)
    if cid is not None:
        async with trio.open_nursery() as nursery:
            async def ask(i: int) -> None:
                holders[i] = await ctx.dht.have(closest[i], [cid])
            for i in range(len(closest)):
                nursery.start_soon(ask, i)
    local_has = bool(cid is not None and await ctx.in_store_thread(ctx.store.blocks.has, cid))
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


async def dht_refresh(request: ops.DhtRefresh, ctx: OpContext) -> int:
    return await ctx.dht.refresh(force=True)


async def replication_status(request: ops.ReplicationStatus, ctx: OpContext) -> list[dict[str, Any]]:
    """Per CID (a file or directory root): how many of the R closest
    nodes hold every one of its blocks, waiting up to ``wait`` seconds
    for placements still in progress."""
    out = []
    deadline = trio.current_time() + request.wait
    for root in request.cids:
        blocks = await ctx.node.in_store_thread(ctx.node.dag_blocks, root)
        settled = await ctx.replicator.wait_settled(blocks, max(0.0, deadline - trio.current_time()))
        counts = [ctx.replicator.copies(cid) for cid in blocks]
        out.append({
            "cid": root, "blocks": len(blocks), "replicas": ctx.replicator.replicas,
            # a block never placed (no peers when it was put) has its local copy only
            "copies": min((1 if c is None else c) for c in counts) if counts else 0,
            "settled": settled,
            "reachable": len(ctx.dht.table),
        })
    return out


async def replication_repair(request: ops.ReplicationRepair, ctx: OpContext) -> dict[str, Any]:
    """Run a repair round now (the same as the periodic one)."""
    report = await ctx.replicator.repair()
    return {"blocks": report.blocks, "stores": report.stores, "dropped": report.dropped,
            "short": report.short, "expired": report.expired}


async def replication_stats(request: ops.ReplicationStats, ctx: OpContext) -> dict[str, Any]:
    store = ctx.store
    r = ctx.replicator
    return {"replicas": r.replicas, "lease_s": math.ceil(r.lease), "queued": r.stats.queued, "placed": r.stats.placed,
            "stores_sent": r.stats.stores_sent, "store_messages": ctx.dht.store_messages_sent,
            "repair_rounds": r.stats.rounds,
            "held_blocks": len(store.held), "held_bytes": store.held.bytes,
            "quota": store.held.quota, "read_ahead": ctx.node.blocks.read_ahead_count,
            # live: as last placed or repaired, less copies on peers found dead since
            "short": r.short_blocks(), "tracked": len(r.holders), "copies_lost": r.stats.copies_lost,
            "placed_bytes": r.stats.placed_bytes,
            "repair_stores": r.stats.repair_stores, "repair_bytes": r.stats.repair_bytes,
            "repair_dropped": r.stats.repair_dropped, "peers": len(ctx.dht.table),
            "repair_rounds_after_loss": r.stats.rounds_after_loss,
            "refusals": r.stats.refusals, "store_failures": sum(r.stats.peer_store_failures.values()),
            "last_failure": r.stats.last_failure,
            "quarantined": ctx.node.integrity.quarantined, "restored": ctx.node.integrity.restored,
            "unrecoverable": ctx.node.integrity.unrecoverable,
            "in_quarantine": await ctx.node.in_store_thread(lambda: len(store.quarantine)),
            "scrubbed_bytes": ctx.node.integrity.scrubbed_bytes, "scrub_passes": ctx.node.integrity.scrub_passes,
            # blocks asked of their holders (cas.dht.fetch_plan), since the start
            "fetches": r.fetcher.statistics()._asdict()}


async def net_stats(request: ops.NetStats, ctx: OpContext) -> dict[str, Any]:
    """The transport's own counts: handshakes, admission, the frame budget."""
    driver = ctx.dht
    admission = driver.admission.statistics()
    budget = driver.frame_budget.statistics()
    rtt = driver.rtts.statistics()
    return {"reachable": ctx.node.reachable,
            "rtt": {"peers": rtt.peers, "samples": rtt.samples,  # microseconds: the wire has no floats
                    "srtt_us": None if rtt.srtt is None else round(rtt.srtt * 1e6),
                    "rttvar_us": None if rtt.rttvar is None else round(rtt.rttvar * 1e6),
                    "rto_us": round(rtt.rto * 1e6)},
            "handshakes_in": driver.handshakes_in, "handshakes_out": driver.handshakes_out,
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
