"""UnixFS directories as IPFS makes them: plain and HAMT-sharded, read only.

cas's own directories are DAG-CBOR trees (:mod:`cas.names.dirtree`); kubo,
helia and ipfs-car write a directory as a dag-pb node whose UnixFS ``Data``
says ``Directory`` (one link per entry, named, in name order) or, past a
size, ``HAMTShard``: a hash array mapped trie whose links are named by a
two-hex-digit bucket prefix, either the prefix alone (a sub-shard) or the
prefix followed by the entry's name (ipfs/specs "UnixFS", "HAMT").

This module reads both, so that ``cas ls``, ``cas get`` and ``cas cat
CID/path`` work on what an IPFS tool made. Each entry is presented as a
:class:`~cas.names.directory.DirEntry`: its kind and size are read from the
child's own root block (a file's ``filesize``, a symlink's target; a raw
leaf's length from its link), its mode from UnixFS ``mode`` if set (else 0644 for
files, 0755 for directories), its mtime from UnixFS ``mtime`` if set (as
``--preserve-mtime`` writes it), else 0. A sub-directory's size is the link's ``Tsize`` (the
encoded size of its DAG, as IPFS counts it).

A listing gathers the links (names and CIDs only: a HAMT's are in hash
order) and gives them sorted by name, each entry's root block read as it
is given (a raw leaf's size is its link's ``Tsize``, which for a raw block
is its length, so a listing never reads file data).
A name is looked up in a plain directory by scanning its links and in a
HAMT by its hash (:func:`hamt_hash`, murmur3-x64-64 as kubo and the JS
importer compute it): one shard per level, as IPFS does.

This module reads only; :mod:`cas.unixfs_view` writes the UnixFS view of a
cas directory, with :func:`hamt_hash` from here. It knows nothing of
namespaces or stores beyond :class:`~cas.blocks.BlockSource`; every block it
reads is verified by that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .blocks import BlockSource
from .cid import CID, DAG_CBOR, DAG_PB, RAW
from .dagpb import (
    TYPE_DIRECTORY,
    TYPE_FILE,
    TYPE_HAMT_SHARD,
    TYPE_NAMES,
    TYPE_RAW,
    TYPE_SYMLINK,
    PBLink,
    decode_unixfs_node,
)
from .errors import InvalidBlockError, InvalidInputError
from .names.directory import DirEntry

HAMT_HASH_MURMUR3 = 0x22
"""The one HAMT hash function IPFS uses (murmur3-x64-64, multicodec 0x22)."""

MAX_SHARD_DEPTH = 64
"""Deeper than any HAMT a 64-bit hash can address at fan-out 2; a deeper
one is a cycle or a forgery."""

_DEFAULT_FILE_MODE = 0o644
_DEFAULT_DIR_MODE = 0o755


_M64 = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def hamt_hash(name: str) -> bytes:
    """The 8 bytes a HAMT places ``name`` by: the first 64-bit half (h1) of
    MurmurHash3_x64_128 (seed 0) of its UTF-8, big-endian (multicodec 0x22,
    murmur3-x64-64). Bucket bits are taken from the first byte on, most
    significant bit first (:func:`hamt_bucket`): the bits go-unixfs and
    ipfs-unixfs-importer use (the JS importer keeps the bytes reversed and
    reads them from the end)."""
    data = name.encode("utf-8")
    c1, c2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
    h1 = h2 = 0
    whole = len(data) // 16
    for i in range(whole):
        k1 = int.from_bytes(data[16 * i : 16 * i + 8], "little")
        k2 = int.from_bytes(data[16 * i + 8 : 16 * i + 16], "little")
        h1 ^= (_rotl((k1 * c1) & _M64, 31) * c2) & _M64
        h1 = (((_rotl(h1, 27) + h2) & _M64) * 5 + 0x52DCE729) & _M64
        h2 ^= (_rotl((k2 * c2) & _M64, 33) * c1) & _M64
        h2 = (((_rotl(h2, 31) + h1) & _M64) * 5 + 0x38495AB5) & _M64
    tail = data[16 * whole :]
    if len(tail) > 8:
        h2 ^= (_rotl((int.from_bytes(tail[8:], "little") * c2) & _M64, 33) * c1) & _M64
    if tail:
        h1 ^= (_rotl((int.from_bytes(tail[:8], "little") * c1) & _M64, 31) * c2) & _M64
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _M64
    return h1.to_bytes(8, "big")


def hamt_bucket(digest: bytes, depth: int, bits: int) -> int | None:
    """The bucket at ``depth`` (``bits`` per level) of a name whose
    :func:`hamt_hash` is ``digest``; None past its 64 bits."""
    start = depth * bits
    if start + bits > 64:
        return None
    return (int.from_bytes(digest, "big") >> (64 - start - bits)) & ((1 << bits) - 1)


class _Dir(NamedTuple):
    """A decoded UnixFS directory node: its links, and for a HAMT the
    length of the bucket prefix in link names (0 for a plain directory)."""

    links: tuple[PBLink, ...]
    prefix: int
    mode: int | None
    fanout: int = 0


def _decode_dir(cid: CID, data: bytes) -> _Dir | None:
    """The directory node ``cid``, or None if it is a UnixFS file/symlink."""
    try:
        node, unixfs = decode_unixfs_node(data)
    except InvalidBlockError as exc:
        raise InvalidBlockError(f"dag-pb node {cid} is invalid: {exc}") from None
    if unixfs.type == TYPE_DIRECTORY:
        return _Dir(node.links, 0, unixfs.mode)
    if unixfs.type != TYPE_HAMT_SHARD:
        return None
    fanout = unixfs.fanout or 0
    if unixfs.hash_type != HAMT_HASH_MURMUR3:
        raise InvalidBlockError(
            f"HAMT shard {cid} uses hash function {unixfs.hash_type}; IPFS's (and cas's) is murmur3 (0x22)"
        )
    if fanout < 2 or fanout & (fanout - 1) or fanout > 1024:
        raise InvalidBlockError(f"HAMT shard {cid} has fan-out {fanout}: not a power of two up to 1024")
    return _Dir(node.links, len(f"{fanout - 1:X}"), unixfs.mode, fanout)


def is_directory(store: BlockSource, cid: CID) -> bool:
    """True if ``cid`` is a UnixFS directory or HAMT shard (dag-pb)."""
    return cid.codec == DAG_PB and _decode_dir(cid, store.get(cid)) is not None


def _named_links(store: BlockSource, cid: CID, depth: int = 0) -> Iterator[tuple[str, PBLink]]:
    """Every (entry name, link) of directory ``cid``, in link order (for a
    HAMT: shard by shard, depth first)."""
    if depth > MAX_SHARD_DEPTH:
        raise InvalidBlockError(f"HAMT shard {cid} is nested deeper than {MAX_SHARD_DEPTH} levels")
    node = _decode_dir(cid, store.get(cid))
    if node is None:
        raise InvalidInputError(f"{cid} is not a directory")
    for link in node.links:
        name = link.name or ""
        if not node.prefix:
            yield name, link
        elif len(name) == node.prefix:
            if link.hash.codec != DAG_PB:
                raise InvalidBlockError(f"HAMT shard {cid} links a sub-shard that is not dag-pb: {link.hash}")
            yield from _named_links(store, link.hash, depth + 1)
        elif len(name) > node.prefix:
            yield name[node.prefix :], link
        else:
            raise InvalidBlockError(f"HAMT shard {cid} has a link named {name!r}, shorter than its bucket prefix")


def entry_for(store: BlockSource, name: str, link: PBLink, parent: CID) -> DirEntry:
    """The directory entry ``name`` of ``parent`` that ``link`` points at,
    its kind and size read from the child's root block."""
    cid = link.hash
    kind, size, mode, target, mtime = "file", 0, None, None, 0
    if cid.codec == RAW:
        size = link.tsize if link.tsize is not None else len(store.get(cid))
    elif cid.codec == DAG_CBOR:
        kind = "dir"  # a cas directory linked from a UnixFS one
        size = link.tsize or 0
    else:
        data = store.get(cid)
        try:
            node, unixfs = decode_unixfs_node(data)
        except InvalidBlockError as exc:
            raise InvalidBlockError(f"dag-pb node {cid} (entry {name!r} of {parent}) is invalid: {exc}") from None
        mode = unixfs.mode
        if unixfs.mtime is not None:
            mtime = unixfs.mtime[0] * 1_000_000_000 + (unixfs.mtime[1] or 0)
        if unixfs.type in (TYPE_DIRECTORY, TYPE_HAMT_SHARD):
            kind, size = "dir", link.tsize or 0
        elif unixfs.type in (TYPE_FILE, TYPE_RAW):
            size = unixfs.filesize if unixfs.filesize is not None else len(unixfs.data or b"")
        elif unixfs.type == TYPE_SYMLINK:
            kind, target = "symlink", (unixfs.data or b"").decode("utf-8", "replace")
        else:
            raise InvalidBlockError(
                f"entry {name!r} of {parent} is a UnixFS {TYPE_NAMES[unixfs.type]}, which cas cannot show"
            )
    if mode is None:
        mode = _DEFAULT_DIR_MODE if kind == "dir" else _DEFAULT_FILE_MODE
    try:
        return DirEntry(name, kind, size, mode & 0o7777, mtime, None if kind == "symlink" else cid, target)
    except InvalidInputError as exc:
        raise InvalidBlockError(f"directory {parent} has an entry cas cannot use: {exc}") from None


