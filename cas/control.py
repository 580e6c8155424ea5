"""The control socket: how the CLI, the library and the mount reach a node.

Owns: the local control protocol (framing, request and response shapes,
error mapping), the trio server loop that answers it, the synchronous
client, and :class:`RemoteStore`, the client-side stand-in for
:class:`cas.store.LocalStore` that lets ``cas.api.Repository`` run unchanged
against a running daemon.

Must never: decide what an op means (the node's op table does), trust a
frame's length before checking it, or accept a connection from another user.

The protocol (docs/node.md has the full op table)
=================================================

The socket is ``<repo>/control.sock``, a Unix stream socket created mode
0600 in the repository directory; the server also checks each client's
``SO_PEERCRED`` uid against its own. Each message, both ways, is

    length: u32 big-endian ‖ body: one DAG-CBOR value (≤ MAX_FRAME bytes)

A request is ``{"op": text, "args": map}``; the answer is ``{"ok": value}``
or ``{"error": {"type": text, "message": text}}``. ``type`` is the name of a
:class:`cas.errors.CasError` subclass; the client raises that class again
with the same message, so a command prints the same one line whether it ran
locally or through the daemon. A *streaming* op (``iterate``) answers with
any number of ``{"more": [items]}`` frames before its final ``{"ok": n}``.
Requests on one connection are answered in order, one at a time.

The op table
============

An op is a name mapped to an async handler ``handler(args, client) ->
value`` (or, for a streaming op, an async generator of lists); ``client`` is
the connection's :class:`ClientState`, where a handler keeps per-connection
state (the node keeps each connection's write session there, so gc spares
what a client has put until it disconnects). The server is given the table
as a plain dict (:data:`OpTable`). The node builds its table in one
place, :func:`cas.node.ops.control_ops`; a layer adding ops (the namespace, say)
writes a function returning ``{name: Op(...)}`` and merges it there with one
line. Handlers raise :class:`CasError` subclasses for the caller's errors;
anything else is reported as :class:`NodeError` and logged by the node.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat as stat_module
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import dagcbor
from .blocks import Block
from .cid import CID, MAX_BLOCK_SIZE
from .errors import CasError, InvalidBlockError, InvalidInputError, RepositoryError
from .store import GcReport, NamespaceKey, Problem, RepoStat, RootRow, VerifyReport
from .store._local import NAMESPACE_KEY_FILE

if TYPE_CHECKING:
    from .files import AddResult
    from .names.changes import Change
    from .names.namespace import Node, RootState

SOCKET_NAME = "control.sock"

MAX_FRAME = 2 * 1024 * 1024
"""Largest control message either way: a block (≤ 1 MiB, blocks.MAX_BLOCK_SIZE)
plus its envelope, with the same 2 MiB ceiling as a network message."""

MAX_ITERATE_BATCH = 1024
"""CIDs per ``{"more": ...}`` frame of ``iterate`` (about 40 KiB)."""

MAX_PROBLEMS = 1000
"""Problems returned by ``verify`` over the socket; the count says if more."""

MAX_FDS = 1
"""Descriptors a request may carry (``add_file`` passes one); more are
closed by the kernel on arrival."""

CONNECT_TIMEOUT = 2.0
"""Seconds to wait for a daemon to accept and answer the probe."""

_HEADER = struct.Struct(">I")


class NodeError(CasError):
    """The daemon failed while serving a request (a bug or a resource problem
    on its side); the message says what it reported."""


class ControlProtocolError(CasError):
    """The other end of the control socket broke the protocol or went away."""


class UnknownOpError(ControlProtocolError):
    """The daemon has no such operation (an older daemon than the client)."""


class DaemonNotRunningError(CasError):
    """No daemon answers on the repository's control socket."""


# -- framing (shared by both ends) ----------------------------------------------------


