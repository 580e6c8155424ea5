"""The mount as a POSIX file system: the project's own conformance suite.

One test per rule of docs/mount.md, "POSIX", each run on a real mount made
with ``--allow-other`` and checked the way a program would check it, every
errno included. What another user may and may not do is checked as a second
user: a uid and gid no account on the machine has (nothing to create or
remove in /etc), taken by a forked child with ``setgroups``/``setgid``/
``setuid`` before it makes the call. CI runs as root; elsewhere, a test
that needs root is skipped.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cas, skip_unless_ci
from tests.fusemount import errno_of, mounted
from tests.trees_compare import compare_trees

OTHER = 54_321  # the second user's uid and gid: no account has them
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def as_other(fn: Callable[[], object]) -> int:
    """Run ``fn`` in a child process as the second user: 0 if it returned,
    else the errno it failed with (-1: another exception)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.setgroups([])
            os.setgid(OTHER)
            os.setuid(OTHER)
            fn()
        except OSError as exc:
            code = exc.errno or 255
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return -1 if code == 255 else code


@pytest.fixture
def mnt(repo: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root (CI does), with a second user")
    # Under a directory any user may enter: pytest's own is 0700.
    with tempfile.TemporaryDirectory(prefix="cas-posix-") as top:
        os.chmod(top, 0o755)
        with mounted(repo, Path(top) / "mnt", "--allow-other") as path:
            os.chmod(path, 0o755)
            yield path


def ns(path: Path) -> os.stat_result:
    return os.lstat(path)


def later(before: int) -> None:
    """Wait until the kernel's clock has moved past ``before`` (ns), so a
    time it sets after this differs from it (it stamps changes from its
    coarse clock, as for a local disk)."""
    coarse = getattr(time, "CLOCK_REALTIME_COARSE", 5)
    while time.clock_gettime_ns(coarse) <= before or time.time_ns() <= before:
        time.sleep(0.001)


# -- owners and permissions ------------------------------------------------------------


def test_chown_by_root_is_kept_and_read_back(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"x")
    os.chown(f, 1234, 5678)
    os.lchown(mnt, 0, 0)
    (mnt / "l").symlink_to("f")
    os.lchown(mnt / "l", 42, 43)
    assert (ns(f).st_uid, ns(f).st_gid) == (1234, 5678)
    assert (ns(mnt / "l").st_uid, ns(mnt / "l").st_gid) == (42, 43)
    assert (ns(mnt).st_uid, ns(mnt).st_gid) == (0, 0)


def test_files_made_by_a_user_are_theirs(mnt: Path) -> None:
    open_dir = mnt / "open"
    open_dir.mkdir(mode=0o777)
    os.chmod(open_dir, 0o777)
    assert as_other(lambda: (open_dir / "mine").write_bytes(b"x")) == 0
    assert as_other(lambda: os.mkdir(open_dir / "sub")) == 0
    assert as_other(lambda: os.symlink("mine", open_dir / "link")) == 0
    for name in ("mine", "sub", "link"):
        st = ns(open_dir / name)
        assert (st.st_uid, st.st_gid) == (OTHER, OTHER), name


def test_a_user_cannot_write_where_the_mode_forbids(mnt: Path) -> None:
    closed = mnt / "closed"
    closed.mkdir(mode=0o755)
    (closed / "f").write_bytes(b"root's")
    os.chmod(closed / "f", 0o644)
    assert as_other(lambda: (closed / "new").write_bytes(b"x")) == errno.EACCES
    assert as_other(lambda: os.open(closed / "f", os.O_WRONLY)) == errno.EACCES
    assert as_other(lambda: os.unlink(closed / "f")) == errno.EACCES
    assert as_other(lambda: (closed / "f").read_bytes()) == 0
    os.chmod(closed / "f", 0o600)
    assert as_other(lambda: (closed / "f").read_bytes()) == errno.EACCES
    assert (closed / "f").read_bytes() == b"root's"


def test_only_root_gives_a_file_away(mnt: Path) -> None:
    os.chmod(mnt, 0o777)
    assert as_other(lambda: (mnt / "theirs").write_bytes(b"x")) == 0
    theirs = mnt / "theirs"
    assert as_other(lambda: os.chown(theirs, 0, -1)) == errno.EPERM
    assert as_other(lambda: os.chown(theirs, -1, 0)) == errno.EPERM  # a group they are not in
    assert as_other(lambda: os.chown(theirs, OTHER, OTHER)) == 0
    (mnt / "roots").write_bytes(b"x")
    assert as_other(lambda: os.chmod(mnt / "roots", 0o777)) == errno.EPERM
    assert as_other(lambda: os.chmod(theirs, 0o600)) == 0
    assert stat.S_IMODE(ns(theirs).st_mode) == 0o600
    os.chown(theirs, 0, 0)
    assert (ns(theirs).st_uid, ns(theirs).st_gid) == (0, 0)


def test_setuid_and_setgid_are_cleared_by_chown_and_by_another_users_write(mnt: Path) -> None:
    f = mnt / "prog"
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o6755)
    assert stat.S_IMODE(ns(f).st_mode) == 0o6755
    os.chown(f, 1000, 1000)
    assert stat.S_IMODE(ns(f).st_mode) == 0o755
    g = mnt / "shared"
    g.write_bytes(b"x")
    os.chmod(g, 0o4777)

    def append() -> None:
        with open(g, "ab") as out:
            out.write(b"y")

    assert as_other(append) == 0
    assert stat.S_IMODE(ns(g).st_mode) == 0o777
    assert g.read_bytes() == b"xy"