def iterate(store: BlockSource, cid: CID) -> Iterator[DirEntry]:
    """The entries of UnixFS directory ``cid``, sorted by name."""
    if _decode_dir(cid, store.get(cid)) is None:
        raise InvalidInputError(f"{cid} is not a directory")
    links = sorted(_named_links(store, cid), key=lambda pair: pair[0].encode("utf-8"))
    for name, link in links:
        yield entry_for(store, name, link, cid)


def lookup(store: BlockSource, cid: CID, name: str) -> DirEntry | None:
    """The entry called ``name`` in UnixFS directory ``cid``, or None: a
    scan of a plain directory's links, one shard per level of a HAMT."""
    node = _decode_dir(cid, store.get(cid))
    if node is None:
        raise InvalidInputError(f"{cid} is not a directory")
    if not node.prefix:
        for link in node.links:
            if link.name == name:
                return entry_for(store, name, link, cid)
        return None
    digest = hamt_hash(name)
    shard, depth = cid, 0
    while True:
        bits = (node.fanout - 1).bit_length()
        bucket = hamt_bucket(digest, depth, bits)
        if bucket is None or depth > MAX_SHARD_DEPTH:
            raise InvalidBlockError(f"HAMT {cid} is deeper than the hash of {name!r} reaches")
        prefix = f"{bucket:0{node.prefix}X}"
        found = next((link for link in node.links if (link.name or "").startswith(prefix)), None)
        if found is None:
            return None
        if found.name == prefix:  # a sub-shard
            shard, depth = found.hash, depth + 1
            sub = _decode_dir(shard, store.get(shard))
            if sub is None or not sub.prefix:
                raise InvalidBlockError(f"HAMT shard {shard} (below {cid}) is not a HAMT shard")
            node = sub
            continue
        return entry_for(store, name, found, shard) if found.name == prefix + name else None


def size(store: BlockSource, cid: CID) -> int:
    """The size IPFS gives a directory: the sum of its entries' ``Tsize``."""
    return sum(link.tsize or 0 for _, link in _named_links(store, cid))
