"""Blocks this repository holds for the network, and the quota on them.

A repository's blocks are of two kinds:

* **own** blocks: put by a local client (``cas add``, the mount, the
  library) or reachable from a pin or a kept namespace root. They are the
  user's and are never dropped by replication, only by ``gc`` when nothing
  refers to them any more.
* **held** blocks: stored because another node placed them here
  (STORE_BLOCK) or fetched from the network to answer a read. They are the
  network's: they count against the *quota* for other nodes' blocks, ``gc``
  keeps them (the repair loop, not gc, decides when they may go), and the
  repair loop drops one only once it is safe on the nodes now responsible
  for it.

The ``held`` table (``_database.py``) lists the held ones; everything else
is own. A block a local client puts is *claimed* (its row removed), so one
that arrived from a peer first becomes own the moment the user adds the same
content. Dropping re-checks pins and roots, so a held block the user has
since pinned (or linked into the namespace) stays.

**Leases.** Every held block has a lease: the time until which it is
kept, whoever placed it. A copy placed here is kept for the lease its
sender asked (at most this network's, :attr:`HeldBlocks.lease`); the node
that wants a block kept (its own content: puts, pins, namespace) renews
the lease on the block's holders (a HAVE with a lease), and a copy that
arrives again renews it too. What nobody renews expires: it is no longer
claimed present (HAVE), never placed anywhere again, and ``gc`` (or the
repair round) reclaims it. So a throwaway identity's blocks, bounded by its
share while it lives, are gone one lease after it stops renewing.

Ordering: a held block's bytes and its row become durable in the same
barrier, before STORE_BLOCK is acknowledged, so an acknowledged copy
survives a crash of the receiver. A renewal commits with the next barrier
(losing one to a crash costs nothing: the next renewal comes long before
the lease runs out).

This module never decides *whether* a block should be held or dropped;
the node's replication does (cas.dht.replication plans it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from ..blocks import Block
from ..cid import CID
from ..errors import StorageQuotaError
from ._blockstore import RepositoryBlockStore, WriteSession
from ._database import Database

DEFAULT_QUOTA = 10 * 1024**3
"""Bytes of other nodes' blocks a repository keeps unless configured
otherwise (``cas daemon --quota``): 10 GiB."""

DEFAULT_LEASE = 30 * 86400.0
"""Seconds a held block is kept unless its lease is renewed, unless the
network is configured otherwise (``cas daemon --lease``): 30 days, as long
as Tahoe-LAFS's leases, so an owner's machine may be away for weeks. The
owner renews every repair round (10 minutes), so it could be far shorter
for a network of machines that are always on."""

DEFAULT_PEER_QUOTA = 1024**3
"""Bytes of blocks one other node may have placed here, unless configured
otherwise (``cas daemon --peer-quota``): 1 GiB, so that no single peer
(nor a throwaway identity) takes the whole quota."""

DEFAULT_RESERVE_FRACTION = 0.25
DEFAULT_RESERVE_MAX = 10 * 1024**3
"""The disk reserve unless configured (``cas daemon --disk-reserve``): a
quarter of the disk's size, at most 10 GiB. Blocks for other nodes are
never stored where they would leave less free space than that, so the
owner's own adds keep the rest."""


def default_reserve(total: int) -> int:
    """The disk reserve for a disk of ``total`` bytes."""
    return min(int(total * DEFAULT_RESERVE_FRACTION), DEFAULT_RESERVE_MAX)


class DiskSpace(NamedTuple):
    """What the file system holding the repository reports."""

    free: int  # bytes an unprivileged writer may still use
    total: int


NodeId = bytes
"""A node's 32-byte ID: who placed a held block (``HeldBlocks.bytes``, a
property, would shadow the type inside the class)."""


class Placed(NamedTuple):
    """A block to hold: who placed it (None: fetched to answer a read) and
    for how many seconds (None: the network's whole lease)."""

    block: Block
    sender: NodeId | None = None
    lease: float | None = None


