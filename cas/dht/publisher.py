"""The trio side of published namespaces: publish, republish, resolve.

Owns: putting this repository's current root record on the R nodes closest
to its record key (a FIND_NODE lookup, then PUT_RECORD to each), the
republish timer and the "new root, publish now" wake-up, resolving another
namespace (a GET_RECORD lookup over the k closest nodes, plus what this
node holds itself, keeping the newest valid record). The control ops
that drive it (``name_publish``, ``name_resolve``, ``name_status``) are
the node's (:mod:`cas.node.ops`): nothing here knows the control socket.

Must never: accept a record without :func:`cas.names.record.accept_record`
(the keeper below applies it to every PUT_RECORD), trust a record a peer
returned without :func:`cas.names.record.newest_record`, or touch the
repository other than through the store thread it is given.

See docs/replication.md, "Published namespaces".
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import CasError, InvalidRecordError, NotPublishedError, StorageQuotaError
from ..names.record import RootRecord, accept_record, newest_record, record_key
from ..store import LocalStore
from .driver import DhtDriver
from .ids import id_from_bytes, id_to_bytes
from .replication import DEFAULT_REPLICAS
from .store_batches import StoreOutcome

REPUBLISH_INTERVAL = 1800.0
"""Default seconds between republications of a published namespace: the
records' holders change as nodes join and leave, and a republish puts the
record on whoever is closest now (Kademlia republishes hourly; half that,
as a record is tiny)."""

MIN_REPUBLISH_INTERVAL = 0.5
MAX_REPUBLISH_INTERVAL = 86400.0
"""A day: held records expire two days after their last republish
(cas.store._records.RECORD_LIFETIME), so a publisher must come back sooner."""

EXPIRY_SWEEP_INTERVAL = 3600.0
"""Seconds between sweeps of held records past their lifetime."""

StoreThread = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class PublishReport:
    """What one publication did: the record, and how many nodes hold it."""

    record: RootRecord
    stored: int
    asked: int


@dataclass(frozen=True)
class ResolveReport:
    """The newest valid record found for a namespace (None if none), and how
    many answers carried a record."""

    record: RootRecord | None
    answers: int
    asked: int


class StoreRecords:
    """The repository's held records as the DHT driver reads and writes
    them (``RecordKeeper``), every call in the store thread."""

    def __init__(self, store: Callable[[], LocalStore], in_store_thread: StoreThread) -> None:
        self._store = store
        self._thread = in_store_thread

    async def get_record(self, key: bytes) -> bytes | None:
        record: bytes | None = await self._thread(self._store().records.get, key)
        return record

    async def put_record(self, key: bytes, record: bytes, sender: bytes) -> None:
        def put() -> None:
            records = self._store().records
            accepted = accept_record(records.get(key), key, record)
            if accepted is not None:
                records.put(key, record, accepted.seq, sender)
            else:  # the same bytes again: a republish renews the record's lifetime
                records.renew(key)

        await self._thread(put)


class Publisher:
    """Publishing for one node. ``await nursery.start(publisher.run)``."""

    def __init__(self, dht: DhtDriver, store: Callable[[], LocalStore], in_store_thread: StoreThread,
                 *, replicas: int = DEFAULT_REPLICAS) -> None:
        self.dht = dht
        self._store = store
        self._thread = in_store_thread
        self.replicas = replicas
        self._wake = trio.Event()
        self.last: PublishReport | None = None
        self.last_error: str | None = None

    # -- lifetime -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Republish every interval (and soon after each new root) while the
        repository's publishing setting is on, and drop held records past
        their lifetime, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expiry_loop)
            task_status.started()
            await self._publish_loop()

    async def _expiry_loop(self) -> None:
        while True:
            await self._thread(self._store().records.expire)
            await trio.sleep(EXPIRY_SWEEP_INTERVAL)

    async def _publish_loop(self) -> None:
        while True:
            interval = await self._thread(self._store().records.publish_interval)
            with trio.move_on_after(math.inf if interval is None else interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if await self._thread(self._store().records.publish_interval) is None:
                continue
            try:
                await self.publish()
            except CasError as exc:  # the loop's edge: kept for 'cas name status', tried again next round
                self.last_error = str(exc)

    def root_changed(self) -> None:
        """A new local root was committed: publish it now if publishing is on."""
        self._wake.set()

    # -- publishing -------------------------------------------------------------

    async def _current_record(self) -> RootRecord:
        def newest() -> bytes | None:
            store = self._store()
            key = store.namespace_key().public_key
            for row in store.roots(newest_first=True, limit=8):
                try:
                    record = RootRecord.decode(row.record)
                except InvalidRecordError:
                    continue
                if record.public_key == key:
                    return row.record
            return None

        data = await self._thread(newest)
        if data is None:
            raise NotPublishedError("the namespace has no root yet; add something to it first")
        return RootRecord.decode(data)

    async def publish(self) -> PublishReport:
        """Put the current root record on the R nodes closest to its key
        (and hold it here too)."""
        record = await self._current_record()
        key = record_key(record.public_key)
        data = record.encode()
        try:
            await StoreRecords(self._store, self._thread).put_record(key, data, id_to_bytes(self.dht.own_id))
        except (InvalidRecordError, StorageQuotaError):
            pass  # held a newer one from elsewhere, or no room: the network decides below
        found = await self.dht.find_node(id_from_bytes(key))
        targets = list(found.lookup.closest)[: self.replicas]
        outcomes: list[StoreOutcome | None] = [None] * len(targets)

        async def put(i: int) -> None:
            outcomes[i] = await self.dht.put_record(targets[i], key, data)

        async with trio.open_nursery() as nursery:
            for i in range(len(targets)):
                nursery.start_soon(put, i)
        stored = sum(1 for o in outcomes if o is not None and o.status == "stored")
        report = PublishReport(record, stored, len(targets))
        self.last, self.last_error = report, None
        return report

    async def resolve(self, public_key: bytes) -> ResolveReport:
        """The newest valid record of namespace ``public_key``: from the k
        closest nodes, this node's held copy and, for our own namespace, the
        repository. A newer one found is held here from then on."""
        key = record_key(public_key)
        candidates: list[bytes] = []
        asked = 0
        if len(self.dht.table):
            found, records = await self.dht.find_records(key)
            candidates += [data for _peer, data in records]
            asked = len(found.lookup.closest)
        answers = len(candidates)
        held = await StoreRecords(self._store, self._thread).get_record(key)
        if held is not None:
            candidates.append(held)
        try:
            own = await self._current_record()
            if own.public_key == public_key:
                candidates.append(own.encode())
        except NotPublishedError:
            pass
        best = newest_record(candidates, public_key)
        if best is not None and best.encode() != held:
            try:
                await StoreRecords(self._store, self._thread).put_record(
                    key, best.encode(), id_to_bytes(self.dht.own_id))
            except (InvalidRecordError, StorageQuotaError):
                pass  # no room, or a newer one arrived meanwhile: answered, not kept
        return ResolveReport(best, answers, asked)
