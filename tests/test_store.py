"""The local repository: blocks on disk, the lock, pins, verify."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cas.blocks import Block
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import (
    BlockNotFoundError,
    InvalidBlockError,
    RepositoryError,
    RepositoryLockedError,
)
from cas.names.directory import DirEntry, encode_leaf
from cas.store import SMALL_BLOCK_LIMIT, LocalStore
from tests.conftest import (
    Holder,
    make_world_readable,
    not_private,
    pseudo_random,
    read_line,
)


def big(seed: str) -> Block:
    """A block large enough to live in a pack file."""
    return Block.of(RAW, pseudo_random(SMALL_BLOCK_LIMIT + 100, seed=seed))


def flip_byte(store: LocalStore, cid: CID, index: int = 7) -> None:
    """Damage one byte of a large block where it lies on disk (bit rot)."""
    where = store.blocks.locate(cid)
    assert where is not None
    with open(where.path, "r+b") as f:
        f.seek(where.start + index)
        byte = f.read(1)
        f.seek(where.start + index)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.fixture
def store(tmp_path: Path):
    with LocalStore.open(tmp_path / "repo") as s:
        yield s


def test_a_put_block_reads_back_verified(store):
    block = Block.of(RAW, b"some bytes")
    assert store.blocks.put(block) is True
    assert store.blocks.put(block) is False  # idempotent
    assert store.blocks.has(block.cid)
    assert store.blocks.get(block.cid) == b"some bytes"
    assert list(store.blocks.iterate()) == [block.cid]


def test_a_missing_block_raises_not_found_naming_it(store):
    cid = CID.for_data(RAW, b"never stored")
    with pytest.raises(BlockNotFoundError, match=str(cid)):
        store.blocks.get(cid)


def test_large_blocks_are_in_packs_and_small_ones_are_not(store):
    small, large = Block.of(RAW, b"small"), big("large")
    store.blocks.put(small)
    store.blocks.put(large)
    store.blocks.barrier()
    where = store.blocks.locate(large.cid)
    assert where.path.parent == store.path / "packs" and where.length == len(large.data)
    with open(where.path, "rb") as f:
        f.seek(where.start)
        assert f.read(where.length) == large.data
    assert store.blocks.locate(small.cid) is None
    assert store.blocks.get(small.cid) == b"small"
    assert sorted(store.blocks.iterate()) == sorted([small.cid, large.cid])


def test_sizes_come_from_the_index_for_small_and_packed_blocks_in_batches(store):
    small, large = Block.of(RAW, b"small"), big("sized")
    many = [Block.of(RAW, b"%d" % i) for i in range(1200)]  # past one batch of the index's queries
    for block in (small, large, *many):
        store.blocks.put(block)
    missing = CID.for_data(RAW, b"never stored")
    store.blocks.barrier()
    store.blocks.delete(many[0].cid)
    sizes = store.blocks.sizes([small.cid, large.cid, missing, *(b.cid for b in many)])
    assert sizes[small.cid] == 5 and sizes[large.cid] == len(large.data)
    assert missing not in sizes and many[0].cid not in sizes
    assert all(sizes[b.cid] == len(b.data) for b in many[1:])
    assert len(sizes) == 2 + len(many) - 1


def test_get_file_block_reads_committed_blocks_from_any_thread_and_only_those(store):
    from concurrent.futures import ThreadPoolExecutor

    missing = big("never stored")
    small = [Block.of(RAW, f"small {i}".encode()) for i in range(4)]
    node = Block.of(DAG_CBOR, b"\xa1anb")  # a small node: in the database too
    large = [big(f"large {i}") for i in range(8)]
    for block in [*small, node, *large]:
        store.blocks.put(block)
    assert store.blocks.get_file_block(large[0].cid) is None  # not committed yet: ask get()
    assert store.blocks.get_file_block(small[0].cid) is None
    store.blocks.barrier()
    every = [*small, node, *large]
    with ThreadPoolExecutor(4) as pool:  # each thread reads the database through its own connection
        got = list(pool.map(store.blocks.get_file_block, [b.cid for b in every] * 4))
    assert got == [b.data for b in every] * 4
    assert store.blocks.get_file_block(missing.cid) is None
    flip_byte(store, large[0].cid)
    with pytest.raises(InvalidBlockError, match=str(large[0].cid)):
        store.blocks.get_file_block(large[0].cid)  # verified like every read
    store.db.execute("UPDATE small_blocks SET data = ? WHERE cid = ?", (b"small X", bytes(small[1].cid)))
    store.db.commit()
    with pytest.raises(InvalidBlockError, match=str(small[1].cid)):
        store.blocks.get_file_block(small[1].cid)


def test_committed_fetchers_look_up_in_batches_from_any_thread(store):
    from concurrent.futures import ThreadPoolExecutor

    small = Block.of(RAW, b"small")
    committed = [big(f"committed {i}") for i in range(5)]
    for block in [small, *committed]:
        store.blocks.put(block)
    store.blocks.barrier()
    pending = big("not committed yet")
    store.blocks.put(pending)
    cids = [small.cid, *(b.cid for b in committed), pending.cid]

    def fetch_all() -> list[bytes | None]:
        found = store.blocks.fetchers(cids, committed=True)
        out = [None if fetch is None else fetch() for fetch in found]
        store.blocks.release_thread()
        return out

    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(fetch_all).result()
    # Small blocks and uncommitted rows: None, ask get() (the owner's thread).
    assert got == [None, *(b.data for b in committed), None]


def test_a_thread_done_with_get_file_block_can_release_its_connection(store):
    from concurrent.futures import ThreadPoolExecutor

    block = big("released")
    store.blocks.put(block)
    store.blocks.barrier()
    readers = store.blocks.packs._readers  # the connections threads opened, closed at close()

    def read_then_release() -> None:
        assert store.blocks.get_file_block(block.cid) == block.data
        assert len(readers) == 1
        store.blocks.release_thread()
        assert readers == []
        assert store.blocks.get_file_block(block.cid) == block.data  # opens another if asked again
        store.blocks.release_thread()

    for _ in range(3):  # pooled threads come and go: connections do not pile up
        with ThreadPoolExecutor(1) as pool:  # a new thread each time
            pool.submit(read_then_release).result()
    assert readers == []
    store.blocks.release_thread()  # a thread that never read: nothing to do


def test_fetchers_look_up_now_and_read_verified_bytes_later_in_any_thread(store):
    from concurrent.futures import ThreadPoolExecutor

    small, missing = Block.of(RAW, b"small"), big("never stored")
    large = [big(f"fetched {i}") for i in range(6)]
    for block in [small, *large]:
        store.blocks.put(block)
    store.blocks.barrier()
    fetch = store.blocks.fetchers([small.cid, *[b.cid for b in large], missing.cid])
    assert fetch[0] is None and fetch[-1] is None  # not in a pack: ask get()
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda f: f(), fetch[1:-1] * 3)) == [b.data for b in large] * 3
    flip_byte(store, large[2].cid)
    with pytest.raises(InvalidBlockError, match=str(large[2].cid)):
        fetch[3]()  # verified like every read
    [gone] = store.blocks.fetchers([large[0].cid])
    os.unlink(store.blocks.locate(large[0].cid).path)
    assert gone() is None  # the pack went after the look-up: ask get()


def test_a_block_changed_on_disk_fails_its_read_and_nothing_else(store):
    good, bad = big("good"), big("will be damaged")
    store.blocks.put(good)
    store.blocks.put(bad)
    store.blocks.barrier()
    flip_byte(store, bad.cid)
    with pytest.raises(InvalidBlockError, match=str(bad.cid)):
        store.blocks.get(bad.cid)
    assert store.blocks.get(good.cid) == good.data
    report = store.verify()
    assert [p.cid for p in report.problems] == [str(bad.cid)]
    assert "corrupt" in report.problems[0].what


def test_a_small_block_changed_in_the_database_fails_its_read(store, tmp_path):
    block = Block.of(RAW, b"kept in sqlite")
    store.blocks.put(block)
    store.blocks.barrier()
    store.db.execute("UPDATE small_blocks SET data = ? WHERE cid = ?", (b"kept in sqlitE", bytes(block.cid)))
    store.db.commit()
    with pytest.raises(InvalidBlockError, match=str(block.cid)):
        store.blocks.get(block.cid)
    assert [p.cid for p in store.verify().problems] == [str(block.cid)]


@pytest.mark.parametrize("make", [lambda s: Block.of(RAW, s.encode()), big], ids=["small", "large"])
def test_delete_removes_only_that_block(store, make):
    a, b = make("a"), make("b")
    store.blocks.put(a)
    store.blocks.put(b)
    assert store.blocks.delete(a.cid) is True
    assert store.blocks.delete(a.cid) is False
    assert not store.blocks.has(a.cid) and store.blocks.has(b.cid)


def test_pins_are_kept_and_only_of_stored_blocks(store):
    block = Block.of(RAW, b"pinned")
    store.blocks.put(block)
    assert store.pin(block.cid) is True
    assert store.pin(block.cid) is False
    assert store.pins() == [block.cid]
    with pytest.raises(RepositoryError, match="not in the repository"):
        store.pin(CID.for_data(RAW, b"absent"))
    assert store.unpin(block.cid) is True
    assert store.pins() == []


def test_stat_counts_blocks_bytes_and_pins(store):
    for data in (b"x" * 10, b"y" * 20):
        store.blocks.put(Block.of(RAW, data))
    store.pin(CID.for_data(RAW, b"x" * 10))
    st = store.stat()
    assert (st.blocks, st.bytes, st.pinned) == (2, 30, 1)


def test_verify_reports_a_missing_child_and_a_missing_pin(store):
    child = big("child")
    entry = DirEntry("f", "file", len(child.data), 0o644, 0, cid=child.cid)
    parent = encode_leaf([entry])
    store.blocks.put(child)
    store.blocks.put(parent)
    store.pin(parent.cid)
    assert store.verify().ok
    store.blocks.delete(child.cid)  # lost behind the store's back (gc would never)
    store.blocks.barrier()
    problems = store.verify().problems
    assert [(p.cid, "linked from" in p.what) for p in problems] == [(str(child.cid), True)]
    store.blocks.delete(parent.cid)
    store.blocks.barrier()
    problems = store.verify().problems
    assert [(p.cid, p.what) for p in problems] == [(str(parent.cid), "missing, but pinned")]


def test_verify_reports_stray_files(store):
    stray = store.path / "packs" / "not-a-pack"
    stray.write_bytes(b"?")
    assert [p.what for p in store.verify().problems] == ["stray file in the pack directory"]


def test_leftover_temporary_files_are_removed_on_open(tmp_path):
    LocalStore.open(tmp_path / "repo").close()
    leftover = tmp_path / "repo" / "tmp" / "123-1.blk"
    leftover.write_bytes(b"half a block")
    with LocalStore.open(tmp_path / "repo"):
        assert not leftover.exists()
    (tmp_path / "repo" / "tmp" / "a-dir").mkdir()
    (tmp_path / "repo" / "tmp" / "a-dir" / "x").write_bytes(b"x")
    with LocalStore.open(tmp_path / "repo"):
        assert list((tmp_path / "repo" / "tmp").iterdir()) == []
    (tmp_path / "repo" / "tmp").rmdir()
    with LocalStore.open(tmp_path / "repo"):
        assert (tmp_path / "repo" / "tmp").is_dir()


def test_an_empty_temporary_directory_is_left_as_it_is_on_open(tmp_path):
    # Not removed and made again: a command that only reads writes no
    # directory entries of its own (SQLite's WAL files aside).
    LocalStore.open(tmp_path / "repo").close()
    tmp = tmp_path / "repo" / "tmp"
    before = (tmp.stat().st_ino, tmp.stat().st_mtime_ns)
    with LocalStore.open(tmp_path / "repo"):
        pass
    assert (tmp.stat().st_ino, tmp.stat().st_mtime_ns) == before


def test_a_second_owner_in_another_process_is_refused(tmp_path):
    repo = tmp_path / "repo"
    with LocalStore.open(repo):
        code = textwrap.dedent(
            f"""
            from cas.store import LocalStore
            from cas.errors import RepositoryLockedError
            try:
                LocalStore.open({str(repo)!r})
            except RepositoryLockedError as exc:
                print(exc)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             check=False)
    assert "is in use by process" in out.stdout, out.stderr
    assert str(os.getpid()) in out.stdout
    # Released with its owner:
    LocalStore.open(repo).close()


