"""cas.fuse.streaming: a file cut and hashed as it is written gets the CID
``cas add`` gives the same bytes, whatever order the writes reach the
frontier in, and gives up (promptly, closing what it holds) where it
cannot know the content any more.

The follower's thread is a real thread reading a real temporary file, as
in the mount; the writer is this test, writing the file and telling the
follower. Every wait has a deadline."""

from __future__ import annotations

import json
import mmap
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cas.fuse.streaming import MAX_EXTENTS_AHEAD, Follower, Resume

from cas.blocks import Block, MemoryBlockStore
from cas.chunker import MAX_CHUNK_SIZE
from cas.files import add_bytes
from tests.conftest import run_cas
from tests.fusemount import mounted

MIB = 1 << 20


class Stepper:
    """Runs ``follower.step`` on a thread until the file is built or the
    follower gives up, keeping every block it returns."""

    def __init__(self, follower: Follower, step: int = MIB) -> None:
        self.follower = follower
        self.blocks: list[Block] = []
        self.gave_up = False
        self._thread = threading.Thread(target=self._run, args=(step,), daemon=True)
        self._thread.start()

    def _run(self, step: int) -> None:
        while self.follower.result is None:
            blocks = self.follower.step(step)
            if blocks is None:
                self.gave_up = True
                return
            self.blocks.extend(blocks)

    def join(self) -> None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the follower's thread did not end within 30 s"


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "staged", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def content(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(fd: int, follower: Follower, data: bytes, offset: int, end: int) -> bool:
    os.pwrite(fd, data[offset:end], offset)
    return follower.wrote(offset, end)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_appends_give_the_cid_of_an_add_of_the_whole_file(staged: int) -> None:
    data = content(9 * MIB + 12_345, 1)
    follower = Follower()
    follower.attach(staged)
    stepper = Stepper(follower)
    for offset in range(0, len(data), 128 * 1024):  # the write-back's 128 KiB pieces
        assert write(staged, follower, data, offset, min(offset + 128 * 1024, len(data)))
    assert follower.finish(len(data))
    stepper.join()
    expected = add_bytes(MemoryBlockStore(), data)
    assert follower.result == (expected.cid, len(data))
    store = MemoryBlockStore()
    for block in stepper.blocks:
        store.put(block)
    assert add_bytes(store, data).new_blocks == 0, "every block of the file was returned to be put"


def test_writes_ahead_of_the_frontier_wait_for_the_gap(staged: int) -> None:
    data = content(6 * MIB, 2)
    pieces = [(at, min(at + MIB, len(data))) for at in range(0, len(data), MIB)]
    order = [pieces[1], pieces[0], pieces[3], pieces[4], pieces[2], pieces[5]]
    follower = Follower()
    follower.attach(staged)
    stepper = Stepper(follower)
    for offset, end in order:
        assert write(staged, follower, data, offset, end)
    assert follower.finish(len(data))
    stepper.join()
    assert follower.result == (add_bytes(MemoryBlockStore(), data).cid, len(data))


def test_content_written_before_the_file_is_attached_is_read_from_it(staged: int) -> None:
    data = content(3 * MIB, 3)
    follower = Follower()
    assert write(staged, follower, data, 0, MIB)  # staged in memory then, as the mount does
    follower.attach(staged)
    stepper = Stepper(follower)
    assert write(staged, follower, data, MIB, len(data))
    assert follower.finish(len(data))
    stepper.join()
    assert follower.result == (add_bytes(MemoryBlockStore(), data).cid, len(data))


def test_a_follower_made_once_part_of_the_file_was_written_starts_from_the_file(staged: int) -> None:
    # The mount makes one only once a file written in order from empty goes
    # to disk: what came before is read from the staged file.
    data = content(3 * MIB + 777, 4)
    os.pwrite(staged, data[: 2 * MIB], 0)
    follower = Follower(written=2 * MIB)
    follower.attach(staged)
    stepper = Stepper(follower)
    other = Follower(written=2 * MIB)
    assert not other.wrote(MIB, 2 * MIB), "a write behind what it was told is written gives it up"
    other.close()
    assert write(staged, follower, data, 2 * MIB, len(data))
    assert follower.finish(len(data))
    stepper.join()
    assert follower.result == (add_bytes(MemoryBlockStore(), data).cid, len(data))


def follow(staged: int, data: bytes, start: int, end: int, resume: Resume | None = None,
           store: MemoryBlockStore | None = None) -> Follower:
    """A follower of ``data[:end]`` told ``data[:start]`` is written (and
    where an earlier one left off), run to the end; its blocks put in
    ``store``."""
    follower = Follower(written=start, resume=resume)
    follower.attach(staged)
    stepper = Stepper(follower)
    for offset in range(start, end, 300_000):
        assert write(staged, follower, data, offset, min(offset + 300_000, end))
    assert follower.finish(end)
    stepper.join()
    for block in stepper.blocks if store is not None else ():
        store.put(block)
    return follower


@pytest.mark.parametrize("syncs", [[100_000, 6 * MIB], [MIB, 2 * MIB + 7, 2 * MIB + 9], [3 * MIB + 1, 5 * MIB]])
def test_a_file_stored_at_each_fsync_is_followed_on_from_where_it_left_off(staged: int, syncs: list[int]) -> None:
    # The mount stores a followed file at each fsync; one written on after
    # gets a follower that starts at the last cut no later byte can move,
    # within a maximum chunk of the end: it does not cut the file again.
    data = content(7 * MIB + 4_321, 10)
    store = MemoryBlockStore()
    resume, start = None, 0
    for end in [*syncs, len(data)]:
        follower = follow(staged, data, start, end, resume, store)
        assert follower.result == (add_bytes(MemoryBlockStore(), data[:end]).cid, end)
        resume = follower.resume
        assert resume is not None and end - MAX_CHUNK_SIZE < resume.start <= end
        start = end
    assert add_bytes(store, data).new_blocks == 0, "every block of the whole file was returned to be put"


def test_a_resume_serves_more_than_one_follower(staged: int) -> None:
    # A follower started from it may give up (an overwrite): the next starts
    # from the same place, unchanged by the first.
    data = content(4 * MIB, 11)
    first = follow(staged, data, 0, 2 * MIB + 5)
    assert first.resume is not None
    given_up = Follower(written=2 * MIB + 5, resume=first.resume)
    given_up.attach(staged)
    stepper = Stepper(given_up)
    assert write(staged, given_up, data, 2 * MIB + 5, 3 * MIB)
    assert not given_up.wrote(0, 10)
    stepper.join()
    assert stepper.gave_up
    again = follow(staged, data, 2 * MIB + 5, len(data), first.resume)
    assert again.result == (add_bytes(MemoryBlockStore(), data).cid, len(data))


def test_an_overwrite_behind_the_frontier_gives_up_and_the_thread_ends(staged: int) -> None:
    data = content(4 * MIB, 4)
    follower = Follower()
    follower.attach(staged)
    stepper = Stepper(follower)
    assert write(staged, follower, data, 0, 2 * MIB)
    assert not write(staged, follower, b"x" * MIB, 0, MIB)
    stepper.join()
    assert stepper.gave_up and follower.given_up and follower.result is None
    assert not follower.finish(2 * MIB)


def test_a_gap_never_filled_is_no_file_to_finish(staged: int) -> None:
    data = content(3 * MIB, 5)
    follower = Follower()
    follower.attach(staged)
    stepper = Stepper(follower)
    assert write(staged, follower, data, 0, MIB)
    assert write(staged, follower, data, 2 * MIB, 3 * MIB)  # a hole from 1 MiB on
    assert not follower.finish(3 * MIB)
    stepper.join()
    assert stepper.gave_up and follower.result is None


def test_too_many_writes_held_ahead_give_up(staged: int) -> None:
    follower = Follower()
    follower.attach(staged)
    results = [follower.wrote(10 + 2 * i, 11 + 2 * i) for i in range(MAX_EXTENTS_AHEAD + 1)]
    assert all(results[:-1]) and not results[-1]
    follower.close()


def test_close_wakes_a_waiting_step_and_its_descriptor_is_closed(staged: int) -> None:
    before = open_fds()
    follower = Follower()
    follower.attach(staged)
    assert open_fds() == before + 1
    stepper = Stepper(follower)
    assert write(staged, follower, content(MIB, 6), 0, MIB // 2)  # the step waits for more
    follower.close()
    stepper.join()
    assert stepper.gave_up
    assert open_fds() == before


def test_a_follower_never_attached_closes_with_nothing_held() -> None:
    before = open_fds()
    follower = Follower()
    assert follower.wrote(0, 100)
    assert not follower.finish(100)  # still in memory: stored whole
    follower.close()
    assert open_fds() == before


# -- through a real mount ---------------------------------------------------------------


def cid_of(repo: Path, path: str) -> str:
    stat: dict[str, object] = json.loads(run_cas("stat", "--json", path, repo=repo).stdout)
    return str(stat["cid"])


def cid_added(repo: Path, local: Path) -> str:
    return run_cas("add", "-q", str(local), "--to", f"/added-{local.name}", repo=repo).stdout.decode().strip()


def reads_as_added(repo: Path, mnt: Path, tmp_path: Path, model: bytes) -> None:
    """The mount's ``/big`` reads as ``model`` and has the CID ``cas add`` gives it."""
    assert (mnt / "big").read_bytes() == model
    local = tmp_path / "model"
    local.write_bytes(model)
    assert cid_of(repo, "/big") == cid_added(repo, local)


@pytest.mark.fuse
def test_a_large_file_written_in_order_through_the_mount_gets_the_cid_cas_add_gives(
        tmp_path: Path, repo: Path) -> None:
    local = tmp_path / "local"
    local.write_bytes(content(24 * MIB + 777, 7))
    with mounted(repo, tmp_path / "mnt") as mnt:
        subprocess.run(["dd", f"if={local}", f"of={mnt / 'big'}", "bs=1M", "conv=fsync", "status=none"],
                       check=True, timeout=120)
        assert (mnt / "big").read_bytes() == local.read_bytes()
        assert cid_of(repo, "/big") == cid_added(repo, local)
    run_cas("repo", "verify", repo=repo)


@pytest.mark.fuse
def test_a_large_file_written_with_o_direct_gets_the_cid_cas_add_gives(tmp_path: Path, repo: Path) -> None:
    # O_DIRECT skips the kernel's page cache (docs/mount.md, Limits): each
    # write reaches the mount as it is made, is followed as it comes, and an
    # overwrite behind the end has the file stored whole. Same CID as an add.
    local = tmp_path / "local"
    local.write_bytes(content(12 * MIB + 777, 13))
    with mounted(repo, tmp_path / "mnt") as mnt:
        subprocess.run(["dd", f"if={local}", f"of={mnt / 'big'}", "bs=1M", "oflag=direct", "conv=fsync",
                        "status=none"], check=True, timeout=120)
        reads_as_added(repo, mnt, tmp_path, local.read_bytes())
        model = bytearray(local.read_bytes())
        model[2 * MIB: 3 * MIB] = b"z" * MIB
        buf = mmap.mmap(-1, MIB)  # page-aligned, as O_DIRECT asks
        buf[:] = model[2 * MIB: 3 * MIB]
        fd = os.open(mnt / "big", os.O_WRONLY | os.O_DIRECT)
        try:
            assert os.pwrite(fd, buf, 2 * MIB) == MIB
            os.fsync(fd)
        finally:
            os.close(fd)
        reads_as_added(repo, mnt, tmp_path, bytes(model))
    run_cas("repo", "verify", repo=repo)


@pytest.mark.fuse
def test_a_large_file_synced_as_it_is_written_gets_the_cid_cas_add_gives(tmp_path: Path, repo: Path) -> None:
    # Each fsync stores the file (its follower ends there; the next write
    # starts one where it left off); an overwrite behind the end in between
    # has the rest stored whole. Whatever the path, the same CID as an add.
    model = bytearray(content(20 * MIB + 333, 12))
    with mounted(repo, tmp_path / "mnt") as mnt:
        fd = os.open(mnt / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for at in range(0, len(model), 700 * 1024):
                os.pwrite(fd, model[at: at + 700 * 1024], at)
                if at // (700 * 1024) % 4 == 3:
                    os.fsync(fd)
                if at == 700 * 1024 * 19:
                    model[MIB: MIB + 4096] = b"y" * 4096
                    os.pwrite(fd, model[MIB: MIB + 4096], MIB)
                    os.fsync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        reads_as_added(repo, mnt, tmp_path, bytes(model))
    run_cas("repo", "verify", repo=repo)


@pytest.mark.fuse
def test_a_large_file_rewritten_behind_its_end_while_written_keeps_every_write(tmp_path: Path, repo: Path) -> None:
    model = bytearray(content(16 * MIB, 8))
    with mounted(repo, tmp_path / "mnt") as mnt:
        fd = os.open(mnt / "big", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, model[: 8 * MIB], 0)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the kernel sends what it holds
            model[MIB: 2 * MIB] = b"x" * MIB
            os.pwrite(fd, model[MIB: 2 * MIB], MIB)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.pwrite(fd, model[8 * MIB:], 8 * MIB)
            os.fsync(fd)
        finally:
            os.close(fd)
        reads_as_added(repo, mnt, tmp_path, bytes(model))
    run_cas("repo", "verify", repo=repo)


@pytest.mark.fuse
def test_gc_while_a_large_file_is_written_keeps_what_it_stored(tmp_path: Path, repo: Path) -> None:
    data = content(32 * MIB, 9)
    with mounted(repo, tmp_path / "mnt") as mnt:
        fd = os.open(mnt / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for at in range(0, len(data), 8 * MIB):
                os.pwrite(fd, data[at: at + 8 * MIB], at)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                run_cas("gc", repo=repo)  # through the mount's node, as a user's would go
        finally:
            os.close(fd)
        (mnt / "small").write_bytes(b"a later change, committed with the file")
        os.sync()
        run_cas("gc", repo=repo)
        assert (mnt / "big").read_bytes() == data
    run_cas("repo", "verify", repo=repo)
    assert run_cas("cat", "/big", repo=repo).stdout == data