def test_a_write_drops_a_files_capabilities_as_on_a_local_disk(mnt: Path) -> None:
    # The kernel still removes security.capability itself at a write (it
    # asks once per file now, not before every write: HANDLE_KILLPRIV_V2).
    f = mnt / "ping"
    f.write_bytes(b"\x7fELF")
    cap_net_raw = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # vfs_cap_data v2, effective
    os.setxattr(f, "security.capability", cap_net_raw)
    assert os.getxattr(f, "security.capability") == cap_net_raw
    with open(f, "ab") as out:
        out.write(b"more")
    assert errno_of(lambda: os.getxattr(f, "security.capability")) == errno.ENODATA


def test_setuid_and_setgid_are_cleared_by_another_users_truncate_and_trunc_open(mnt: Path) -> None:
    # With HANDLE_KILLPRIV_V2 the kernel leaves these to the mount (as a
    # local disk does: setgid stays where the group may not execute and the
    # writer is in the group; root, with CAP_FSETID, clears nothing).
    cases = {"truncate": lambda p: os.truncate(p, 1),
             "trunc-open": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))}
    for name, change in cases.items():
        for before, after in ((0o4777, 0o777), (0o2777, 0o777), (0o6777, 0o777)):
            f = mnt / f"{name}-{before:o}"
            f.write_bytes(b"xyz")
            os.chmod(f, before)
            assert as_other(lambda change=change, f=f: change(f)) == 0, name
            assert stat.S_IMODE(ns(f).st_mode) == after, (name, oct(before))
        mine = mnt / f"{name}-root"
        mine.write_bytes(b"xyz")
        os.chmod(mine, 0o6777)
        change(mine)
        with open(mine, "ab") as out:
            out.write(b"w")
        assert stat.S_IMODE(ns(mine).st_mode) == 0o6777, name
    kept = mnt / "trunc-open-4777"
    assert stat.S_IMODE(ns(kept).st_mode) == 0o777 and kept.stat().st_size == 0


def test_setgid_the_group_may_not_execute_stays_only_for_the_group(mnt: Path) -> None:
    # As ext4 does (Linux's in_group_or_capable): a write, truncate or
    # O_TRUNC open by a user outside the file's group clears such a bit, one
    # by a member keeps it; setuid goes either way; a chown by root keeps it
    # (CAP_FSETID) unless the group may execute. Each expected mode is what
    # the same call leaves on ext4.
    def append(p: Path) -> None:
        with open(p, "ab") as out:
            out.write(b"w")

    changes: dict[str, Callable[[Path], object]] = {
        "write": append, "truncate": lambda p: os.truncate(p, 1),
        "trunc-open": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))}
    expected = {  # (mode before, the writer in the group) -> mode after
        (0o2666, False): 0o666, (0o6666, False): 0o666, (0o2676, False): 0o676,
        (0o2666, True): 0o2666, (0o6666, True): 0o2666, (0o2676, True): 0o676}
    for name, change in changes.items():
        for (before, member), after in expected.items():
            f = mnt / f"{name}-{before:o}-{'member' if member else 'outsider'}"
            f.write_bytes(b"xyz")
            os.chown(f, 0, OTHER if member else 0)
            os.chmod(f, before)
            assert as_other(lambda change=change, f=f: change(f)) == 0, f.name
            assert stat.S_IMODE(ns(f).st_mode) == after, (f.name, oct(ns(f).st_mode))
    for before, after in ((0o6666, 0o2666), (0o6676, 0o676)):
        f = mnt / f"chown-{before:o}"
        f.write_bytes(b"x")
        os.chmod(f, before)
        os.chown(f, 1, 1)
        assert stat.S_IMODE(ns(f).st_mode) == after, f.name


