"""The chunker's cut points: deterministic, bounded, and as published."""

from __future__ import annotations

import io
from typing import Any

import blake3
import pytest

from cas.chunker import (
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    chunk_bytes,
    chunk_stream,
    cut_points,
)
from tests.formatsdoc import vectors


def generate(spec: dict) -> bytes:
    """The input a published vector describes (docs/formats.md, generators)."""
    if spec["generator"] == "blake3-xof":
        return blake3.blake3(spec["seed"].encode("utf-8")).digest(length=spec["length"])
    if spec["generator"] == "zeros":
        return bytes(spec["length"])
    raise AssertionError(f"unknown generator {spec['generator']!r}")


def xof(seed: str, length: int) -> bytes:
    return generate({"generator": "blake3-xof", "seed": seed, "length": length})


class TrickleStream(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read, as pipes do."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("vector", vectors("chunking"), ids=lambda v: f"{v['generator']}-{v['length']}")
def test_cut_points_match_published_vectors(vector: dict) -> None:
    data = generate(vector)
    assert cut_points(data) == vector["cuts"]
    assert [len(c) for c in chunk_stream(io.BytesIO(data))] == [
        b - a for a, b in zip([0, *vector["cuts"]], vector["cuts"])
    ]


def test_cut_points_are_deterministic_across_calls_and_apis() -> None:
    data = xof("determinism", 6 << 20)
    first = list(chunk_bytes(data))
    assert list(chunk_bytes(data)) == first
    assert list(chunk_stream(io.BytesIO(data))) == first
    assert b"".join(first) == data


def test_stream_cut_points_do_not_depend_on_read_sizes() -> None:
    data = xof("short reads", 3 << 20)
    assert list(chunk_stream(TrickleStream(data, 4093))) == list(chunk_bytes(data))


def test_stream_without_readinto_is_accepted() -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self._inner.read(n)

    data = xof("read only", 2 << 20)
    assert list(chunk_stream(ReadOnly(data))) == list(chunk_bytes(data))  # type: ignore[arg-type]


def test_every_chunk_but_the_last_is_between_min_and_max() -> None:
    data = xof("bounds", 16 << 20) + bytes(3 << 20) + xof("tail", 100_000)
    sizes = [len(c) for c in chunk_bytes(data)]
    assert sum(sizes) == len(data)
    assert all(MIN_CHUNK_SIZE <= s <= MAX_CHUNK_SIZE for s in sizes[:-1])
    assert 0 < sizes[-1] <= MAX_CHUNK_SIZE
    assert MAX_CHUNK_SIZE in sizes  # the zero run forces maximum-size cuts


def test_empty_input_yields_no_chunks() -> None:
    assert list(chunk_bytes(b"")) == []
    assert list(chunk_stream(io.BytesIO(b""))) == []


def test_input_up_to_the_minimum_is_one_chunk() -> None:
    data = xof("small", MIN_CHUNK_SIZE)
    assert list(chunk_bytes(data)) == [data]


def test_mean_chunk_size_on_random_data_is_near_avg_plus_min() -> None:
    # The documented mean (docs/formats.md) is about 317 KiB; a 32 MiB sample
    # must land well inside a band around it.
    sizes = [len(c) for c in chunk_bytes(xof("mean", 32 << 20))]
    mean = sum(sizes) / len(sizes)
    assert 280_000 < mean < 370_000


def test_yielded_chunks_stay_valid_after_the_next_one_is_cut() -> None:
    data = xof("copies", 3 << 20)
    chunks = list(chunk_stream(io.BytesIO(data)))  # kept, not consumed one by one
    assert all(isinstance(c, bytes) for c in chunks)
    assert b"".join(chunks) == data


def test_streams_around_the_minimum_cut_as_their_bytes_do_whatever_the_read_sizes() -> None:
    # A stream of at most MIN_CHUNK_SIZE bytes is taken whole without
    # FastCDC; one a byte longer is cut by it, with the bytes read to tell
    # the two apart handed back first. Reads here return at most 1,000 bytes.
    class Trickle(io.BytesIO):
        def readinto(self, buffer: Any, /) -> int:
            return super().readinto(memoryview(buffer)[:1000])

    data = xof("around the minimum", 3 * MIN_CHUNK_SIZE + 5)
    for size in (0, 1, MIN_CHUNK_SIZE - 1, MIN_CHUNK_SIZE, MIN_CHUNK_SIZE + 1, MIN_CHUNK_SIZE + 2,
                 3 * MIN_CHUNK_SIZE + 5):
        expected = list(chunk_bytes(data[:size]))
        assert list(chunk_stream(Trickle(data[:size]))) == expected, size
        assert list(chunk_stream(io.BytesIO(data[:size]))) == expected, size
