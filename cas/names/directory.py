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
    kind   "file" | "dir" | "symlink"
    cid    link to the content (files and directories; absent for symlinks)
    target text (symlinks only)
    size   bytes of content: the file's size, the sum over a directory's
           subtree, the target's length for a symlink
    mode   permission bits (0..0o7777)
    mtime  modification time, integer nanoseconds since the Unix epoch

This module owns the format and its strict decoding (a node of the wrong
shape from disk or a peer is an InvalidBlockError, never a crash). Building
and editing trees of nodes is ``cas.names.dirtree``; paths and the signed
namespace root are ``cas.names.namespace`` and ``cas.names.record``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import dagcbor
from ..blocks import Block
from ..cid import CID, DAG_CBOR, MAX_BLOCK_SIZE
from ..errors import InvalidBlockError, InvalidInputError

NODE_TYPE = "cas/dir"
MAX_LEVEL = 16  # 64^16 entries: far beyond any directory; bounds recursion on input
KINDS = ("file", "dir", "symlink")
MAX_NAME_BYTES = 255


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

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown entry kind {self.kind!r}")
        if (self.kind == "symlink") != (self.target is not None):
            raise InvalidInputError("a symlink entry needs a target, and only a symlink has one")
        if (self.kind == "symlink") == (self.cid is not None):
            raise InvalidInputError(f"entry {self.name!r}: files and directories need a CID")
        if self.size < 0 or not 0 <= self.mode <= 0o7777:
            raise InvalidInputError(f"entry {self.name!r}: bad size or mode")

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
        return value

    @classmethod
    def from_value(cls, value: Any) -> DirEntry:
        if not isinstance(value, dict):
            raise InvalidBlockError("a directory entry must be a map")
        allowed = {"name", "kind", "size", "mode", "mtime", "cid", "target"}
        if not allowed.issuperset(value) or not {"name", "kind", "size", "mode", "mtime"} <= set(value):
            raise InvalidBlockError(f"directory entry has wrong fields: {sorted(value)}")
        types = {"name": str, "kind": str, "size": int, "mode": int, "mtime": int, "cid": CID, "target": str}
        for key, item in value.items():
            if not isinstance(item, types[key]) or isinstance(item, bool):
                raise InvalidBlockError(f"directory entry field {key!r} has the wrong type")
        try:
            return cls(
                name=value["name"],
                kind=value["kind"],
                size=value["size"],
                mode=value["mode"],
                mtime=value["mtime"],
                cid=value.get("cid"),
                target=value.get("target"),
            )
        except InvalidInputError as exc:
            raise InvalidBlockError(f"bad directory entry: {exc}") from None


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
