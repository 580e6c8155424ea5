"""The control client: how the CLI, the library and the mount reach a node.

Owns: :class:`ControlClient`, the synchronous connection to a daemon's
control socket (one request at a time, requests sent ahead, streams,
descriptors passed with a request); :func:`connect`; and the client-side
stand-ins for a local repository, :class:`RemoteBlockStore` and
:class:`RemoteStore`, which let ``cas.api.Repository`` run unchanged
against a running daemon. Every request is built from the op's schema
(:mod:`cas.control.schema`), and every answer read back through it.

Must never: load trio (a command that only talks to the daemon stays
light), or decide what an op means (the daemon does).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..blocks import Block
from ..cid import CID
from ..errors import (
    ControlArgumentError,
    ControlProtocolError,
    DaemonNotRunningError,
    NodeError,
    UnknownOpError,
)
from ..store import RepoStat, RootRow
from ..store._local import NAMESPACE_KEY_FILE
from . import schema as ops
from ._framing import (
    CONNECT_TIMEOUT,
    MAX_FRAME,
    SOCKET_NAME,
    _short_path,
    check_length,
    decode_body,
    encode_frame,
    error_from_value,
)
from .schema import Request

if TYPE_CHECKING:
    from ..files import AddResult
    from ..names.changes import Change
    from ..names.history import ThinReport
    from ..names.namespace import Node, RootState
    from ..store import GcReport, NamespaceKey, VerifyReport  # loaded when used (they bring dataclasses)

R = TypeVar("R")

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
        """Close the connection; a call blocked on it in another thread
        wakes (shut down first: closing alone does not wake it) and fails."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected, or closed already
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def call(self, op: Request[R]) -> R: ...
    @overload
    def call(self, op: str, **args: Any) -> Any: ...

    def call(self, op: Request[R] | str, **args: Any) -> R | Any:
        """Send one request and return its result, or raise its error (or
        the error of an earlier :meth:`send_ahead` request). ``op`` is a
        request of :mod:`cas.control.schema`, whose declared result this
        returns; a bare op name with ``args`` sends them as they are and
        returns the raw ``ok`` value (tests send malformed requests so)."""
        name, args = _name_and_args(op, args)
        self._before_request()
        with self._lock:
            self._drain(0)
            self._send(name, args)
            answer = self._receive()
        value = self._result(answer)
        return op.result_from_value(value) if isinstance(op, Request) else value

    def _before_request(self) -> None:
        for hook in self.before_request:
            hook()

    def send_ahead(self, op: Request[Any] | str, window: int, **args: Any) -> None:
        """Send a request without waiting for its answer, keeping at most
        ``window`` unanswered: a writer's puts then overlap the daemon's
        work instead of paying a round trip each. The daemon answers in
        order; an error among the answers is raised by the call that reads
        it (this one, once the window is full, or the next :meth:`call`)."""
        name, args = _name_and_args(op, args)
        with self._lock:
            self._send(name, args)
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

    @overload
    def stream(self, op: Request[R]) -> Iterator[R]: ...
    @overload
    def stream(self, op: str, **args: Any) -> Iterator[Any]: ...

    def stream(self, op: Request[R] | str, **args: Any) -> Iterator[R] | Iterator[Any]:
        """Items of a streaming op. Holds the connection until exhausted; a
        generator dropped early closes the connection (the daemon notices)."""
        return self._stream(op, args, None)

    @overload
    def stream_with_fd(self, op: Request[R], fd: int) -> Iterator[R]: ...
    @overload
    def stream_with_fd(self, op: str, fd: int, **args: Any) -> Iterator[Any]: ...

    def stream_with_fd(self, op: Request[R] | str, fd: int, **args: Any) -> Iterator[R] | Iterator[Any]:
        """As :meth:`stream`, passing the open descriptor ``fd`` with the
        request (SCM_RIGHTS): the daemon gets its own copy of it."""
        return self._stream(op, args, fd)

    def _stream(self, op: Request[Any] | str, args: dict[str, Any], fd: int | None) -> Iterator[Any]:
        name, args = _name_and_args(op, args)
        if isinstance(op, Request) and not op.STREAMING:
            raise ControlArgumentError(f"{op.OP}: not a streaming op; use call()")
        if isinstance(op, Request) and op.TAKES_FD and fd is None:
            raise ControlArgumentError(f"{op.OP}: needs a file descriptor passed with it")
        item = op.result_from_value if isinstance(op, Request) else None
        self._before_request()
        with self._lock:
            self._drain(0)
            self._send(name, args, fd)
            finished = False
            try:
                while True:
                    answer = self._receive()
                    if isinstance(answer, dict) and set(answer) == {"more"} and isinstance(answer["more"], list):
                        if item is None:
                            yield from answer["more"]
                        else:
                            yield from map(item, answer["more"])
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