def test_sticky_directory_lets_only_owners_remove(mnt: Path) -> None:
    tmp = mnt / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    assert stat.S_IMODE(ns(tmp).st_mode) == 0o1777
    (tmp / "roots").write_bytes(b"x")
    assert as_other(lambda: (tmp / "theirs").write_bytes(b"y")) == 0
    assert as_other(lambda: os.unlink(tmp / "roots")) == errno.EPERM
    assert as_other(lambda: os.rename(tmp / "roots", tmp / "moved")) == errno.EPERM
    assert as_other(lambda: os.unlink(tmp / "theirs")) == 0
    assert (tmp / "roots").exists() and not (tmp / "theirs").exists()


def test_setgid_directory_passes_its_group_down(mnt: Path) -> None:
    team = mnt / "team"
    team.mkdir()
    os.chown(team, 0, 777)
    os.chmod(team, 0o2777)
    assert as_other(lambda: (team / "f").write_bytes(b"x")) == 0
    assert as_other(lambda: os.mkdir(team / "d")) == 0
    assert ns(team / "f").st_gid == 777 and ns(team / "f").st_uid == OTHER
    assert ns(team / "d").st_gid == 777
    assert ns(team / "d").st_mode & stat.S_ISGID


# -- times -------------------------------------------------------------------------------


def test_ctime_moves_with_every_change_of_status(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"x")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("chmod", lambda: os.chmod(f, 0o600)),
        ("chown", lambda: os.chown(f, 7, 7)),
        ("utime", lambda: os.utime(f, ns=(10**18, 10**18))),
        ("link", lambda: os.link(f, mnt / "g")),
        ("unlink of another name", lambda: os.unlink(mnt / "g")),
        ("rename", lambda: os.rename(f, mnt / "f2")),
        ("setxattr", lambda: os.setxattr(mnt / "f2", "user.k", b"v")),
        ("write", lambda: (mnt / "f2").write_bytes(b"longer")),
        ("truncate", lambda: os.truncate(mnt / "f2", 1)),
    ]
    for what, step in steps:
        path = mnt / "f2" if (mnt / "f2").exists() else f
        before = ns(path).st_ctime_ns
        later(before)
        step()
        path = mnt / "f2" if (mnt / "f2").exists() else f
        assert ns(path).st_ctime_ns > before, what
    assert ns(mnt / "f2").st_mtime_ns != 10**18  # the write and truncate moved it too


def test_a_directory_changes_mtime_and_ctime_with_its_entries(mnt: Path) -> None:
    d = mnt / "d"
    d.mkdir()
    for what, step in [
        ("create", lambda: (d / "f").write_bytes(b"")),
        ("mkdir", lambda: (d / "sub").mkdir()),
        ("rename within", lambda: os.rename(d / "f", d / "g")),
        ("unlink", lambda: os.unlink(d / "g")),
        ("rmdir", lambda: os.rmdir(d / "sub")),
        ("mknod", lambda: os.mkfifo(d / "p")),
    ]:
        before = ns(d)
        later(max(before.st_mtime_ns, before.st_ctime_ns))
        step()
        after = ns(d)
        assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns, what