def encode_frame(value: Any) -> bytes:
    body = dagcbor.encode(value)
    if len(body) > MAX_FRAME:
        raise ControlProtocolError(f"control message of {len(body)} bytes is over the limit")
    return _HEADER.pack(len(body)) + body


def check_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ControlProtocolError(f"control message of {length} bytes is over the {MAX_FRAME}-byte limit")
    return length


def decode_body(body: bytes | memoryview) -> Any:
    try:
        return dagcbor.decode_noncanonical(body)
    except (InvalidBlockError, RecursionError) as exc:
        raise ControlProtocolError(f"malformed control message: {exc}") from None


# -- errors across the socket -----------------------------------------------------------


def error_value(exc: BaseException) -> dict[str, str]:
    """The ``error`` map for an exception raised by a handler."""
    if isinstance(exc, CasError):
        return {"type": type(exc).__name__, "message": str(exc)[:4096]}
    return {"type": "NodeError", "message": f"the node failed: {type(exc).__name__}: {exc}"[:4096]}


def _error_classes() -> dict[str, type[CasError]]:
    found: dict[str, type[CasError]] = {}
    stack: list[type[CasError]] = [CasError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    return found


def error_from_value(value: Any) -> CasError:
    """Rebuild the :class:`CasError` a handler raised: the same class (found by
    name among CasError's subclasses; CasError if unknown), the same message."""
    if not isinstance(value, dict) or not isinstance(value.get("message"), str):
        return ControlProtocolError("the daemon sent a malformed error")
    cls = _error_classes().get(str(value.get("type")), CasError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, value["message"])
    return exc


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


Handler = Callable[[dict[str, Any], ClientState], Awaitable[Any]]
StreamingHandler = Callable[[dict[str, Any], ClientState], AsyncIterator[list[Any]]]


@dataclass(frozen=True)
class Op:
    """One entry of the op table. ``handler(args, client)`` returns the ``ok``
    value; with ``streaming`` it is an async generator of lists of items."""

    handler: Handler | StreamingHandler
    streaming: bool = False


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


class _short_path:
    """``sun_path`` holds about 107 bytes; a longer socket path is reached
    through ``/proc/self/fd/N/`` of its directory (Linux)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> str:
        text = os.fspath(self._path)
        if len(os.fsencode(text)) < 100:
            return text
        self._fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{self._path.name}"

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


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
                uid = _peer_uid(client._sock)  # type: ignore[attr-defined]
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

    try:
        if isinstance(request, ControlProtocolError):
            raise request
        op, args = _parse_request(request, ops)
    except ControlProtocolError as exc:
        await send({"error": error_value(exc)})
        return
    try:
        if op.streaming:
            count = 0
            # Closed here, not whenever it is collected: a client gone
            # mid-stream must not leave the handler's resources (add_file's
            # descriptor) open until then.
            stream = cast(AsyncIterator[list[Any]], op.handler(args, client))  # a streaming op's handler
            async with contextlib.aclosing(stream) as items_stream:  # type: ignore[type-var]
                async for items in items_stream:
                    count += len(items)
                    await send({"more": items})
            await send({"ok": count})
        else:
            await send({"ok": await op.handler(args, client)})  # type: ignore[misc]
    except CasError as exc:
        await send({"error": error_value(exc)})
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except Exception as exc:  # a bug in a handler must not stop the node
        if on_internal_error is not None:
            on_internal_error(str(request.get("op")), exc)
        await send({"error": error_value(exc)})


def _parse_request(request: Any, ops: OpTable) -> tuple[Op, dict[str, Any]]:
    if not isinstance(request, dict) or set(request) != {"op", "args"}:
        raise ControlProtocolError('a control request is {"op": text, "args": map}')
    name, args = request["op"], request["args"]
    if not isinstance(name, str) or not isinstance(args, dict):
        raise ControlProtocolError('a control request is {"op": text, "args": map}')
    op = ops.get(name)
    if op is None:
        raise UnknownOpError(f"the daemon has no operation {name[:64]!r}")
    return op, args


# -- the synchronous client ---------------------------------------------------------------


SEND_BUFFER = 4 * 1024 * 1024


class ControlClient:
    """A connection to a daemon's control socket. Thread-safe (one request
    at a time); use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._ahead = 0  # requests sent by send_ahead whose answers are unread
        self.before_request: list[Callable[[], None]] = []
        """Called before every request but those sent ahead: a writer that
        holds requests back (RemoteBlockStore's batch) sends them first, so
        what the daemon is asked next sees them."""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Room for two put_many batches in the socket (the kernel caps it at
        # net.core.wmem_max): fewer wake-ups of both ends per batch.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._sock.settimeout(CONNECT_TIMEOUT)
        try:
            with _short_path(self.path) as address:
                self._sock.connect(address)
        except OSError as exc:
            self._sock.close()
            raise DaemonNotRunningError(
                f"no daemon answers on {self.path} ({exc.strerror or exc}); start one with 'cas daemon'"
            ) from None
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its ``ok`` value, or raise its error
        (or the error of an earlier :meth:`send_ahead` request)."""
        self._before_request()
        with self._lock:
            self._drain(0)
            self._send(op, args)
            answer = self._receive()
        return self._result(answer)

    def _before_request(self) -> None:
        for hook in self.before_request:
            hook()

    def send_ahead(self, op: str, window: int, **args: Any) -> None:
        """Send a request without waiting for its answer, keeping at most
        ``window`` unanswered: a writer's puts then overlap the daemon's
        work instead of paying a round trip each. The daemon answers in
        order; an error among the answers is raised by the call that reads
        it (this one, once the window is full, or the next :meth:`call`)."""
        with self._lock:
            self._send(op, args)
            self._ahead += 1
            self._drain(window)

    def _drain(self, keep: int) -> None:
        """Read answers to requests sent ahead until ``keep`` are left; every
        one is read even after an error, so the stream stays in step."""
        first_error: Exception | None = None
        while self._ahead > keep:
            answer = self._receive()
            self._ahead -= 1
            try:
                self._result(answer)
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def stream(self, op: str, **args: Any) -> Iterator[Any]:
        """Items of a streaming op. Holds the connection until exhausted; a
        generator dropped early closes the connection (the daemon notices)."""
        return self._stream(op, args, None)

    def stream_with_fd(self, op: str, fd: int, **args: Any) -> Iterator[Any]:
        """As :meth:`stream`, passing the open descriptor ``fd`` with the
        request (SCM_RIGHTS): the daemon gets its own copy of it."""
        return self._stream(op, args, fd)

    def _stream(self, op: str, args: dict[str, Any], fd: int | None) -> Iterator[Any]:
        self._before_request()
        with self._lock:
            self._drain(0)
            self._send(op, args, fd)
            finished = False
            try:
                while True:
                    answer = self._receive()
                    if isinstance(answer, dict) and set(answer) == {"more"} and isinstance(answer["more"], list):
                        yield from answer["more"]
                        continue
                    finished = True
                    self._result(answer)
                    return
            finally:
                if not finished:
                    self._sock.close()

    def _send(self, op: str, args: dict[str, Any], fd: int | None = None) -> None:
        frame = encode_frame({"op": op, "args": args})
        try:
            if fd is not None:  # the descriptor rides on the frame's first byte
                sent = socket.send_fds(self._sock, [frame[:1]], [fd])
                frame = frame[sent:]
            self._sock.sendall(frame)
        except OSError as exc:
            raise ControlProtocolError(f"lost the daemon on {self.path}: {exc.strerror or exc}") from None

    def _receive(self) -> Any:
        length = check_length(self._read(4))
        return decode_body(self._read(length))

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            try:
                data = self._sock.recv(min(n, 1 << 20))
            except TimeoutError:
                raise ControlProtocolError(f"the daemon on {self.path} did not answer in time") from None
            except OSError as exc:
                raise ControlProtocolError(f"lost the daemon on {self.path}: {exc.strerror or exc}") from None
            if not data:
                raise ControlProtocolError(f"the daemon on {self.path} closed the connection")
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    @staticmethod
    def _result(answer: Any) -> Any:
        if isinstance(answer, dict) and set(answer) == {"ok"}:
            return answer["ok"]
        if isinstance(answer, dict) and set(answer) == {"error"}:
            raise error_from_value(answer["error"])
        raise ControlProtocolError("the daemon sent a malformed answer")


def socket_path(repo: str | os.PathLike[str]) -> Path:
    return Path(repo).expanduser().absolute() / SOCKET_NAME


def connect(repo: str | os.PathLike[str]) -> ControlClient | None:
    """A client for the daemon owning ``repo``, or None if none answers (no
    socket file, or a stale one left by a daemon that died)."""
    path = socket_path(repo)
    if not path.exists():
        return None
    try:
        client = ControlClient(path, timeout=CONNECT_TIMEOUT)
    except DaemonNotRunningError:
        return None
    try:
        client.call("ping")
    except CasError:
        client.close()
        return None
    client._sock.settimeout(None)
    return client


# -- the remote store ---------------------------------------------------------------------


PUT_BATCH_BYTES = MAX_FRAME - 64 * 1024
"""Block bytes in one ``put_many`` request: as many as a frame holds, so the
daemon stores a batch in one trip to its store thread."""

BATCHES_AHEAD = 4
"""``put_many`` requests a client keeps unanswered: the daemon stores one
and reads the next while the client chunks and hashes more, and a daemon
slowed by placing copies on its peers still has batches waiting; an error
surfaces within ~8 MiB of its cause. (Two ahead: 67-79 MiB/s replicated on
5 local nodes; four: 72-102, same run.)"""


class RemoteBlockStore:
    """The sync :class:`cas.blocks.BlockStore` protocol over the control socket.
    ``get`` verifies what the daemon sends, like every store."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client
        self._batch: list[list[Any]] = []  # [cid, data] pairs not sent yet
        self._batch_bytes = 0
        # Guards the batch: a reader in another thread (AsyncRepository reads
        # on the trio thread while an add runs in a worker) may send it.
        self._batch_lock = threading.Lock()
        self._hooked = False  # _flush registered with the client (on the first put only:
        # readers make a store per call, and each would add a hook)

    def has(self, cid: CID) -> bool:
        return bool(self._client.call("has", cid=cid))

    def get(self, cid: CID) -> bytes:
        data = self._client.call("get", cid=cid)
        if not isinstance(data, bytes):
            raise ControlProtocolError("the daemon sent a malformed block")
        return Block(cid, data).data  # verifies

    def put(self, block: Block) -> bool:
        """Store ``block`` through the daemon, batched and pipelined: blocks
        go in ``put_many`` requests of up to PUT_BATCH_BYTES, whose answers
        are read later. So this returns True whether or not the daemon had
        the block, and a failure is raised by a later call (every writer
        ends with :meth:`barrier`, which raises it before anything refers to
        the block). Every other call sends the pending batch first."""
        with self._batch_lock:
            if not self._hooked:
                self._client.before_request.append(self._flush)
                self._hooked = True
            if self._batch_bytes + len(block.data) > PUT_BATCH_BYTES:
                self._send_batch()
            self._batch.append([block.cid, block.data])
            self._batch_bytes += len(block.data)
        return True

    def _flush(self) -> None:
        with self._batch_lock:
            self._send_batch()

    def _send_batch(self) -> None:
        # Called with _batch_lock held, and sending under it: batches go out
        # in the order they were made, whichever thread sends them.
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self._client.send_ahead("put_many", BATCHES_AHEAD, blocks=batch)

    def add_file(self, fd: int, offset: int, progress: Callable[[int], object] | None) -> AddResult | None:
        """Have the daemon add the regular file open at ``fd``, from
        ``offset`` to its end (see :class:`cas.blocks.AddsFiles`): it reads
        the file itself, so the bytes never cross the socket. None from a
        daemon without the op (the caller then streams the blocks)."""
        from .files import AddResult

        result = None
        try:
            for item in self._client.stream_with_fd("add_file", fd, offset=offset):
                if isinstance(item, dict) and set(item) == {"read"} and type(item["read"]) is int:
                    if progress is not None:
                        progress(item["read"])
                elif isinstance(item, dict) and isinstance(item.get("cid"), CID) and all(
                        type(item.get(key)) is int for key in ("size", "blocks", "new_blocks", "new_bytes")):
                    result = AddResult(item["cid"], item["size"], item["blocks"], item["new_blocks"],
                                       item["new_bytes"])
                else:
                    raise ControlProtocolError("the daemon sent a malformed add_file answer")
        except UnknownOpError:
            return None  # an older daemon
        if result is None:
            raise ControlProtocolError("the daemon ended add_file without a result")
        return result

    def write_file(
        self, cid: CID, fd: int, offset: int, length: int | None,
        progress: Callable[[int], object] | None = None,
    ) -> int | None:
        """Have the daemon write bytes [offset, offset + length) of file
        ``cid`` to the open descriptor ``fd`` itself, so they never cross
        the socket; return how many it wrote. ``progress`` is given the
        bytes written since its last call, every few MiB. None from a
        daemon without the op (the caller then reads the blocks). A write
        the daemon could not make raises its OSError here, as a local one
        would (BrokenPipeError: the reader of ``fd`` went away)."""
        written: int | None = None
        failed: int | None = None
        try:
            # Read to the end of the stream either way: leaving it early
            # would close the connection.
            for item in self._client.stream_with_fd("write_file", fd, cid=cid, offset=offset, length=length):
                if isinstance(item, dict) and len(item) == 1 and type(item.get("written")) is int:
                    if progress is not None:
                        progress(item["written"] - (written or 0))
                    written = item["written"]
                elif isinstance(item, dict) and len(item) == 1 and type(item.get("failed")) is int:
                    failed = item["failed"]
                else:
                    raise ControlProtocolError("the daemon sent a malformed write_file answer")
        except UnknownOpError:
            return None  # an older daemon
        if failed is not None:
            raise OSError(failed, os.strerror(failed))  # EPIPE makes a BrokenPipeError
        if written is None:
            raise ControlProtocolError("the daemon ended write_file without a result")
        return written

    def delete(self, cid: CID) -> bool:
        return bool(self._client.call("delete", cid=cid))

    def iterate(self) -> Iterator[CID]:
        for item in self._client.stream("iterate"):
            if not isinstance(item, CID):
                raise ControlProtocolError("the daemon sent a malformed CID")
            yield item

    def barrier(self) -> None:
        self._client.call("barrier")

    def protect(self, cid: CID) -> None:
        """Keep ``cid`` from gc while this client is connected (a block it will
        reference without putting it); what it puts is kept anyway."""
        self._client.call("protect", cid=cid)


class RemoteStore:
    """What :class:`cas.api.Repository` needs of a store, served by a daemon:
    ``path``, ``blocks``, pins, ``stat``, ``verify``, ``gc``, the namespace
    roots (``roots``, ``commit_root``, ``namespace_key``), namespace changes
    (``apply_change``: the daemon applies them) and path look-ups
    (``resolve_path``), ``close``."""

    def __init__(self, client: ControlClient, path: Path) -> None:
        self._client = client
        self.path = path
        self.blocks = RemoteBlockStore(client)

    @classmethod
    def connect(cls, repo: str | os.PathLike[str]) -> RemoteStore | None:
        client = connect(repo)
        if client is None:
            return None
        return cls(client, Path(repo).expanduser().absolute())

    @property
    def client(self) -> ControlClient:
        return self._client

    def pin(self, cid: CID) -> bool:
        return bool(self._client.call("pin", cid=cid))

    def unpin(self, cid: CID) -> bool:
        return bool(self._client.call("unpin", cid=cid))

    def pins(self) -> list[CID]:
        return list(self._client.call("pins"))

    def stat(self) -> RepoStat:
        v = self._client.call("stat")
        return RepoStat(path=v["path"], blocks=v["blocks"], bytes=v["bytes"], pinned=v["pinned"],
                        pack_bytes=v.get("pack_bytes", 0), dead_bytes=v.get("dead_bytes", 0))

    def verify(self, progress: Callable[[int], None] | None = None, *, repair: bool = False) -> VerifyReport:
        """The daemon's verify; with ``repair`` it also quarantines what is
        corrupt and fetches good copies of what is damaged or missing."""
        v = self._client.call("verify", repair=repair) if repair else self._client.call("verify")
        report = VerifyReport(blocks_checked=v["blocks_checked"], bytes_checked=v["bytes_checked"],
                              problems=[Problem(p["cid"], p["what"]) for p in v["problems"]],
                              repaired=v.get("repaired", 0))
        if progress is not None:
            progress(report.bytes_checked)
        return report

    def gc(self, *, history: int | None = None) -> GcReport:
        v = self._client.call("gc", history=history)
        return GcReport(blocks_freed=v["blocks_freed"], bytes_freed=v["bytes_freed"],
                        roots_dropped=v["roots_dropped"], expired_freed=v.get("expired_freed", 0))

    def roots(self, newest_first: bool = True, limit: int | None = None) -> list[RootRow]:
        return [RootRow(r["seq"], r["root"], r["time_ns"], r["record"])
                for r in self._client.call("roots", newest_first=newest_first, limit=limit)]

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        self._client.call("commit_root", seq=seq, root=root, time_ns=time_ns, record=record)

    def apply_change(self, change: Change) -> RootState | None:
        """Have the daemon apply a namespace change to the repository it
        owns (see :class:`cas.names.namespace.AppliesChanges`); None from a
        daemon without the op (the caller then commits it itself)."""
        from .names.changes import change_to_value
        from .names.namespace import RootState

        try:
            v = self._client.call("namespace_change", change=change_to_value(change))
        except UnknownOpError:
            return None  # an older daemon
        if not (isinstance(v, dict) and type(v.get("seq")) is int and isinstance(v.get("root"), CID)
                and type(v.get("time_ns")) is int and isinstance(v.get("public_key"), bytes)):
            raise ControlProtocolError("the daemon sent a malformed namespace_change answer")
        return RootState(v["seq"], v["root"], v["time_ns"], v["public_key"])

    def resolve_path(self, path: str, at: int | None) -> Node | None:
        """What namespace ``path`` names, resolved by the daemon in one round
        trip (see :class:`cas.names.namespace.ResolvesPaths`); None from a
        daemon without the op (the caller then walks the blocks itself)."""
        from .names.namespace import Node

        try:
            value = self._client.call("namespace_resolve", path=path, at=at)
        except UnknownOpError:
            return None  # an older daemon
        try:
            return Node.from_value(value)
        except InvalidInputError:
            raise ControlProtocolError("the daemon sent a malformed namespace_resolve answer") from None

    def namespace_key(self) -> NamespaceKey:
        """Read from the repository directly, as the daemon would: the key file
        is the same user's (mode 0600), and a secret has no business on a socket."""
        return NamespaceKey.load_or_create(self.path / "keys" / NAMESPACE_KEY_FILE)

    def close(self) -> None:
        self._client.close()


__all__ = [
    "MAX_BLOCK_SIZE", "MAX_FRAME", "SOCKET_NAME", "ControlClient", "ControlProtocolError",
    "ClientState", "DaemonNotRunningError", "NodeError", "Op", "OpTable", "RemoteBlockStore", "RemoteStore", "UnknownOpError",
    "bind_socket", "connect", "error_from_value", "error_value", "serve_control", "socket_path",
]
