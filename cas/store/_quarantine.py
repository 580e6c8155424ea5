"""Blocks that failed verification: out of the index until a good copy comes.

Bit rot, a bad disk, or a hand that edited a pack or ``meta.sqlite``: a
stored block's bytes no longer match its hash. Every read verifies, so such
a block is never *returned*; this module makes sure it is also never
*claimed* again. Whoever meets one (a read, a peer's FIND_BLOCK or HAVE,
the repair round, the scrub, ``cas repo verify --repair``) hands the
:class:`~cas.errors.CorruptBlockError` to :meth:`Quarantine.add`, which

* takes the block out of the index (its pack row or its database row), so
  ``has`` says no: HAVE answers no, repair sees a missing copy and stores a
  good one here or elsewhere, gc and verify see a missing block;
* records it in the ``quarantine`` table with where it lay and why, and
  whether it was held for the network or the user's own, so the copy that
  comes back (:meth:`restore`) is kept as what it was;
* reports whether it is new, so the caller logs each bad block once.

The bad bytes are not kept: a pack's record becomes dead space that
compaction reclaims, a database row is deleted. All of it happens in the
open transaction and commits with the next barrier; a crash before that
leaves the block indexed and still bad, to be found again.

Never decides where a good copy comes from (the node fetches it from the
network) and never touches a block that verified.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from ..blocks import Block
from ..cid import CID
from ..errors import BlockNotFoundError, CorruptBlockError
from ._blockstore import RepositoryBlockStore
from ._database import Database
from ._held import HeldBlocks


class Quarantined(NamedTuple):
    """One block taken out of the index: where it lay, why, since when."""

    cid: CID
    place: str
    reason: str
    held: bool
    since_ns: int


class Quarantine:
    """The quarantine of one repository (owner thread only, like the store)."""

    def __init__(self, db: Database, blocks: RepositoryBlockStore, held: HeldBlocks) -> None:
        self._db = db
        self._blocks = blocks
        self._held = held

    def add(self, damage: CorruptBlockError) -> bool:
        """Take the damaged block out of the index and record it; True if it
        was not in quarantine already (the caller then logs it, once).
        Commits with the next barrier."""
        cid = damage.cid
        assert isinstance(cid, CID)
        key = bytes(cid)
        # The damage may be stale: found by a read that raced another
        # finder, whose quarantine and healing came first. Only the copy
        # indexed now, and bad now, is taken out.
        try:
            self._blocks.get(cid)
            return False  # a good copy is indexed (healed meanwhile)
        except BlockNotFoundError:
            return False  # nothing indexed: in quarantine already, or gone
        except CorruptBlockError:
            pass
        if self._db.query("SELECT 1 FROM quarantine WHERE cid = ?", (key,)).fetchone() is not None:
            self._blocks.delete(cid)  # a copy indexed again meanwhile, and bad too
            return False
        was_held = self._held.claim(cid)  # its held row goes too: its bytes do not count
        self._blocks.delete(cid)
        self._db.execute(
            "INSERT INTO quarantine (cid, place, reason, held, since_ns) VALUES (?, ?, ?, ?, ?)",
            (key, damage.place, str(damage), int(was_held), time.time_ns()),
        )
        return True

    def restore(self, block: Block) -> bool:
        """Keep ``block`` (a verified good copy of a quarantined one) as what
        the bad copy was, own or held, and let it out of quarantine. Durable
        on return. False if ``block`` was not in quarantine (nothing done)."""
        key = bytes(block.cid)
        row = self._db.query("SELECT held FROM quarantine WHERE cid = ?", (key,)).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM quarantine WHERE cid = ?", (key,))
        if row[0]:
            self._held.accept_many([block])  # its barrier makes it all durable
        else:
            self._blocks.put(block)
            self._blocks.barrier()
        return True

    def is_quarantined(self, cid: CID) -> bool:
        return self._db.query("SELECT 1 FROM quarantine WHERE cid = ?", (bytes(cid),)).fetchone() is not None

    def list(self) -> list[Quarantined]:
        """Every block in quarantine (no good copy has come back yet)."""
        rows = self._db.query("SELECT cid, place, reason, held, since_ns FROM quarantine ORDER BY since_ns").fetchall()
        return [Quarantined(CID.from_bytes(cid), place, reason, bool(held), since)
                for cid, place, reason, held, since in rows]

    def __len__(self) -> int:
        return int(self._db.query("SELECT count(*) FROM quarantine").fetchone()[0])
