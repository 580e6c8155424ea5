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
from typing import TYPE_CHECKING, Protocol

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


class Readable(Protocol):
    """A binary stream: anything with ``readinto`` (preferred) or ``read``."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


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
    for chunk in _fastcdc().cut_stream(stream):  # type: ignore[arg-type]  # Readable has readinto, which it uses
        # cut_stream hands out views into its reusable buffer that are only
        # valid until the next chunk is cut, so each one is copied out.
        yield bytes(chunk.data)


def chunk_bytes(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    """Cut an in-memory buffer; the same cut points as :func:`chunk_stream`."""
    for chunk in _fastcdc().cut_buf(data):
        yield bytes(chunk.data)


def cut_points(data: bytes | bytearray | memoryview) -> list[int]:
    """The end offset of every chunk of ``data`` (the published vector form)."""
    return [chunk.offset + chunk.length for chunk in _fastcdc().cut_buf(data)]
