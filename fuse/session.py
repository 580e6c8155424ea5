"""The mount's FUSE session: ``/dev/fuse`` read and answered on trio.

Owns the kernel connection of one mount: making it (``fusermount3``, which
hands back the ``/dev/fuse`` descriptor, for root and other users alike),
the request loop, the call of each request's handler on the
:class:`Operations` given, the reply, the notifications that make the
kernel drop what it cached, and the unmount. The bytes are :mod:`.wire`'s.

The loop is a pool of worker tasks of which one at a time reads the next
request. A worker runs the handler of what it read at once, inside its own
task: a handler that answers without waiting (most do: names, attributes
and data already in memory) costs no task switch at all; one that must wait
(the store thread, a block from the network, a lock) first hands the
reading to an idle worker, or starts one, so requests are answered in
parallel while it waits. A worker that finds no request keeps reading
for a moment (:data:`SPIN`) before it sleeps. (pyfuse3, which this
replaced, switched tasks for every request and copied every read and
write once more.)

Must never: let a handler's exception end the loop (it is the request's
EIO, and logged), answer a request twice or, while it serves, not at all
(FORGET and INTERRUPT are never answered), or leave the mount behind once
its owner closes it.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import socket
import struct
import subprocess
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from pathlib import Path
from typing import Any

import trio

from ..errors import MountError
from . import wire
from .wire import EntryAttributes, FileInfo, FUSEError, ReaddirToken, RequestContext, SetattrFields, StatvfsData

log = logging.getLogger("cas.fuse")

MAX_WORKERS = 48
"""Requests handled at once (the kernel queues the rest)."""

SPIN = 100e-6
"""Seconds a worker that finds no request keeps reading for the next one
before it sleeps in trio's epoll. A program working through files sends
its next request within tens of microseconds of the last reply; caught
awake, the round trip takes a third of the time it does when the kernel
must wake the server (a stat: 67 against 184 us on this project's 2-core
VMs), and the epoll and the wake-up cost more CPU than the spin."""

FUSERMOUNT = "fusermount3"


class Operations:
    """The handlers a session calls: one method a request, each raising
    :class:`FUSEError` for an errno; the default answers ENOSYS."""

    enable_writeback_cache = False
    enable_acl = False
    supports_dot_lookup = False
    handles_killpriv = False
    """True if :meth:`write`, :meth:`open` and :meth:`setattr` clear setuid
    and setgid when the request says so (``kill_suidgid``): the session
    then asks the kernel for HANDLE_KILLPRIV_V2 (:data:`.wire.WANTED`)."""

    async def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        pass

    async def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def setattr(self, inode: int, attr: EntryAttributes, fields: SetattrFields, fh: int | None,
                      ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def readlink(self, inode: int, ctx: RequestContext) -> bytes:
        raise FUSEError(errno.ENOSYS)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: RequestContext) -> EntryAttributes:
        raise FUSEError(errno.ENOSYS)

    async def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def open(self, inode: int, flags: int, ctx: RequestContext, *, kill_suidgid: bool = False) -> FileInfo:
        """``kill_suidgid``: an O_TRUNC open that clears setuid and setgid
        (see :data:`.wire.WANTED`)."""
        raise FUSEError(errno.ENOSYS)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        raise FUSEError(errno.ENOSYS)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview | list[memoryview]:
        """The bytes at ``off`` (fewer than ``size`` only at the end), or
        views of them in order, which the reply gathers without a copy."""
        raise FUSEError(errno.ENOSYS)

    async def write(self, fh: int, off: int, buf: bytes | memoryview, ctx: RequestContext, *,
                    kill_suidgid: bool = False) -> int:
        """``kill_suidgid``: the write, by ``ctx``, clears setuid and setgid
        (see :data:`.wire.WANTED`). With the write-back cache, ``ctx`` of a
        write without it may be the kernel's flusher, not the writer."""
        raise FUSEError(errno.ENOSYS)

    async def fallocate(self, fh: int, offset: int, length: int, mode: int) -> None:
        """fallocate(2) of an open file (``mode``: FALLOC_FL_* bits)."""
        raise FUSEError(errno.EOPNOTSUPP)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        return 0

    async def readdir(self, fh: int, start_id: int, token: ReaddirToken) -> None:
        raise FUSEError(errno.ENOSYS)

    async def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        pass

    async def statfs(self, ctx: RequestContext) -> StatvfsData:
        return StatvfsData()

    async def getxattr(self, inode: int, name: bytes, ctx: RequestContext) -> bytes:
        raise FUSEError(errno.ENOSYS)

    async def listxattr(self, inode: int, ctx: RequestContext) -> list[bytes]:
        raise FUSEError(errno.ENOSYS)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)

    async def removexattr(self, inode: int, name: bytes, ctx: RequestContext) -> None:
        raise FUSEError(errno.ENOSYS)


