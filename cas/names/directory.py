"""Directory nodes: listings of named entries, as DAG-CBOR blocks.

A directory is a tree of nodes of two shapes (cas.names.dirtree builds and
edits the tree; this module owns the bytes). A *leaf* lists entries::

    {"type": "cas/dir", "entries": [ENTRY, ...]}

sorted by the UTF-8 bytes of their names, names unique. A small directory is
one leaf. A large one is cut into leaves, and *index* nodes list them::

    {"type": "cas/dir", "level": L, "children": [CHILD, ...]}

where L >= 1 is the height above the leaves and each CHILD is
``{"first": NAME, "cid": LINK, "count": N, "size": S}``: the child's first
name, its node, and the number and total size of the entries beneath it.
Children are sorted by ``first`` and the first names strictly increase.

An entry is a map with

    name   text, validated by :func:`check_name`
    kind   "file" | "dir" | "symlink" | "fifo" | "socket" | "chardev" | "blockdev"
    cid    link to the content (files and directories only)
    target text (symlinks only)
    size   bytes of content: the file's size, the sum over a directory's
           subtree, the target's length for a symlink, 0 for the others
    mode   permission bits (0..0o7777: setuid, setgid and sticky included)
    mtime  modification time, integer nanoseconds since the Unix epoch

and, each only when recorded (absent in entries written before they
existed, which therefore keep their bytes and CIDs), the rest of an inode's
metadata, :class:`Meta`: ``uid``, ``gid``, ``atime``, ``ctime`` (ns),
``rdev`` (devices only), ``xattrs`` (a map of name to bytes), and for a
name of a hard-linked inode ``ino`` (the link group, the same in every
name of it) with ``nlink`` (its number of names).

This module owns the format and its strict decoding (a node of the wrong
shape from disk or a peer is an InvalidBlockError, never a crash). Building
and editing trees of nodes is ``cas.names.dirtree``; paths and the signed
namespace root are ``cas.names.namespace`` and ``cas.names.record``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .. import dagcbor
from ..blocks import Block
from ..cid import CID, DAG_CBOR, MAX_BLOCK_SIZE
from ..errors import InvalidBlockError, InvalidInputError

NODE_TYPE = "cas/dir"
MAX_LEVEL = 16  # 64^16 entries: far beyond any directory; bounds recursion on input
KINDS = ("file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev")
SPECIAL_KINDS = ("fifo", "socket", "chardev", "blockdev")
"""Kinds with no content: only their metadata is kept."""
MAX_NAME_BYTES = 255
MAX_XATTR_NAME = 255
MAX_XATTR_BYTES = 4096 - 32
"""The extended attributes of one entry, names and values together, fit
what ext4 keeps in one 4 KiB block (its default, without ``ea_inode``):
more is ENOSPC there too. It also keeps a directory leaf of 1024 entries
inside one block."""
MAX_UINT64 = (1 << 64) - 1


def check_name(name: str) -> str:
    """Return ``name`` if it may name a directory entry; raise
    InvalidInputError saying why not."""
    if not isinstance(name, str) or name == "":
        raise InvalidInputError("a name must not be empty")
    if name in (".", ".."):
        raise InvalidInputError(f"{name!r} cannot be used as a name")
    if "/" in name:
        raise InvalidInputError(f"name {name!r} must not contain '/'")
    if "\x00" in name:
        raise InvalidInputError(f"name {name!r} must not contain a NUL character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"name {name!r} is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidInputError(
            f"name {name[:40]!r}... is {len(encoded)} bytes; the limit is {MAX_NAME_BYTES}"
        )
    return name


def check_xattrs(xattrs: tuple[tuple[str, bytes], ...]) -> None:
    """Raise InvalidInputError unless ``xattrs`` is sorted by name, names
    unique and well formed, and the whole within MAX_XATTR_BYTES."""
    total = 0
    for at, (name, value) in enumerate(xattrs):
        try:
            encoded = name.encode("utf-8") if isinstance(name, str) else b""
        except UnicodeEncodeError:
            encoded = b""
        if not encoded or len(encoded) > MAX_XATTR_NAME or "\x00" in name or not isinstance(value, bytes):
            raise InvalidInputError(f"bad extended attribute name {name[:40]!r}")
        if at and xattrs[at - 1][0] >= name:
            raise InvalidInputError("extended attributes must be sorted by name, each once")
        total += len(encoded) + len(value)
    if total > MAX_XATTR_BYTES:
        raise InvalidInputError(f"extended attributes of {total} bytes; at most {MAX_XATTR_BYTES} fit an entry")


@dataclass(frozen=True)
class Meta:
    """The inode metadata of an entry beyond its mode and mtime, each part
    only when recorded (None, or empty: not recorded; the reader decides
    what to show, as the mount shows its own user for an unrecorded owner).

    ``ino`` names a hard-link group: every name of one inode carries the same
    ``ino``, content and metadata, and ``nlink`` is the number of them."""

    uid: int | None = None
    gid: int | None = None
    atime: int | None = None
    ctime: int | None = None
    rdev: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()
    ino: int | None = None
    nlink: int = 1

    def __post_init__(self) -> None:
        for key in ("uid", "gid", "atime", "ctime", "rdev", "ino"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= MAX_UINT64:
                raise InvalidInputError(f"{key} {value} is out of range")
        if not 1 <= self.nlink <= MAX_UINT64 or (self.nlink > 1) != (self.ino is not None):
            raise InvalidInputError("a hard-linked entry has an ino and a link count of 2 or more; others have neither")
        check_xattrs(self.xattrs)

    def xattr(self, name: str) -> bytes | None:
        for key, value in self.xattrs:
            if key == name:
                return value
        return None

    def with_xattr(self, name: str, value: bytes | None) -> Meta:
        """This metadata with ``name`` set to ``value`` (None: removed)."""
        kept = {key: item for key, item in self.xattrs if key != name}
        if value is not None:
            kept[name] = value
        return replace(self, xattrs=tuple(sorted(kept.items())))

    def to_value(self) -> dict[str, Any]:
        """The recorded parts, as an entry's optional keys."""
        value: dict[str, Any] = {key: getattr(self, key) for key in _META_INTS if getattr(self, key) is not None}
        if self.xattrs:
            value["xattrs"] = dict(self.xattrs)
        if self.ino is not None:
            value["nlink"] = self.nlink
        return value

    @classmethod
    def from_value(cls, value: Any) -> Meta:
        """The Meta a map of an entry's optional keys gives; InvalidInputError
        if a key is unknown, of the wrong type, or breaks a rule above."""
        if not isinstance(value, dict) or not _META_TYPES.keys() >= value.keys():
            raise InvalidInputError(f"unknown metadata fields: {sorted(value) if isinstance(value, dict) else value}")
        for key, item in value.items():
            if not isinstance(item, _META_TYPES[key]) or isinstance(item, bool):
                raise InvalidInputError(f"metadata field {key!r} has the wrong type")
        xattrs = value.get("xattrs", {})
        if "xattrs" in value and not xattrs:
            raise InvalidInputError("xattrs must not be an empty map")
        if any(not isinstance(k, str) or not isinstance(v, bytes) for k, v in xattrs.items()):
            raise InvalidInputError("xattrs map names to bytes")
        if "nlink" in value and "ino" not in value:
            raise InvalidInputError("nlink without ino")
        return cls(**{key: value.get(key) for key in _META_INTS}, xattrs=tuple(sorted(xattrs.items())),
                   nlink=value.get("nlink", 1))


