"""Content-defined chunking: where a byte stream is cut into file leaves.

This module owns the cut points, and the cut points are part of the storage
format: the same bytes must be cut at the same offsets on every node and by
every version of cas, or identical files stop deduplicating and published
file CIDs stop being reproducible. So the algorithm and its parameters are
fixed here as named constants, the implementation is pinned to an exact
version (``pyfastcdc==0.3.1`` in pyproject.toml), and docs/formats.md
publishes cut-point vectors that the tests check.

The algorithm is FastCDC as in the 2020 paper (Xia et al., "The Design of
Fast Content-Defined Chunking for Data Deduplication Based Storage Systems"),
with normalised chunking level 1 and the paper's default gear table (seed 0).
Parameters: minimum 64 KiB, average parameter 256 KiB, maximum 1 MiB. The
implementation skips the first ``min`` bytes before it looks for a cut (the
paper's cut-point skipping), so the *measured* mean chunk on random data is
about ``avg + min``: 324,589 bytes (317 KiB; median 306,836) over 256 MiB
of BLAKE3 XOF output, see docs/formats.md. Every chunk but the last of a stream is at
least ``MIN_CHUNK_SIZE`` bytes; every chunk is at most ``MAX_CHUNK_SIZE``.

This module never hashes, stores or builds trees (that is :mod:`cas.files`),
and it never holds more than one buffer of about two maximum chunks of a
stream in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyfastcdc

MIN_CHUNK_SIZE = 64 * 1024
"""No cut before this many bytes (except the end of the stream)."""

AVG_CHUNK_PARAMETER = 256 * 1024
"""FastCDC's ``avg_size`` parameter (the normalisation centre). The real mean
is about ``AVG_CHUNK_PARAMETER + MIN_CHUNK_SIZE``; see the module docstring."""

MAX_CHUNK_SIZE = 1024 * 1024
"""A cut is forced here; equal to cas.blocks.MAX_BLOCK_SIZE, so a chunk is
always one storable raw block."""

NORMALIZED_CHUNKING = 1
"""The paper's NC level; 1 is the common choice (fastcdc-rs, pyfastcdc)."""

GEAR_SEED = 0
"""0 selects the paper's published gear table; anything else changes the format."""


@runtime_checkable
class Readable(Protocol):
    """A binary stream: anything with ``readinto`` (preferred) or ``read``."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class _ReadOnly(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _ByRead:
    """``readinto`` over a stream that has only ``read``."""

    def __init__(self, stream: _ReadOnly) -> None:
        self._stream = stream

    def readinto(self, buffer: memoryview, /) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _fastcdc() -> pyfastcdc.FastCDC:
    # A FastCDC object is cheap, but not safe to share between threads; make
    # one per call rather than guarding a global. Imported here: loading the
    # extension costs a cold start ~60 ms, which reading commands never need.
    import pyfastcdc

    return pyfastcdc.FastCDC(
        AVG_CHUNK_PARAMETER,
        min_size=MIN_CHUNK_SIZE,
        max_size=MAX_CHUNK_SIZE,
        normalized_chunking=NORMALIZED_CHUNKING,  # type: ignore[arg-type]  # 2, one of the Literal's values
        seed=GEAR_SEED,
    )


def chunk_stream(stream: Readable) -> Iterator[bytes]:
    """Cut ``stream`` into chunks, reading it incrementally.

    Memory stays bounded by the chunker's buffer (twice ``MAX_CHUNK_SIZE``)
    plus the chunk being yielded, whatever the stream's length. The stream is
    read to its end; an empty stream yields nothing.
    """
    # A stream of at most MIN_CHUNK_SIZE bytes is one chunk (FastCDC never
    # cuts before the minimum): most files are, and FastCDC's set-up (a
    # buffer of two maximum chunks) would cost them more than the rest.
    if not isinstance(stream, Readable):
        stream = _ByRead(stream)
    head = bytearray(MIN_CHUNK_SIZE + 1)
    got = _read_fully(stream, memoryview(head))
    if got <= MIN_CHUNK_SIZE:
        if got:
            del head[got:]
            yield bytes(head)
        return
    for chunk in _fastcdc().cut_stream(_Prefixed(head, stream)):  # type: ignore[arg-type]  # it uses readinto
        # cut_stream hands out views into its reusable buffer that are only
        # valid until the next chunk is cut, so each one is copied out.
        yield bytes(chunk.data)


def _read_fully(stream: Readable, buffer: memoryview) -> int:
    """Read into ``buffer`` until it is full or the stream ends; the bytes read."""
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


class _Prefixed:
    """``head``'s bytes, then the rest of ``stream``."""

    def __init__(self, head: bytes | bytearray, stream: Readable) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readinto(self, buffer: memoryview, /) -> int | None:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._stream.readinto(buffer)


def chunk_bytes(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """Cut an in-memory buffer; the same cut points as :func:`chunk_stream`."""
    for chunk in _fastcdc().cut_buf(data):
        yield bytes(chunk.data)


def cut_points(data: bytes | bytearray | memoryview) -> list[int]:
    """The end offset of every chunk of ``data`` (the published vector form)."""
    return [chunk.offset + chunk.length for chunk in _fastcdc().cut_buf(data)]
