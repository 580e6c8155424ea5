"""The namespace's control ops: changes the daemon applies for its clients,
paths it resolves for them, and publishing the namespace on the network
(``cas name publish|resolve|status``).

Owns one handler per op, ``handler(request, ctx)`` (requests declared in
:mod:`cas.control.schema`), listed in :data:`cas.node.ops.HANDLERS`.

Must never: commit a change anywhere but through the node's group
committer (clients' changes never race each other), or hold state.
"""

from __future__ import annotations

from typing import Any

from ..control import schema as ops
from ..dht.publisher import MAX_REPUBLISH_INTERVAL, MIN_REPUBLISH_INTERVAL, REPUBLISH_INTERVAL
from ..errors import InvalidInputError
from ..names.changes import paths_of
from ..names.namespace import Node, RootState
from ..names.record import RootRecord
from .ops_context import OpContext

# -- the namespace ----------------------------------------------------------------------


async def namespace_change(request: ops.NamespaceChange, ctx: OpContext) -> RootState:
    """Apply a client's namespace change here, in the store thread, one
    change at a time: clients' changes never race each other (the rule:
    docs/architecture.md, "Concurrent changes"). Changes that arrive
    together are committed together (:meth:`Node.apply_changes`)."""
    node = ctx.node
    assert node.namespace_commits is not None
    await node.commit_mount()  # what the mount changed first: it came first
    state = await node.namespace_commits.keep(request.change)
    assert isinstance(state, RootState)
    if node.mount is not None:
        await node.mount.changed_elsewhere(paths_of(request.change))
    if node.publisher is not None:
        node.publisher.root_changed()  # published namespaces go out now, not at the next interval
    return state


async def namespace_resolve(request: ops.NamespaceResolve, ctx: OpContext) -> Node:
    """What a path names, in one round trip (the client would read one
    directory node per level over the socket)."""
    namespace = ctx.node.namespace
    assert namespace is not None
    await ctx.node.commit_mount()  # a command run after a change in the mount sees it
    found: Node = await ctx.in_store_thread(namespace.resolve, request.path, request.at)
    return found


# -- published names ------------------------------------------------------------------


def _record_doc(record: RootRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"key": record.public_key.hex(), "seq": record.seq, "root": record.root, "time_ns": record.time_ns,
            "record": record.encode()}


async def name_publish(request: ops.NamePublish, ctx: OpContext) -> dict[str, Any]:
    every_ms = request.interval_ms
    if every_ms is None:
        every_ms = int(REPUBLISH_INTERVAL * 1000)  # DAG-CBOR has no floats here
    if request.stop:
        await ctx.in_store_thread(ctx.store.records.set_publish_interval, None)
        return {"publishing": False}
    if not MIN_REPUBLISH_INTERVAL <= every_ms / 1000 <= MAX_REPUBLISH_INTERVAL:
        raise InvalidInputError(f"the republish interval must be {MIN_REPUBLISH_INTERVAL:g} s to "
                                f"{MAX_REPUBLISH_INTERVAL:g} s")
    await ctx.in_store_thread(ctx.store.records.set_publish_interval, every_ms / 1000)
    report = await ctx.publisher.publish()
    ctx.publisher.root_changed()  # re-arm the timer with the new interval
    return {"publishing": True, "interval_ms": every_ms, "stored": report.stored, "asked": report.asked,
            **(_record_doc(report.record) or {})}


async def name_resolve(request: ops.NameResolve, ctx: OpContext) -> dict[str, Any]:
    report = await ctx.publisher.resolve(request.key)
    return {"found": _record_doc(report.record), "answers": report.answers, "asked": report.asked}


async def name_status(request: ops.NameStatus, ctx: OpContext) -> dict[str, Any]:
    interval = await ctx.in_store_thread(ctx.store.records.publish_interval)
    last = ctx.publisher.last
    return {"publishing": interval is not None,
            "interval_ms": None if interval is None else int(interval * 1000),
            "last": None if last is None else {"stored": last.stored, "asked": last.asked,
                                                **(_record_doc(last.record) or {})},
            "last_error": ctx.publisher.last_error,
            "held_records": await ctx.in_store_thread(len, ctx.store.records)}