def _name_and_args(op: Request[Any] | str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The op's name and ``args`` map: a request's own, or as given."""
    if isinstance(op, Request):
        if args:
            raise TypeError("a request object carries its own arguments")
        return op.OP, op.to_args()
    return op, args


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
        client.call(ops.Ping())
    except (ControlProtocolError, NodeError):
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
        self._prefetches = True  # until a daemon from before the op says otherwise
        self._batch: list[tuple[CID, bytes]] = []  # (cid, data) pairs not sent yet
        self._batch_bytes = 0
        # Guards the batch: a reader in another thread (AsyncRepository reads
        # on the trio thread while an add runs in a worker) may send it.
        self._batch_lock = threading.Lock()
        self._hooked = False  # _flush registered with the client (on the first put only:
        # readers make a store per call, and each would add a hook)

    def has(self, cid: CID) -> bool:
        return self._client.call(ops.Has(cid))

    def get(self, cid: CID) -> bytes:
        return Block(cid, self._client.call(ops.Get(cid))).data  # verifies

    def prefetch(self, cids: Iterable[CID]) -> None:
        """A reader's next blocks (:class:`cas.blocks.Prefetches`): the daemon
        reads them ahead from its disk or the network. A daemon from before
        the op is asked nothing more."""
        if self._prefetches:
            wanted = list(cids)
            for start in range(0, len(wanted), ops.MAX_PREFETCH):
                try:
                    self._client.call(ops.Prefetch(wanted[start:start + ops.MAX_PREFETCH]))
                except UnknownOpError:
                    self._prefetches = False
                    return

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
            self._batch.append((block.cid, block.data))
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
            self._client.send_ahead(ops.PutMany(batch), BATCHES_AHEAD)

    def add_file(self, fd: int, offset: int, progress: Callable[[int], object] | None) -> AddResult | None:
        """Have the daemon add the regular file open at ``fd``, from
        ``offset`` to its end (see :class:`cas.files.AddsFiles`): it reads
        the file itself, so the bytes never cross the socket. None from a
        daemon without the op (the caller then streams the blocks)."""
        from ..files import AddResult

        result = None
        try:
            for item in self._client.stream_with_fd(ops.AddFile(offset), fd):
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
            for item in self._client.stream_with_fd(ops.WriteFile(cid, offset, length), fd):
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
        return self._client.call(ops.Delete(cid))

    def iterate(self) -> Iterator[CID]:
        yield from self._client.stream(ops.Iterate())

    def barrier(self) -> None:
        self._client.call(ops.Barrier())

    def protect(self, cid: CID) -> None:
        """Keep ``cid`` from gc while this client is connected (a block it will
        reference without putting it); what it puts is kept anyway."""
        self._client.call(ops.Protect(cid))


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
        return self._client.call(ops.Pin(cid))

    def unpin(self, cid: CID) -> bool:
        return self._client.call(ops.Unpin(cid))

    def pins(self, limit: int | None = None, after: CID | None = None) -> list[CID]:
        """As :meth:`cas.store.LocalStore.pins`: every pinned CID, sorted,
        asked a page (MAX_PINS_PAGE) at a time; or, with ``limit`` or
        ``after``, the one page the daemon answers."""
        if limit is not None or after is not None:
            return self._client.call(ops.Pins(None if limit is None else min(limit, ops.MAX_PINS_PAGE), after))
        found: list[CID] = []
        while True:
            page = self._client.call(ops.Pins(ops.MAX_PINS_PAGE, after))
            if len(page) > ops.MAX_PINS_PAGE or (after is not None and page and bytes(page[0]) <= bytes(after)):
                # A daemon from before paging ignores the arguments: its answer is all of them.
                return sorted(page)
            found += page
            if len(page) < ops.MAX_PINS_PAGE:
                return sorted(found)
            after = page[-1]

    def stat(self) -> RepoStat:
        return self._client.call(ops.Stat())

    def verify(self, progress: Callable[[int], None] | None = None, *, repair: bool = False) -> VerifyReport:
        """The daemon's verify; with ``repair`` it also quarantines what is
        corrupt and fetches good copies of what is damaged or missing."""
        report = self._client.call(ops.Verify(repair))  # sent without 'repair' when false, as ever
        if progress is not None:
            progress(report.bytes_checked)
        return report

    def gc(self, *, history: int | None = None, on_wait: Callable[[str], None] | None = None) -> GcReport:
        """The daemon's gc (it keeps readers out for its whole life, so
        there is nobody to wait for: ``on_wait`` is never called)."""
        return self._client.call(ops.Gc(history))

    def prune(self, *, dry_run: bool = False) -> ThinReport:
        """The daemon's thinning of the history (it owns the repository)."""
        from ..names.history import ThinReport

        value = self._client.call(ops.Prune(dry_run))
        try:
            return ThinReport(**{key: value[key] for key in ThinReport._fields})
        except KeyError:
            raise ControlProtocolError("the daemon sent a malformed prune answer") from None

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[RootRow]:
        """Root rows as :meth:`cas.store.LocalStore.roots` gives them, asked a
        page (``MAX_ROOTS_PAGE`` rows) at a time: a long history is read in
        as many requests, never one message. Callers that read a long
        history read it in pages themselves (:func:`cas.names.namespace.root_rows`)."""
        rows: list[RootRow] = []
        while limit is None or len(rows) < limit:
            want = ops.MAX_ROOTS_PAGE if limit is None else min(limit - len(rows), ops.MAX_ROOTS_PAGE)
            page = self._client.call(ops.Roots(newest_first, want, after))
            if after is not None and any((row.seq >= after) if newest_first else (row.seq <= after) for row in page):
                # A daemon from before paging ignores ``after`` and sends the first page again.
                raise ControlProtocolError("the daemon does not page its namespace roots; "
                                           "restart it with this version of cas")
            rows += page
            if len(page) < want:
                break
            after = page[-1].seq
        return rows

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        self._client.call(ops.CommitRoot(seq, root, time_ns, record))

    def apply_change(self, change: Change) -> RootState | None:
        """Have the daemon apply a namespace change to the repository it
        owns (see :class:`cas.names.namespace.AppliesChanges`); None from a
        daemon without the op (the caller then commits it itself)."""
        try:
            return self._client.call(ops.NamespaceChange(change))
        except UnknownOpError:
            return None  # an older daemon

    def resolve_path(self, path: str, at: int | None) -> Node | None:
        """What namespace ``path`` names, resolved by the daemon in one round
        trip (see :class:`cas.names.namespace.ResolvesPaths`); None from a
        daemon without the op (the caller then walks the blocks itself)."""
        try:
            return self._client.call(ops.NamespaceResolve(path, at))
        except UnknownOpError:
            return None  # an older daemon

    def namespace_key(self) -> NamespaceKey:
        """Read from the repository directly, as the daemon would: the key file
        is the same user's (mode 0600), and a secret has no business on a socket."""
        from ..store import NamespaceKey

        return NamespaceKey.load_or_create(self.path / "keys" / NAMESPACE_KEY_FILE)

    def close(self) -> None:
        self._client.close()