def test_times_are_kept_in_nanoseconds_across_a_remount(tmp_path: Path, repo: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root")
    with mounted(repo, tmp_path / "mnt") as m:
        (m / "f").write_bytes(b"x")
        os.utime(m / "f", ns=(1_111_111_111_123_456_789, 1_222_222_222_987_654_321))
        os.chown(m / "f", 12, 34)
        before = ns(m / "f")
    with mounted(repo, tmp_path / "mnt") as m:
        after = ns(m / "f")
    assert after.st_atime_ns == 1_111_111_111_123_456_789
    assert after.st_mtime_ns == 1_222_222_222_987_654_321
    assert after.st_ctime_ns == before.st_ctime_ns
    assert (after.st_uid, after.st_gid) == (12, 34)


def test_a_change_through_a_read_only_handle_of_a_file_just_written_is_kept(tmp_path: Path, repo: Path) -> None:
    # rsync's order: write a file, close it, open it read-only, fchown and
    # fchmod through that handle, close it. The file's content was stored
    # (here by an fsync) while the read-only handle kept it open.
    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root")
    with mounted(repo, tmp_path / "mnt") as m:
        for name, stored_first in [("f", True), ("g", False)]:
            writer = os.open(m / name, os.O_CREAT | os.O_WRONLY, 0o700)
            reader = os.open(m / name, os.O_RDONLY)
            os.write(writer, b"x")
            os.close(writer)
            if stored_first:
                os.fsync(reader)
            os.fchown(reader, 1000, 1001)
            os.fchmod(reader, 0o4755)
            os.close(reader)
            assert (stat.S_IMODE(ns(m / name).st_mode), ns(m / name).st_uid) == (0o4755, 1000)
    with mounted(repo, tmp_path / "mnt") as m:
        for name in "fg":
            assert (stat.S_IMODE(ns(m / name).st_mode), ns(m / name).st_uid, ns(m / name).st_gid) == \
                (0o4755, 1000, 1001), name


def test_owner_mode_and_times_set_after_close_survive_a_rename_made_while_the_file_is_stored(
        tmp_path: Path, repo: Path) -> None:
    # rsync's order for each file: write a temporary name, close it (the
    # mount stores it in the background), chown, utime and chmod it by
    # path, rename it to its name. Whichever moment the background store
    # reaches each step, the file keeps what was set last.
    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root")
    with mounted(repo, tmp_path / "mnt") as m:
        for i in range(600):
            d = m / f"d{i % 6}"
            d.mkdir(exist_ok=True)
            temporary = d / f".f{i}.tmp"
            fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.write(fd, b"x" * (100 + i))
            os.close(fd)
            os.lchown(temporary, 1000 + i % 3, 1001)
            os.utime(temporary, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000 + i))
            os.chmod(temporary, 0o644)
            os.rename(temporary, d / f"f{i}")

    with mounted(repo, tmp_path / "mnt") as m:
        wrong = []
        for i in range(600):
            st = ns(m / f"d{i % 6}" / f"f{i}")
            if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns) != (0o644, 1000 + i % 3,
                                                                           1_600_000_000_000_000_000 + i):
                wrong.append(f"f{i}: {stat.S_IMODE(st.st_mode):o} {st.st_uid} {st.st_mtime_ns}")
        assert wrong == []


def test_reads_set_the_access_time_as_relatime_does(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"x")
    written = ns(f)
    later(written.st_mtime_ns)
    f.read_bytes()  # the first read after a change moves it
    first = ns(f)
    assert first.st_atime_ns > written.st_mtime_ns
    assert first.st_ctime_ns == written.st_ctime_ns  # an access is no change of status
    f.read_bytes()  # a second read does not (relatime)
    assert ns(f).st_atime_ns == first.st_atime_ns
    ahead = time.time_ns() + 3600 * 10**9  # after the ctime utime gives it: no need to move
    os.utime(f, ns=(ahead, written.st_mtime_ns))
    f.read_bytes()
    assert ns(f).st_atime_ns == ahead
    os.utime(f, ns=(written.st_mtime_ns - 10, written.st_mtime_ns))  # before its last change: it moves
    f.read_bytes()
    assert written.st_mtime_ns < ns(f).st_atime_ns < ahead


def test_noatime_leaves_the_access_time(tmp_path: Path, repo: Path) -> None:
    with mounted(repo, tmp_path / "mnt", "--noatime") as m:
        (m / "f").write_bytes(b"x")
        before = ns(m / "f")
        later(before.st_mtime_ns)
        (m / "f").read_bytes()
        assert ns(m / "f").st_atime_ns == before.st_atime_ns


# -- link counts and hard links -------------------------------------------------------------


def test_directory_link_count_is_two_plus_subdirectories(mnt: Path) -> None:
    d = mnt / "d"
    d.mkdir()
    assert ns(d).st_nlink == 2
    (d / "a").mkdir()
    (d / "b").mkdir()
    (d / "file").write_bytes(b"")
    assert ns(d).st_nlink == 4
    os.rename(d / "a", mnt / "a")
    assert ns(d).st_nlink == 3
    os.rmdir(d / "b")
    assert ns(d).st_nlink == 2


