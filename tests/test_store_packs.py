"""Large blocks in append-only pack files: layout, the ordering rule, crash
recovery, compaction, readers in other threads, and the migration from one
file per block."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import cas
from cas.blocks import Block
from cas.cid import CID, DAG_CBOR, RAW
from cas.errors import InvalidBlockError, RepositoryError
from cas.store import SMALL_BLOCK_LIMIT, LocalStore, _disk, _packs
from cas.store._database import SCHEMA_VERSION
from cas.store._packs import HEADER_SIZE, PACK_MAGIC, record_head
from tests.conftest import pseudo_random
from tests.formatsdoc import vectors

MiB = 1 << 20


def big(seed: str, size: int = SMALL_BLOCK_LIMIT + 100) -> Block:
    return Block.of(RAW, pseudo_random(size, seed=seed))


def pack_files(repo: Path) -> list[Path]:
    return sorted((repo / "packs").glob("*.pack"))


@pytest.fixture
def store(tmp_path: Path):
    with LocalStore.open(tmp_path / "repo") as s:
        yield s


def test_large_blocks_are_appended_in_order_as_self_describing_records(store):
    blocks = [big(f"leaf {i}") for i in range(5)]
    for block in blocks:
        assert store.blocks.put(block) is True
    assert store.blocks.put(blocks[0]) is False  # stored once
    store.blocks.barrier()
    [pack] = pack_files(store.path)
    raw = pack.read_bytes()
    expected = PACK_MAGIC + b"".join(record_head(bytes(b.cid), len(b.data)) + b.data for b in blocks)
    assert raw == expected  # contiguous, in put order: a file's leaves read sequentially
    for block in blocks:
        assert store.blocks.get(block.cid) == block.data


def test_a_full_pack_is_closed_and_the_next_one_started(store):
    store.blocks.packs.pack_limit = 3 * (SMALL_BLOCK_LIMIT + 200)
    blocks = [big(f"roll {i}") for i in range(7)]
    for block in blocks:
        store.blocks.put(block)
    store.blocks.barrier()
    assert [p.name for p in pack_files(store.path)] == ["00000001.pack", "00000002.pack", "00000003.pack"]
    assert [store.blocks.locate(b.cid).pack for b in blocks] == [1, 1, 1, 2, 2, 2, 3]
    assert all(store.blocks.get(b.cid) == b.data for b in blocks)
    assert store.verify().ok


def test_the_active_pack_takes_disk_space_ahead_and_gives_it_back_when_closed(tmp_path):
    def on_disk(pack: Path) -> int:
        return pack.stat().st_blocks * 512

    with LocalStore.open(tmp_path / "repo") as store:
        store.blocks.packs.pack_limit = 4 * MiB
        for i in range(3):
            store.blocks.put(big(f"ahead {i}", MiB))
        store.blocks.barrier()
        [first] = pack_files(store.path)
        assert on_disk(first) >= _packs.ALLOCATE_AHEAD, "the appends' space was taken ahead of them"
        assert first.stat().st_size < 4 * MiB, "and the pack's size is what it holds"
        for i in range(3, 6):  # past the limit: the next pack
            store.blocks.put(big(f"ahead {i}", MiB))
        store.blocks.barrier()
        first, second = pack_files(store.path)
        assert on_disk(first) <= first.stat().st_size + 64 * 1024, "a closed pack gave its space back"
        assert on_disk(second) >= _packs.ALLOCATE_AHEAD
    assert on_disk(second) <= second.stat().st_size + 64 * 1024, "so did the active one, when the store closed"
    with LocalStore.open(tmp_path / "repo") as store:
        assert store.verify().ok


def test_barrier_fsyncs_the_pack_before_the_rows_that_point_into_it_commit(store, monkeypatch):
    events: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        events.append("fsync pack" if os.readlink(f"/proc/self/fd/{fd}").endswith(".pack") else "fsync")
        real_fsync(fd)

    monkeypatch.setattr(_packs.os, "fsync", fsync)
    store.db._conn.set_trace_callback(lambda sql: events.append("commit") if sql == "COMMIT" else None)
    leaf = big("leaf")
    store.blocks.put(leaf)
    node = Block.of(DAG_CBOR, b"\xa0")  # a small node, as if linking to the leaf
    store.blocks.put(node)
    assert events == []  # group commit: nothing is synced per block
    store.pin(node.cid)
    assert events == ["fsync pack", "commit"]
    events.clear()
    store.blocks.put(big("another"))
    store.db.commit()  # whoever commits, the bytes go first
    assert events == ["fsync pack", "commit"]
    events.clear()
    store.blocks.barrier()
    assert events == []  # nothing new: no fsync, no commit


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from cas.blocks import Block
    from cas.cid import RAW
    from cas.store import LocalStore
    from tests.conftest import pseudo_random

    store = LocalStore.open(sys.argv[1])
    for i in range(3):
        store.blocks.put(Block.of(RAW, pseudo_random(100_000, seed=f"committed {i}")))
    store.blocks.barrier()
    for i in range(3):
        store.blocks.put(Block.of(RAW, pseudo_random(100_000, seed=f"lost {i}")))
    store.blocks.packs.sync()  # the bytes even reach the disk; their rows never do
    print(os.path.getsize(store.blocks.locate(Block.of(RAW, pseudo_random(100_000, seed="lost 2")).cid).path))
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_crash_leaves_an_unindexed_tail_that_the_next_open_cuts_off(tmp_path):
    repo = tmp_path / "repo"
    LocalStore.open(repo).close()
    done = subprocess.run([sys.executable, "-c", CRASHER, str(repo)], capture_output=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == -9, done.stderr
    [pack] = pack_files(repo)
    assert pack.stat().st_size == int(done.stdout) > HEADER_SIZE + 6 * 100_000
    with LocalStore.open(repo) as store:
        committed = [Block.of(RAW, pseudo_random(100_000, seed=f"committed {i}")) for i in range(3)]
        lost = [Block.of(RAW, pseudo_random(100_000, seed=f"lost {i}")) for i in range(3)]
        assert all(store.blocks.get(b.cid) == b.data for b in committed)
        assert not any(store.blocks.has(b.cid) for b in lost)
        last = store.blocks.locate(committed[-1].cid)
        assert pack.stat().st_size == last.start + last.length  # the tail is gone
        assert store.verify().ok
        store.blocks.put(lost[0])  # appends where the tail was
        store.blocks.barrier()
        assert store.blocks.locate(lost[0].cid).start == last.start + last.length + len(record_head(bytes(lost[0].cid), 0))
        assert store.verify().ok


def test_compaction_keeps_every_live_block_and_frees_the_dead_space(tmp_path):
    repo = tmp_path / "repo"
    with cas.open_repository(repo) as lib:
        lib._store.blocks.packs.pack_limit = 4 * MiB
        kept = [lib.add_bytes(pseudo_random(3 * MiB, seed=f"kept {i}")) for i in range(3)]
        dropped = [lib.add_bytes(pseudo_random(3 * MiB, seed=f"dropped {i}")) for i in range(4)]
        before = lib.repo_stat()
        for cid in dropped:
            lib.unpin(cid)
        report = lib.gc()
        after = lib.repo_stat()
        assert report.compaction.packs_removed >= 3
        assert report.compaction.bytes_freed - report.compaction.bytes_moved >= 10 * MiB
        assert after.pack_bytes <= before.pack_bytes - 10 * MiB
        assert after.pack_bytes < after.bytes + 4 * MiB  # little dead space left
        for i, cid in enumerate(kept):
            assert lib.read(cid) == pseudo_random(3 * MiB, seed=f"kept {i}")
        assert lib.verify().ok
        assert lib.gc().compaction.packs_removed == 0  # nothing more to do
    with cas.open_repository(repo) as lib:  # and all of it durable
        assert lib.verify().ok
        assert lib.read(kept[1]) == pseudo_random(3 * MiB, seed="kept 1")


def test_a_pack_no_row_points_into_is_removed_on_open(tmp_path):
    """What a crash between compaction's commit and its unlink leaves."""
    repo = tmp_path / "repo"
    with cas.open_repository(repo) as lib:
        cid = lib.add_bytes(pseudo_random(2 * MiB, seed="moved"))
        old = pack_files(repo)[0]
        saved = old.read_bytes()
        lib.unpin(lib.add_bytes(pseudo_random(4 * MiB, seed="garbage")))
        assert lib.gc().compaction.packs_removed == 1
    assert not old.exists()
    old.write_bytes(saved)  # as if the unlink had not happened
    with cas.open_repository(repo) as lib:
        assert not old.exists()
        assert lib.read(cid) == pseudo_random(2 * MiB, seed="moved")
        assert lib.verify().ok


