"""CAR export and import over a block store: the drivers of :mod:`cas.car`.

**Export** writes a CARv1 of the DAGs under some roots: the header, then
every block reachable from the roots, depth first in link order (a file's
root, then its first subtree, ...: the order kubo and ipfs-car write, in
which a reader can stream a file). It is streamed: memory holds the links
still to visit (depth x fan-out) and a bounded set of the CIDs written most
recently, which keeps a block met twice (a repeated chunk) from being
written twice; a repeat further apart is written again, which CARv1 allows
and every reader accepts.

**Import** reads a CARv1 or CARv2 and stores its blocks, or nothing. It
goes over the file twice. The first pass verifies every block against its
CID (its own hash: BLAKE3 or sha2-256), decodes every dag-pb and dag-cbor
node, and checks that every block the roots reach is either in the CAR or
already in the store; any fault raises before a single block is stored
(:class:`~cas.errors.InvalidBlockError` for a block that fails its hash or
does not decode, :class:`~cas.errors.InvalidInputError` for a truncated or
malformed file or a missing block). The second pass reads the file again
and stores each block once its CID and BLAKE3 digest match what the first
pass verified at that place, so a file changed between the passes still
cannot put an unverified byte in the store (and a sha2-256 block is hashed
with sha2-256 once, not twice). Memory holds the CIDs present and linked
and, per section, its CID and a 32-byte digest: never blocks.

Pinning the roots, the write session and the choice of store are the
library's (:mod:`cas.api`). This module never parses the CAR framing itself
(:mod:`cas.car`) and never touches names or the namespace.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

import blake3

from .blocks import Block, BlockSource, BlockStore
from .car import END, NEED_DATA, CarBlock, CarHeader, CarReader, encode_header, encode_section
from .cid import BLAKE3, CID
from .errors import InvalidBlockError, InvalidInputError
from .store import links_of

READ_SIZE = 1 << 20
"""Bytes read from a CAR file at a time."""

RECENT_CIDS = 1 << 16
"""How many CIDs export remembers to leave out a repeated block (~6 MiB)."""


class CarExported(NamedTuple):
    """What an export wrote."""

    roots: tuple[CID, ...]
    blocks: int
    bytes: int


class CarImported(NamedTuple):
    """What an import stored: its roots, its blocks, how many were new."""

    roots: tuple[CID, ...]
    version: int
    blocks: int
    new_blocks: int
    bytes: int


# -- export --------------------------------------------------------------------


def export_car(store: BlockSource, roots: list[CID], write: Callable[[bytes], object]) -> CarExported:
    """Write a CARv1 of everything ``roots`` reach to ``write``."""
    header = encode_header(roots)
    write(header)
    total, count = len(header), 0
    for cid, data in dag_walk(store, roots):
        section = encode_section(cid, data)
        write(section)
        total += len(section)
        count += 1
    return CarExported(tuple(roots), count, total)


def dag_walk(store: BlockSource, roots: list[CID], recent: OrderedDict[CID, None] | None = None,
             ) -> Iterator[tuple[CID, bytes]]:
    """Every block ``roots`` reach, depth first in link order, each verified
    (``store.get``), a block met again among the RECENT_CIDS last left out
    (also those in ``recent``, which a caller passes to share the memory
    across walks: the gateway's CAR of a path)."""
    if recent is None:
        recent = OrderedDict()
    stack: list[CID] = list(reversed(roots))
    while stack:
        cid = stack.pop()
        if cid in recent:
            recent.move_to_end(cid)
            continue
        recent[cid] = None
        if len(recent) > RECENT_CIDS:
            recent.popitem(last=False)
        data = store.get(cid)  # verified
        yield cid, data
        stack.extend(reversed(links_of(cid, data)))


# -- import --------------------------------------------------------------------


def read_car(stream: BinaryIO) -> Iterator[CarHeader | CarBlock]:
    """The header, then each section, of the CAR in ``stream`` (blocks not
    verified)."""
    reader = CarReader()
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.receive_data(stream.read(READ_SIZE))
        elif event is END:
            return
        else:
            assert isinstance(event, (CarHeader, CarBlock))
            yield event


def _header(events: Iterator[CarHeader | CarBlock]) -> CarHeader:
    header = next(events, None)
    if not isinstance(header, CarHeader):
        raise InvalidInputError("the CAR has no header")
    return header


class CarCheck(NamedTuple):
    """What the first pass saw: the header, and for each section in order
    its CID and the BLAKE3 digest of its bytes (for a BLAKE3 block, its
    CID's digest), so that the second pass knows it meets the same bytes."""

    header: CarHeader
    sections: list[tuple[CID, bytes]]


def check_car(has: Callable[[CID], bool], stream: BinaryIO) -> CarCheck:
    """The first pass (module docstring): raise if the CAR is not whole and
    valid (``has`` says which blocks the store holds already)."""
    try:
        return _check(has, read_car(stream))
    except InvalidInputError as exc:
        if "nothing was imported" in str(exc):
            raise
        raise InvalidInputError(f"{exc}; nothing was imported") from None


def _check(has: Callable[[CID], bool], events: Iterator[CarHeader | CarBlock]) -> CarCheck:
    header = _header(events)
    sections: list[tuple[CID, bytes]] = []
    present: set[CID] = set()
    linked: set[CID] = set(header.roots)
    for block in events:
        assert isinstance(block, CarBlock)
        if not block.cid.verify(block.data):
            raise InvalidBlockError(
                f"block {block.cid} in the CAR (section at byte {block.offset}) does not match "
                f"its {block.cid.hash_name} hash; nothing was imported"
            )
        try:
            linked.update(links_of(block.cid, block.data))
        except InvalidBlockError as exc:
            raise InvalidBlockError(
                f"block {block.cid} in the CAR (section at byte {block.offset}) is malformed: {exc}; "
                "nothing was imported"
            ) from None
        present.add(block.cid)
        fingerprint = block.cid.digest if block.cid.hash_code == BLAKE3 else blake3.blake3(block.data).digest()
        sections.append((block.cid, fingerprint))
    missing = [cid for cid in linked - present if not has(cid)]
    if missing:
        example = min(missing, key=str)
        raise InvalidInputError(
            f"the CAR lacks {len(missing)} block(s) its roots reach, e.g. {example}, and this repository "
            "does not have them; nothing was imported (export the whole DAG, or import its other parts first)"
        )
    return CarCheck(header, sections)


def store_car(store: BlockStore, stream: BinaryIO, check: CarCheck) -> CarImported:
    """The second pass: put every block, each matched with BLAKE3 to the
    bytes the first pass verified (for a BLAKE3 block, its own hash again;
    for a sha2-256 one, a BLAKE3 instead of a second, slower sha2-256).
    A CAR that changed between the passes is refused at its first changed
    section, before that section is stored (the sections before it, each
    verified, stay stored unpinned, for gc)."""
    events = read_car(stream)
    header = _header(events)
    count = new = size = 0
    for block in events:
        assert isinstance(block, CarBlock)
        if count >= len(check.sections) or check.sections[count] != (
            block.cid, blake3.blake3(block.data).digest()
        ):
            raise InvalidInputError(
                f"the CAR changed while it was imported (section at byte {block.offset}); import it again"
            )
        count += 1
        size += len(block.data)
        if store.put(Block.verified_elsewhere(block.cid, block.data)):
            new += 1
    if count != len(check.sections):
        raise InvalidInputError("the CAR changed while it was imported (it is shorter); import it again")
    store.barrier()
    return CarImported(header.roots, header.version, count, new, size)