def test_hard_links_are_one_inode_with_a_link_count(mnt: Path, repo: Path) -> None:
    (mnt / "d").mkdir()
    a, b, c = mnt / "a", mnt / "d" / "b", mnt / "c"
    a.write_bytes(b"hello")
    os.link(a, b)
    os.link(b, c)
    assert {ns(p).st_ino for p in (a, b, c)} == {ns(a).st_ino}
    assert [ns(p).st_nlink for p in (a, b, c)] == [3, 3, 3]
    with open(c, "ab") as out:
        out.write(b" world")
    os.chmod(b, 0o640)
    os.setxattr(a, "user.tag", b"t")
    for p in (a, b, c):
        assert p.read_bytes() == b"hello world"
        assert stat.S_IMODE(ns(p).st_mode) == 0o640
        assert os.getxattr(p, "user.tag") == b"t"
    os.unlink(a)
    assert ns(b).st_nlink == ns(c).st_nlink == 2
    (mnt / "other").write_bytes(b"o")
    os.rename(mnt / "other", c)  # rename over one name
    assert ns(b).st_nlink == 1 and c.read_bytes() == b"o"
    os.rename(b, b)
    assert errno_of(os.link, mnt / "d", mnt / "dirlink") == errno.EPERM
    assert errno_of(os.link, b, c) == errno.EEXIST
    assert errno_of(os.link, mnt / "missing", mnt / "x") == errno.ENOENT


def test_hard_links_survive_a_remount(tmp_path: Path, repo: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root")
    with mounted(repo, tmp_path / "mnt") as m:
        (m / "a").write_bytes(b"same")
        os.link(m / "a", m / "b")
    with mounted(repo, tmp_path / "mnt") as m:
        assert ns(m / "a").st_ino == ns(m / "b").st_ino
        assert ns(m / "a").st_nlink == 2
        (m / "b").write_bytes(b"changed")
        assert (m / "a").read_bytes() == b"changed"


def test_a_file_unlinked_while_open_works_until_its_last_close(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"data")
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"more", 4)
        assert os.pread(fd, 100, 0) == b"datamore"
        assert not f.exists()
    finally:
        os.close(fd)
    assert not f.exists()


def test_a_file_renamed_over_while_open_keeps_its_content(mnt: Path) -> None:
    old, new = mnt / "old", mnt / "new"
    old.write_bytes(b"old content")
    new.write_bytes(b"new content")
    fd = os.open(old, os.O_RDONLY)
    try:
        os.rename(new, old)
        assert os.pread(fd, 100, 0) == b"old content"
        assert old.read_bytes() == b"new content"
    finally:
        os.close(fd)


# -- special files ------------------------------------------------------------------------------


def test_fifos_sockets_and_devices_are_made_and_kept(tmp_path: Path, repo: Path) -> None:
    if os.geteuid() != 0:
        skip_unless_ci("making device nodes needs root")
    with mounted(repo, tmp_path / "mnt") as m:
        os.mkfifo(m / "fifo", 0o640)
        os.mknod(m / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(m / "disk", 0o600 | stat.S_IFBLK, os.makedev(8, 1))
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(m / "sock"))
        assert errno_of(os.mkfifo, m / "fifo") == errno.EEXIST
    with mounted(repo, tmp_path / "mnt") as m:
        assert stat.S_ISFIFO(ns(m / "fifo").st_mode) and stat.S_IMODE(ns(m / "fifo").st_mode) == 0o640
        assert stat.S_ISCHR(ns(m / "null").st_mode) and ns(m / "null").st_rdev == os.makedev(1, 3)
        assert stat.S_ISBLK(ns(m / "disk").st_mode) and ns(m / "disk").st_rdev == os.makedev(8, 1)
        assert stat.S_ISSOCK(ns(m / "sock").st_mode)
        assert ns(m / "fifo").st_size == 0


def test_a_fifo_in_the_mount_carries_data(mnt: Path) -> None:
    fifo = mnt / "fifo"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:
        try:
            with open(fifo, "wb") as out:
                out.write(b"through the pipe")
        finally:
            os._exit(0)
    with open(fifo, "rb") as reader:
        assert reader.read() == b"through the pipe"
    os.waitpid(pid, 0)


