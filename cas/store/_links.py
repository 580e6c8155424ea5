"""Which CIDs a block refers to, by codec: what verify and gc walk."""

from __future__ import annotations

from typing import Any

from .. import dagcbor
from ..cid import CID, DAG_CBOR, DAG_PB, RAW


def _cbor_links(value: Any, out: list[CID]) -> None:
    if isinstance(value, CID):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _cbor_links(item, out)
    elif isinstance(value, dict):
        for item in value.values():
            _cbor_links(item, out)


def links_of(cid: CID, data: bytes) -> list[CID]:
    """The CIDs that block ``cid`` links to, in order. Raises
    InvalidBlockError if the block does not decode under its codec."""
    if cid.codec == RAW:
        return []
    if cid.codec == DAG_PB:
        from .. import dagpb

        return [link.hash for link in dagpb.decode_node(data).links]
    assert cid.codec == DAG_CBOR
    out: list[CID] = []
    _cbor_links(dagcbor.decode(data), out)
    return out
