"""Long namespace histories, made fast: versions signed and committed
straight through the store in large groups (one transaction and one fsync
per group), instead of one ``cas`` command per version. Used by the tests of
history that scales (tests/test_history.py) and by ``bench/history.py``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from cas.blocks import Block
from cas.cid import CID, RAW
from cas.names import dirtree
from cas.names.directory import DirEntry
from cas.names.namespace import Namespace
from cas.names.record import RootRecord
from cas.store import LocalStore

GROUP = 5000
"""Versions committed per transaction."""


def add_versions(repo: Path, times_ns: Sequence[int], roots: Iterable[CID] | None = None) -> list[int]:
    """Commit one version per entry of ``times_ns`` (each at that time) on
    top of the repository's history, each a signed root record; the
    versions name the current root, or each the next of ``roots``. Returns
    their sequence numbers."""
    with LocalStore.open(repo) as store:
        key = store.namespace_key()
        current = Namespace(store).current()
        if current.seq == 0:  # a new namespace: its empty root directory is not stored yet
            dirtree.empty_directory(store.blocks)
        root_list = iter(roots) if roots is not None else None
        seq = current.seq
        made: list[int] = []
        for start in range(0, len(times_ns), GROUP):
            with store.grouped_roots():
                for time_ns in times_ns[start:start + GROUP]:
                    seq += 1
                    root = current.root if root_list is None else next(root_list)
                    record = RootRecord.sign(key, seq, root, time_ns)
                    store.commit_root(seq, root, time_ns, record.encode())
                    made.append(seq)
        return made


def big_directory(repo: Path, path: str, count: int) -> CID:
    """Link a directory of ``count`` empty-file entries at ``path`` (built in
    one go with the directory tree builder, then one namespace change)."""
    with LocalStore.open(repo) as store:
        blocks = store.blocks
        content = Block.of(RAW, b"")
        blocks.put(content)
        entries = (DirEntry(f"f{i:07d}", "file", 0, 0o644, 0, cid=content.cid) for i in range(count))
        built = dirtree.build(blocks, entries)
        blocks.barrier()
        namespace = Namespace(store)
        node = namespace.node_for_cid(built.cid, built.size)
        namespace.link(path, node, parents=True)
        return built.cid


def age_history(repo: Path, by_ns: int) -> None:
    """Make every version so far ``by_ns`` older, as if made that long ago
    (each record signed again with its new time: the test holds the key)."""
    with LocalStore.open(repo) as store:
        key = store.namespace_key()
        for row in store.roots():
            when = row.time_ns - by_ns
            record = RootRecord.sign(key, row.seq, row.root, when).encode()
            store.db.execute("UPDATE roots SET time_ns = ?, record = ? WHERE seq = ?", (when, record, row.seq))
        store.blocks.barrier()


def many_pins(repo: Path, count: int) -> None:
    """Pin ``count`` small blocks (stored and pinned in one transaction)."""
    with LocalStore.open(repo) as store:
        for i in range(count):
            block = Block.of(RAW, b"pinned %d" % i)
            store.blocks.put(block)
            store.db.execute("INSERT OR IGNORE INTO pins (cid, created_ns) VALUES (?, ?)", (bytes(block.cid), i))
        store.blocks.barrier()
