"""Frames: a 4-byte big-endian length, then the body; limits before allocation."""

from __future__ import annotations

import sys
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.errors import FrameError, FrameTooLargeError, LocalProtocolError, RemoteProtocolError
from cas.net.framing import (
    HEADER_SIZE,
    IN_PLACE_BODY,
    MAX_FRAME_SIZE,
    MAX_HANDSHAKE_FRAME_SIZE,
    FrameBudget,
    FrameBuffers,
    FrameDecoder,
    encode_frame,
)
from cas.net.messages import MAX_MESSAGE_SIZE


def test_frame_is_big_endian_length_then_body() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"


def test_limits_cover_a_full_message_and_a_noise_handshake_message() -> None:
    assert MAX_FRAME_SIZE > MAX_MESSAGE_SIZE
    assert MAX_FRAME_SIZE < MAX_MESSAGE_SIZE + 1024
    assert MAX_HANDSHAKE_FRAME_SIZE == 65535


def test_oversized_length_is_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder(limit=1000)
    decoder.receive_data((1001).to_bytes(4, "big"))  # no body bytes at all
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()
    assert decoder.buffered == HEADER_SIZE  # nothing was reserved for the body
    with pytest.raises(FrameTooLargeError):  # and the decoder stays broken
        decoder.next_frame()


def test_a_4_gib_announcement_is_refused_without_allocating() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


def test_encoding_an_oversized_body_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 11, limit=10)


def test_many_frames_in_one_buffer_come_out_in_order() -> None:
    bodies = [b"", b"a", b"bc" * 100, b"\x00" * 7]
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(encode_frame(b) for b in bodies))
    assert [decoder.next_frame() for _ in bodies] == bodies
    assert decoder.next_frame() is None


def test_a_frame_split_across_reads_is_reassembled() -> None:
    wire = encode_frame(b"hello world")
    decoder = FrameDecoder()
    for i, byte in enumerate(wire):
        assert decoder.next_frame() is None, i
        decoder.receive_data(bytes([byte]))
    assert decoder.next_frame() == b"hello world"


def test_missing_says_how_much_of_the_frame_is_still_to_come_never_past_the_limit() -> None:
    decoder = FrameDecoder(limit=1000)
    assert decoder.missing == 4  # a header's worth
    frame = encode_frame(b"x" * 300)
    decoder.receive_data(frame[:2])
    assert decoder.missing == 2
    decoder.receive_data(frame[2:100])
    assert decoder.missing == len(frame) - 100
    decoder.receive_data(frame[100:])
    assert decoder.missing == 0 and decoder.next_frame() == b"x" * 300
    liar = FrameDecoder(limit=1000)
    liar.receive_data((10**9).to_bytes(4, "big"))
    assert liar.missing <= 1004  # an announcement over the limit never sizes a read


def test_truncated_frame_at_end_of_stream_is_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"hello")[:-1])
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_clean_end_of_stream_between_frames_is_not_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"x"))
    decoder.receive_data(b"")
    assert decoder.next_frame() == b"x"
    assert decoder.next_frame() is None and decoder.at_eof


def test_frames_below_the_minimum_are_refused() -> None:
    decoder = FrameDecoder(minimum=16)
    decoder.receive_data(encode_frame(b"short"))
    with pytest.raises(FrameError):
        decoder.next_frame()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), max_size=30))
def test_fuzz_any_split_of_valid_frames_round_trips(bodies: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder(limit=300)
    out: list[bytes | memoryview] = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        decoder.receive_data(wire[pos : pos + cut])
        pos += cut
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
        if pos >= len(wire):
            break
    assert out == bodies


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes_only_ever_raise_frame_errors(data: bytes) -> None:
    decoder = FrameDecoder(limit=512)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    try:
        while decoder.next_frame() is not None:
            pass
    except RemoteProtocolError as exc:
        assert isinstance(exc, FrameError)
    assert decoder.buffered <= len(data)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([10, IN_PLACE_BODY - 1, IN_PLACE_BODY, 3 * IN_PLACE_BODY + 5]), max_size=5),
       st.lists(st.integers(1, 2 * IN_PLACE_BODY), max_size=20), st.booleans())
def test_fuzz_large_bodies_filled_in_place_or_fed_come_out_whole(
        sizes: list[int], cuts: list[int], in_place: bool) -> None:
    """A large body may be written straight into body_space() or fed with
    receive_data like any other bytes; either way, split anywhere, every
    frame comes out exactly once and in order."""
    bodies = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    wire = b"".join(encode_frame(b) for b in bodies)
    decoder = FrameDecoder()
    out: list[bytes | memoryview] = []
    pos = 0
    cut_sizes = iter(cuts)
    while pos < len(wire):
        cut = next(cut_sizes, len(wire))
        while (frame := decoder.next_frame()) is not None:
            out.append(bytes(frame))
            decoder.recycle(frame)  # its buffer serves the next large body
        space = decoder.body_space()
        if in_place and space is not None:
            chunk = wire[pos : pos + min(cut, len(space))]  # a reader never reads past the body
            space[: len(chunk)] = chunk
            decoder.body_filled(len(chunk))
        else:
            chunk = wire[pos : pos + cut]
            decoder.receive_data(chunk)
        pos += len(chunk)
    while (frame := decoder.next_frame()) is not None:
        out.append(bytes(frame))
        decoder.recycle(frame)
    assert out == bodies
    assert decoder.buffered == 0


