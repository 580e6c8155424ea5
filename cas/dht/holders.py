"""Who holds each block now: live copy counts, and what is stored with each peer.

Theory of operation
===================

A placement or a repair round ends, for each block, with a plan whose
:meth:`~cas.dht.replication.Placement.holders` are the members of the
placement set confirmed to hold it: a STORE acknowledged, HAVE answered
true, or this node's own copy when this node is a member. Their number is
the block's copy count. :class:`HolderIndex` keeps that list per block, so
that the count follows what happens between rounds instead of waiting for
the next one:

* **A holder found dead** (the routing table dropped it: the driver's
  ``peer_lost`` hook) takes its copies with it at once (:meth:`lose`):
  every block it held has one copy fewer and, below R, counts as short
  now. The repair round the loss starts (seconds later) makes the copies
  good and records the blocks again.
* **A newer placement or round replaces a block's list** (:meth:`record`):
  it confirmed every member anew, so nothing of the old list survives.
* **After a round, the index is checked against the store**, a slice at
  a time (:meth:`snapshot` of the slice, then :meth:`reconcile` with the
  sizes of its blocks still stored): blocks dropped or collected since are
  forgotten, and sizes not known yet (a round that sent no copy never read
  the block) are filled in. An entry recorded again meanwhile is newer
  than the check and is left alone.

From the same lists come, per peer, how many of this node's **own** blocks
(put here by its user: not those it holds for other nodes) the peer is
known to hold, and their bytes (:meth:`with_peer`; ``cas peers``). This
node's own copy is never "with a peer".

Memory
------

One entry per block, a flat tuple ``(size, own, *holders)``: the block's
size (None until known), whether it is this node's own block, then the
holders' node IDs nearest first. A node ID is a 256-bit int (~60 bytes); it
is interned (one object per node, kept with the node's :class:`PeerShare`),
so a block's entry costs 8 bytes per holder, not 60. Measured with R = 3
and a million blocks (tracemalloc): ~150 MB, i.e. the tuples (~80 bytes),
the sizes (28) and the dict's slots (~45); the CIDs are the caller's, who
keeps them anyway. There is no index from node to blocks (sets of CIDs
per node measured ~85 MB more per million blocks): a lost node's blocks
are found by one scan of the entries, ~65 ms per million blocks, and
updated, ~0.15 s in all for a node holding 5% of them (2 busy cores),
once per node lost: small beside the repair round its loss starts.

Rules for this file:

1. No I/O, no clocks, no trio: facts come in as method calls
   (:mod:`cas.dht.replicator` is the driver).
2. ``copies(cid)`` is the number of holders recorded for ``cid``, and a
   block is short exactly when that is below R.
3. This node's ID counts toward a block's copies, never toward a peer's
   share; a peer's share counts own blocks only.
4. A node ID is interned while at least one entry names it, and forgotten
   with its last entry (or when it is lost): memory follows the blocks
   and their holders, not every node ever seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ..cid import CID

Entry = tuple[int | None, bool, *tuple[int, ...]]
"""One block: ``(size or None, own, *holder IDs)`` (see the module docstring)."""

_HOLDERS: Final = 2
"""Where the holders start in an :data:`Entry`."""


@dataclass
class PeerShare:
    """One peer in the index: its interned ID and what it holds of ours."""

    node_id: int
    """The one int object every entry naming this peer shares."""
    entries: int = 0
    """Blocks whose holders include it, own or held for others."""
    blocks: int = 0
    """Own blocks among them."""
    bytes: int = 0
    """Their bytes, for those whose size is known."""


class HolderIndex:
    """Confirmed holders of every block placed or repaired; see the module docstring."""

    def __init__(self, own_id: int, replicas: int) -> None:
        self.own_id = own_id
        self.replicas = replicas
        self._entries: dict[CID, Entry] = {}
        self._peers: dict[int, PeerShare] = {}
        self._short: set[CID] = set()

    # -- reading ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: object) -> bool:
        return cid in self._entries

    def copies(self, cid: CID) -> int | None:
        """Holders known now (None: never recorded)."""
        entry = self._entries.get(cid)
        return None if entry is None else len(entry) - _HOLDERS

    def holders(self, cid: CID) -> list[int]:
        """The node IDs known to hold ``cid`` now, nearest first."""
        entry = self._entries.get(cid)
        return [] if entry is None else list(entry[_HOLDERS:])

    def is_own(self, cid: CID) -> bool:
        """Whether ``cid`` was recorded as this node's own block (not held for another)."""
        entry = self._entries.get(cid)
        return entry is not None and entry[1]

    def short(self) -> int:
        """Blocks known to have fewer than R copies now."""
        return len(self._short)

    def short_cids(self) -> list[CID]:
        return list(self._short)

    def with_peer(self, node_id: int) -> tuple[int, int]:
        """(blocks, bytes) of this node's own blocks ``node_id`` is known to hold."""
        share = self._peers.get(node_id)
        return (0, 0) if share is None else (share.blocks, share.bytes)

    def peers(self) -> int:
        """Node IDs interned (every node some entry names, this one aside)."""
        return len(self._peers)

    # -- facts ------------------------------------------------------------------------

    def record(self, cid: CID, holders: Iterable[int], *, size: int | None = None,
               own: bool | None = None) -> None:
        """``holders`` (nearest first) were just confirmed to hold ``cid``;
        the list replaces any earlier one. ``size`` and ``own`` default to
        what was known before (own: True for a block not seen before, as a
        block is first placed when its user puts it)."""
        old = self._entries.get(cid)
        if old is not None:
            self._unlink(cid, old)
            size = old[0] if size is None else size
            own = old[1] if own is None else own
        self._link(cid, size, True if own is None else own, holders)

    def lose(self, node_id: int) -> list[CID]:
        """``node_id`` is gone (found dead): every block it held has one copy
        fewer from now on. Returns those blocks."""
        share = self._peers.get(node_id)
        if share is None:
            return []
        node = share.node_id
        # `node in entry` first, at C speed; it can only be wrong the other
        # way (a node ID equal to a size or to own's 0/1), so the slice
        # confirms it, for the few entries that pass.
        hit = [cid for cid, entry in self._entries.items() if node in entry and node in entry[_HOLDERS:]]
        for cid in hit:  # only the lost node's share changes, and it goes whole
            entry = self._entries[cid]
            self._entries[cid] = entry = (entry[0], entry[1], *(h for h in entry[_HOLDERS:] if h != node))
            if len(entry) - _HOLDERS < self.replicas:
                self._short.add(cid)
        del self._peers[node_id]
        return hit

    def forget(self, cids: Iterable[CID]) -> None:
        """These blocks are no longer stored here: nothing more is known of them."""
        for cid in cids:
            entry = self._entries.get(cid)
            if entry is not None:
                self._unlink(cid, entry)

    # -- the check after a round ----------------------------------------------------------

    def cids(self) -> list[CID]:
        """Every block recorded."""
        return list(self._entries)

    def snapshot(self, cids: Iterable[CID]) -> list[tuple[CID, Entry]]:
        """The entries of those of ``cids`` still recorded, as they are now,
        for :meth:`reconcile` once the store has said which it holds (the
        caller checks the index in steps of its choosing, so that a
        million blocks are never copied at once)."""
        entries = self._entries
        return [(cid, entries[cid]) for cid in cids if cid in entries]

    def reconcile(self, seen: Sequence[tuple[CID, Entry]], sizes: Mapping[CID, int]) -> int:
        """The store answered, for the entries of ``seen``, the sizes of
        those it still holds (``sizes``): the others are forgotten, and
        unknown sizes are filled in. An entry recorded again since the
        snapshot is newer than the answer and is left alone. Returns how
        many were forgotten."""
        forgotten = 0
        for cid, entry in seen:
            if self._entries.get(cid) is not entry:
                continue  # recorded again (or lost a holder) since: newer than this answer
            size = sizes.get(cid)
            if size is None:
                self._unlink(cid, entry)
                forgotten += 1
            elif entry[0] is None:
                self._unlink(cid, entry)
                self._link(cid, size, entry[1], entry[_HOLDERS:])
        return forgotten

    # -- bookkeeping --------------------------------------------------------------------

    def _intern(self, holders: Iterable[int]) -> list[int]:
        out = []
        for node_id in dict.fromkeys(holders):  # each holder once, in order
            if node_id == self.own_id:
                out.append(self.own_id)
                continue
            share = self._peers.get(node_id)
            if share is None:
                share = self._peers[node_id] = PeerShare(node_id)
            out.append(share.node_id)
        return out

    def _link(self, cid: CID, size: int | None, own: bool, holders: Iterable[int]) -> None:
        entry: Entry = (size, own, *self._intern(holders))
        self._entries[cid] = entry
        for node_id in entry[_HOLDERS:]:
            if node_id == self.own_id:
                continue
            share = self._peers[node_id]
            share.entries += 1
            if own:
                share.blocks += 1
                share.bytes += size or 0
        if len(entry) - _HOLDERS < self.replicas:
            self._short.add(cid)
        else:
            self._short.discard(cid)

    def _unlink(self, cid: CID, entry: Entry) -> None:
        del self._entries[cid]
        self._short.discard(cid)
        size, own = entry[0], entry[1]
        for node_id in entry[_HOLDERS:]:
            if node_id == self.own_id:
                continue
            share = self._peers[node_id]
            share.entries -= 1
            if own:
                share.blocks -= 1
                share.bytes -= size or 0
            if not share.entries:
                del self._peers[node_id]
