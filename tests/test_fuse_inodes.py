"""The mount's bookkeeping as plain objects: inode table, block cache and
fetcher, staging."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from cas.fuse.handles import BlockCache, BlockFetcher, Staging, read_walk
from cas.fuse.inodes import ROOT_INODE, InodeTable

from cas import files
from cas.blocks import Block
from cas.cid import RAW
from cas.reader import FileWalk, NeedBlock, PathCache
from cas.store import SMALL_BLOCK_LIMIT, LocalStore
from tests.conftest import pseudo_random


def test_same_name_gives_the_same_inode_and_counts_lookups() -> None:
    table = InodeTable()
    a = table.lookup(ROOT_INODE, "a", "dir")
    assert table.lookup(ROOT_INODE, "a", "dir") is a
    assert a.lookups == 2
    assert table.path_of(a.ino) == "/a"


def test_forget_drops_an_inode_only_when_nothing_refers_to_it() -> None:
    table = InodeTable()
    d = table.lookup(ROOT_INODE, "d", "dir")
    f = table.lookup(d.ino, "f", "file")
    table.forget(d.ino, 1)
    assert table.get(d.ino) is d  # its child keeps it
    table.opened(f.ino)
    table.forget(f.ino, 1)
    assert table.get(f.ino) is f  # open
    table.released(f.ino)
    assert len(table) == 1  # f, then d, dropped; the root stays
    assert table.find(ROOT_INODE, "d") is None


def test_rename_of_a_directory_moves_every_inode_below_it() -> None:
    table = InodeTable()
    d = table.lookup(ROOT_INODE, "d", "dir")
    e = table.lookup(ROOT_INODE, "e", "dir")
    f = table.lookup(d.ino, "f", "file")
    table.rename(ROOT_INODE, "d", e.ino, "moved")
    assert table.path_of(f.ino) == "/e/moved/f"


def test_rename_over_a_name_detaches_the_old_inode() -> None:
    table = InodeTable()
    a = table.lookup(ROOT_INODE, "a", "file")
    b = table.lookup(ROOT_INODE, "b", "file")
    table.opened(b.ino)
    table.rename(ROOT_INODE, "a", ROOT_INODE, "b")
    assert table.path_of(a.ino) == "/b"
    assert table.path_of(b.ino) is None  # still open, but nameless
    assert table.find(ROOT_INODE, "b") is a


def test_unlinked_open_file_has_no_path_and_goes_on_release() -> None:
    table = InodeTable()
    f = table.lookup(ROOT_INODE, "f", "file")
    table.opened(f.ino)
    table.detach(ROOT_INODE, "f")
    table.forget(f.ino, 1)
    assert table.path_of(f.ino) is None
    table.released(f.ino)
    assert len(table) == 1


def test_a_kind_change_from_outside_makes_a_new_inode() -> None:
    table = InodeTable()
    f = table.lookup(ROOT_INODE, "x", "file")
    d = table.lookup(ROOT_INODE, "x", "dir")
    assert d is not f and table.path_of(f.ino) is None


def test_block_cache_is_bounded_and_a_walk_over_it_asks_for_what_is_missing() -> None:
    cache = BlockCache(max_bytes=100)
    blocks = [Block.of(RAW, bytes([i]) * 40) for i in range(3)]
    for block in blocks:
        cache.put(block.cid, block.data)
    assert cache.statistics()["bytes"] == 80
    assert cache.get(blocks[0].cid) is None  # least recently used went first
    assert cache.get(blocks[2].cid) == blocks[2].data
    walk = FileWalk(blocks[0].cid)  # a one-block file the cache dropped: the walk says so
    event = walk.next_event()
    assert event == NeedBlock(blocks[0].cid)


def test_staging_writes_anywhere_and_reads_back(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    staging.fill([b"hello ", b"world"])
    staging.write(6, b"W")
    staging.write(20, b"!")  # past the end: a hole of zeros
    assert staging.size == 21
    assert staging.read(0, 100) == b"hello World" + bytes(9) + b"!"
    staging.truncate(5)
    with staging.stream() as stream:
        assert stream.read() == b"hello"
    staging.close()
    assert list(tmp_path.iterdir()) == []  # anonymous from the start


def test_a_sequential_file_takes_disk_space_ahead_and_counts_only_what_it_holds(tmp_path: Path) -> None:
    staging = Staging(tmp_path)
    staging.sequential = True
    piece = pseudo_random(Staging.MEMORY_FILE, seed="ahead")
    for at in range(3):  # the first goes to memory, the second to disk
        staging.write(at * len(piece), piece)
    taken = os.fstat(staging.fd).st_blocks * 512
    assert taken >= Staging.ALLOCATE_AHEAD, "the appends' space was taken ahead of them"
    assert staging.blocks() * 512 == staging.size == 3 * len(piece), "st_blocks counts what the file holds"
    staging.give_back_ahead()
    assert os.fstat(staging.fd).st_blocks * 512 <= 3 * len(piece) + 64 * 1024, "the space ahead is free again"
    staging.write(staging.size, piece)
    assert os.fstat(staging.fd).st_blocks * 512 >= Staging.ALLOCATE_AHEAD, "and taken again by the next append"
    staging.truncate(len(piece))
    assert os.fstat(staging.fd).st_blocks * 512 <= 2 * len(piece), "a truncate frees what was taken ahead"
    assert staging.read(0, 2 * len(piece)) == piece
    staging.close()


def test_fetcher_reads_committed_blocks_in_threads_the_rest_in_the_store_thread(tmp_path: Path) -> None:
    with LocalStore.open(tmp_path / "repo") as store:
        data = pseudo_random(3 * 1024 * 1024, seed="fetch")
        added = files.add_bytes(store.blocks, data, fanout=2)
        store.blocks.barrier()
        leaves = list(files.file_leaves(store.blocks, added.cid))
        fresh = files.add_bytes(store.blocks, b"put since the last barrier")  # one small block, uncommitted
        from_files: list[object] = []
        in_store: list[object] = []

        class Blocks:  # the repository's store, watched
            def get_file_block(self, cid):
                from_files.append(cid)
                return store.blocks.get_file_block(cid)

            def get(self, cid):
                in_store.append(cid)
                return store.blocks.get(cid)

        async def run_in_store(fn, *args):  # stands in for Node.in_store_thread
            return await trio.to_thread.run_sync(fn, *args)

        async def main() -> bytes:
            fetcher = BlockFetcher(BlockCache(), Blocks(), run_in_store)
            async with trio.open_nursery() as nursery:  # several wanting one block at once
                for _ in range(3):
                    nursery.start_soon(fetcher.get, leaves[0].cid)
            path = PathCache()
            first = b"".join(await read_walk(FileWalk(added.cid, path=path), fetcher))
            fetched = len(from_files) + len(in_store)
            again = b"".join(await read_walk(FileWalk(added.cid, path=path), fetcher))
            assert len(from_files) + len(in_store) == fetched  # all cached: nothing read again
            assert not in_store  # every block of it committed: none needed the store thread
            assert b"".join(await read_walk(FileWalk(fresh.cid, path=PathCache()), fetcher)) == \
                b"put since the last barrier"
            return first if again == first else b""

        assert trio.run(main) == data
        assert from_files.count(leaves[0].cid) == 1  # fetched once
        large = {s.cid for s in leaves if s.size >= SMALL_BLOCK_LIMIT}
        assert large and large <= set(from_files)
        assert set(from_files) - large, "the file's nodes (small blocks, in the database) too"
        assert in_store == [fresh.cid]  # not committed: read by the store's owner