def disk_space(path: Path) -> DiskSpace:
    """Free and total bytes of the file system holding ``path``."""
    st = os.statvfs(path)
    return DiskSpace(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


class HeldBlocks:
    """The held-for-the-network index of one repository, with its quota.

    Not thread-safe: the repository's owner calls it from one thread at a
    time, like the rest of the store.
    """

    def __init__(self, db: Database, blocks: RepositoryBlockStore, quota: int = DEFAULT_QUOTA, *,
                 disk: Callable[[], DiskSpace] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._blocks = blocks
        self.clock = clock
        """Wall-clock seconds (leases outlive restarts); tests move it."""
        self.lease = DEFAULT_LEASE
        """The network's lease in seconds: the longest any held block is
        kept without a renewal (:meth:`set_lease`)."""
        self.quota = quota
        self.peer_quota = DEFAULT_PEER_QUOTA
        self.reserve: int | None = None
        """Free bytes never given to other nodes' blocks (None: the default,
        :func:`default_reserve` of the disk's size)."""
        self._disk = disk
        count, total = db.query("SELECT count(*), coalesce(sum(size), 0) FROM held").fetchone()
        self._count = int(count)
        self._bytes = int(total)

    # -- reading ----------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes of held blocks (what the quota limits)."""
        return self._bytes

    def __len__(self) -> int:
        return self._count

    def is_held(self, cid: CID) -> bool:
        return self._db.query("SELECT 1 FROM held WHERE cid = ?", (bytes(cid),)).fetchone() is not None

    def cids(self) -> list[CID]:
        return [CID.from_bytes(row[0]) for row in self._db.query("SELECT cid FROM held ORDER BY cid").fetchall()]

    def _now_ns(self) -> int:
        return int(self.clock() * 1e9)

    def leases(self) -> dict[CID, float]:
        """Every held block and the seconds left of its lease (0 or less:
        expired, waiting for gc)."""
        now = self._now_ns()
        rows = self._db.query("SELECT cid, expires_ns FROM held").fetchall()
        return {CID.from_bytes(cid): (int(expires) - now) / 1e9 for cid, expires in rows}

    def expired(self) -> list[CID]:
        """Held blocks whose lease has run out."""
        rows = self._db.query("SELECT cid FROM held WHERE expires_ns <= ? ORDER BY cid", (self._now_ns(),))
        return [CID.from_bytes(row[0]) for row in rows.fetchall()]

    def expired_among(self, cids: Iterable[CID]) -> set[CID]:
        """Those of ``cids`` that are held with an expired lease."""
        now = self._now_ns()
        out: set[CID] = set()
        for batch in _batches([bytes(cid) for cid in cids]):
            marks = ",".join("?" * len(batch))
            rows = self._db.query(f"SELECT cid FROM held WHERE expires_ns <= ? AND cid IN ({marks})", (now, *batch))
            out.update(CID.from_bytes(row[0]) for row in rows.fetchall())
        return out

    def room_for(self, size: int) -> bool:
        return self._bytes + size <= self.quota

    def held_for(self, sender: NodeId) -> int:
        """Bytes held here that ``sender`` (a node ID) placed."""
        (total,) = self._db.query("SELECT coalesce(sum(size), 0) FROM held WHERE sender = ?", (sender,)).fetchone()
        return int(total)

    def by_sender(self) -> dict[NodeId, tuple[int, int]]:
        """For each node that placed blocks here: (blocks, bytes)."""
        rows = self._db.query(
            "SELECT sender, count(*), sum(size) FROM held WHERE sender IS NOT NULL GROUP BY sender").fetchall()
        return {bytes(sender): (int(count), int(total)) for sender, count, total in rows}

    def _refusal(self, size: int, sender: NodeId | None, peer_bytes: int, free: int | None,
                 reserve: int) -> StorageQuotaError | None:
        """Why a block of ``size`` bytes cannot be held, or None if it can."""
        if not self.room_for(size):
            return StorageQuotaError(
                f"storage for other nodes' blocks is full ({self._bytes} of {self.quota} bytes used)")
        if sender is not None and peer_bytes + size > self.peer_quota:
            return StorageQuotaError(
                f"this node holds {peer_bytes} bytes for you already, its limit per node ({self.peer_quota})")
        if free is not None and free - size < reserve:
            return StorageQuotaError(
                f"this node keeps {reserve} bytes of its disk free for its owner ({free} free)")
        return None

    # -- writing ----------------------------------------------------------------

    def accept(self, block: Block | Placed) -> bool:
        """Keep ``block`` (already verified: a :class:`Block` checks its
        bytes) for the network. Durable on return. True if it was new; a
        block already stored, own or held, is left as it is.

        Raises :class:`StorageQuotaError` if it does not fit the quota.
        """
        outcome = self.accept_many([block])[0]
        if isinstance(outcome, StorageQuotaError):
            raise outcome
        return outcome

    def accept_many(self, blocks: Iterable[Block | Placed]) -> list[bool | StorageQuotaError]:
        """:meth:`accept` for several blocks with one barrier (a group
        commit: one set of fsyncs however many blocks peers sent at once).
        Each is a block (fetched to answer a read), or :class:`Placed`: the
        node that placed it, whose share is limited to ``peer_quota``, and
        the lease it asked for (capped at :attr:`lease`). Beyond the
        quotas, no block is held where it would leave less free disk than
        the reserve. A block already held has its lease renewed instead.
        For each block, in order: True if new, False if already stored, or
        the :class:`StorageQuotaError` that refused it. Durable on return."""
        outcomes: list[bool | StorageQuotaError] = []
        space = self._disk() if self._disk is not None else None
        free = space.free if space is not None else None
        reserve = (self.reserve if self.reserve is not None
                   else default_reserve(space.total) if space is not None else 0)
        peers: dict[NodeId, int] = {}
        now = self._now_ns()
        for item in blocks:
            placed = Placed(item) if isinstance(item, Block) else Placed(*item)  # (a Block is a tuple too)
            block, sender = placed.block, placed.sender
            expires = now + self._lease_ns(placed.lease)
            if self._blocks.has(block.cid):
                self._extend(block.cid, expires)
                outcomes.append(False)
                continue
            size = len(block.data)
            if sender is not None and sender not in peers:
                peers[sender] = self.held_for(sender)
            refusal = self._refusal(size, sender, peers.get(sender, 0) if sender else 0, free, reserve)
            if refusal is not None:
                outcomes.append(refusal)
                continue
            self._blocks.put(block)
            self._db.execute(
                "INSERT OR REPLACE INTO held (cid, size, since_ns, sender, expires_ns) VALUES (?, ?, ?, ?, ?)",
                (bytes(block.cid), size, now, sender, expires))
            self._count += 1
            self._bytes += size
            if sender is not None:
                peers[sender] += size
            if free is not None:
                free -= size
            outcomes.append(True)
        self._blocks.barrier()  # bytes and rows durable before anyone is told
        return outcomes

    def renew(self, cids: Iterable[CID], seconds: float) -> None:
        """Keep those of ``cids`` held here at least ``seconds`` more (capped
        at :attr:`lease`); own blocks need no lease and are left as they
        are. Commits with the next barrier."""
        expires = self._now_ns() + self._lease_ns(seconds)
        for batch in _batches([bytes(cid) for cid in cids]):
            marks = ",".join("?" * len(batch))
            self._db.execute(f"UPDATE held SET expires_ns = ? WHERE expires_ns < ? AND cid IN ({marks})",
                             (expires, expires, *batch))

    def set_lease(self, seconds: float) -> None:
        """The network's lease is ``seconds`` from now on: no held block is
        kept longer than that without a renewal (leases granted under a
        longer one are shortened). Commits with the next barrier."""
        if not seconds > 0:
            raise ValueError("a lease must be more than 0 seconds")
        self.lease = seconds
        latest = self._now_ns() + self._lease_ns(seconds)
        self._db.execute("UPDATE held SET expires_ns = ? WHERE expires_ns > ?", (latest, latest))

    def _lease_ns(self, seconds: float | None) -> int:
        return int(min(self.lease if seconds is None else seconds, self.lease) * 1e9)

    def _extend(self, cid: CID, expires: int) -> None:
        self._db.execute("UPDATE held SET expires_ns = ? WHERE cid = ? AND expires_ns < ?",
                         (expires, bytes(cid), expires))

    def claim(self, cid: CID) -> bool:
        """``cid`` is own from now on (a local client put it). Commits with
        the next barrier. True if it was held."""
        row = self._db.query("SELECT size FROM held WHERE cid = ?", (bytes(cid),)).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM held WHERE cid = ?", (bytes(cid),))
        self._count -= 1
        self._bytes -= int(row[0])
        return True

    def drop(self, cids: Iterable[CID], keep: set[CID]) -> list[CID]:
        """Delete the held blocks among ``cids`` that are not in ``keep``
        (what pins, roots and open writers still need); own blocks are never
        touched. Durable on return. Returns the CIDs deleted."""
        dropped = []
        for cid in cids:
            if cid in keep:
                continue
            row = self._db.query("SELECT size FROM held WHERE cid = ?", (bytes(cid),)).fetchone()
            if row is None:
                continue
            self._db.execute("DELETE FROM held WHERE cid = ?", (bytes(cid),))
            self._blocks.delete(cid)
            self._count -= 1
            self._bytes -= int(row[0])
            dropped.append(cid)
        self._blocks.barrier()
        return dropped


_SQL_BATCH = 500
"""Values in one ``IN (...)`` list (SQLite allows 32766 since 3.32; fewer
keep each statement's parse small)."""


class OwnBlocks:
    """A block sink whose blocks are the user's own (a local client's):
    each goes through ``writer`` (a write session) and is claimed, so one
    a peer sent first becomes own. What ``add_file`` and the mount store
    files through (store thread)."""

    def __init__(self, writer: WriteSession, held: HeldBlocks) -> None:
        self._writer = writer
        self._held = held

    def put(self, block: Block) -> bool:
        new = bool(self._writer.put(block))
        self._held.claim(block.cid)
        return new


def _batches(values: list[bytes]) -> Iterable[list[bytes]]:
    for start in range(0, len(values), _SQL_BATCH):
        yield values[start:start + _SQL_BATCH]
