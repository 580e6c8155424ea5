"""cas.fuse.session: a real FUSE session, served from a thread of this
process, on a small in-memory file system the tests drive through the
kernel as programs do."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from cas.fuse import wire
from cas.fuse.session import MAX_WORKERS, Operations, Session, unmount
from cas.fuse.wire import EntryAttributes, FileInfo, FUSEError, ReaddirToken, RequestContext

from cas.errors import MountError
from tests.fusemount import require_fuse, wait_for

pytestmark = pytest.mark.fuse

TIMEOUT = 60.0  # names and attributes are cached this long: only a notification changes them sooner


class MemFS(Operations):
    """Files in one directory; ``slow`` names files whose reads wait for
    ``release_slow``; reading ``broken`` raises a bug."""

    def __init__(self) -> None:
        self.files: dict[bytes, bytearray] = {b"hello": bytearray(b"hello world\n")}
        self.inos: dict[bytes, int] = {b"hello": 2}
        self.xattrs: dict[bytes, bytes] = {b"user.colour": b"blue"}
        self.slow: set[bytes] = set()
        self.release_slow = trio.Event()
        self.handles: dict[int, bytes] = {}
        self.forgotten: list[tuple[int, int]] = []
        self.waiting = 0  # reads waiting for release_slow

    def _attr(self, ino: int) -> EntryAttributes:
        a = EntryAttributes()
        a.st_ino = ino
        a.entry_timeout = a.attr_timeout = TIMEOUT
        if ino == wire.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
            return a
        name = self._name(ino)
        a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o644, 1, len(self.files[name])
        return a

    def _name(self, ino: int) -> bytes:
        for name, number in self.inos.items():
            if number == ino:
                return name
        raise FUSEError(errno.ENOENT)

    async def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        if name not in self.inos:
            raise FUSEError(errno.ENOENT)
        return self._attr(self.inos[name])

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:  # type: ignore[override]
        self.forgotten.extend(inode_list)

    async def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        return self._attr(inode)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: RequestContext) -> tuple[FileInfo, EntryAttributes]:
        if name == b"refused":
            raise FUSEError(errno.EACCES)
        self.files[name] = bytearray()
        self.inos[name] = max(self.inos.values()) + 1
        return FileInfo(fh=self.inos[name]), self._attr(self.inos[name])

    async def open(self, inode: int, flags: int, ctx: RequestContext, *, kill_suidgid: bool = False) -> FileInfo:
        self.handles[inode] = self._name(inode)
        return FileInfo(fh=inode, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        name = self._name(fh)
        if name == b"broken":
            raise RuntimeError("a bug in a handler")
        if name in self.slow:
            self.waiting += 1
            try:
                await self.release_slow.wait()
            finally:
                self.waiting -= 1
        return bytes(self.files[name][off:off + size])

    async def write(self, fh: int, off: int, buf: bytes | memoryview, ctx: RequestContext, *,
                    kill_suidgid: bool = False) -> int:
        data = self.files[self._name(fh)]
        data[off:off + len(buf)] = buf
        return len(buf)

    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        return 100

    async def readdir(self, fh: int, start_id: int, token: ReaddirToken) -> None:
        for index, name in enumerate(sorted(self.files)):
            if index < start_id:
                continue
            if not wire.readdir_reply(token, name, self._attr(self.inos[name]), index + 1):
                return

    async def getxattr(self, inode: int, name: bytes, ctx: RequestContext) -> bytes:
        if name not in self.xattrs:
            raise FUSEError(errno.ENODATA)
        return self.xattrs[name]

    async def listxattr(self, inode: int, ctx: RequestContext) -> list[bytes]:
        return list(self.xattrs)


@contextmanager
def served(mnt: Path, ops: MemFS) -> Iterator[tuple[Session, trio.lowlevel.TrioToken]]:
    """``ops`` mounted at ``mnt`` and served by a trio loop in a thread;
    unmounted and the thread joined whatever happens."""
    require_fuse()
    mnt.mkdir(exist_ok=True)
    session = Session(ops, mnt, {"fsname=sessiontest", "default_permissions"})
    token: list[trio.lowlevel.TrioToken] = []
    errors: list[BaseException] = []

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        await session.serve()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, name="fuse-session")
    thread.start()
    try:
        wait_for(lambda: bool(token) or not thread.is_alive(), what="the session's loop")
        yield session, token[0]
    finally:
        unmount(mnt)  # the loop reads ENODEV and ends
        thread.join(30)
        session.close(unmount_it=False)
        assert not thread.is_alive(), "the session's loop did not end at the unmount"
    assert not errors, errors


def test_requests_are_answered_through_the_kernel(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    with served(mnt, MemFS()):
        assert (mnt / "hello").read_bytes() == b"hello world\n"
        assert sorted(os.listdir(mnt)) == ["hello"]
        (mnt / "new").write_bytes(b"x" * 300_000)
        assert (mnt / "new").stat().st_size == 300_000
        assert (mnt / "new").read_bytes() == b"x" * 300_000
        assert os.getxattr(mnt / "hello", "user.colour") == b"blue"
        assert os.listxattr(mnt / "hello") == ["user.colour"]
        with pytest.raises(OSError) as missing:
            os.getxattr(mnt / "hello", "user.other")
        assert missing.value.errno == errno.ENODATA
    assert not os.path.ismount(mnt)


def test_a_handlers_errno_reaches_the_caller_and_an_unanswered_op_is_enosys(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    with served(mnt, MemFS()):
        with pytest.raises(FileNotFoundError):
            (mnt / "absent").stat()
        with pytest.raises(PermissionError):
            (mnt / "refused").write_bytes(b"")
        with pytest.raises(OSError) as unsupported:
            os.mkdir(mnt / "dir")  # MemFS has no mkdir
        assert unsupported.value.errno == errno.ENOSYS


def test_a_bug_in_a_handler_fails_its_request_not_the_mount(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ops = MemFS()
    ops.files[b"broken"], ops.inos[b"broken"] = bytearray(b"abc"), 3
    with served(mnt, ops):
        with pytest.raises(OSError) as failed:
            (mnt / "broken").read_bytes()
        assert failed.value.errno == errno.EIO
        assert (mnt / "hello").read_bytes() == b"hello world\n"


def test_a_waiting_handler_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ops = MemFS()
    ops.files[b"slow"], ops.inos[b"slow"] = bytearray(b"at last"), 3
    ops.slow.add(b"slow")
    with served(mnt, ops) as (_, token):
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append((mnt / "slow").read_bytes()))
        reader.start()
        try:
            # While that read waits, other requests are answered.
            for i in range(20):
                (mnt / f"other{i}").write_bytes(b"%d" % i)
                assert (mnt / f"other{i}").read_bytes() == b"%d" % i
            assert not result
        finally:
            trio.from_thread.run_sync(ops.release_slow.set, trio_token=token)
            reader.join(30)
        assert result == [b"at last"]


def test_more_waiting_requests_than_workers_are_all_answered(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ops = MemFS()
    readers = MAX_WORKERS + 12
    for i in range(readers):
        name = b"slow%d" % i
        ops.files[name], ops.inos[name] = bytearray(b"file %d" % i), 10 + i
        ops.slow.add(name)
    with served(mnt, ops) as (_, token):
        results: dict[int, bytes] = {}

        def read(i: int) -> None:
            results[i] = (mnt / f"slow{i}").read_bytes()

        threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
        for thread in threads:
            thread.start()
        try:
            # Every worker waits in a read (the rest queue in the kernel).
            wait_for(lambda: ops.waiting == MAX_WORKERS, timeout=30, what="every worker busy")
            assert not results
        finally:
            trio.from_thread.run_sync(ops.release_slow.set, trio_token=token)
            for thread in threads:
                thread.join(30)
        assert results == {i: b"file %d" % i for i in range(readers)}
        assert (mnt / "hello").read_bytes() == b"hello world\n"  # and the loop goes on


def test_an_invalidation_shows_a_change_the_kernel_had_cached(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ops = MemFS()
    with served(mnt, ops) as (session, token):
        assert (mnt / "hello").stat().st_size == 12
        with pytest.raises(FileNotFoundError):
            (mnt / "later").stat()  # not there: the kernel remembers that it is not (TIMEOUT)
        # The file system changes behind the kernel's back.
        trio.from_thread.run_sync(lambda: ops.files.__setitem__(b"hello", bytearray(b"hi\n")), trio_token=token)
        ops.files[b"later"], ops.inos[b"later"] = bytearray(b"now\n"), 3
        assert (mnt / "hello").stat().st_size == 12  # cached
        session.invalidate_inode(2)
        session.invalidate_entry(wire.ROOT_INODE, b"later")
        assert (mnt / "hello").stat().st_size == 3
        assert (mnt / "later").read_bytes() == b"now\n"


def test_an_unmount_from_outside_ends_the_loop(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    with served(mnt, MemFS()) as (session, _):
        assert os.path.ismount(mnt)
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)  # as a user would
        wait_for(lambda: not os.path.ismount(mnt), what="the unmount")
    assert not os.path.ismount(mnt)


def test_a_mount_the_kernel_refuses_says_why(tmp_path: Path) -> None:
    require_fuse()
    with pytest.raises(MountError) as refused:
        Session(MemFS(), tmp_path / "no-such-dir", {"fsname=sessiontest"})
    assert "no-such-dir" in str(refused.value) or "No such file" in str(refused.value)


def test_forgotten_inodes_reach_the_handler(tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    ops = MemFS()
    with served(mnt, ops) as (session, _):
        (mnt / "hello").stat()
        session.invalidate_entry(wire.ROOT_INODE, b"hello")  # the kernel drops the name, then the inode
        wait_for(lambda: any(ino == 2 for ino, _ in ops.forgotten), what="a FORGET of inode 2")
