"""The control server: the trio loop that answers a node's control socket.

Owns: the listening socket (mode 0600, owner-only by ``SO_PEERCRED``), one
task per client reading requests ahead, descriptors passed with a request
(:class:`ClientState`), and turning each request into a call of its op's
handler through the schema (:mod:`cas.control.schema`), in order, one at a
time per connection.

Must never: decide what an op means (the node's op table does), trust a
frame's length before checking it, accept a connection from another user,
or let a handler's bug stop the node (it is answered as :class:`NodeError`).
trio is imported inside the functions: the sync client never loads it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat as stat_module
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..errors import CasError, ControlProtocolError, InvalidInputError, RepositoryError, UnknownOpError
from ._framing import MAX_FDS, _short_path, check_length, decode_body, encode_frame, error_value
from .schema import Request

# -- the server (trio; imported lazily so the sync client never loads trio) ---------------


@dataclass
class ClientState:
    """Per-connection state for handlers: ``values`` to keep things in, and
    ``on_close`` callbacks run (shielded, in order) when the client goes.
    ``fds`` are the descriptors passed with the request being handled; a
    handler takes the one it needs, and the server closes any left."""

    values: dict[str, Any] = field(default_factory=dict)
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def take_fd(self) -> int:
        """The descriptor passed with this request, now the handler's to close."""
        if len(self.fds) != 1:
            raise InvalidInputError("this operation needs exactly one file descriptor passed with it")
        return self.fds.pop()


Handler = Callable[[Any, ClientState], Awaitable[Any]]
"""``handler(request, client)``: the op's result, for its schema to encode."""

StreamingHandler = Callable[[Any, ClientState], AsyncIterator[list[Any]]]
"""``handler(request, client)`` of a streaming op: an async generator of
lists of items (each list goes out as one ``{"more": items}`` frame)."""


@dataclass(frozen=True)
class Op:
    """One entry of the op table: the op's declared request (its name,
    arguments, result: :mod:`cas.control.schema`) and its handler, called
    with the parsed request."""

    request: type[Request[Any]]
    handler: Handler | StreamingHandler

    @property
    def streaming(self) -> bool:
        return self.request.STREAMING


OpTable = dict[str, Op]