def test_a_user_cannot_make_devices(mnt: Path) -> None:
    os.chmod(mnt, 0o777)
    assert as_other(lambda: os.mknod(mnt / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))) == errno.EPERM
    assert as_other(lambda: os.mkfifo(mnt / "theirs")) == 0
    assert ns(mnt / "theirs").st_uid == OTHER


# -- extended attributes -------------------------------------------------------------------------


def test_extended_attributes_as_ext4_keeps_them(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"x")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "trusted.b", b"\x00\xff")
    os.setxattr(f, "security.c", b"label")
    assert sorted(os.listxattr(f)) == ["security.c", "trusted.b", "user.a"]
    assert os.getxattr(f, "trusted.b") == b"\x00\xff"
    os.setxattr(f, "user.a", b"2")
    assert os.getxattr(f, "user.a") == b"2"
    os.removexattr(f, "user.a")
    assert errno_of(os.getxattr, f, "user.a") == errno.ENODATA
    assert errno_of(os.removexattr, f, "user.a") == errno.ENODATA
    assert errno_of(os.setxattr, f, "user.big", b"x" * 5000) == errno.ENOSPC
    assert errno_of(os.setxattr, f, "user." + "n" * 251, b"") == errno.ERANGE
    (mnt / "d").mkdir()
    os.setxattr(mnt / "d", "user.dir", b"yes")
    assert os.getxattr(mnt / "d", "user.dir") == b"yes"


def test_a_user_reads_and_writes_extended_attributes_as_the_mode_allows(mnt: Path) -> None:
    f = mnt / "f"
    f.write_bytes(b"x")
    os.chmod(f, 0o644)
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "trusted.t", b"2")
    assert as_other(lambda: os.getxattr(f, "user.a")) == 0
    assert as_other(lambda: os.setxattr(f, "user.a", b"3")) == errno.EACCES
    assert as_other(lambda: os.getxattr(f, "trusted.t")) == errno.ENODATA  # not theirs to see
    assert as_other(lambda: os.setxattr(f, "trusted.t", b"3")) == errno.EPERM
    assert os.getxattr(f, "user.a") == b"1"


# -- rename flags, blocks, statfs ------------------------------------------------------------------


