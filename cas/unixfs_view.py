"""The UnixFS view of a cas directory: what IPFS tools list and fetch.

cas directories are DAG-CBOR trees (:mod:`cas.names.dirtree`), which kubo,
helia and ipfs-car cannot read. The view is the same tree written as IPFS
writes directories, derived from the namespace's own and sharing its file
DAGs: each cas directory becomes a UnixFS ``Directory`` node in dag-pb (a
link per entry, by name, in name order, ``mode`` from the entry), or past
``SHARD_THRESHOLD`` bytes of links (kubo's and the JS importer's 256 KiB
estimate: name + binary CID per link) a HAMT of fan-out 256 hashed with
murmur3 (:func:`cas.unixfs.hamt_hash`), laid out as go-unixfs and
ipfs-unixfs-importer lay it out. A file entry links the file's own root
CID, unchanged: the view adds directory nodes, never file blocks. A symlink
becomes a UnixFS ``Symlink`` node. View nodes are hashed with BLAKE3, like
everything cas makes. A directory's mode goes in its node (UnixFS
``mode``); a file's cannot without new file nodes, so files show the
readers' default, and mtimes are not carried. UnixFS has no fifos, sockets
or device nodes (its types are files, directories, symlinks and shards), so
the view leaves them out, and says how many with one logged warning; owners,
extended attributes and hard links have no place in it either (a hard
link's names become separate links to the same file DAG).

The view is a function of the directory's CID: the same cas directory
always gives the same view CID, and two directories that share a
subdirectory share its view. It is not stored: :func:`build_view` returns
the view's root and its nodes (directory metadata only, in memory: ~100
bytes per entry), and :class:`ViewStore` lays them over the repository so
that a CAR export or a listing walks the view as if it were stored.

``Tsize`` of a file link is the file's size in bytes (what its entry
records; the encoded size of its DAG is a few hundred bytes per MiB more),
of a directory link the encoded size of its view nodes plus its entries'.
IPFS tools use ``Tsize`` only as a size hint.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import NamedTuple

from .blocks import Block, BlockSource, BlockStore
from .cid import CID, DAG_CBOR, DAG_PB
from .dagpb import TYPE_DIRECTORY, TYPE_HAMT_SHARD, TYPE_SYMLINK, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
from .errors import InvalidInputError
from .names import dirtree
from .unixfs import HAMT_HASH_MURMUR3, hamt_bucket, hamt_hash

SHARD_THRESHOLD = 256 * 1024
"""A directory whose links (name + binary CID each) add up to more becomes a
HAMT: the threshold of kubo (``HAMTShardingSize``) and of the JS importer
(``shardSplitThresholdBytes``)."""

log = logging.getLogger(__name__)

SHARD_FANOUT = 256
_SHARD_BITS = 8


class ViewLink(NamedTuple):
    """An entry of a view directory: its name, what it links, its Tsize."""

    name: str
    cid: CID
    tsize: int


def _put(blocks: dict[CID, bytes], links: list[PBLink], unixfs: UnixFSData) -> tuple[CID, int]:
    data = encode_node(PBNode(tuple(links), encode_unixfs(unixfs)))
    block = Block.of(DAG_PB, data)
    blocks[block.cid] = data
    return block.cid, len(data) + sum(link.tsize or 0 for link in links)


def directory_node(blocks: dict[CID, bytes], children: list[ViewLink], mode: int | None = None) -> tuple[CID, int]:
    """The view node of a directory of ``children`` (plain, or a HAMT past
    the threshold), its nodes added to ``blocks``; its CID and Tsize."""
    children = sorted(children, key=lambda child: child.name.encode("utf-8"))
    estimate = sum(len(child.name.encode("utf-8")) + len(child.cid.binary) for child in children)
    if estimate <= SHARD_THRESHOLD:
        links = [PBLink(child.cid, child.name, child.tsize) for child in children]
        return _put(blocks, links, UnixFSData(TYPE_DIRECTORY, mode=mode))
    return hamt_node(blocks, [(hamt_hash(child.name), child) for child in children], 0, mode)


def hamt_node(
    blocks: dict[CID, bytes], items: list[tuple[bytes, ViewLink]], depth: int, mode: int | None = None
) -> tuple[CID, int]:
    """A HAMT shard at ``depth`` over ``items`` (hash, child), as the IPFS
    importers build one: per occupied bucket, in bucket order, a link named
    by the bucket's two hex digits and the entry's name, or by the digits
    alone for a sub-shard holding the bucket's several entries; ``Data`` the
    bitmap of occupied buckets, big-endian, in as few bytes as it needs."""
    buckets: dict[int, list[tuple[bytes, ViewLink]]] = defaultdict(list)
    for digest, child in items:
        bucket = hamt_bucket(digest, depth, _SHARD_BITS)
        if bucket is None:  # 64 bits of murmur3 alike: two names, one hash
            raise InvalidInputError(
                f"names {[c.name for _, c in items]} share a 64-bit HAMT hash; cas cannot shard them"
            )
        buckets[bucket].append((digest, child))
    links = []
    bitmap = 0
    for bucket in sorted(buckets):
        bitmap |= 1 << bucket
        group = buckets[bucket]
        prefix = f"{bucket:02X}"
        if len(group) == 1:
            child = group[0][1]
            links.append(PBLink(child.cid, prefix + child.name, child.tsize))
        else:
            cid, tsize = hamt_node(blocks, group, depth + 1)
            links.append(PBLink(cid, prefix, tsize))
    data = bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "big")
    return _put(blocks, links, UnixFSData(TYPE_HAMT_SHARD, data=data, hash_type=HAMT_HASH_MURMUR3,
                                          fanout=SHARD_FANOUT, mode=mode))


def build_view(store: BlockStore, cid: CID) -> tuple[CID, dict[CID, bytes]]:
    """The UnixFS view of cas directory ``cid``: its root CID and its nodes."""
    blocks: dict[CID, bytes] = {}
    memo: dict[tuple[CID, int | None], tuple[CID, int]] = {}
    left_out: list[str] = []
    root, _ = _view(store, cid, blocks, memo, None, left_out)
    if left_out:
        log.warning("the UnixFS view of %s leaves out %d fifo(s), socket(s) or device node(s), which UnixFS "
                    "cannot hold (the first: %r)", cid, len(left_out), left_out[0])
    return root, blocks


def _view(
    store: BlockStore, cid: CID, blocks: dict[CID, bytes],
    memo: dict[tuple[CID, int | None], tuple[CID, int]], mode: int | None, left_out: list[str],
) -> tuple[CID, int]:
    if (cid, mode) in memo:  # a subdirectory met twice (the same CID): one view
        return memo[cid, mode]
    children = []
    for entry in dirtree.iterate(store, cid):
        if entry.kind == "dir":
            assert entry.cid is not None
            child, tsize = _view(store, entry.cid, blocks, memo, entry.mode, left_out)
        elif entry.kind == "file":
            assert entry.cid is not None
            child, tsize = entry.cid, entry.size
        elif entry.kind == "symlink":
            assert entry.target is not None
            child, tsize = _put(blocks, [], UnixFSData(TYPE_SYMLINK, data=entry.target.encode("utf-8")))
        else:  # fifo, socket, device: no UnixFS type
            left_out.append(entry.name)
            continue
        children.append(ViewLink(entry.name, child, tsize))
    done = directory_node(blocks, children, mode)
    memo[cid, mode] = done
    return done


class ViewStore:
    """A block source that serves a view's nodes from memory and everything
    else from ``store`` (file blocks are shared with the namespace)."""

    def __init__(self, store: BlockSource, blocks: dict[CID, bytes]) -> None:
        self._store = store
        self._blocks = blocks

    def get(self, cid: CID, /) -> bytes:
        data = self._blocks.get(cid)
        return data if data is not None else self._store.get(cid)


def view_of(store: BlockStore, cid: CID) -> tuple[CID, BlockSource]:
    """``cid`` as IPFS tools can read it: a cas directory's view and a store
    that serves it; anything else as it is."""
    if cid.codec != DAG_CBOR:
        return cid, store
    root, blocks = build_view(store, cid)
    return root, ViewStore(store, blocks)

