"""Strict dag-pb and UnixFS ``Data``: the two protobuf messages of a file node.

This module owns the bytes of a file tree's interior node. Two protobuf
schemas are involved, both public (ipld/specs "DAG-PB", ipfs/specs "UnixFS"):

    message PBLink { optional bytes Hash = 1; optional string Name = 2;
                     optional uint64 Tsize = 3; }
    message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }

    message Data {                       // UnixFS, carried in PBNode.Data
      required DataType Type = 1;        // Raw 0, Directory 1, File 2,
      optional bytes Data = 2;           // Metadata 3, Symlink 4, HAMTShard 5
      optional uint64 filesize = 3;
      repeated uint64 blocksizes = 4;    // not packed: one tag per entry
      optional uint64 hashType = 5;
      optional uint64 fanout = 6;
      optional uint32 mode = 7;
      optional UnixTime mtime = 8;
    }
    message UnixTime { required int64 Seconds = 1;
                       optional fixed32 FractionalNanoseconds = 2; }

**Encoding is canonical**: the dag-pb spec fixes the order (a node's Links,
each one ``Hash, Name, Tsize``, *before* its Data, although Data has the
lower field number), fields absent when ``None``, varints minimal; UnixFS
fields go in field-number order, ``blocksizes`` one tag per entry as
go-unixfs writes them. Equal values therefore always give equal bytes.

**Decoding is strict**, because nodes come from disks and peers: the bytes
must be exactly what the encoder would write for the decoded value. Unknown
fields, wrong wire types, fields out of order, a singular field twice, a
link without a Hash, a Hash that is not a cas CID, invalid UTF-8 in a Name,
non-minimal or truncated varints, lengths past the end and input over
``cas.cid.MAX_BLOCK_SIZE`` all raise :class:`InvalidBlockError` saying
what is wrong. UnixFS ``mtime`` (field 8) is not part of cas files, but
IPFS tools write it (``--preserve-mtime``), so it is read (and written back
canonically) as the pair (seconds, nanoseconds or None).

This module knows nothing of stores, trees or file semantics (which links a
file node may have, what the sizes must add up to): that is
:mod:`cas.files`. It never does I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from .cid import CID, MAX_BLOCK_SIZE, encode_varint
from .errors import InvalidBlockError, InvalidCIDError

# protobuf wire types
_VARINT = 0
_LEN = 2
_I32 = 5

# UnixFS Data.Type values
TYPE_RAW = 0
TYPE_DIRECTORY = 1
TYPE_FILE = 2
TYPE_METADATA = 3
TYPE_SYMLINK = 4
TYPE_HAMT_SHARD = 5
TYPE_NAMES = {
    TYPE_RAW: "raw",
    TYPE_DIRECTORY: "directory",
    TYPE_FILE: "file",
    TYPE_METADATA: "metadata",
    TYPE_SYMLINK: "symlink",
    TYPE_HAMT_SHARD: "HAMT shard",
}

_UINT64_MAX = (1 << 64) - 1
_UINT32_MAX = (1 << 32) - 1
_MAX_VARINT_BYTES = 10  # a uint64 needs at most ceil(64 / 7) bytes


class PBLink(NamedTuple):
    """A dag-pb link. ``name``/``tsize`` of ``None`` mean the field is absent,
    which is distinct from present-and-empty/zero in the bytes."""

    hash: CID
    name: str | None = None
    tsize: int | None = None


class PBNode(NamedTuple):
    """A dag-pb node: ordered links, then optional opaque data."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


