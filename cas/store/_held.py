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

Ordering: a held block's bytes and its row become durable in the same
barrier, before STORE_BLOCK is acknowledged, so an acknowledged copy
survives a crash of the receiver.

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
from ..errors import CasError
from ._blockstore import RepositoryBlockStore
from ._database import Database

DEFAULT_QUOTA = 10 * 1024**3
"""Bytes of other nodes' blocks a repository keeps unless configured
otherwise (``cas daemon --quota``): 10 GiB."""

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


class StorageQuotaError(CasError):
    """This node's storage for other nodes' blocks is full: its quota, the
    sender's share of it, or the disk reserve."""


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
                 disk: Callable[[], DiskSpace] | None = None) -> None:
        self._db = db
        self._blocks = blocks
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

    def accept(self, block: Block) -> bool:
        """Keep ``block`` (already verified: a :class:`Block` checks its
        bytes) for the network. Durable on return. True if it was new; a
        block already stored, own or held, is left as it is.

        Raises :class:`StorageQuotaError` if it does not fit the quota.
        """
        outcome = self.accept_many([block])[0]
        if isinstance(outcome, StorageQuotaError):
            raise outcome
        return outcome

    def accept_many(self, blocks: Iterable[Block | tuple[Block, NodeId | None]]) -> list[bool | StorageQuotaError]:
        """:meth:`accept` for several blocks with one barrier (a group
        commit: one set of fsyncs however many blocks peers sent at once).
        Each is a block, or (block, sender): the node that placed it, whose
        share is limited to ``peer_quota``; a block with no sender was
        fetched to answer a read. Beyond the quotas, no block is held where
        it would leave less free disk than the reserve. For each block, in
        order: True if new, False if already stored, or the
        :class:`StorageQuotaError` that refused it. Durable on return."""
        outcomes: list[bool | StorageQuotaError] = []
        space = self._disk() if self._disk is not None else None
        free = space.free if space is not None else None
        reserve = (self.reserve if self.reserve is not None
                   else default_reserve(space.total) if space is not None else 0)
        peers: dict[NodeId, int] = {}
        for item in blocks:
            block, sender = (item, None) if isinstance(item, Block) else item  # (a Block is a tuple too)
            if self._blocks.has(block.cid):
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
            self._db.execute("INSERT OR REPLACE INTO held (cid, size, since_ns, sender) VALUES (?, ?, ?, ?)",
                             (bytes(block.cid), size, time.time_ns(), sender))
            self._count += 1
            self._bytes += size
            if sender is not None:
                peers[sender] += size
            if free is not None:
                free -= size
            outcomes.append(True)
        self._blocks.barrier()  # bytes and rows durable before anyone is told
        return outcomes

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
