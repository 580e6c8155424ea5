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

It never decrypts, decodes CBOR, or touches a socket.
"""

from __future__ import annotations

import sys

from .messages import MAX_MESSAGE_SIZE, LocalProtocolError, RemoteProtocolError
from .noise import MAX_NOISE_MESSAGE, TAGLEN, sealed_size

HEADER_SIZE = 4
# The largest body after the handshake: a MAX_MESSAGE_SIZE plaintext sealed
# into Noise messages (2 MiB + 16 bytes of tag per 65519-byte piece).
MAX_FRAME_SIZE = sealed_size(MAX_MESSAGE_SIZE)
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

    A fresh ``bytearray`` is zero-filled, and for a 2 MiB frame that memset
    was a tenth of a receiving daemon's time holding the GIL (py-spy): a
    frame being received and one being sent each borrow a buffer of the
    largest frame's size and give it back once its bytes are consumed (read
    by the cipher, or taken by the kernel). At most ``keep`` free buffers
    are kept (a busy node has a few frames in flight, an idle one nothing
    to spare memory for); beyond that a returned buffer is left to be freed.
    One thread only (the event loop's)."""

    SIZE = HEADER_SIZE + MAX_FRAME_SIZE

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: list[bytearray] = []

    def take(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes (≤ SIZE), contents undefined."""
        if size > self.SIZE:
            raise LocalProtocolError(f"a frame buffer of {size} bytes is over {self.SIZE}")
        buffer = self._free.pop() if self._free else bytearray(self.SIZE)
        return memoryview(buffer)[:size]

    def give_back(self, view: memoryview) -> None:
        """Return what :meth:`take` gave; the view must not be used after."""
        buffer = view.obj
        try:
            view.release()
        except BufferError:  # exported to something still reading it
            return
        # Another view of it still alive (CPython: it holds a reference to
        # the buffer) means someone may read it: never reuse it under them.
        if sys.getrefcount(buffer) > 2:  # ``buffer`` and getrefcount's own argument
            return
        if len(self._free) < self.keep and type(buffer) is bytearray and len(buffer) == self.SIZE:
            self._free.append(buffer)


FRAME_BUFFERS = FrameBuffers()
"""The process's pool: every connection's large frames share it."""


class FrameError(RemoteProtocolError):
    """The peer sent a frame that breaks the framing rules."""


class FrameTooLargeError(FrameError):
    """A frame header announced more bytes than the limit allows."""


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
    """

    def __init__(self, limit: int = MAX_FRAME_SIZE, minimum: int = 0) -> None:
        self.limit = limit
        self.minimum = minimum
        self._buffer = bytearray()
        # A large frame's body, filled in place (see body_space).
        self._body: memoryview | None = None  # borrowed from FRAME_BUFFERS
        self._body_have = 0
        self._eof = False
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

    def receive_data(self, data: bytes) -> None:
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

    @staticmethod
    def recycle(body: bytes | memoryview) -> None:
        """Give back the buffer of a body :meth:`next_frame` returned, once
        nothing reads it any more (a small body, plain bytes, needs nothing)."""
        if type(body) is memoryview:
            FRAME_BUFFERS.give_back(body)

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
        return error

    def next_frame(self) -> bytes | memoryview | None:
        """The next complete body, or ``None`` if more bytes are needed. A
        large body is a view of a borrowed buffer: pass it to :meth:`recycle`
        once its bytes are consumed."""
        if self._error is not None:
            raise self._error
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
                    body = bytes(view[HEADER_SIZE:end])
                del self._buffer[:end]
                return body
            if length >= IN_PLACE_BODY and not self._eof:
                # The rest of this body is read straight into a buffer of
                # its own, borrowed: the caller gives it back (recycle).
                self._body = FRAME_BUFFERS.take(length)
                self._body_have = len(self._buffer) - HEADER_SIZE
                self._body[: self._body_have] = memoryview(self._buffer)[HEADER_SIZE:]
                self._buffer.clear()
                return None
        if self._eof and self._buffer:
            raise self._fail(FrameError("the stream ended in the middle of a frame"))
        return None
