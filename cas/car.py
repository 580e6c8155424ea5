"""CAR (Content Addressable aRchive) files, v1 and v2: the codec, sans-IO.

This module owns the bytes of a CAR (ipld/specs "CARv1", "CARv2"):

    CARv1 = varint(len(header)) header  section*
    header = DAG-CBOR {"roots": [CID, ...], "version": 1}
    section = varint(len(cid) + len(data)) cid data

    CARv2 = pragma (11 bytes: the CARv1-style header {"version": 2})
            characteristics (16) data_offset (u64 LE) data_size (u64 LE)
            index_offset (u64 LE)   ...   a CARv1 at [data_offset,
            data_offset + data_size)   ...   an optional index

Writing is two functions that return bytes (:func:`encode_header`,
:func:`encode_section`); cas writes CARv1, the form every IPFS tool reads.

Reading is :class:`CarReader`, an h11-shaped state machine: the caller hands
it bytes as they come (``receive_data``; ``b""`` at the end of the input)
and pulls events (``next_event``): one :class:`CarHeader`, then a
:class:`CarBlock` per section, then :data:`END`; :data:`NEED_DATA` when it
needs more input. A CARv2 is read through to its inner CARv1 (the index is
skipped: sections are read in order, not looked up). Blocks are *not*
verified here (the caller checks them against their CIDs with the store's
rule); what is checked is the framing, and every fault raises
:class:`~cas.errors.InvalidInputError` (the file given is not a usable CAR) saying what is wrong and at which byte:
a truncated file, a length that runs past the end, an unknown version, a
header that is not a CAR header, a bad CID, a section over the block limit.

The reader holds at most one section (≤ 1 MiB + a CID) plus the bytes
handed to it and not yet consumed. It never does I/O.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from .cid import CID, MAX_BLOCK_SIZE, decode_varint, encode_varint
from .errors import InvalidBlockError, InvalidCIDError, InvalidInputError

MAX_HEADER_SIZE = 1 << 20
"""Largest CARv1 header read (go-car caps it at 32 MiB; 1 MiB is ~29,000
roots)."""

MAX_SECTION_SIZE = MAX_BLOCK_SIZE + 128
"""Largest section: the largest block cas accepts and its CID."""

CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")
"""The 11 bytes a CARv2 starts with: varint 10, DAG-CBOR {"version": 2}."""

_CARV2_HEADER = struct.Struct("<16sQQQ")


class CarHeader(NamedTuple):
    """The CAR's roots and its version (1, or 2 for a CARv1 inside a CARv2)."""

    roots: tuple[CID, ...]
    version: int


class CarBlock(NamedTuple):
    """One section: a CID and the bytes it claims to name (unverified)."""

    cid: CID
    data: bytes
    offset: int  # of the section in the input, for messages


class _Signal(NamedTuple):
    name: str


NEED_DATA = _Signal("NEED_DATA")
END = _Signal("END")

CarEvent = CarHeader | CarBlock | _Signal


def encode_header(roots: list[CID] | tuple[CID, ...]) -> bytes:
    """A CARv1 header naming ``roots`` (CIDv0 roots stay CIDv0)."""
    # DAG-CBOR by hand, canonical: map(2) "roots" [tag 42 bytes...] "version" 1.
    body = bytearray(b"\xa2\x65roots")
    body += _cbor_head(4, len(roots))
    for root in roots:
        link = b"\x00" + root.binary
        body += b"\xd8\x2a" + _cbor_head(2, len(link)) + link
    body += b"\x67version\x01"
    return encode_varint(len(body)) + bytes(body)


def encode_section(cid: CID, data: bytes | memoryview) -> bytes:
    """The section of one block (its CID as read: a CIDv0 stays one)."""
    binary = cid.binary
    return encode_varint(len(binary) + len(data)) + binary + bytes(data)


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")


