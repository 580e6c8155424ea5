"""Length-prefixed frames: how encrypted messages are cut out of a TCP stream.

A frame is a 4-byte big-endian unsigned length ``L`` followed by ``L`` bytes
of body. During the handshake a body is one Noise handshake message; after
it, a body is one sealed cas message (see :meth:`cas.net.noise.Transport.seal`).

This module owns the byte-level cutting and its limits, sans-IO: a
:class:`FrameDecoder` is fed whatever bytes arrived and hands back complete
bodies. The length is checked against the decoder's limit *as soon as the
four header bytes are in*, before a single body byte is buffered, so a peer
cannot make us reserve memory by announcing a huge frame. A driver that reads
only when :meth:`FrameDecoder.next_frame` asks for more keeps the buffer
within one frame (limit + header) plus one read.

Memory, per connection and in total. A body under :data:`IN_PLACE_BODY` is
gathered in the decoder's own buffer (so a connection holds at most one
such frame plus one read). A larger one is received in place, into a
buffer taken from the process's pool only once the **frame budget**
(:class:`FrameBudget`, :data:`FRAME_MEMORY` across every connection that
shares it, a share of it per source address; :mod:`.frame_budget` decides
whose frame goes next) grants it; until then the decoder says it is
``waiting_for_memory`` and its driver stops reading, which pushes back on
the sender through TCP. The buffers are anonymous memory maps: a page
costs memory only once a byte of the frame has arrived in it, and a buffer
the pool does not keep is unmapped when it is given back, so its memory
goes back to the kernel at once (see :class:`FrameBuffers`). How long a
frame may take is the driver's to enforce (a clock is not ours).

It never decrypts, decodes CBOR, reads a clock, or touches a socket.
"""

from __future__ import annotations

import mmap
import sys

from ..errors import FrameError, FrameTooLargeError, LocalProtocolError
from .frame_budget import FRAME_MEMORY, LARGEST_FRAME, FrameBudget, FrameClaim
from .messages import MAX_MESSAGE_SIZE
from .noise import MAX_NOISE_MESSAGE, TAGLEN, sealed_size

__all__ = [
    "FRAME_BUDGET", "FRAME_BUFFERS", "FRAME_MEMORY", "HEADER_SIZE", "IN_PLACE_BODY",
    "MAX_FRAME_SIZE", "MAX_HANDSHAKE_FRAME_SIZE", "MIN_FRAME_SIZE", "FrameBudget", "FrameBuffers",
    "FrameClaim", "FrameDecoder", "FrameError", "FrameTooLargeError", "encode_frame", "frame_header",
]

HEADER_SIZE = 4
# The largest body after the handshake: a MAX_MESSAGE_SIZE plaintext sealed
# into Noise messages (2 MiB + 16 bytes of tag per 65519-byte piece).
MAX_FRAME_SIZE = sealed_size(MAX_MESSAGE_SIZE)
assert MAX_FRAME_SIZE == LARGEST_FRAME
# During the handshake a body is one Noise message, which the Noise spec caps
# at 65535 bytes; an unauthenticated peer gets no more buffer than that.
MAX_HANDSHAKE_FRAME_SIZE = MAX_NOISE_MESSAGE
# The smallest body after the handshake: an empty plaintext still has a tag.
MIN_FRAME_SIZE = TAGLEN
# A body this large, still incomplete, is received in place (body_space):
# blocks, not DHT messages.
IN_PLACE_BODY = 64 * 1024


