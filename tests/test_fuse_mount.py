"""The mount through the kernel: reads, writes, POSIX errors, crashes.

Each test mounts a fresh repository with ``cas mount`` (tests/fusemount.py)
and drives it with plain system calls, as programs do.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import pseudo_random, run_cas
from tests.fusemount import errno_of, kill_9, mounted, pids_of, require_fuse, wait_for

pytestmark = pytest.mark.fuse


@pytest.fixture
def mnt(tmp_path: Path, repo: Path):
    with mounted(repo, tmp_path / "mnt") as path:
        yield path


# -- reading ------------------------------------------------------------------


def test_mount_lists_and_reads_what_was_added_before(tmp_path: Path, repo: Path) -> None:
    data = pseudo_random(3_000_000, "big")
    (tmp_path / "big").write_bytes(data)
    (tmp_path / "small").write_bytes(b"small\n")
    run_cas("add", str(tmp_path / "big"), "--to", "/d/big", repo=repo)
    run_cas("add", str(tmp_path / "small"), "--to", "/d/sub/small", repo=repo)
    with mounted(repo, tmp_path / "mnt") as m:
        assert sorted(os.listdir(m / "d")) == ["big", "sub"]
        assert (m / "d" / "big").read_bytes() == data
        assert (m / "d" / "sub" / "small").read_bytes() == b"small\n"
        assert os.stat(m / "d" / "big").st_size == len(data)
        with open(m / "d" / "big", "rb") as f:  # random access
            f.seek(1_234_567)
            assert f.read(10_000) == data[1_234_567:1_244_567]
        listing = subprocess.run(["ls", "-a", str(m / "d")], capture_output=True, text=True).stdout.split()
        assert listing == [".", "..", "big", "sub"]


def test_two_readers_of_one_file_at_once(tmp_path: Path, repo: Path) -> None:
    data = pseudo_random(8_000_000, "two")
    (tmp_path / "f").write_bytes(data)
    run_cas("add", str(tmp_path / "f"), "--to", "/f", repo=repo)
    with mounted(repo, tmp_path / "mnt") as m:
        results: list[bytes] = [b"", b""]

        def read(i: int) -> None:
            with open(m / "f", "rb") as f:
                chunks = []
                while piece := f.read(65536 * (i + 1)):
                    chunks.append(piece)
                results[i] = b"".join(chunks)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [data, data]


def test_sequential_and_random_reads_of_a_multi_level_file(tmp_path: Path, repo: Path) -> None:
    # > 1024 leaves: a root over interior nodes, so reads cross subtrees and
    # read-ahead lists leaves under several nodes.
    data = pseudo_random(1100 * 64 * 1024 * 5, "levels")
    (tmp_path / "f").write_bytes(data)
    run_cas("add", str(tmp_path / "f"), "--to", "/f", repo=repo)
    with mounted(repo, tmp_path / "mnt") as m:
        with open(m / "f", "rb", buffering=0) as f:
            assert f.readall() == data
        fd = os.open(m / "f", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            rng = __import__("random").Random(4)
            for _ in range(200):
                offset = rng.randrange(0, len(data))
                assert os.pread(fd, 4096, offset) == data[offset : offset + 4096]
        finally:
            os.close(fd)


def test_the_mount_raises_the_kernel_read_ahead(mnt: Path) -> None:
    from cas.fuse.mountd import KERNEL_READ_AHEAD_KIB, mount_device

    if os.geteuid() != 0:
        pytest.skip("only root may change a mount's read-ahead")
    os.stat(mnt)
    device = mount_device(mnt)
    assert device is not None
    path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    wait_for(lambda: path.read_text().strip() == str(KERNEL_READ_AHEAD_KIB), what="read-ahead raised")


def test_cas_commands_keep_working_while_mounted(mnt: Path, repo: Path, tmp_path: Path) -> None:
    (mnt / "x").write_bytes(b"from the mount")
    cid = run_cas("add", "-", repo=repo, input=b"from the cli").stdout.split()[-1].decode()
    assert run_cas("cat", cid, repo=repo).stdout == b"from the cli"
    ls = run_cas("ls", "/", repo=repo)
    assert b"x" in ls.stdout.splitlines()
    run_cas("mv", "/x", "/y", repo=repo)
    wait_for(lambda: (mnt / "y").exists() and not (mnt / "x").exists(), what="cas mv to show in the mount")
    assert (mnt / "y").read_bytes() == b"from the mount"


# -- writing ------------------------------------------------------------------


def test_writes_anywhere_are_committed_on_close(mnt: Path, repo: Path) -> None:
    path = mnt / "w"
    path.write_bytes(b"0123456789")
    with open(path, "r+b") as f:
        f.seek(3)
        f.write(b"abc")  # overwrite in the middle
    with open(path, "ab") as f:
        f.write(b"END")  # append
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"!")  # past EOF: a hole
    expected = b"012abc6789END" + bytes(7) + b"!"
    assert path.read_bytes() == expected
    os.truncate(path, 5)
    assert path.read_bytes() == b"012ab"
    with open(path, "wb") as f:  # O_TRUNC
        f.write(b"new")
    assert path.read_bytes() == b"new"
    with open(path, "r+b") as f:
        f.write(b"N")
        f.flush()
        os.fsync(f.fileno())  # commits (the kill -9 test checks it survives)
        f.write(b"EW")
    assert path.read_bytes() == b"NEW"


def test_metadata_changes_show(mnt: Path) -> None:
    path = mnt / "m"
    path.write_bytes(b"x")
    os.chmod(path, 0o600)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    st = os.stat(path)
    assert st.st_mode & 0o7777 == 0o600
    assert st.st_mtime_ns == 1_000_000_000_000_000_000
    (mnt / "d").mkdir(mode=0o700)
    assert os.stat(mnt / "d").st_mode & 0o777 == 0o700


def test_a_reader_sees_another_process_append(mnt: Path) -> None:
    path = mnt / "log"
    path.write_bytes(b"first\n")
    with open(path, "rb") as reader, open(path, "ab") as writer:
        assert reader.read() == b"first\n"
        writer.write(b"second\n")
        writer.flush()
        assert reader.read() == b"second\n"
    assert path.read_bytes() == b"first\nsecond\n"


def test_renamed_open_file_is_written_at_its_new_name(mnt: Path, repo: Path) -> None:
    with open(mnt / "a", "wb") as f:
        f.write(b"one ")
        f.flush()
        os.rename(mnt / "a", mnt / "b")
        f.write(b"two")
    assert not (mnt / "a").exists()
    assert (mnt / "b").read_bytes() == b"one two"


def test_unlinked_open_file_keeps_working_and_is_written_nowhere(mnt: Path) -> None:
    with open(mnt / "gone", "w+b") as f:
        f.write(b"data")
        os.unlink(mnt / "gone")
        f.write(b" more")
        f.seek(0)
        assert f.read() == b"data more"
    assert os.listdir(mnt) == []


def test_rename_replaces_files_and_empty_directories(mnt: Path) -> None:
    (mnt / "a").write_bytes(b"A")
    (mnt / "b").write_bytes(b"B")
    os.rename(mnt / "a", mnt / "b")
    assert (mnt / "b").read_bytes() == b"A"
    (mnt / "d1").mkdir()
    (mnt / "d1" / "f").write_bytes(b"F")
    (mnt / "d2").mkdir()
    os.rename(mnt / "d1", mnt / "d2")
    assert (mnt / "d2" / "f").read_bytes() == b"F"
    assert sorted(os.listdir(mnt)) == ["b", "d2"]


# -- errors -------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_errors_are_the_errno_programs_expect(mnt: Path) -> None:
    (mnt / "f").write_bytes(b"f")
    (mnt / "d").mkdir()
    (mnt / "d" / "x").write_bytes(b"x")
    (mnt / "e").mkdir()
    assert errno_of(os.stat, mnt / "missing") == errno.ENOENT
    assert errno_of(open, mnt / "missing" / "x") == errno.ENOENT
    assert errno_of(os.mkdir, mnt / "d") == errno.EEXIST
    assert errno_of(os.open, mnt / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY) == errno.EEXIST
    assert errno_of(os.rmdir, mnt / "d") == errno.ENOTEMPTY
    assert errno_of(os.rename, mnt / "e", mnt / "d") == errno.ENOTEMPTY
    assert errno_of(os.unlink, mnt / "d") == errno.EISDIR
    assert errno_of(open, mnt / "d", "wb") == errno.EISDIR
    assert errno_of(os.rename, mnt / "f", mnt / "e") == errno.EISDIR
    assert errno_of(os.rmdir, mnt / "f") == errno.ENOTDIR
    assert errno_of(os.stat, mnt / "f" / "x") == errno.ENOTDIR
    assert errno_of(os.rename, mnt / "e", mnt / "f") == errno.ENOTDIR
    assert errno_of(open, mnt / ("n" * 256), "wb") == errno.ENAMETOOLONG
    assert errno_of(os.mkdir, mnt / ("n" * 256)) == errno.ENAMETOOLONG
    assert errno_of(os.link, mnt / "d", mnt / "hard") == errno.EPERM  # a directory
    assert errno_of(os.link, mnt / "f", mnt / "e") == errno.EEXIST
    (mnt / "g").write_bytes(b"g")
    assert errno_of(renameat2, mnt / "f", mnt / "g", RENAME_NOREPLACE) == errno.EEXIST
    renameat2(mnt / "f", mnt / "h", RENAME_NOREPLACE)
    assert (mnt / "h").read_bytes() == b"f"


def test_read_only_mount_refuses_every_change(tmp_path: Path, repo: Path) -> None:
    run_cas("add", "-", "--to", "/f", repo=repo, input=b"kept")
    with mounted(repo, tmp_path / "mnt", "--ro") as m:
        assert (m / "f").read_bytes() == b"kept"
        assert errno_of(open, m / "f", "wb") == errno.EROFS
        assert errno_of(open, m / "new", "wb") == errno.EROFS
        assert errno_of(os.mkdir, m / "d") == errno.EROFS
        assert errno_of(os.unlink, m / "f") == errno.EROFS
        assert errno_of(os.rename, m / "f", m / "g") == errno.EROFS
        assert errno_of(os.chmod, m / "f", 0o600) == errno.EROFS


# -- crashes ------------------------------------------------------------------


def test_kill_9_loses_only_unclosed_writes(tmp_path: Path, repo: Path) -> None:
    require_fuse()
    m = tmp_path / "mnt"
    with mounted(repo, m):
        (m / "done").write_bytes(b"closed before the crash")
        (m / "synced").write_bytes(b"old")
        f = open(m / "synced", "r+b")
        f.write(b"new")
        f.flush()
        os.fsync(f.fileno())
        g = open(m / "open", "wb")
        g.write(b"never closed")
        g.flush()
        kill_9(m)
        for handle in (f, g):
            try:
                handle.close()
            except OSError:
                pass
        run_cas("umount", str(m), repo=repo)
    with mounted(repo, m):
        assert (m / "done").read_bytes() == b"closed before the crash"
        assert (m / "synced").read_bytes() == b"new"
        assert not (m / "open").exists() or (m / "open").read_bytes() == b""
    run_cas("repo", "verify", repo=repo)


def test_a_directory_with_files_in_it_is_refused_unless_nonempty(tmp_path: Path, repo: Path) -> None:
    require_fuse()
    (tmp_path / "f.txt").write_bytes(b"in the repository")
    run_cas("add", str(tmp_path / "f.txt"), "--to", "/f.txt", repo=repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (mnt / "mine.txt").write_bytes(b"already here")
    refused = run_cas("mount", str(mnt), repo=repo, check=False, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.decode().strip() == (
        f"cas mount: error: {mnt} is not empty, and the mount would hide what is in it; "
        "use an empty directory, or --nonempty to mount over it anyway")
    assert not os.path.ismount(mnt) and not pids_of(mnt)
    with mounted(repo, mnt, "--nonempty"):
        assert sorted(os.listdir(mnt)) == ["f.txt"]
    assert (mnt / "mine.txt").read_bytes() == b"already here"  # hidden, never touched


def test_a_mount_process_asked_for_its_stacks_writes_them_to_mount_log_and_goes_on(
        tmp_path: Path, repo: Path) -> None:
    # What 'cas umount' asks of a mount process that has not ended when it
    # stops waiting, so that mount.log says where it hangs.
    from cas.fuse.mountd import STACKS_SIGNAL

    with mounted(repo, tmp_path / "mnt") as mnt:
        (pid,) = pids_of(mnt)
        os.kill(pid, STACKS_SIGNAL)
        log = repo / "mount.log"
        wait_for(lambda: "most recent call first" in log.read_text(), timeout=10, what="the stacks in mount.log")
        assert "trio" in log.read_text()  # the event loop's thread among them
        (mnt / "after").write_bytes(b"still serving")
        assert (mnt / "after").read_bytes() == b"still serving"