def test_frame_buffers_are_reused_up_to_the_number_kept() -> None:
    # A reused buffer still holds what was written in it; a new one is zeros.
    pool = FrameBuffers(keep=1)
    first = pool.take(100_000)
    assert len(first) == 100_000 and not first.readonly
    first[:3] = b"one"
    pool.give_back(first)
    again = pool.take(7)
    assert len(again) == 7 and bytes(again[:3]) == b"one"  # reused, not allocated
    other = pool.take(10)
    assert bytes(other[:3]) == b"\0\0\0"
    other[:3] = b"two"
    pool.give_back(again)
    pool.give_back(other)  # one is kept; the other is left to be freed
    assert bytes(pool.take(3)) == b"one"
    assert bytes(pool.take(3)) == b"\0\0\0"
    with pytest.raises(LocalProtocolError):
        pool.take(FrameBuffers.SIZE + 1)


def test_a_frame_buffer_still_in_use_elsewhere_is_not_reused() -> None:
    pool = FrameBuffers()
    view = pool.take(1000)
    view[10:13] = b"abc"
    still_read = view[10:20]  # e.g. a block parsed out of a body, not yet stored
    pool.give_back(view)
    pool.take(1000)[:] = b"x" * 1000  # the next frame: a new buffer, not this one
    assert bytes(still_read[:3]) == b"abc"


def test_a_stream_ending_inside_a_body_filled_in_place_is_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(encode_frame(b"x" * IN_PLACE_BODY)[:1000])
    assert decoder.next_frame() is None
    space = decoder.body_space()
    assert space is not None and len(space) == IN_PLACE_BODY + HEADER_SIZE - 1000
    assert decoder.missing == len(space)
    with pytest.raises(LocalProtocolError):
        decoder.body_filled(len(space) + 1)
    decoder.receive_data(b"")
    with pytest.raises(FrameError, match="middle of a frame"):
        decoder.next_frame()


# -- memory: the frame budget, and buffers given back to the kernel ----------------------------


def large_frame_start(size: int = MAX_FRAME_SIZE) -> bytes:
    return size.to_bytes(HEADER_SIZE, "big") + b"x" * 100


def test_a_large_frame_waits_for_the_budget_before_taking_a_buffer() -> None:
    budget = FrameBudget(MAX_FRAME_SIZE)  # room for one frame
    first, second = FrameDecoder(budget=budget), FrameDecoder(budget=budget)
    first.receive_data(large_frame_start())
    assert first.next_frame() is None and first.body_space() is not None
    assert budget.used == MAX_FRAME_SIZE
    second.receive_data(large_frame_start())
    assert second.next_frame() is None
    assert second.waiting_for_memory and second.body_space() is None  # nothing allocated for it
    assert second.buffered == HEADER_SIZE + 100 and budget.refusals == 1
    space = first.body_space()
    assert space is not None
    space[:] = b"y" * len(space)
    first.body_filled(len(space))
    body = first.next_frame()
    assert body is not None and len(body) == MAX_FRAME_SIZE
    first.recycle(body)
    assert budget.used == MAX_FRAME_SIZE and second.claim.granted  # handed straight to the waiter
    assert second.next_frame() is None and not second.waiting_for_memory  # asked again: taken
    assert second.body_space() is not None and budget.used == MAX_FRAME_SIZE
    second.close()
    assert budget.used == 0


def test_small_frames_never_wait_for_the_budget() -> None:
    budget = FrameBudget(MAX_FRAME_SIZE)
    assert budget.claim("10.0.0.9").try_reserve(budget.limit)  # all of it held elsewhere
    decoder = FrameDecoder(budget=budget)
    decoder.receive_data(encode_frame(b"s" * (IN_PLACE_BODY - 1)))
    assert decoder.next_frame() == b"s" * (IN_PLACE_BODY - 1)


def test_a_body_cut_off_by_the_end_of_the_stream_or_a_close_gives_its_budget_back() -> None:
    budget = FrameBudget()
    cut = FrameDecoder(budget=budget)
    cut.receive_data(large_frame_start())
    assert cut.next_frame() is None and budget.used > 0
    cut.receive_data(b"")
    with pytest.raises(FrameError):
        cut.next_frame()
    assert budget.used == 0
    closed = FrameDecoder(budget=budget)
    closed.receive_data(large_frame_start())
    assert closed.next_frame() is None and budget.used > 0
    closed.close()
    closed.close()
    assert budget.used == 0


def test_a_budget_smaller_than_one_frame_is_refused() -> None:
    with pytest.raises(ValueError):
        FrameBudget(MAX_FRAME_SIZE - 1)


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_frame_buffers_beyond_those_kept_go_back_to_the_kernel() -> None:
    """Measured, not assumed: 16 buffers filled (32 MiB) and given back to a
    pool that keeps 2 leave the process ~4 MiB larger, not 32."""
    pool = FrameBuffers(keep=2)
    before = _rss()
    views = [pool.take(FrameBuffers.SIZE) for _ in range(16)]
    for view in views:
        view[::4096] = b"\1" * len(range(0, len(view), 4096))  # touch every page
    grown = _rss()
    assert grown - before >= 16 * FrameBuffers.SIZE * 0.9
    buffers = [weakref.ref(view.obj) for view in views]  # type: ignore[arg-type]
    for view in views:
        pool.give_back(view)
    del views, view
    assert pool.kept == 2 and sum(buffer() is None for buffer in buffers) == 14  # unmapped
    assert _rss() - before <= 2 * FrameBuffers.SIZE + 4 * 1024 * 1024


def test_an_announced_frame_costs_memory_only_as_its_bytes_arrive() -> None:
    before = _rss()
    decoders = [FrameDecoder(budget=FrameBudget()) for _ in range(32)]
    for d in decoders:
        d.receive_data(large_frame_start())
        assert d.next_frame() is None and d.body_space() is not None
    assert _rss() - before < 4 * 1024 * 1024  # 32 announced 2 MiB frames, ~64 MiB if allocated
    for d in decoders:
        d.close()