class FrameBuffers:
    """Buffers for large frames, reused from one frame to the next.

    A fresh buffer costs a page fault per 4 KiB page when it is first
    written (~1.8 ms for 2 MiB on this project's VM, several times the
    cipher's work on it), and zero-filling a fresh ``bytearray`` was a tenth
    of a receiving daemon's time: a frame being received and one being sent
    each borrow a buffer of the largest frame's size and give it back once
    its bytes are consumed (read by the cipher, or taken by the kernel). At
    most ``keep`` free buffers are kept (a busy node has a few frames in
    flight, an idle one nothing to spare memory for).

    Each buffer is an anonymous ``mmap`` of its own, not heap memory: glibc
    is tuned to keep freed heap memory (:mod:`cas.allocator`), so a flood of
    frames once left a daemon's heap at its peak for good, while a map given
    back beyond ``keep`` is unmapped on the spot and its pages return to
    the kernel. And only the pages a frame's bytes reach are ever touched,
    so a peer that announces a large frame and sends little of it costs
    what it sent. One thread only (the event loop's)."""

    SIZE = HEADER_SIZE + MAX_FRAME_SIZE

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self.mapped = 0
        """Buffers made (each one a fresh map) since the pool was created."""

    def take(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes (≤ SIZE), contents undefined."""
        if size > self.SIZE:
            raise LocalProtocolError(f"a frame buffer of {size} bytes is over {self.SIZE}")
        if self._free:
            buffer = self._free.pop()
        else:
            buffer = mmap.mmap(-1, self.SIZE)
            self.mapped += 1
        return memoryview(buffer)[:size]

    def give_back(self, view: memoryview) -> None:
        """Return what :meth:`take` gave; the view must not be used after."""
        buffer = view.obj
        try:
            view.release()
        except BufferError:  # exported to something still reading it
            return
        # Another view of it still alive (CPython: it holds a reference to
        # the buffer) means someone may read it: never reuse it under them;
        # it is unmapped when the last view goes.
        if sys.getrefcount(buffer) > 2:  # ``buffer`` and getrefcount's own argument
            return
        if type(buffer) is not mmap.mmap or len(buffer) != self.SIZE:
            return
        if len(self._free) < self.keep:
            self._free.append(buffer)
        else:
            buffer.close()  # unmapped now: the pages go back to the kernel

    @property
    def kept(self) -> int:
        """Free buffers held for reuse."""
        return len(self._free)


FRAME_BUFFERS = FrameBuffers()
"""The process's pool: every connection's large frames share it."""

FRAME_BUDGET = FrameBudget()
"""The default budget, for channels not given one of their own."""


def encode_frame(body: bytes, limit: int = MAX_FRAME_SIZE) -> bytes:
    """Header + body. Raises :class:`LocalProtocolError` if over ``limit``."""
    return frame_header(len(body), limit) + body


def frame_header(body_size: int, limit: int = MAX_FRAME_SIZE) -> bytes:
    """The header of a frame whose body has ``body_size`` bytes (for a body
    written in place after it). Raises :class:`LocalProtocolError` if over
    ``limit``."""
    if body_size > limit:
        raise LocalProtocolError(f"frame body of {body_size} bytes exceeds the limit {limit}")
    return body_size.to_bytes(HEADER_SIZE, "big")


class FrameDecoder:
    """Accumulates received bytes and yields complete frame bodies.

    Use: ``receive_data(chunk)``, then call ``next_frame()`` until it returns
    ``None`` (needs more data). ``receive_data(b"")`` means end of stream;
    after it, a partial frame in the buffer is a :class:`FrameError`.
    The limit can be changed between frames (it is raised once the
    handshake is over). Once an error is raised the decoder stays broken:
    after a framing error nothing later in the stream can be trusted.

    A large body is received only once ``budget`` grants its size, counted
    under the source ``address`` of the stream (its :attr:`claim`); until
    then :attr:`waiting_for_memory` is true, the claim waits its turn and
    :meth:`next_frame` asks again each time it is called (the claim's
    ``on_grant`` says when to). Give every large body back
    (:meth:`recycle`), and :meth:`close` a decoder that is dropped, or the
    budget stays spent.
    """

    def __init__(self, limit: int = MAX_FRAME_SIZE, minimum: int = 0,
                 budget: FrameBudget | None = None, address: str = "") -> None:
        self.limit = limit
        self.minimum = minimum
        self.budget = FRAME_BUDGET if budget is None else budget
        self.claim: FrameClaim = self.budget.claim(address)
        self._buffer = bytearray()
        # A large frame's body, filled in place (see body_space).
        self._body: memoryview | None = None  # borrowed from FRAME_BUFFERS, its size reserved
        self._body_have = 0
        self._starved = False  # a large body is announced and the budget has no room for it
        self._eof = False
        self._closed = False
        self._error: FrameError | None = None

    def __repr__(self) -> str:
        return f"FrameDecoder(buffered={len(self._buffer)}, limit={self.limit})"

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) + self._body_have

    @property
    def missing(self) -> int:
        """Bytes still to come before the frame being received is complete
        (a header's worth when none has started): how much a reader may ask
        for at once."""
        if self._body is not None:
            return len(self._body) - self._body_have
        have = len(self._buffer)
        if have < HEADER_SIZE:
            return HEADER_SIZE - have
        length = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
        return max(0, HEADER_SIZE + min(length, self.limit) - have)

    @property
    def at_eof(self) -> bool:
        return self._eof

    @property
    def waiting_for_memory(self) -> bool:
        """A large frame is announced and the budget has no room for it
        yet: read nothing more until some is released, then call
        :meth:`next_frame` again."""
        return self._starved

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._eof and data:
            raise LocalProtocolError("data received after end of stream")
        if not data:
            self._eof = True
            return
        if self._body is not None:  # a large body being filled in place takes what it lacks
            take = min(len(data), len(self._body) - self._body_have)
            self._body[self._body_have:self._body_have + take] = data[:take]
            self._body_have += take
            data = data[take:]
        self._buffer += data

    def recycle(self, body: bytes | memoryview) -> None:
        """Give back the buffer of a body :meth:`next_frame` returned, and
        its share of the budget, once nothing reads it any more (a small
        body, plain bytes, needs nothing)."""
        if type(body) is memoryview:
            size = len(body)
            FRAME_BUFFERS.give_back(body)
            self.claim.release(size)

    def close(self) -> None:
        """Give back a body being received (its connection is gone), and
        stop waiting for the budget; the decoder reads nothing more.
        Idempotent."""
        self._closed = True
        self._starved = False
        self.claim.withdraw()
        body, self._body, self._body_have = self._body, None, 0
        if body is not None:
            self.recycle(body)

    def body_space(self) -> memoryview | None:
        """Where the rest of a large frame's body goes, for a reader to fill
        in place (``readv`` into it, then :meth:`body_filled`) instead of
        passing bytes to :meth:`receive_data`: a block is then copied once,
        by the kernel, instead of three times. None when no such body is
        being received; call :meth:`next_frame` first, which starts one."""
        if self._body is None:
            return None
        return self._body[self._body_have:]

    def body_filled(self, count: int) -> None:
        """``count`` bytes were written at the start of :meth:`body_space`."""
        if self._body is None or not 0 <= count <= len(self._body) - self._body_have:
            raise LocalProtocolError("body_filled beyond the body being received")
        self._body_have += count

    def _fail(self, error: FrameError) -> FrameError:
        self._error = error
        self.close()
        return error

    def next_frame(self) -> bytes | memoryview | None:
        """The next complete body, or ``None`` if more bytes are needed. A
        large body is a view of a borrowed buffer: pass it to :meth:`recycle`
        once its bytes are consumed."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise LocalProtocolError("the frame decoder is closed")
        if self._body is not None:
            if self._body_have == len(self._body):
                body, self._body, self._body_have = self._body, None, 0
                return body
            if self._eof:
                raise self._fail(FrameError("the stream ended in the middle of a frame"))
            return None
        if len(self._buffer) >= HEADER_SIZE:
            length = int.from_bytes(self._buffer[:HEADER_SIZE], "big")
            if length > self.limit:
                raise self._fail(
                    FrameTooLargeError(f"frame of {length} bytes exceeds the limit {self.limit}")
                )
            if length < self.minimum:
                raise self._fail(FrameError(f"frame of {length} bytes is below the minimum"))
            end = HEADER_SIZE + length
            if len(self._buffer) >= end:
                with memoryview(self._buffer) as view:  # one copy of the body, not two
                    whole = bytes(view[HEADER_SIZE:end])
                del self._buffer[:end]
                return whole
            if length >= IN_PLACE_BODY and not self._eof:
                # The rest of this body is read straight into a buffer of
                # its own, borrowed once the budget has room for it: the
                # caller gives both back (recycle).
                if not self.claim.try_reserve(length):
                    self._starved = True
                    return None
                self._starved = False
                try:
                    self._body = FRAME_BUFFERS.take(length)
                except BaseException:
                    self.claim.release(length)
                    raise
                self._body_have = len(self._buffer) - HEADER_SIZE
                self._body[: self._body_have] = memoryview(self._buffer)[HEADER_SIZE:]
                self._buffer.clear()
                return None
        if self._eof and self._buffer:
            raise self._fail(FrameError("the stream ended in the middle of a frame"))
        return None