NO_META = Meta()
_META_INTS = ("uid", "gid", "atime", "ctime", "rdev", "ino")


@dataclass(frozen=True)
class DirEntry:
    """One named entry of a directory."""

    name: str
    kind: str
    size: int
    mode: int
    mtime: int
    cid: CID | None = None
    target: str | None = None
    meta: Meta = NO_META

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown entry kind {self.kind!r}")
        if (self.kind == "symlink") != (self.target is not None):
            raise InvalidInputError("a symlink entry needs a target, and only a symlink has one")
        if (self.kind in ("file", "dir")) != (self.cid is not None):
            raise InvalidInputError(f"entry {self.name!r}: files and directories need a CID, and only they have one")
        if self.size < 0 or not 0 <= self.mode <= 0o7777:
            raise InvalidInputError(f"entry {self.name!r}: bad size or mode")
        if self.kind in SPECIAL_KINDS and self.size:
            raise InvalidInputError(f"entry {self.name!r}: a {self.kind} has no content")
        if self.meta.rdev is not None and self.kind not in ("chardev", "blockdev"):
            raise InvalidInputError(f"entry {self.name!r}: only a device has an rdev")
        if self.meta.ino is not None and self.kind == "dir":
            raise InvalidInputError(f"entry {self.name!r}: a directory cannot be hard-linked")

    def to_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
        }
        if self.cid is not None:
            value["cid"] = self.cid
        if self.target is not None:
            value["target"] = self.target
        if self.meta is not NO_META:
            value.update(self.meta.to_value())
        return value

    @classmethod
    def from_value(cls, value: Any) -> DirEntry:
        if not isinstance(value, dict):
            raise InvalidBlockError("a directory entry must be a map")
        if not (_BASE_TYPES.keys() | _META_TYPES.keys()) >= value.keys() or not {
                "name", "kind", "size", "mode", "mtime"} <= value.keys():
            raise InvalidBlockError(f"directory entry has wrong fields: {sorted(value)}")
        for key, item in value.items():
            if key in _BASE_TYPES and (not isinstance(item, _BASE_TYPES[key]) or isinstance(item, bool)):
                raise InvalidBlockError(f"directory entry field {key!r} has the wrong type")
        try:
            extra = {key: item for key, item in value.items() if key not in _BASE_TYPES}
            meta = Meta.from_value(extra) if extra else NO_META
            return cls(
                name=value["name"],
                kind=value["kind"],
                size=value["size"],
                mode=value["mode"],
                mtime=value["mtime"],
                cid=value.get("cid"),
                target=value.get("target"),
                meta=meta,
            )
        except InvalidInputError as exc:
            raise InvalidBlockError(f"bad directory entry: {exc}") from None


