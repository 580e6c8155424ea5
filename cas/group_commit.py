"""Group commit: what arrives together is made durable together.

Two things a node acknowledges only once they are durable arrive many at a
time: the blocks peers place on it (every block of a STORE_BLOCKS), and its
clients' namespace changes (each a new root). Making them durable costs a
barrier (fsyncs and a database commit) and a trip to the store thread.
:class:`GroupCommitter` writes all the items that arrived while the
previous group was being written in one trip and one barrier, so the cost
per item falls as the load rises, and a lone item waits for nothing.

Must never: acknowledge an item before the group it is in is durable, or
let one item's refusal (the quota; a change that does not apply) fail the
others in its group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from .blocks import Block

MAX_GROUP_BYTES = 32 * 1024 * 1024
"""Bytes of blocks written in one group, bounding how long one barrier
holds the store thread (the rest wait for the next group)."""

Item = TypeVar("Item")

Commit = Callable[[list[Item]], Awaitable[Sequence[object]]]
"""Makes items durable together; returns, for each, its result or the
exception that refused it (see :meth:`cas.store.HeldBlocks.accept_many`)."""


def block_bytes(block: Block) -> int:
    """The weight of a block in a group: its bytes."""
    return len(block.data)


@dataclass
class _Waiter(Generic[Item]):
    items: list[Item]
    done: trio.Event = field(default_factory=trio.Event)
    outcomes: list[object] = field(default_factory=list)


class GroupCommitter(Generic[Item]):
    """Run :meth:`run` in a nursery; then ``await keep(item)`` or
    ``await keep_many(items)`` from any task. A group holds items up to
    ``max_weight`` by ``weight`` (default: blocks, up to MAX_GROUP_BYTES)."""

    def __init__(self, commit: Commit[Item], *, weight: Callable[[Any], int] = block_bytes,
                 max_weight: int = MAX_GROUP_BYTES) -> None:
        self._commit = commit
        self._weight = weight
        self._max_weight = max_weight
        self._send, self._receive = trio.open_memory_channel[_Waiter[Item]](1024)

    async def keep(self, item: Item) -> object:
        """Durable on return: the item's result, or its refusal raised."""
        outcome = (await self.keep_many([item]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def keep_many(self, items: list[Item]) -> list[object]:
        """Durable on return, in one group: for each item its result or
        the exception that refused it."""
        waiter = _Waiter(items)
        await self._send.send(waiter)
        await waiter.done.wait()
        return waiter.outcomes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for first in self._receive:
            group = [first]
            size = sum(map(self._weight, first.items))
            while size < self._max_weight:
                try:
                    waiter = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
                group.append(waiter)
                size += sum(map(self._weight, waiter.items))
            items = [item for waiter in group for item in waiter.items]
            outcomes: Sequence[object]
            try:
                outcomes = await self._commit(items)
            except Exception as exc:  # the whole group failed (a disk error): each is told
                outcomes = [exc] * len(items)
            at = 0
            for waiter in group:
                waiter.outcomes = list(outcomes[at:at + len(waiter.items)])
                at += len(waiter.items)
                waiter.done.set()