def renameat2(src: Path, dst: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_rename_exchange_and_noreplace(mnt: Path) -> None:
    (mnt / "d").mkdir()
    (mnt / "d" / "inside").write_bytes(b"i")
    (mnt / "f").write_bytes(b"f")
    renameat2(mnt / "d", mnt / "f", RENAME_EXCHANGE)
    assert (mnt / "d").read_bytes() == b"f"
    assert (mnt / "f" / "inside").read_bytes() == b"i"
    assert errno_of(renameat2, mnt / "d", mnt / "f", RENAME_NOREPLACE) == errno.EEXIST
    assert errno_of(renameat2, mnt / "d", mnt / "missing", RENAME_EXCHANGE) == errno.ENOENT
    assert errno_of(renameat2, mnt / "f", mnt / "f" / "inside", RENAME_EXCHANGE) == errno.EINVAL
    assert errno_of(renameat2, mnt / "d", mnt / "f", RENAME_EXCHANGE | RENAME_NOREPLACE) == errno.EINVAL


def test_a_sparse_file_takes_no_blocks_for_its_hole(mnt: Path) -> None:
    f = mnt / "sparse"
    with open(f, "wb") as out:
        out.truncate(1 << 30)
        out.seek((1 << 30) - 4)
        out.write(b"tail")
        out.flush()
        assert os.fstat(out.fileno()).st_blocks * 512 < 1 << 24
    assert ns(f).st_size == 1 << 30
    assert ns(f).st_blocks * 512 < 1 << 24


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x08, 0x10


def fallocate(path: Path, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself (glibc's posix_fallocate falls back to writing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDWR)
    try:
        if libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def test_fallocate_extends_punches_and_zeroes_as_a_local_disk_does(mnt: Path, repo: Path) -> None:
    f = mnt / "prealloc"
    f.write_bytes(b"x" * 10_000)
    fallocate(f, 0, 0, 50_000)  # allocate: the file grows, its new bytes are zeros
    assert f.read_bytes() == b"x" * 10_000 + bytes(40_000)
    fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 200_000)  # past the end, keeping the size
    assert ns(f).st_size == 50_000
    fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1_000, 2_000)
    fallocate(f, FALLOC_FL_ZERO_RANGE, 9_000, 61_000)  # zeroes, and grows the file to 70,000
    expected = b"x" * 1_000 + bytes(2_000) + b"x" * 6_000 + bytes(61_000)
    assert f.read_bytes() == expected
    os.sync()
    assert run_cas("cat", "/prealloc", repo=repo).stdout == expected  # committed as any write
    assert errno_of(fallocate, f, FALLOC_FL_COLLAPSE_RANGE, 0, 4096) == errno.EOPNOTSUPP
    assert errno_of(fallocate, f, 0, 0, 1 << 55) in (errno.ENOSPC, errno.EFBIG)  # more than any disk
    assert f.read_bytes() == expected  # what failed changed nothing
    with open(f, "r+b") as out:  # the library call most programs use
        os.posix_fallocate(out.fileno(), 0, 100_000)
    assert ns(f).st_size == 100_000


def test_statfs_reports_the_disk_under_the_repository(mnt: Path, repo: Path) -> None:
    mine, disk = os.statvfs(mnt), os.statvfs(repo)
    assert mine.f_frsize * mine.f_blocks == disk.f_frsize * disk.f_blocks
    assert mine.f_namemax == 255


# -- POSIX ACLs ------------------------------------------------------------------------------------


def test_an_access_acl_grants_a_named_user_and_sets_the_mode(mnt: Path) -> None:
    from cas.fuse import acl as acls

    from tests.test_fuse_acl import acl

    f = mnt / "shared"
    f.write_bytes(b"root's")
    os.chmod(f, 0o600)
    assert as_other(lambda: f.read_bytes()) == errno.EACCES
    os.setxattr(f, "system.posix_acl_access",
                acl((acls.USER_OBJ, 6, 0), (acls.USER, 6, OTHER), (acls.GROUP_OBJ, 0, 0), (acls.MASK, 6, 0),
                    (acls.OTHER, 0, 0)))
    assert stat.S_IMODE(ns(f).st_mode) == 0o660  # the group bits are the mask
    assert as_other(lambda: f.read_bytes()) == 0
    minimal = acl((acls.USER_OBJ, 7, 0), (acls.GROUP_OBJ, 5, 0), (acls.OTHER, 0, 0))
    os.setxattr(f, "system.posix_acl_access", minimal)
    assert stat.S_IMODE(ns(f).st_mode) == 0o750
    assert "system.posix_acl_access" not in os.listxattr(f)  # the mode says it all
    assert as_other(lambda: f.read_bytes()) == errno.EACCES
    assert errno_of(os.setxattr, f, "system.posix_acl_access", b"junk") == errno.EOPNOTSUPP  # as ext4 and tmpfs


# -- round trips with the tools users copy trees with -------------------------------------------------


def _tree(top: Path) -> None:
    """A tree holding every kind of thing a copy must keep."""
    top.mkdir()
    (top / "sub").mkdir()
    (top / "a").write_bytes(b"linked\n")
    os.link(top / "a", top / "sub" / "b")
    os.link(top / "a", top / "c")
    os.setxattr(top / "a", "user.note", b"kept")
    os.setxattr(top / "a", "trusted.t", b"\x00\x01")
    os.chown(top / "a", 1000, 1001)
    os.chmod(top / "a", 0o4755)
    os.chmod(top / "sub", 0o2750)
    os.mkfifo(top / "fifo")
    os.mknod(top / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(top / "sock"))
    with open(top / "sparse", "wb") as out:
        out.truncate(40 << 20)
        out.seek(20 << 20)
        out.write(b"middle")
    os.symlink("a", top / "link")
    os.lchown(top / "link", 5, 6)
    (top / ("é" * 127 + "x")).write_bytes(b"a 255-byte UTF-8 name, the longest there is")
    (top / "many").mkdir()
    for i in range(1000):
        (top / "many" / f"{i:04}").write_bytes(b"")
    # Times in the past, as a real tree has (rsync compares the times of
    # special files and symlinks to the second, and leaves one made in the
    # same second as its source as it is).
    for path in [top / "fifo", top / "null", top / "sock", top / "link", top / "many", top / "sub", top]:
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_001), follow_symlinks=False)


