"""Group commit of the blocks peers place on this node.

Every block of a STORE_BLOCKS is acknowledged only once it is durable, and
making a block durable costs a barrier (fsyncs and a database commit) and a
trip to the store thread. Peers placing an add's blocks send many at once;
:class:`GroupCommitter` makes all those that arrived while the previous
group was being written durable together, in one trip and one barrier, so
the cost per block falls as the load rises, and a lone block waits for
nothing.

Must never: acknowledge a block before the group it is in is durable, or
let one block's refusal (the quota) fail the others in its group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .blocks import Block

MAX_GROUP_BYTES = 32 * 1024 * 1024
"""Bytes of blocks written in one group, bounding how long one barrier
holds the store thread (the rest wait for the next group)."""

Commit = Callable[[list[Block]], Awaitable[list[object]]]
"""Makes blocks durable together; returns, for each, its result or the
exception that refused it (see :meth:`cas.store.HeldBlocks.accept_many`)."""


@dataclass
class _Waiter:
    blocks: list[Block]
    done: trio.Event = field(default_factory=trio.Event)
    outcomes: list[object] = field(default_factory=list)


class GroupCommitter:
    """Run :meth:`run` in a nursery; then ``await keep(block)`` or
    ``await keep_many(blocks)`` from any task."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._send, self._receive = trio.open_memory_channel[_Waiter](1024)

    async def keep(self, block: Block) -> object:
        """Durable on return: the block's result, or its refusal raised."""
        outcome = (await self.keep_many([block]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def keep_many(self, blocks: list[Block]) -> list[object]:
        """Durable on return, in one group: for each block its result or
        the exception that refused it."""
        waiter = _Waiter(blocks)
        await self._send.send(waiter)
        await waiter.done.wait()
        return waiter.outcomes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for first in self._receive:
            group = [first]
            size = sum(len(b.data) for b in first.blocks)
            while size < MAX_GROUP_BYTES:
                try:
                    waiter = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                group.append(waiter)
                size += sum(len(b.data) for b in waiter.blocks)
            blocks = [block for waiter in group for block in waiter.blocks]
            try:
                outcomes = await self._commit(blocks)
            except Exception as exc:  # the whole group failed (a disk error): each is told
                outcomes = [exc] * len(blocks)
            at = 0
            for waiter in group:
                waiter.outcomes = outcomes[at:at + len(waiter.blocks)]
                at += len(waiter.blocks)
                waiter.done.set()