def test_threads_read_committed_blocks_while_the_owner_writes_and_compacts(store):
    store.blocks.packs.pack_limit = 2 * MiB
    committed: list[Block] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    reads = [0, 0]  # answered, None (uncommitted or moved: the caller asks get())

    def reader(seed: int) -> None:
        i = seed
        try:
            while not stop.is_set() or i < seed + 50:
                with lock:
                    if not committed:
                        continue
                    block = committed[i % len(committed)]
                i += 7
                got = store.blocks.get_file_block(block.cid)
                reads[got is None] += 1
                assert got is None or got == block.data
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for round_ in range(6):
            blocks = [big(f"round {round_} block {i}", 200_000) for i in range(12)]
            for block in blocks:
                store.blocks.put(block)
            store.blocks.barrier()
            with lock:
                committed.extend(blocks)
            garbage = committed[: len(committed) // 2 : 2]
            for block in garbage:
                store.blocks.delete(block.cid)  # gc's part ...
            store.blocks.barrier()
            with lock:
                committed[:] = [b for b in committed if b not in garbage]
            store.blocks.packs.compact()  # ... then the packs rewritten under the readers
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert reads[0] > 0
    assert all(store.blocks.get(b.cid) == b.data for b in committed)
    assert store.verify().ok


def test_verify_names_a_damaged_block_and_a_damaged_record_header(store):
    a, b, c = big("a"), big("b"), big("c")
    for block in (a, b, c):
        store.blocks.put(block)
    store.blocks.barrier()
    where = store.blocks.locate(b.cid)
    with open(where.path, "r+b") as f:
        f.seek(where.start + 10)
        f.write(bytes([b.data[10] ^ 1]))
    with pytest.raises(InvalidBlockError, match=f"{b.cid}.*offset {where.start}"):
        store.blocks.get(b.cid)
    assert [(p.cid, p.what) for p in store.verify().problems] == [
        (str(b.cid), "corrupt: content does not match its hash")
    ]
    head_at = store.blocks.locate(c.cid).start - len(record_head(bytes(c.cid), 0))
    with open(where.path, "r+b") as f:
        f.seek(head_at)
        f.write(b"XXXX")  # the record's magic
    problems = store.verify().problems
    assert (f"{where.path} at offset {head_at}", "damaged record header") in [(p.cid, p.what) for p in problems]
    assert store.blocks.get(c.cid) == c.data  # its bytes are intact, found through the index


def make_v3(repo: Path) -> None:
    """Turn a repository into the layout of schema version 3: each large
    block one file ``blocks/XX/CID``, no packs, no pack index."""
    with LocalStore.open(repo) as store:
        large = list(store.blocks.packs.iterate())
        contents = {cid: store.blocks.get(cid) for cid in large}
    for shard in range(256):
        (repo / "blocks" / f"{shard:02x}").mkdir(parents=True)
    for cid, data in contents.items():
        (repo / "blocks" / cid.digest[:1].hex() / cid.encode()).write_bytes(data)
    for pack in pack_files(repo):
        pack.unlink()
    (repo / "packs").rmdir()
    db = sqlite3.connect(repo / "meta.sqlite")
    db.execute("DROP TABLE pack_blocks")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()


def test_a_repository_of_block_files_is_moved_into_packs_on_open(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    files = {f"f{i}": pseudo_random(i * 700_000 + 5, seed=f"v3 {i}") for i in range(5)}
    with cas.open_repository(repo) as lib:
        for name, data in files.items():
            lib.add_bytes(data, to=f"/{name}")
        blocks_before = lib.repo_stat().blocks
    make_v3(repo)
    old_files = sorted((repo / "blocks").rglob("bafk*"))
    assert len(old_files) > 10
    damaged = old_files[3]
    damaged.write_bytes(b"\x00" + damaged.read_bytes()[1:])  # bit rot from before the upgrade

    # A first open dies after its first batch: those files are gone, their rows committed.
    monkeypatch.setattr(_packs, "MIGRATE_BATCH", 1)
    calls = 0
    real_unlink = os.unlink

    def unlink_then_die(path):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt  # the process dies here
        real_unlink(path)

    monkeypatch.setattr(_packs.os, "unlink", unlink_then_die)
    with pytest.raises(KeyboardInterrupt):
        LocalStore.open(repo)
    monkeypatch.setattr(_packs.os, "unlink", real_unlink)
    assert sum(1 for _ in (repo / "blocks").rglob("bafk*")) == len(old_files) - 1

    with cas.open_repository(repo) as lib:  # the next open finishes the move
        assert not (repo / "blocks").exists()
        assert lib.repo_stat().blocks == blocks_before
        problems = lib.verify().problems
        assert [(p.cid, p.what) for p in problems] == [(damaged.name, "corrupt: content does not match its hash")]
        for name, data in files.items():
            if name != "f0":
                try:
                    assert lib.read(f"/{name}") == data
                except InvalidBlockError as exc:
                    assert damaged.name in str(exc)
        assert lib.read("/f0") == files["f0"]  # small: it was in SQLite all along
    db = sqlite3.connect(repo / "meta.sqlite")
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


@pytest.mark.parametrize("vector", vectors("pack-record"), ids=lambda v: v["cid"][:12])
def test_pack_records_match_the_published_vectors(vector, store):
    data = bytes.fromhex(vector["data_hex"])
    cid = CID.parse(vector["cid"])
    assert record_head(bytes(cid), len(data)) + data == bytes.fromhex(vector["record_hex"])
    store.blocks.packs.put(Block(cid, data))  # as a pack holds it, whatever its size
    store.blocks.barrier()
    raw = pack_files(store.path)[0].read_bytes()
    assert raw == PACK_MAGIC + bytes.fromhex(vector["record_hex"])


COMPACT_CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    import cas

    # Die at the Nth disk step of gc and its compaction (every fsync, unlink,
    # truncate and append), as kill -9 would.
    kill_at, steps = int(sys.argv[2]), [0]

    def step(real):
        def wrapped(*args):
            steps[0] += 1
            if steps[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)
        return wrapped

    with cas.open_repository(sys.argv[1]) as lib:
        lib._store.blocks.packs.pack_limit = 3 << 20
        for name in ("fsync", "unlink", "ftruncate", "pwritev"):
            setattr(os, name, step(getattr(os, name)))
        lib.gc()
    print(steps[0])
    """
)


def test_kill_9_at_every_step_of_gc_and_compaction_loses_no_live_block(tmp_path):
    repo = tmp_path / "repo"
    kept = {f"kept {i}": pseudo_random(1_500_000, seed=f"kept {i}") for i in range(4)}
    with cas.open_repository(repo) as lib:
        lib._store.blocks.packs.pack_limit = 3 << 20
        cids = {}
        for i, (name, data) in enumerate(kept.items()):
            cids[name] = lib.add_bytes(data)
            lib.unpin(lib.add_bytes(pseudo_random(1_500_000, seed=f"garbage {i}")))
        bytes_before = lib.repo_stat().pack_bytes
    pristine = tmp_path / "pristine"
    subprocess.run(["cp", "-a", str(repo), str(pristine)], check=True)
    kill_at, finished = 1, False
    while not finished:
        subprocess.run(["rm", "-rf", str(repo)], check=True)
        subprocess.run(["cp", "-a", str(pristine), str(repo)], check=True)
        done = subprocess.run(
            [sys.executable, "-c", COMPACT_CRASHER, str(repo), str(kill_at)],
            capture_output=True, cwd=Path(__file__).parent.parent,
        )
        finished = done.returncode == 0
        assert finished or done.returncode == -9, done.stderr
        with cas.open_repository(repo) as lib:
            report = lib.verify()
            assert report.ok, (kill_at, report.problems)
            for name, data in kept.items():
                assert lib.read(cids[name]) == data, kill_at
            pack_bytes = lib.repo_stat().pack_bytes
        kill_at += 1
    assert kill_at > 10, kill_at  # gc and compaction took that many steps, each one a crash point
    assert pack_bytes < bytes_before - 3_000_000  # and the run that finished freed space


def test_a_failed_pack_fsync_rolls_back_the_rows_that_would_point_at_the_bytes(store, monkeypatch):
    kept = big("before")
    store.blocks.put(kept)
    store.blocks.barrier()
    lost = big("lost")
    store.blocks.put(lost)

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_packs.os, "fsync", failing_fsync)
    with pytest.raises(RepositoryError, match="I/O error while syncing a pack file"):
        store.blocks.barrier()
    monkeypatch.undo()
    assert not store.blocks.has(lost.cid)  # never indexed: its bytes may not be on disk
    assert store.blocks.get(kept.cid) == kept.data
    store.blocks.put(lost)  # tried again, it is appended anew
    store.blocks.barrier()
    assert store.blocks.get(lost.cid) == lost.data
    assert store.verify().ok


def test_write_out_starts_while_an_add_appends_not_only_at_the_commit(store, monkeypatch):
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(_packs, "start_writeback", lambda fd, start, length: started.append((start, length)))
    monkeypatch.setattr(_packs, "WRITE_BEHIND", 1 << 20)
    for i in range(40):  # ~2.6 MiB
        store.blocks.put(big(f"behind {i}"))
    assert [start for start, _ in started] == [HEADER_SIZE, started[0][0] + started[0][1]]
    assert all(length >= 1 << 20 for _, length in started)
    assert _disk.libc("sync_file_range") is not None  # on Linux the hint is real
    _packs.start_writeback(store.blocks.packs._fd, 0, 1 << 20)  # and harmless


def test_prefetch_hints_only_where_reads_jump_and_looks_up_single_blocks_in_batches(store, monkeypatch):
    store.blocks.packs.pack_limit = 1 << 20  # 15 of these blocks to a pack
    blocks = [big(f"ahead {i}") for i in range(40)]
    for block in blocks:
        store.blocks.put(block)
    store.blocks.barrier()
    packs = [store.blocks.locate(b.cid).pack for b in blocks]
    assert packs[0] == 1 and packs[15] == 2 and packs[14] == 1
    hints: list[tuple[str, int, int]] = []
    monkeypatch.setattr(_packs.os, "posix_fadvise", lambda fd, start, length, advice: hints.append(
        (os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), start, length)))
    first = store.blocks.locate(blocks[0].cid)
    store.blocks.prefetch([b.cid for b in blocks[:8]])  # a reader's first plan: the start of a file
    eighth = store.blocks.locate(blocks[7].cid)
    assert hints == [("00000001.pack", first.start, eighth.start + eighth.length - first.start)]
    for block in blocks[8:23]:  # then one block at a time, 15 of them: not looked up yet
        store.blocks.prefetch([block.cid])
    assert len(hints) == 1
    store.blocks.prefetch([blocks[23].cid])  # the 16th: looked up with the others
    # Blocks 8-14 continue the read in pack 1 (the kernel reads ahead by
    # itself); 15-23 are a jump to pack 2: one hint for them.
    jump, last = store.blocks.locate(blocks[15].cid), store.blocks.locate(blocks[23].cid)
    assert hints[1:] == [("00000002.pack", jump.start, last.start + last.length - jump.start)]


def test_fetchers_leave_the_run_their_reader_starts_to_the_kernel_and_hint_jumps(store, monkeypatch):
    store.blocks.packs.pack_limit = 1 << 20  # 15 of these blocks to a pack
    blocks = [big(f"fetched {i}") for i in range(20)]
    for block in blocks:
        store.blocks.put(block)
    store.blocks.barrier()
    hints: list[tuple[str, int, int]] = []
    monkeypatch.setattr(_packs.os, "posix_fadvise", lambda fd, start, length, advice: hints.append(
        (os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), start, length)))
    fetch = store.blocks.packs.fetchers([b.cid for b in blocks])
    # Blocks 0-14 are the run the reader starts reading now, in pack 1: no
    # hint. 15-19 are a jump to pack 2: one hint for them.
    jump, last = store.blocks.locate(blocks[15].cid), store.blocks.locate(blocks[19].cid)
    assert hints == [("00000002.pack", jump.start, last.start + last.length - jump.start)]
    assert [f() for f in fetch] == [b.data for b in blocks]