def test_a_second_owner_in_the_same_process_is_refused(tmp_path):
    with LocalStore.open(tmp_path / "repo"), pytest.raises(RepositoryLockedError):
        LocalStore.open(tmp_path / "repo")


def lock_descriptors() -> int:
    """How many of this process's descriptors are open on a repository lock file."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").endswith("/lock")
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return count


def test_a_waiting_open_gets_the_repository_once_its_owner_lets_go(tmp_path):
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    notes: list[str] = []
    with Holder(repo) as holder:

        def on_wait(text: str) -> None:  # told after a second: the owner may go now
            notes.append(text)
            holder.release()

        with LocalStore.open(repo, wait=60, on_wait=on_wait) as store:
            assert store.path == repo.absolute()
    assert len(notes) == 1 and notes[0].startswith(f"in use by process {holder.pid} (")


def test_a_waiting_open_gives_up_after_its_wait_naming_the_owner(tmp_path):
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    before = lock_descriptors()
    with Holder(repo) as holder:
        with pytest.raises(RepositoryLockedError) as info:
            LocalStore.open(repo, wait=0.2)
        message = str(info.value)
        assert f"is in use by process {holder.pid} (" in message and "0.2 s" in message
        assert info.value.holder.startswith(f"process {holder.pid} (")
        with pytest.raises(RepositoryLockedError, match=f"in use by process {holder.pid} .*try again$"):
            LocalStore.open(repo, wait=0)
        assert lock_descriptors() == before  # neither attempt kept its descriptor
    LocalStore.open(repo, wait=0).close()


def test_a_waiting_open_in_another_thread_polls_and_gets_the_repository(tmp_path):
    import threading

    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    got: list[object] = []
    with Holder(repo) as holder:

        def opener() -> None:
            with LocalStore.open(repo, wait=60, on_wait=lambda text: holder.release()) as store:
                got.append(store.path)

        thread = threading.Thread(target=opener)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert got == [repo.absolute()]


WAITER = textwrap.dedent(
    """
    import signal, sys
    from cas.store import LocalStore, _lock
    from cas.errors import RepositoryLockedError
    repo, wait = sys.argv[1], float(sys.argv[2])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started from a background job, which ignores it
    assert _lock._can_block()  # the main thread, SIGALRM unused: flock() under a timer
    try:
        with LocalStore.open(repo, wait=wait, on_wait=lambda text: print("waiting", text, flush=True)):
            print("opened", flush=True)
    except RepositoryLockedError as exc:
        print("refused", exc, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    fds = sum(1 for fd in __import__("os").listdir("/proc/self/fd")
              if __import__("os").path.realpath(f"/proc/self/fd/{fd}").endswith("/lock"))
    print("lock descriptors", fds)
    print("handler restored", signal.getsignal(signal.SIGALRM) is signal.SIG_DFL)
    print("timer stopped", signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    """
)


def start_waiter(repo: Path, wait: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WAITER, str(repo), str(wait)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def waiter_tail(proc: subprocess.Popen[str]) -> list[str]:
    out, err = proc.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[-3:] == ["lock descriptors 0", "handler restored True", "timer stopped True"], (out, err)
    return lines[:-3]


def test_the_main_thread_waits_in_flock_and_puts_sigalrm_back(tmp_path):
    repo = tmp_path / "repo"
    store = LocalStore.open(repo)
    waiter = start_waiter(repo, 60)
    try:
        line = read_line(waiter.stdout, timeout=30)  # after a second of waiting
        assert line.startswith(f"waiting in use by process {os.getpid()} ("), line
    finally:
        store.close()
    assert waiter_tail(waiter) == ["opened"]


def test_the_main_thread_gives_up_at_its_deadline_and_puts_sigalrm_back(tmp_path):
    repo = tmp_path / "repo"
    with LocalStore.open(repo):
        lines = waiter_tail(start_waiter(repo, 1.5))
    assert lines[0].startswith(f"waiting in use by process {os.getpid()} (")
    assert lines[1].startswith(f"refused repository {repo.absolute()} is in use by process {os.getpid()} (")
    assert len(lines) == 2


def test_an_interrupted_wait_leaves_no_descriptor_and_puts_sigalrm_back(tmp_path):
    import signal

    repo = tmp_path / "repo"
    with LocalStore.open(repo):
        waiter = start_waiter(repo, 60)
        assert read_line(waiter.stdout, timeout=30).startswith("waiting in use by process")
        waiter.send_signal(signal.SIGINT)
        assert waiter_tail(waiter) == ["interrupted"]


def test_the_owner_is_always_named_while_owners_come_and_go(tmp_path):
    # The holder line is replaced in place, never emptied: a process refused
    # the lock at any moment reads a whole line naming the owner.
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    churn = textwrap.dedent(
        f"""
        import select, time
        from cas.errors import RepositoryLockedError
        from cas.store import LocalStore
        print("ready", flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not select.select([0], [], [], 0)[0]:  # until stdin closes
            try:
                LocalStore.open({str(repo)!r}).close()
            except RepositoryLockedError:
                pass  # the test process has it this moment
        """
    )
    opener = subprocess.Popen([sys.executable, "-c", churn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    messages: list[str] = []
    try:
        assert read_line(opener.stdout, timeout=30) == "ready\n"
        deadline = time.monotonic() + 30
        while len(messages) < 300 and time.monotonic() < deadline:
            try:
                LocalStore.open(repo, wait=0).close()
            except RepositoryLockedError as exc:
                messages.append(str(exc))
    finally:
        opener.stdin.close()
        opener.wait(timeout=60)
    assert len(messages) >= 50, "the two processes hardly met"
    unnamed = [m for m in messages if f"in use by process {opener.pid} (" not in m]
    assert unnamed == []


def test_a_non_empty_directory_is_not_made_into_a_repository(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file").write_text("mine")
    with pytest.raises(RepositoryError, match="not a cas repository"):
        LocalStore.open(tmp_path / "stuff")
    assert sorted(os.listdir(tmp_path / "stuff")) == ["file"]


def test_commands_started_together_on_a_new_repository_all_open_it(tmp_path):
    repo = tmp_path / "new"
    code = textwrap.dedent(f"""
        import sys
        from cas.store import LocalStore
        with LocalStore.open({str(repo)!r}, wait=30) as store:
            print(store.namespace_key().public_key.hex())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(8)]
    keys = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        keys.append(out.strip())
    assert len(set(keys)) == 1  # one repository, made once: one namespace key
    assert json.loads((repo / "config.json").read_text())["format"] == "cas-repository"


def test_an_init_cut_short_by_a_crash_is_completed(tmp_path):
    repo = tmp_path / "cut"
    with LocalStore.open(repo) as store:
        key = store.namespace_key().public_key
    for name in ("config.json", "meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"):
        (repo / name).unlink(missing_ok=True)  # as if killed before config.json, written last
    with LocalStore.open(repo) as store:
        assert store.namespace_key().public_key == key  # the key it had made is kept


def test_open_without_create_asks_for_init(tmp_path):
    with pytest.raises(RepositoryError, match="cas init"):
        LocalStore.open(tmp_path / "none", create=False)


def test_an_unknown_repository_version_is_refused(tmp_path):
    LocalStore.open(tmp_path / "repo").close()
    config = tmp_path / "repo" / "config.json"
    config.write_text(json.dumps({"format": "cas-repository", "version": 99}))
    with pytest.raises(RepositoryError, match="version 99"):
        LocalStore.open(tmp_path / "repo")


def test_directory_blocks_are_checked_by_codec_in_verify(store):
    bogus = Block.of(DAG_CBOR, b"\xa1\x01\x02")  # integer map key: not DAG-CBOR
    store.blocks.put(bogus)
    [problem] = store.verify().problems
    assert problem.cid == str(bogus.cid) and "malformed" in problem.what




def test_gc_keeps_pinned_and_session_blocks_and_frees_the_rest(store):
    kept, session_block, garbage = big("kept"), big("in flight"), big("garbage")
    small_garbage = Block.of(RAW, b"small garbage")
    for b in (kept, garbage, small_garbage):
        store.blocks.put(b)
    store.pin(kept.cid)
    with store.blocks.open_session() as session:
        session.put(session_block)
        report = store.gc()
        assert store.blocks.has(session_block.cid)
    assert (report.blocks_freed, report.bytes_freed) == (2, len(garbage.data) + len(small_garbage.data))
    assert store.blocks.has(kept.cid) and not store.blocks.has(garbage.cid)
    assert store.gc().blocks_freed == 1  # the session closed: its block is garbage now
    assert store.verify().ok


def test_grouped_roots_are_durable_together_at_the_end_of_the_group(store):
    import sqlite3

    root = encode_leaf([])
    store.blocks.put(root)
    committed = sqlite3.connect(store.path / "meta.sqlite")  # what another process sees
    try:
        def seen() -> list[int]:
            return [seq for (seq,) in committed.execute("SELECT seq FROM roots ORDER BY seq")]

        with store.grouped_roots():
            store.commit_root(1, root.cid, 1, b"one")
            store.commit_root(2, root.cid, 2, b"two")
            assert [r.seq for r in store.roots()] == [2, 1]  # the owner sees them at once
            assert seen() == []  # nobody else yet: not durable
        assert seen() == [1, 2]
        store.commit_root(3, root.cid, 3, b"three")  # outside a group, durable on return
        assert seen() == [1, 2, 3]
    finally:
        committed.close()


# -- who may read it: the owner only (issue 14, _modes.py) ----------------------


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_a_new_repository_is_private_whatever_the_umask(tmp_path, umask):
    repo = tmp_path / "repo"
    # In a process of its own with that umask; what is looked at while the
    # repository is open includes SQLite's -wal and -shm files.
    code = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        import cas
        from tests.conftest import not_private
        repo = cas.open_repository({str(repo)!r})
        repo.mkdir("/docs")
        repo.add_bytes(os.urandom(300_000), to="/docs/big")
        print(json.dumps([sorted(os.listdir({str(repo)!r})), not_private(Path({str(repo)!r}))]))
        repo.close()
    """)
    result = subprocess.run([sys.executable, "-c", code], umask=umask, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    names, loose_while_open = json.loads(result.stdout)
    assert {"meta.sqlite-wal", "meta.sqlite-shm", "packs", "keys", "lock", "config.json"} <= set(names)
    assert loose_while_open == []
    assert not_private(repo) == []
    assert os.listdir(repo / "packs") and os.listdir(repo / "keys")  # the walk saw a pack and a key
    assert result.stderr == ""


def test_opening_makes_an_older_repository_private_once_and_says_so(tmp_path, capsys):
    repo = tmp_path / "repo"
    with LocalStore.open(repo) as s:
        s.blocks.put(big("older"))
        s.blocks.barrier()
        s.namespace_key()
    make_world_readable(repo)
    assert not_private(repo) != []
    LocalStore.open(repo).close()
    err = capsys.readouterr().err
    assert f"repository {repo} was open to other users" in err
    assert f"the key {repo / 'keys' / 'namespace.key'} was readable by other users" in err
    assert not_private(repo) == []
    LocalStore.open(repo).close()
    assert capsys.readouterr().err == ""  # nothing left to change: not a word


def test_tightening_never_loosens_a_mode_nor_follows_a_link_out(tmp_path, capsys):
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    outside = tmp_path / "outside.txt"
    outside.write_text("not the repository's")
    outside.chmod(0o644)
    (repo / "notes").symlink_to(outside)
    (repo / "packs" / "elsewhere").symlink_to(outside)
    key = repo / "keys" / "namespace.key"
    key.chmod(0o400)
    LocalStore.open(repo).close()
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert capsys.readouterr().err == ""


def test_a_chmod_refused_is_named_and_the_open_goes_on(tmp_path, capsys, monkeypatch):
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    log = repo / "mount.log"
    log.write_text("someone else's\n")
    log.chmod(0o644)
    real_chmod = os.chmod

    def chmod(path, mode, **kw):
        if os.fspath(path) == str(log):  # as for a file another user owns
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_chmod(path, mode, **kw)

    monkeypatch.setattr(os, "chmod", chmod)
    with LocalStore.open(repo) as s:
        s.blocks.put(Block.of(RAW, b"still works"))
        s.blocks.barrier()
    err = capsys.readouterr().err
    assert f"cas: warning: {log} stays open to other users (mode 0644): Operation not permitted" in err
    assert f"chmod go-rwx {log}" in err
    assert not_private(repo) == ["mount.log 0644"]
