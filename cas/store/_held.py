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

import time
from collections.abc import Iterable

from ..blocks import Block
from ..cid import CID
from ..errors import CasError
from ._blockstore import RepositoryBlockStore
from ._database import Database

DEFAULT_QUOTA = 10 * 1024**3
"""Bytes of other nodes' blocks a repository keeps unless configured
otherwise (``cas daemon --quota``): 10 GiB."""


class StorageQuotaError(CasError):
    """This node's storage for other nodes' blocks is full."""


class HeldBlocks:
    """The held-for-the-network index of one repository, with its quota.

    Not thread-safe: the repository's owner calls it from one thread at a
    time, like the rest of the store.
    """

    def __init__(self, db: Database, blocks: RepositoryBlockStore, quota: int = DEFAULT_QUOTA) -> None:
        self._db = db
        self._blocks = blocks
        self.quota = quota
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

    def accept_many(self, blocks: Iterable[Block]) -> list[bool | StorageQuotaError]:
        """:meth:`accept` for several blocks with one barrier (a group
        commit: one set of fsyncs however many blocks peers sent at once).
        For each block, in order: True if new, False if already stored, or
        the :class:`StorageQuotaError` that refused it. Durable on return."""
        outcomes: list[bool | StorageQuotaError] = []
        for block in blocks:
            if self._blocks.has(block.cid):
                outcomes.append(False)
                continue
            size = len(block.data)
            if not self.room_for(size):
                outcomes.append(StorageQuotaError(
                    f"storage for other nodes' blocks is full ({self._bytes} of {self.quota} bytes used)"))
                continue
            self._blocks.put(block)
            self._db.execute("INSERT OR REPLACE INTO held (cid, size, since_ns) VALUES (?, ?, ?)",
                             (bytes(block.cid), size, time.time_ns()))
            self._count += 1
            self._bytes += size
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
