"""What a control op's handler is given besides its request.

Owns :class:`OpContext`: the node the op runs on, the connection it came
on (:class:`cas.control.ClientState`), and checked access to the parts of
the node an op uses (each there once the node runs).

Must never: hold state of its own (the node and the connection do), or
know any op.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..control import ClientState
from ..dht.driver import DhtDriver
from ..dht.publisher import Publisher
from ..dht.replicator import Replicator
from ..store import LocalStore

T = TypeVar("T")

if TYPE_CHECKING:
    from .daemon import Node


@dataclass(frozen=True)
class OpContext:
    """One request's view of the node: ``node``, ``client`` (the
    connection's state: its write session, the descriptors passed with the
    request), and the node's parts, asserted present."""

    node: Node
    client: ClientState

    @property
    def store(self) -> LocalStore:
        assert self.node.store is not None
        return self.node.store

    @property
    def dht(self) -> DhtDriver:
        assert self.node.dht is not None
        return self.node.dht

    @property
    def replicator(self) -> Replicator:
        assert self.node.replicator is not None
        return self.node.replicator

    @property
    def publisher(self) -> Publisher:
        assert self.node.publisher is not None
        return self.node.publisher

    async def in_store_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the node's store thread (the one that may touch
        the repository)."""
        return await self.node.in_store_thread(fn, *args)