def _parse_header(raw: bytes, at: int) -> CarHeader:
    from .dagcbor import decode_unchecked

    try:
        value: Any = decode_unchecked(raw)
    except (InvalidBlockError, InvalidCIDError) as exc:
        raise InvalidInputError(f"the CAR header (at byte {at}) is not valid DAG-CBOR: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"the CAR header (at byte {at}) is not a map")
    version = value.get("version")
    if version != 1:
        raise InvalidInputError(f"unsupported CAR version {version!r}; cas reads CARv1 and CARv2")
    roots = value.get("roots")
    if not isinstance(roots, list) or not all(isinstance(root, CID) for root in roots):
        raise InvalidInputError("the CAR header's roots are not a list of CIDs")
    return CarHeader(tuple(roots), 1)


class CarReader:
    """Read a CARv1 or CARv2 from bytes handed in (module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # offset in the input of self._buf[0]
        self._state = "start"
        self._eof = False
        self._version = 1
        self._end: int | None = None  # where the CARv1 data ends (CARv2), input offset
        self._skip_to = 0

    @property
    def offset(self) -> int:
        """How many input bytes have been consumed."""
        return self._pos

    def receive_data(self, data: bytes) -> None:
        """More input; ``b""`` says the input has ended."""
        if not data:
            self._eof = True
        else:
            self._buf += data

    def _consume(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            out = bytes(view[:n])  # one copy (a bytearray slice would be a second)
        del self._buf[:n]
        self._pos += n
        return out

    def _varint(self) -> int | None:
        """A varint at the front of the buffer, consumed; None if it is not
        all there yet."""
        try:
            value, end = decode_varint(self._buf, 0)
        except ValueError as exc:
            if str(exc) == "truncated varint" and len(self._buf) < 10:
                if self._eof:
                    raise InvalidInputError(f"the CAR is truncated at byte {self._pos + len(self._buf)}") from None
                return None
            raise InvalidInputError(f"malformed length at byte {self._pos}: {exc}") from None
        self._consume(end)
        return value

    def _need(self, n: int, what: str) -> bool:
        if len(self._buf) >= n:
            return True
        if self._eof:
            raise InvalidInputError(
                f"the CAR is truncated: {what} at byte {self._pos} needs {n} bytes, "
                f"{len(self._buf)} are left"
            )
        return False

    def next_event(self) -> CarEvent:
        if self._state == "start":
            return self._start()
        if self._state == "skip":
            return self._skip()
        if self._state == "header":
            return self._header()
        if self._state == "sections":
            return self._section()
        return END

    def _start(self) -> CarEvent:
        if len(self._buf) < len(CARV2_PRAGMA) and not self._eof:
            return NEED_DATA
        if self._buf[: len(CARV2_PRAGMA)] == CARV2_PRAGMA:
            if not self._need(len(CARV2_PRAGMA) + _CARV2_HEADER.size, "the CARv2 header"):
                return NEED_DATA
            self._consume(len(CARV2_PRAGMA))
            _, data_offset, data_size, _ = _CARV2_HEADER.unpack(self._consume(_CARV2_HEADER.size))
            if data_offset < self._pos:
                raise InvalidInputError(f"the CARv2 header puts its data at byte {data_offset}, inside the header")
            self._version, self._skip_to, self._end = 2, data_offset, data_offset + data_size
            self._state = "skip"
            return self._skip()
        return self._header()

    def _skip(self) -> CarEvent:
        while self._pos < self._skip_to:
            if not self._buf:
                if self._eof:
                    raise InvalidInputError(f"the CAR is truncated: its data should start at byte {self._skip_to}")
                return NEED_DATA
            self._consume(min(len(self._buf), self._skip_to - self._pos))
        self._state = "header"
        return self._header()

    def _header(self) -> CarEvent:
        start = self._pos
        saved = bytes(self._buf[:10])
        length = self._varint()
        if length is None:
            return NEED_DATA
        if length == 0 or length > MAX_HEADER_SIZE:
            raise InvalidInputError(f"the CAR header is {length} bytes; not a CAR file (or over {MAX_HEADER_SIZE})")
        if not self._need(length, "the CAR header"):
            self._buf[:0] = saved[: self._pos - start]  # put the length back until all is here
            self._pos = start
            return NEED_DATA
        header = _parse_header(self._consume(length), start)
        self._state = "sections"
        return CarHeader(header.roots, self._version)

    def _section(self) -> CarEvent:
        if self._end is not None and self._pos >= self._end:
            if self._pos > self._end:
                raise InvalidInputError(f"a section runs past the CARv2 data's end at byte {self._end}")
            self._state = "done"
            return END
        if not self._buf:
            if self._eof:
                if self._end is not None:
                    raise InvalidInputError(f"the CAR is truncated: its data should run to byte {self._end}")
                self._state = "done"
                return END
            return NEED_DATA
        start = self._pos
        saved = bytes(self._buf[:10])
        length = self._varint()
        if length is None:
            return NEED_DATA
        if length == 0 and self._end is not None:
            # CARv2 writers may pad the data with zero bytes: the data is over.
            self._state = "done"
            return END
        if length > MAX_SECTION_SIZE:
            raise InvalidInputError(
                f"the section at byte {start} is {length} bytes, over the {MAX_BLOCK_SIZE}-byte block limit"
            )
        if not self._need(length, "a section"):
            self._buf[:0] = saved[: self._pos - start]
            self._pos = start
            return NEED_DATA
        section = self._consume(length)
        try:
            cid, end = CID.read_prefix(section)
        except InvalidCIDError as exc:
            raise InvalidInputError(f"the section at byte {start} does not start with a usable CID: {exc}") from None
        return CarBlock(cid, section[end:], start)