def differences(want: Path, got: Path) -> list[str]:
    """How ``got`` differs from ``want``, attribute by attribute
    (tests/trees_compare.py, ACLs included), and any sparse file of ``got``
    that takes more than a block or two for its hole."""
    found = compare_trees(want, got, top=False, skip_xattrs=())
    for path in want.rglob("*"):
        rel = path.relative_to(want)
        if path.is_file() and not path.is_symlink():
            if (got / rel).lstat().st_blocks * 512 > path.lstat().st_blocks * 512 + (4 << 20):
                found.append(f"{rel}: {(got / rel).lstat().st_blocks} blocks, {path.lstat().st_blocks} in {want}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["cp -a", "tar", "rsync -aHAX"])
def test_a_tree_copied_in_and_out_keeps_every_attribute(mnt: Path, tmp_path: Path, tool: str) -> None:
    import shutil
    import subprocess

    if tool.startswith("rsync") and shutil.which("rsync") is None:
        skip_unless_ci("rsync is not installed (scripts/setup-env --test installs it)")
    source = tmp_path / "source"
    _tree(source)

    def copy(src: Path, dst: Path) -> None:
        if tool == "cp -a":
            subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
        elif tool == "tar":
            dst.mkdir()
            packed = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-cf", "-", "-C", str(src), "."],
                                    check=True, capture_output=True).stdout
            subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", "-", "-C", str(dst)],
                           input=packed, check=True, capture_output=True)
        else:
            subprocess.run(["rsync", "-aHAXS", f"{src}/", f"{dst}/"], check=True)

    local, mounted_copy, back = tmp_path / "local", mnt / "copy", tmp_path / "back"
    copy(source, local)  # the same work on a local directory: what the mount must match
    copy(source, mounted_copy)
    diffs = differences(local, mounted_copy)
    assert not diffs, "\n".join(diffs)
    copy(mounted_copy, back)
    diffs = differences(local, back)
    assert not diffs, "\n".join(diffs)


# -- a full disk ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rsync_of_a_tree_of_thousands_of_files_arrives_with_every_attribute(
        tmp_path: Path, repo: Path) -> None:
    # Volume matters: the background store, the commit interval and rsync's
    # renames and late chmods of directories meet only with many files.
    import random
    import shutil
    import subprocess

    if os.geteuid() != 0:
        skip_unless_ci("the POSIX suite runs as root")
    if shutil.which("rsync") is None:
        skip_unless_ci("rsync is not installed (scripts/setup-env --test installs it)")
    rng = random.Random(17)
    source = tmp_path / "source"
    for d in range(150):
        directory = source / f"pkg{d % 15}" / f"sub{d}" / "__pycache__"
        directory.mkdir(parents=True)
        for f in range(20):
            path = directory.parent / f"m{f}.py" if f % 2 else directory / f"m{f}.pyc"
            path.write_bytes(rng.randbytes(rng.randrange(10, 3000)))
            os.chmod(path, rng.choice([0o644, 0o600, 0o755, 0o444]))
            os.utime(path, ns=(1_600_000_000_000_000_000 + f, 1_600_000_000_000_000_000 + d * 100 + f))
        os.chmod(directory, rng.choice([0o755, 0o750, 0o700]))
    # Directories' times in the past: rsync compares times to the second
    # and leaves a directory made in the same second as its source as it
    # is (on any file system).
    for directory in [path for path in source.rglob("*") if path.is_dir()]:
        os.utime(directory, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000 + len(str(directory))))
    with mounted(repo, tmp_path / "mnt") as m:
        subprocess.run(["rsync", "-a", f"{source}/", f"{m / 'copy'}/"], check=True)
        assert compare_trees(source, m / "copy", top=False) == []
    with mounted(repo, tmp_path / "mnt") as m:
        assert compare_trees(source, m / "copy", top=False) == []


@pytest.mark.slow
def test_a_full_disk_is_enospc_at_the_write_and_loses_nothing_written(tmp_path: Path) -> None:
    import subprocess

    if os.geteuid() != 0:
        skip_unless_ci("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], check=True)
    try:
        repo, written, failed = disk / "repo", [], None
        with mounted(repo, tmp_path / "mnt") as m:
            for i in range(200):  # 100 MB into 24 MB
                data = os.urandom(500_000)
                try:
                    (m / f"f{i:03}").write_bytes(data)
                except OSError as exc:
                    failed = exc
                    break
                written.append(data)
            assert failed is not None and failed.errno == errno.ENOSPC
            assert len(written) > 10
            (m / "after").mkdir()  # the mount goes on
        with mounted(repo, tmp_path / "mnt") as m:
            for i, data in enumerate(written):
                assert (m / f"f{i:03}").read_bytes() == data, i
            assert (m / "after").is_dir()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