class UnixFSData(NamedTuple):
    """The UnixFS ``Data`` message; ``None`` means the field is absent."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None  # (Seconds, FractionalNanoseconds)


# -- encoding ---------------------------------------------------------------


def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _len_field(field: int, value: bytes) -> bytes:
    return _tag(field, _LEN) + encode_varint(len(value)) + value


def _uint_field(field: int, value: int, limit: int = _UINT64_MAX) -> bytes:
    if not 0 <= value <= limit:
        raise ValueError(f"protobuf field {field}: {value} is out of range")
    return _tag(field, _VARINT) + encode_varint(value)


def encode_link(link: PBLink) -> bytes:
    out = bytearray(_len_field(1, link.hash.binary))
    if link.name is not None:
        out += _len_field(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _uint_field(3, link.tsize)
    return bytes(out)


def encode_node(node: PBNode) -> bytes:
    """The canonical dag-pb bytes of ``node`` (Links first, then Data)."""
    out = bytearray()
    for link in node.links:
        out += _len_field(2, encode_link(link))
    if node.data is not None:
        out += _len_field(1, node.data)
    return bytes(out)


def encode_unixfs(value: UnixFSData) -> bytes:
    """The canonical UnixFS ``Data`` bytes (field-number order, unpacked
    ``blocksizes``)."""
    if value.type not in TYPE_NAMES:
        raise ValueError(f"unknown UnixFS type {value.type}")
    out = bytearray(_uint_field(1, value.type))
    if value.data is not None:
        out += _len_field(2, value.data)
    if value.filesize is not None:
        out += _uint_field(3, value.filesize)
    for size in value.blocksizes:
        out += _uint_field(4, size)
    if value.hash_type is not None:
        out += _uint_field(5, value.hash_type)
    if value.fanout is not None:
        out += _uint_field(6, value.fanout)
    if value.mode is not None:
        out += _uint_field(7, value.mode, _UINT32_MAX)
    if value.mtime is not None:
        seconds, nanos = value.mtime
        if not -(1 << 63) <= seconds < 1 << 63:
            raise ValueError(f"mtime seconds {seconds} is out of range")
        inner = _tag(1, _VARINT) + encode_varint(seconds & _UINT64_MAX)  # int64: two's complement
        if nanos is not None:
            if not 0 <= nanos <= _UINT32_MAX:
                raise ValueError(f"mtime nanoseconds {nanos} is out of range")
            inner += _tag(2, _I32) + nanos.to_bytes(4, "little")
        out += _len_field(8, inner)
    return bytes(out)


# -- strict decoding --------------------------------------------------------


class _Reader:
    """A cursor over one protobuf message; every error names the message."""

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf)
        self.pos = 0
        self.what = what

    def fail(self, problem: str) -> InvalidBlockError:
        return InvalidBlockError(f"malformed {self.what}: {problem} (at byte {self.pos})")

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def varint(self, limit: int = _UINT64_MAX) -> int:
        # Fast path: most tags, lengths and small sizes are one byte, and a
        # 1024-link node has thousands of them.
        if self.pos < len(self.buf) and self.buf[self.pos] < 0x80:
            self.pos += 1
            return self.buf[self.pos - 1]  # < 128, within every limit used here
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos + i >= len(self.buf):
                raise self.fail("truncated varint")
            byte = self.buf[self.pos + i]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise self.fail("non-minimal varint")
                if value > limit:
                    raise self.fail(f"integer {value} is out of range")
                self.pos += i + 1
                return value
        raise self.fail("varint longer than 10 bytes")

    def key(self) -> tuple[int, int]:
        """The next field's (number, wire type)."""
        key = self.varint(_UINT32_MAX)
        return key >> 3, key & 7

    def peek_key(self) -> tuple[int, int] | None:
        if self.at_end():
            return None
        saved = self.pos
        try:
            return self.key()
        finally:
            self.pos = saved

    def length_delimited(self) -> memoryview:
        length = self.varint()
        if length > len(self.buf) - self.pos:
            raise self.fail(f"length {length} runs past the end of the message")
        start = self.pos
        self.pos += length
        return self.buf[start : self.pos]

    def expect(self, field: int, wire: int, name: str) -> None:
        got_field, got_wire = self.key()
        if got_field != field:
            raise self.fail(f"expected field {field} ({name}), found field {got_field}")
        if got_wire != wire:
            raise self.fail(f"field {field} ({name}) has wire type {got_wire}, not {wire}")

    def next_is(self, field: int) -> bool:
        """True if the next field has number ``field`` (wire type unchecked)."""
        if self.pos < len(self.buf) and self.buf[self.pos] < 0x80:
            return self.buf[self.pos] >> 3 == field  # one-byte key, fast path
        key = self.peek_key()
        return key is not None and key[0] == field

    def finish(self, expected: str) -> None:
        if not self.at_end():
            field, wire = self.key()
            raise self.fail(
                f"unexpected field {field} (wire type {wire}); "
                f"{expected}, in that order, each at most once"
            )


def _check_size(data: bytes | memoryview) -> None:
    if len(data) > MAX_BLOCK_SIZE:
        raise InvalidBlockError(
            f"dag-pb node of {len(data)} bytes is over the {MAX_BLOCK_SIZE}-byte limit"
        )


# A link's Hash field as every writer of CIDv1/BLAKE3-256 links starts it:
# key 0x0a, length 36, version 1, the codec, hash code 0x1e, digest length 32.
# A link starting so is read without the general parser (a node of 885
# links decodes in ~0.6 of the time); the bytes it accepts are exactly those
# the general path accepts, and everything else goes that way.
_HASH_HEADS = {bytes((0x0A, 36, 1, codec, 0x1E, 32)): codec for codec in (0x55, 0x70, 0x71)}
_HASH_END = 38