_BASE_TYPES: dict[str, type] = {
    "name": str, "kind": str, "size": int, "mode": int, "mtime": int, "cid": CID, "target": str,
}
_META_TYPES: dict[str, type] = {
    "uid": int, "gid": int, "atime": int, "ctime": int, "rdev": int, "ino": int, "nlink": int, "xattrs": dict,
}


@dataclass(frozen=True)
class ChildRef:
    """An index node's reference to one node below it."""

    first: str
    cid: CID
    count: int
    size: int

    def to_value(self) -> dict[str, Any]:
        return {"first": self.first, "cid": self.cid, "count": self.count, "size": self.size}

    @classmethod
    def from_value(cls, value: Any) -> ChildRef:
        if not isinstance(value, dict) or set(value) != {"first", "cid", "count", "size"}:
            raise InvalidBlockError("an index child must be a map of first, cid, count, size")
        first, cid, count, size = value["first"], value["cid"], value["count"], value["size"]
        if not isinstance(first, str) or not isinstance(cid, CID) or cid.codec != DAG_CBOR:
            raise InvalidBlockError("an index child has a bad first name or link")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in (count, size)) or count == 0:
            raise InvalidBlockError("an index child has a bad count or size")
        return cls(first, cid, count, size)


@dataclass(frozen=True)
class LeafNode:
    entries: tuple[DirEntry, ...]


@dataclass(frozen=True)
class IndexNode:
    level: int
    children: tuple[ChildRef, ...]


def name_key(name: str) -> bytes:
    """The sort key of a name: its UTF-8 bytes."""
    return name.encode("utf-8")


def _encoded(value: dict[str, Any], what: str) -> Block:
    # The values come from DirEntry/ChildRef, validated when constructed.
    data = dagcbor.encode(value, check=False)
    if len(data) > MAX_BLOCK_SIZE:
        raise InvalidInputError(f"{what} does not fit one block ({len(data)} bytes)")
    return Block.of(DAG_CBOR, data)


def encode_leaf(entries: Iterable[DirEntry]) -> Block:
    """The leaf block listing ``entries`` (sorted here; names must be unique)."""
    ordered = sorted(entries, key=lambda e: name_key(e.name))
    for a, b in zip(ordered, ordered[1:]):
        if a.name == b.name:
            raise InvalidInputError(f"duplicate name {a.name!r} in a directory")
    return _encoded({"type": NODE_TYPE, "entries": [e.to_value() for e in ordered]}, "a directory leaf")


def encode_index(level: int, children: Iterable[ChildRef]) -> Block:
    """The index block at ``level`` over ``children`` (in order)."""
    refs = list(children)
    assert level >= 1 and refs, "an index node has a level and at least one child"
    return _encoded(
        {"type": NODE_TYPE, "level": level, "children": [c.to_value() for c in refs]},
        "a directory index",
    )


def decode_dir_node(cid: CID, data: bytes) -> LeafNode | IndexNode:
    """The node in block ``cid``, validated; InvalidBlockError if it is not
    a well-formed cas directory node."""
    if cid.codec != DAG_CBOR:
        raise InvalidBlockError(f"block {cid} is not a cas directory")
    value = dagcbor.decode(data)
    if not isinstance(value, dict) or value.get("type") != NODE_TYPE:
        raise InvalidBlockError(f"block {cid} is not a cas directory")
    if set(value) == {"type", "entries"} and isinstance(value["entries"], list):
        entries = tuple(DirEntry.from_value(v) for v in value["entries"])
        keys = [name_key(e.name) for e in entries]
        if any(a >= b for a, b in zip(keys, keys[1:])):
            raise InvalidBlockError(f"directory {cid} is not sorted by name or repeats a name")
        return LeafNode(entries)
    if set(value) == {"type", "level", "children"} and isinstance(value["children"], list):
        level = value["level"]
        if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= MAX_LEVEL:
            raise InvalidBlockError(f"directory index {cid} has a bad level")
        children = tuple(ChildRef.from_value(v) for v in value["children"])
        firsts = [name_key(c.first) for c in children]
        if not children or any(a >= b for a, b in zip(firsts, firsts[1:])):
            raise InvalidBlockError(f"directory index {cid} is empty or not sorted")
        return IndexNode(level, children)
    raise InvalidBlockError(f"directory {cid} has the wrong shape")
