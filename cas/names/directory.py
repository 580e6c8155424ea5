"""Directory nodes: a listing of named entries, as one DAG-CBOR block.

A directory node is the DAG-CBOR map::

    {"type": "cas/dir", "entries": [ENTRY, ...]}

with entries sorted by the UTF-8 bytes of their names and names unique. An
entry is a map with

    name   text, validated by :func:`check_name`
    kind   "file" | "dir" | "symlink"
    cid    link to the content (files and directories; absent for symlinks)
    target text (symlinks only)
    size   bytes of content: the file's size, the sum over a directory's
           subtree, the target's length for a symlink
    mode   permission bits (0..0o7777)
    mtime  modification time, integer nanoseconds since the Unix epoch

This module owns the format and its strict decoding (an entry of the wrong
shape from disk or a peer is an InvalidBlockError, never a crash). Path
operations, sharding of very large directories and the signed namespace root
build on it elsewhere in ``cas.names``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import dagcbor
from ..blocks import MAX_BLOCK_SIZE, Block
from ..cid import DAG_CBOR, CID
from ..errors import InvalidBlockError, InvalidInputError

NODE_TYPE = "cas/dir"
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


def _sort_key(entry: DirEntry) -> bytes:
    return entry.name.encode("utf-8")


def encode_directory(entries: Iterable[DirEntry]) -> Block:
    """The directory block for ``entries`` (sorted here; names must be unique)."""
    ordered = sorted(entries, key=_sort_key)
    for a, b in zip(ordered, ordered[1:]):
        if a.name == b.name:
            raise InvalidInputError(f"duplicate name {a.name!r} in a directory")
    data = dagcbor.encode({"type": NODE_TYPE, "entries": [e.to_value() for e in ordered]})
    if len(data) > MAX_BLOCK_SIZE:
        raise InvalidInputError(
            f"directory of {len(ordered)} entries does not fit one block "
            f"({len(data)} bytes); very large directories are not supported yet"
        )
    return Block.of(DAG_CBOR, data)


def decode_directory(cid: CID, data: bytes) -> list[DirEntry]:
    """The entries of directory block ``cid``, validated."""
    value = dagcbor.decode(data)
    if not isinstance(value, dict) or value.get("type") != NODE_TYPE:
        raise InvalidBlockError(f"block {cid} is not a cas directory")
    if set(value) != {"type", "entries"} or not isinstance(value["entries"], list):
        raise InvalidBlockError(f"directory {cid} has the wrong shape")
    entries = [DirEntry.from_value(v) for v in value["entries"]]
    keys = [_sort_key(e) for e in entries]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise InvalidBlockError(f"directory {cid} is not sorted by name or repeats a name")
    return entries


def directory_size(entries: Iterable[DirEntry]) -> int:
    return sum(e.size for e in entries)