class HandlerLock:
    """A trio lock for handlers (``async with``): taken without a
    checkpoint when it is free, so that a handler finding it free still
    answers without a task switch (trio's own lock always yields once);
    when it is held, the handler waits its turn as with trio's."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


# -- making and removing the mount ---------------------------------------------------------

def mount(mountpoint: Path | str, options: set[str] | frozenset[str]) -> int:
    """Mount a FUSE file system at ``mountpoint`` with ``options`` (as
    ``-o`` takes them); returns the ``/dev/fuse`` descriptor it is served
    on. fusermount3 does the mount and passes the descriptor back over a
    socket (``_FUSE_COMMFD``): it checks what a user other than root may
    do, and as root it is a plain mount(2). Raises :class:`MountError`."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        command = [FUSERMOUNT, "-o", ",".join(sorted(options)), "--", str(mountpoint)]
        try:
            proc = subprocess.Popen(command, env=env, pass_fds=(theirs.fileno(),),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise MountError(f"{FUSERMOUNT} is not installed (Debian: apt install fuse3)") from None
        theirs.close()
        fds: list[int] = []
        try:
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except OSError:
            pass
        _, err = proc.communicate()
        if proc.returncode != 0 or not fds:
            for fd in fds:
                os.close(fd)
            message = err.decode(errors="replace").strip() or f"{FUSERMOUNT} exited with {proc.returncode}"
            raise MountError(message)
        return fds[0]
    finally:
        ours.close()
        theirs.close()


def unmount(mountpoint: Path | str) -> None:
    """Unmount lazily (as ``umount -l``: what is still open stays usable
    until closed); nothing to do if it is not mounted any more."""
    subprocess.run([FUSERMOUNT, "-u", "-z", "-q", "--", str(mountpoint)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


# -- running a handler in the reading task until it waits ----------------------------------

@types.coroutine
def _resume(coro: Coroutine[Any, Any, None], trap: Any) -> Generator[Any, Any, None]:
    """Go on running ``coro`` in this task, which has just run it up to its
    first wait (``trap``, not yet given to trio): what trio sends back goes
    to ``coro``, what ``coro`` yields goes to trio."""
    while True:
        try:
            sent = yield trap
        except BaseException as exc:  # trio's (a Cancelled too), passed on to the coroutine
            try:
                trap = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                trap = coro.send(sent)
            except StopIteration:
                return


# -- the session -----------------------------------------------------------------------------

class Session:
    """One mounted FUSE file system, served by :meth:`serve`."""

    def __init__(self, ops: Operations, mountpoint: Path | str, options: set[str] | frozenset[str]) -> None:
        self.ops = ops
        self.mountpoint = Path(mountpoint)
        self.fd = mount(self.mountpoint, options)
        os.set_blocking(self.fd, False)
        self._closed = False
        self._reading = False  # a worker reads the next request
        self._idle = trio.lowlevel.ParkingLot()
        self._workers = 0
        self._nursery: trio.Nursery | None = None
        self._handlers: dict[int, Callable[[wire.Header, memoryview], Awaitable[list[Any] | None]]] = {
            wire.LOOKUP: self._lookup, wire.GETATTR: self._getattr, wire.SETATTR: self._setattr,
            wire.READLINK: self._readlink, wire.SYMLINK: self._symlink, wire.MKNOD: self._mknod,
            wire.MKDIR: self._mkdir, wire.UNLINK: self._unlink, wire.RMDIR: self._rmdir,
            wire.RENAME: self._rename, wire.RENAME2: self._rename, wire.LINK: self._link, wire.OPEN: self._open,
            wire.READ: self._read, wire.WRITE: self._write, wire.STATFS: self._statfs,
            wire.RELEASE: self._release, wire.FSYNC: self._fsync, wire.SETXATTR: self._setxattr,
            wire.GETXATTR: self._getxattr, wire.LISTXATTR: self._listxattr, wire.REMOVEXATTR: self._removexattr,
            wire.FLUSH: self._flush, wire.OPENDIR: self._opendir, wire.READDIR: self._readdir,
            wire.READDIRPLUS: self._readdir, wire.RELEASEDIR: self._releasedir, wire.FSYNCDIR: self._fsyncdir,
            wire.CREATE: self._create, wire.ACCESS: self._access, wire.FALLOCATE: self._fallocate,
            wire.FORGET: self._forget,
            wire.BATCH_FORGET: self._forget,
        }

    # -- life ------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer requests until the file system is unmounted (from here or
        outside) or :meth:`terminate` is called."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start_worker()
        self._nursery = None

    def terminate(self) -> None:
        """Make :meth:`serve` return (the mount stays until :meth:`close`)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def close(self, unmount_it: bool = True) -> None:
        """Unmount (lazily) and close the kernel connection, once
        :meth:`serve` has returned; synchronous."""
        if self._closed:
            return
        self._closed = True
        if unmount_it:
            unmount(self.mountpoint)
        os.close(self.fd)

    # -- notifications (from any thread) ----------------------------------------------------

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """The kernel forgets ``name`` in ``parent`` (waits for its requests
        about them in flight: never call it from the loop's thread).
        Raises OSError (ENOENT) if it had not cached it."""
        os.writev(self.fd, wire.inval_entry(parent, name))

    def invalidate_inode(self, inode: int) -> None:
        """The kernel forgets ``inode``'s attributes and pages (as above)."""
        os.writev(self.fd, wire.inval_inode(inode))

    # -- the loop ------------------------------------------------------------------------------

    def _start_worker(self) -> None:
        assert self._nursery is not None
        self._workers += 1
        self._nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        # Its pages are taken only as requests fill them; freed with the
        # worker (not closed: a cancelled handler may still hold a view).
        buf = mmap.mmap(-1, wire.BUFFER_SIZE)
        view = memoryview(buf)
        try:
            while True:
                if self._reading:
                    await self._idle.park()
                    continue
                self._reading = True
                try:
                    size = await self._receive(buf)
                finally:
                    self._reading = False
                if size is None:  # unmounted
                    self.terminate()
                    return
                try:
                    header = wire.parse_header(view, size)
                except FUSEError:
                    log.error("FUSE: a request of %d bytes with a bad header, dropped", size)
                    continue
                handler = self._handlers.get(header.opcode)
                body = view[wire.IN_HEADER.size:size]
                if header.opcode == wire.INIT:
                    self._init(header, body)
                    continue
                if handler is None:
                    if header.opcode not in wire.NO_REPLY:
                        self._send(wire.error_reply(header.unique, errno.ENOSYS))
                    if header.opcode == wire.DESTROY:
                        self.terminate()
                        return
                    continue
                coro = self._answer(handler, header, body)
                try:
                    trap = coro.send(None)
                except StopIteration:
                    continue  # answered without waiting
                # It waits: another worker reads meanwhile.
                if len(self._idle):
                    self._idle.unpark()
                elif self._workers < MAX_WORKERS:
                    self._start_worker()
                await _resume(coro, trap)
        finally:
            self._workers -= 1

    async def _receive(self, buf: mmap.mmap) -> int | None:
        """The size of the next request, read into ``buf``; None once the
        file system is unmounted."""
        spun = False
        while True:
            try:
                return os.readv(self.fd, [buf])
            except BlockingIOError:
                if not spun:
                    spun = True
                    size = self._spin(buf)
                    if size is not None:
                        return size
                await trio.lowlevel.wait_readable(self.fd)
            except InterruptedError:
                pass
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # the request was interrupted before it was read
                    continue
                if exc.errno == errno.ENODEV:
                    return None
                raise

    def _spin(self, buf: mmap.mmap) -> int | None:
        """Keep reading for up to :data:`SPIN` seconds, when trio has
        nothing else to run: the size of the request that came, or None."""
        stats = trio.lowlevel.current_statistics()
        if stats.tasks_runnable or stats.run_sync_soon_queue_size:
            return None
        deadline = time.perf_counter() + SPIN
        while time.perf_counter() < deadline:
            try:
                return os.readv(self.fd, [buf])
            except BlockingIOError:
                continue
            except OSError:
                return None  # the loop's own read says what it is
        return None

    def _send(self, parts: list[Any]) -> None:
        try:
            os.writev(self.fd, parts)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):  # interrupted or aborted: nobody waits for it
                log.error("FUSE: the kernel refused a reply: %s", exc)

    async def _answer(self, handler: Callable[[wire.Header, memoryview], Awaitable[list[Any] | None]],
                      header: wire.Header, body: memoryview) -> None:
        try:
            parts = await handler(header, body)
        except FUSEError as exc:
            parts = wire.error_reply(header.unique, exc.errno)
        except (struct.error, ValueError, IndexError):
            log.error("FUSE: a malformed request (opcode %d), answered EIO", header.opcode)
            parts = wire.error_reply(header.unique, errno.EIO)
        except Exception:  # a bug in a handler fails its request, never the mount
            log.exception("FUSE: request %d failed", header.opcode)
            parts = wire.error_reply(header.unique, errno.EIO)
        if parts is not None and header.opcode not in wire.NO_REPLY:  # a FORGET is never answered, failed or not
            self._send(parts)

    def _init(self, header: wire.Header, body: memoryview) -> None:
        try:
            agreed, out = wire.negotiate(body, writeback_cache=self.ops.enable_writeback_cache,
                                         posix_acl=self.ops.enable_acl,
                                         export_support=self.ops.supports_dot_lookup,
                                         killpriv=self.ops.handles_killpriv)
        except FUSEError as exc:
            log.error("FUSE: this kernel speaks a protocol the mount does not (%s)", exc)
            self._send(wire.error_reply(header.unique, exc.errno))
            return
        self._send(wire.reply(header.unique, out))
        log.debug("FUSE: protocol 7.%d, flags %#x", agreed.minor, agreed.flags)

    # -- one handler a request -----------------------------------------------------------------

    @staticmethod
    def _ctx(h: wire.Header, umask: int = 0) -> RequestContext:
        return RequestContext(h.uid, h.gid, h.pid, umask)

    async def _lookup(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique, wire.entry_bytes(await self.ops.lookup(h.nodeid, wire.name(body), self._ctx(h))))

    async def _forget(self, h: wire.Header, body: memoryview) -> None:
        await self.ops.forget(wire.forgets(h.opcode, h.nodeid, body))

    async def _getattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique, wire.attr_out_bytes(await self.ops.getattr(h.nodeid, self._ctx(h))))

    async def _setattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        attr, fields, fh = wire.setattr_request(body, time.time_ns())
        return wire.reply(h.unique, wire.attr_out_bytes(await self.ops.setattr(h.nodeid, attr, fields, fh,
                                                                               self._ctx(h))))

    async def _readlink(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique, await self.ops.readlink(h.nodeid, self._ctx(h)))

    async def _symlink(self, h: wire.Header, body: memoryview) -> list[Any]:
        name, target = wire.two_names(body)
        return wire.reply(h.unique, wire.entry_bytes(await self.ops.symlink(h.nodeid, name, target, self._ctx(h))))

    async def _mknod(self, h: wire.Header, body: memoryview) -> list[Any]:
        mode, rdev, umask = wire.mknod_request(body)
        name = wire.name(body[wire.MKNOD_SIZE:])
        return wire.reply(h.unique, wire.entry_bytes(await self.ops.mknod(h.nodeid, name, mode, rdev,
                                                                          self._ctx(h, umask))))

    async def _mkdir(self, h: wire.Header, body: memoryview) -> list[Any]:
        mode, umask = wire.mkdir_request(body)
        name = wire.name(body[wire.MKDIR_SIZE:])
        mode = (mode & ~0o170000) | 0o040000
        return wire.reply(h.unique, wire.entry_bytes(await self.ops.mkdir(h.nodeid, name, mode, self._ctx(h, umask))))

    async def _unlink(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.unlink(h.nodeid, wire.name(body), self._ctx(h))
        return wire.reply(h.unique)

    async def _rmdir(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.rmdir(h.nodeid, wire.name(body), self._ctx(h))
        return wire.reply(h.unique)

    async def _rename(self, h: wire.Header, body: memoryview) -> list[Any]:
        new_parent, flags, at = wire.rename_request(h.opcode, body)
        old, new = wire.two_names(body[at:])
        await self.ops.rename(h.nodeid, old, new_parent, new, flags, self._ctx(h))
        return wire.reply(h.unique)

    async def _link(self, h: wire.Header, body: memoryview) -> list[Any]:
        inode = wire.link_request(body)
        attr = await self.ops.link(inode, h.nodeid, wire.name(body[8:]), self._ctx(h))
        return wire.reply(h.unique, wire.entry_bytes(attr))

    async def _open(self, h: wire.Header, body: memoryview) -> list[Any]:
        flags, kill_suidgid = wire.open_request(body)
        info = await self.ops.open(h.nodeid, flags, self._ctx(h), kill_suidgid=kill_suidgid)
        return wire.reply(h.unique, wire.open_bytes(info))

    async def _create(self, h: wire.Header, body: memoryview) -> list[Any]:
        flags, mode, umask = wire.create_request(body)
        name = wire.name(body[wire.CREATE_SIZE:])
        info, attr = await self.ops.create(h.nodeid, name, mode, flags, self._ctx(h, umask))
        return wire.reply(h.unique, wire.entry_bytes(attr), wire.open_bytes(info))

    async def _read(self, h: wire.Header, body: memoryview) -> list[Any]:
        fh, offset, size = wire.rw_request(body)
        data = await self.ops.read(fh, offset, size)
        return wire.reply(h.unique, *data) if isinstance(data, list) else wire.reply(h.unique, data)

    async def _write(self, h: wire.Header, body: memoryview) -> list[Any]:
        fh, offset, size, kill_suidgid = wire.write_request(body)
        data = body[wire.WRITE_DATA:wire.WRITE_DATA + size]
        if len(data) != size:
            raise FUSEError(errno.EIO)
        return wire.reply(h.unique, wire.write_bytes(await self.ops.write(fh, offset, data, self._ctx(h),
                                                                          kill_suidgid=kill_suidgid)))

    async def _fallocate(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.fallocate(*wire.fallocate_request(body))
        return wire.reply(h.unique)

    async def _statfs(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique, wire.statfs_bytes(await self.ops.statfs(self._ctx(h))))

    async def _release(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.release(wire.fh_of(body))
        return wire.reply(h.unique)

    async def _flush(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.flush(wire.fh_of(body))
        return wire.reply(h.unique)

    async def _fsync(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.fsync(*wire.fsync_request(body))
        return wire.reply(h.unique)

    async def _opendir(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique, wire.dir_open_bytes(await self.ops.opendir(h.nodeid, self._ctx(h))))

    async def _readdir(self, h: wire.Header, body: memoryview) -> list[Any]:
        fh, offset, size = wire.rw_request(body)
        token = ReaddirToken(size, plus=h.opcode == wire.READDIRPLUS)
        await self.ops.readdir(fh, offset, token)
        if token.unlooked:  # a plain listing does not count as a lookup of its entries
            await self.ops.forget([(ino, 1) for ino in token.unlooked])
        return wire.reply(h.unique, *token.parts)

    async def _releasedir(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.releasedir(wire.fh_of(body))
        return wire.reply(h.unique)

    async def _fsyncdir(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.fsyncdir(*wire.fsync_request(body))
        return wire.reply(h.unique)

    async def _setxattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        name, value = wire.setxattr_request(body)
        await self.ops.setxattr(h.nodeid, name, value, self._ctx(h))
        return wire.reply(h.unique)

    async def _getxattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        asked = wire.getxattr_size(body)
        value = await self.ops.getxattr(h.nodeid, wire.name(body[wire.GETXATTR_SIZE:]), self._ctx(h))
        return wire.xattr_reply(h.unique, value, asked)

    async def _listxattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        asked = wire.getxattr_size(body)
        names = await self.ops.listxattr(h.nodeid, self._ctx(h))
        return wire.xattr_reply(h.unique, b"".join(name + b"\0" for name in names), asked)

    async def _removexattr(self, h: wire.Header, body: memoryview) -> list[Any]:
        await self.ops.removexattr(h.nodeid, wire.name(body), self._ctx(h))
        return wire.reply(h.unique)

    async def _access(self, h: wire.Header, body: memoryview) -> list[Any]:
        return wire.reply(h.unique)  # the kernel checks permissions (default_permissions)