def bind_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` in a repository, mode 0600, any
    stale file there removed first. The caller owns removing it again.

    The socket is bound, then made 0600 before it listens. Between the two
    its mode is the umask's, and no other user can reach it all the same:
    connecting needs search permission on its directory, the repository,
    which is 0700 (cas/store/_modes.py). The process umask is not changed
    to cover that moment: it is shared by all the node's threads, and a
    directory another thread made under it would come out unusable."""
    if path.exists() or path.is_symlink():
        if not stat_module.S_ISSOCK(path.lstat().st_mode):
            raise RepositoryError(f"{path} exists and is not a socket; remove it")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _short_path(path) as address:
            sock.bind(address)
        os.chmod(path, 0o600)
    except OSError as exc:
        sock.close()
        raise RepositoryError(f"cannot create the control socket {path}: {exc.strerror}") from None
    sock.listen(64)
    return sock



def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[1]
    return uid


async def serve_control(listener: socket.socket, ops: OpTable,
                        on_internal_error: Callable[[str, BaseException], None] | None = None) -> None:
    """Accept clients on ``listener`` and answer their requests from ``ops``
    until cancelled. One task per client, in this call's nursery."""
    import trio

    sock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        while True:
            client, _ = await sock.accept()
            try:
                uid = _peer_uid(client._sock)  # type: ignore[attr-defined]  # trio's socket wraps the stdlib one, which SO_PEERCRED needs
            except OSError:
                uid = -1
            if uid != os.getuid():
                client.close()
                continue
            nursery.start_soon(_serve_client, trio.SocketStream(client), ops, on_internal_error)


READ_AHEAD_REQUESTS = 1
"""Requests read and decoded while the one before is being handled: a
client that sends ``put_many`` batches ahead (an add) gets the next one's
reading overlapped with the store's writing of this one."""


async def _serve_client(stream: Any, ops: OpTable,
                        on_internal_error: Callable[[str, BaseException], None] | None) -> None:
    """Serve one client: requests are handled one at a time and answered in
    order, while a reader task reads the next one ahead."""
    import trio

    send_request, receive_request = trio.open_memory_channel[Any](READ_AHEAD_REQUESTS)

    async def send(value: Any) -> None:
        await stream.send_all(encode_frame(value))

    client = ClientState()
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_requests, stream, send_request)
                try:
                    async for request, fds in receive_request:
                        if isinstance(request, _FatalRequest):  # the stream cannot go on
                            _close_all(fds)
                            await send({"error": error_value(request.error)})
                            break
                        client.fds = fds
                        try:
                            await _handle(request, ops, client, send, on_internal_error)
                        finally:
                            _close_all(client.fds)  # passed but not taken
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client went away
                nursery.cancel_scope.cancel()
        finally:
            _close_all(client.fds)
            while True:  # requests read ahead but never handled
                try:
                    _, fds = receive_request.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                _close_all(fds)
            with trio.CancelScope(shield=True):
                for cleanup in client.on_close:
                    await cleanup()


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())


@dataclass(frozen=True)
class _FatalRequest:
    """A frame header the stream cannot be read past."""

    error: ControlProtocolError


async def _read_requests(stream: Any, requests: Any) -> None:
    """Read frames from ``stream`` (a :class:`trio.SocketStream`) and pass
    each on decoded (or the :class:`ControlProtocolError` that says why it
    is not a request), with the descriptors passed with it; stop at the end
    of the stream, a bad header, or when the server is done."""
    import trio

    sock = stream.socket
    fds: list[int] = []  # passed with the frame being read
    ancillary_size = socket.CMSG_SPACE(MAX_FDS * _FD_SIZE)

    async def read_into(buffer: bytearray) -> bool:
        # Straight into the frame's own buffer: a 2 MiB put_many is copied
        # once by the kernel, not again to be joined and cut. A read never
        # goes past this frame, so descriptors arrive with the frame the
        # client sent them with (on its first byte).
        view = memoryview(buffer)
        got = 0
        while got < len(buffer):
            n, ancillary, _, _ = await sock.recvmsg_into([view[got:]], ancillary_size)
            fds.extend(_passed_fds(ancillary))
            if not n:
                return False
            got += n
        return True

    async with requests:
        try:
            header = bytearray(4)
            while await read_into(header):
                try:
                    length = check_length(bytes(header))
                except ControlProtocolError as exc:
                    await requests.send((_FatalRequest(exc), _take(fds)))
                    return
                body = bytearray(length)
                if not await read_into(body):
                    return
                try:
                    request = decode_body(memoryview(body))  # cbor2 would copy a bytearray
                except ControlProtocolError as exc:
                    request = exc
                frame_fds = _take(fds)
                try:
                    await requests.send((request, frame_fds))
                except BaseException:
                    _close_all(frame_fds)
                    raise
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return  # the client went away, or the server stopped listening to it
        finally:
            _close_all(fds)


_FD_SIZE = struct.calcsize("i")


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    found: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(data) - len(data) % _FD_SIZE
            found.extend(struct.unpack(f"{whole // _FD_SIZE}i", data[:whole]))
    return found


def _take(fds: list[int]) -> list[int]:
    taken = fds[:]
    fds.clear()
    return taken


async def _handle(request: Any, ops: OpTable, client: ClientState, send: Callable[[Any], Awaitable[None]],
                  on_internal_error: Callable[[str, BaseException], None] | None) -> None:
    """Answer one decoded request (or the error that made it unreadable)."""
    import trio

    op: Op | None = None
    try:
        if isinstance(request, ControlProtocolError):
            raise request
        op, parsed = _parse_request(request, ops)
        encode = op.request.result_to_value
        if op.streaming:
            count = 0
            # Closed here, not whenever it is collected: a client gone
            # mid-stream must not leave the handler's resources (add_file's
            # descriptor) open until then.
            stream = cast(AsyncIterator[list[Any]], op.handler(parsed, client))  # a streaming op's handler
            async with contextlib.aclosing(stream) as items_stream:  # type: ignore[type-var]  # an async generator has aclose
                async for items in items_stream:
                    count += len(items)
                    await send({"more": [encode(item) for item in items]})
            await send({"ok": count})
        else:
            await send({"ok": encode(await op.handler(parsed, client))})  # type: ignore[misc]  # a plain op's handler is a coroutine function
    except CasError as exc:
        await send({"error": error_value(exc)})
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except Exception as exc:  # a bug in a handler must not stop the node
        if on_internal_error is not None:
            on_internal_error("?" if op is None else op.request.OP, exc)
        await send({"error": error_value(exc)})


def _parse_request(request: Any, ops: OpTable) -> tuple[Op, Request[Any]]:
    """The op a request names and its arguments parsed by the op's schema
    (:class:`ControlArgumentError` names the op and the argument)."""
    if not isinstance(request, dict) or set(request) != {"op", "args"}:
        raise ControlProtocolError('a control request is {"op": text, "args": map}')
    name, args = request["op"], request["args"]
    if not isinstance(name, str) or not isinstance(args, dict):
        raise ControlProtocolError('a control request is {"op": text, "args": map}')
    op = ops.get(name)
    if op is None:
        raise UnknownOpError(f"the daemon has no operation {name[:64]!r}")
    return op, op.request.from_args(args)
