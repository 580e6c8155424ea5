"""Namespace records this repository holds for the network, and the node's
publishing setting.

A node that is among the closest to a namespace's record key keeps the
newest valid record other nodes put there (PUT_RECORD), and answers
GET_RECORD with it. This module keeps them durable and bounded; it never
judges a record: the caller (the node, through
:func:`cas.names.record.accept_record`) decides whether one may replace
another before calling :meth:`HeldRecords.put`.

Bounds: at most :data:`MAX_RECORDS` records in all and
:data:`MAX_RECORDS_PER_SENDER` first put by any one peer (a replacement of a
key already held does not count again), each at most
:data:`cas.names.record.MAX_RECORD_SIZE` bytes, so the table stays under a
few tens of MiB whatever peers send.

Expiry: a held record lasts :data:`RECORD_LIFETIME` from the last time a
peer put it (a republish of the same bytes counts); :meth:`HeldRecords.expire`
drops the rest, so a namespace whose publisher stopped republishing fades
from the network instead of being served forever. ``since_ns`` is that
last put.

Publishing (``cas name publish``) is a setting of the repository, kept in
the ``settings`` table: the republish interval in seconds, absent when the
node does not publish its namespace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import StorageQuotaError
from ._database import Database

MAX_RECORDS = 65536
"""Records held in all (Kademlia nodes hold on the order of k records per
namespace of the network they are close to; 64 Ki is ample)."""

MAX_RECORDS_PER_SENDER = 1024
"""Records first put by one peer: one peer cannot fill the table."""

RECORD_LIFETIME = 2 * 86400.0
"""Seconds a held record lasts after the last PUT_RECORD of it: two days,
twice the longest republish interval a publisher may choose."""

PUBLISH_SETTING = "publish_interval"


class HeldRecords:
    """The ``records`` and ``settings`` tables of one repository."""

    def __init__(self, db: Database, barrier: Callable[[], None]) -> None:
        self._db = db
        self._barrier = barrier
        self.now_ns: Callable[[], int] = time.time_ns  # the clock of since_ns (tests turn it)

    def get(self, key: bytes) -> bytes | None:
        row = self._db.query("SELECT record FROM records WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def __len__(self) -> int:
        return int(self._db.query("SELECT count(*) FROM records").fetchone()[0])

    def put(self, key: bytes, record: bytes, seq: int, sender: bytes) -> None:
        """Hold ``record`` under ``key`` (replacing what is there, or
        renewing it if it is the same). Durable on return. Raises
        :class:`StorageQuotaError` if a new key does not fit."""
        exists = self._db.query("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None
        if not exists:
            if len(self) >= MAX_RECORDS:
                raise StorageQuotaError(f"this node holds {MAX_RECORDS} records already")
            mine = self._db.query("SELECT count(*) FROM records WHERE sender = ?", (sender,)).fetchone()[0]
            if mine >= MAX_RECORDS_PER_SENDER:
                raise StorageQuotaError(f"this node holds {MAX_RECORDS_PER_SENDER} records from you already")
            self._db.execute(
                "INSERT INTO records (key, record, seq, sender, since_ns) VALUES (?, ?, ?, ?, ?)",
                (key, record, seq, sender, self.now_ns()))
        else:
            self._db.execute("UPDATE records SET record = ?, seq = ?, since_ns = ? WHERE key = ?",
                             (record, seq, self.now_ns(), key))
        self._barrier()

    def renew(self, key: bytes) -> None:
        """The held record under ``key`` was put again: its lifetime starts
        over. Durable on return."""
        self._db.execute("UPDATE records SET since_ns = ? WHERE key = ?", (self.now_ns(), key))
        self._barrier()

    def expire(self) -> int:
        """Drop the records not put again for RECORD_LIFETIME. Durable on
        return; returns how many went."""
        cutoff = self.now_ns() - int(RECORD_LIFETIME * 1e9)
        dropped = self._db.execute("DELETE FROM records WHERE since_ns < ?", (cutoff,)).rowcount
        self._barrier()
        return int(dropped)

    # -- publishing -------------------------------------------------------------

    def publish_interval(self) -> float | None:
        """Seconds between republications of this repository's namespace, or
        None if it is not published."""
        row = self._db.query("SELECT value FROM settings WHERE name = ?", (PUBLISH_SETTING,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def set_publish_interval(self, seconds: float | None) -> None:
        if seconds is None:
            self._db.execute("DELETE FROM settings WHERE name = ?", (PUBLISH_SETTING,))
        else:
            self._db.execute("INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)",
                             (PUBLISH_SETTING, float(seconds)))
        self._barrier()