def _decode_link(buf: memoryview) -> PBLink:
    r = _Reader(buf, "dag-pb link")
    codec = _HASH_HEADS.get(bytes(buf[:6]))
    if codec is not None and len(buf) >= _HASH_END:
        cid = CID.from_parts(codec, bytes(buf[6:_HASH_END]))
        r.pos = _HASH_END
    else:
        if not r.next_is(1):
            raise r.fail("a link must start with its Hash (field 1)")
        r.expect(1, _LEN, "Hash")
        raw_hash = r.length_delimited()
        try:
            cid = CID.from_bytes(raw_hash)
        except InvalidCIDError as exc:
            raise r.fail(f"Hash is not a usable CID: {exc}") from None
    name: str | None = None
    tsize: int | None = None
    if r.next_is(2):
        r.expect(2, _LEN, "Name")
        try:
            name = str(r.length_delimited(), "utf-8")
        except UnicodeDecodeError:
            raise r.fail("Name is not valid UTF-8") from None
    if r.next_is(3):
        r.expect(3, _VARINT, "Tsize")
        tsize = r.varint()
    r.finish("a link holds Hash (1), Name (2), Tsize (3)")
    return PBLink(cid, name, tsize)


def decode_node(data: bytes | memoryview) -> PBNode:
    """Decode dag-pb bytes from an untrusted source; strict (see module doc)."""
    _check_size(data)
    r = _Reader(data, "dag-pb node")
    links: list[PBLink] = []
    while r.next_is(2):
        r.expect(2, _LEN, "Links")
        links.append(_decode_link(r.length_delimited()))
    node_data: bytes | None = None
    if r.next_is(1):
        r.expect(1, _LEN, "Data")
        node_data = bytes(r.length_delimited())
    r.finish("a node holds Links (2) then Data (1)")
    return PBNode(tuple(links), node_data)


def decode_unixfs_node(data: bytes | memoryview) -> tuple[PBNode, UnixFSData]:
    """A UnixFS node: the dag-pb node and its decoded ``Data``; strict.
    InvalidBlockError if either is malformed or the ``Data`` is missing."""
    node = decode_node(data)
    if node.data is None:
        raise InvalidBlockError("it has no UnixFS Data")
    return node, decode_unixfs(node.data)


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    """Decode a UnixFS ``Data`` message from an untrusted source; strict."""
    _check_size(data)
    r = _Reader(data, "UnixFS Data")
    if not r.next_is(1):
        raise r.fail("UnixFS Data must start with its Type (field 1)")
    r.expect(1, _VARINT, "Type")
    kind = r.varint()
    if kind not in TYPE_NAMES:
        raise r.fail(f"unknown UnixFS type {kind}")
    inline: bytes | None = None
    if r.next_is(2):
        r.expect(2, _LEN, "Data")
        inline = bytes(r.length_delimited())
    optional: dict[int, int | None] = {3: None}
    sizes: list[int] = []
    if r.next_is(3):
        r.expect(3, _VARINT, "filesize")
        optional[3] = r.varint()
    while r.next_is(4):
        r.expect(4, _VARINT, "blocksizes (unpacked)")
        sizes.append(r.varint())
    for field, name, limit in ((5, "hashType", _UINT64_MAX), (6, "fanout", _UINT64_MAX),
                               (7, "mode", _UINT32_MAX)):
        optional[field] = None
        if r.next_is(field):
            r.expect(field, _VARINT, name)
            optional[field] = r.varint(limit)
    mtime: tuple[int, int | None] | None = None
    if r.next_is(8):
        r.expect(8, _LEN, "mtime")
        mtime = _decode_unixtime(r.length_delimited())
    r.finish(
        "UnixFS Data holds Type (1), Data (2), filesize (3), blocksizes (4), "
        "hashType (5), fanout (6), mode (7), mtime (8)"
    )
    return UnixFSData(kind, inline, optional[3], tuple(sizes), optional[5], optional[6],
                      optional[7], mtime)


def _decode_unixtime(buf: memoryview) -> tuple[int, int | None]:
    r = _Reader(buf, "UnixFS mtime")
    if not r.next_is(1):
        raise r.fail("an mtime must start with its Seconds (field 1)")
    r.expect(1, _VARINT, "Seconds")
    raw = r.varint()
    seconds = raw - (1 << 64) if raw >= 1 << 63 else raw
    nanos: int | None = None
    if r.next_is(2):
        r.expect(2, _I32, "FractionalNanoseconds")
        if len(r.buf) - r.pos < 4:
            raise r.fail("FractionalNanoseconds is cut short")
        nanos = int.from_bytes(r.buf[r.pos : r.pos + 4], "little")
        r.pos += 4
    r.finish("an mtime holds Seconds (1) then FractionalNanoseconds (2)")
    return seconds, nanos
