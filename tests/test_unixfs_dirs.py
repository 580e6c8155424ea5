"""UnixFS directories as IPFS makes them (dag-pb, sha2-256, CIDv0 links,
HAMT shards) are listed, read through and written out by cas.

The nodes here are built by hand to the UnixFS spec, so that every shape is
covered in a fast test; tests/test_ipfs_tools.py does the same with trees
that the real IPFS tools made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cas
from cas.cid import CID, DAG_PB, RAW, SHA2_256
from cas.dagpb import (
    TYPE_DIRECTORY,
    TYPE_FILE,
    TYPE_HAMT_SHARD,
    TYPE_SYMLINK,
    PBLink,
    PBNode,
    UnixFSData,
    encode_node,
    encode_unixfs,
)
from cas.errors import PathNotFoundError
from cas.unixfs import hamt_bucket, hamt_hash
from tests.conftest import run_cas
from tests.formatsdoc import vectors


def _put_pb(repo: cas.Repository, links: list[PBLink], unixfs: UnixFSData, *, v0: bool = True) -> CID:
    cid = repo.put_block(encode_node(PBNode(tuple(links), encode_unixfs(unixfs))), DAG_PB, hash_code=SHA2_256)
    return CID.v0(cid.digest) if v0 else cid


def test_hamt_hash_vectors_match_the_published_ones() -> None:
    for v in vectors("hamt-hash"):
        assert hamt_hash(v["name"]).hex() == v["hash_hex"]
    assert hamt_bucket(hamt_hash("note-042.txt"), 0, 8) == 0x2B


HAMT_NAMES = ("alpha", "beta", "delta", "gamma", "mid", "zeta")


def _hamt(repo: cas.Repository, entries: dict[str, CID], depth: int) -> CID:
    buckets: dict[int, dict[str, CID]] = {}
    for name, cid in entries.items():
        bucket = hamt_bucket(hamt_hash(name), depth, 2)
        assert bucket is not None
        buckets.setdefault(bucket, {})[name] = cid
    links = []
    for bucket in sorted(buckets):
        group = buckets[bucket]
        if len(group) == 1:
            [(name, cid)] = group.items()
            links.append(PBLink(cid, f"{bucket:X}{name}", 20))
        else:
            links.append(PBLink(_hamt(repo, group, depth + 1), f"{bucket:X}", 100))
    bitmap = sum(1 << bucket for bucket in buckets)
    return _put_pb(repo, links, UnixFSData(TYPE_HAMT_SHARD, data=bytes([bitmap]), hash_type=0x22, fanout=4), v0=False)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, CID, CID]:
    """A plain directory (CIDv0) holding a raw-leaf file, a dag-pb file of
    two dag-pb leaves, a symlink and a HAMT-sharded directory with
    sub-shards; and the HAMT's own CID."""
    path = tmp_path / "repo"
    with cas.open_repository(path) as repo:
        raw = repo.put_block(b"raw leaf file\n", RAW, hash_code=SHA2_256)
        leaves = [_put_pb(repo, [], UnixFSData(TYPE_FILE, data=part, filesize=len(part)))
                  for part in (b"first half, ", b"second half\n")]
        pb_file = _put_pb(repo, [PBLink(leaf, "", 20) for leaf in leaves],
                          UnixFSData(TYPE_FILE, filesize=24, blocksizes=(12, 12)))
        link = _put_pb(repo, [], UnixFSData(TYPE_SYMLINK, data=b"raw.txt"))
        # A HAMT of fan-out 4 (two bits a level, one hex digit of bucket
        # prefix), entries placed by their murmur3 hash as IPFS places them:
        # six names in four buckets, so at least one sub-shard.
        hamt = _hamt(repo, {name: (pb_file if name == "alpha" else raw) for name in HAMT_NAMES}, 0)
        root = _put_pb(repo, [PBLink(pb_file, "pb.txt", 60), PBLink(raw, "raw.txt", 14),
                              PBLink(hamt, "sharded", 300), PBLink(link, "to-raw", 9)],
                       UnixFSData(TYPE_DIRECTORY))
    return path, root, hamt


def test_a_plain_unixfs_directory_is_listed_and_read_through(tree: tuple[Path, CID, CID]) -> None:
    path, root, _ = tree
    assert str(root).startswith("Qm")
    with cas.open_repository(path) as repo:
        entries = list(repo.list_dir(str(root)))
        assert [(e.name, e.kind, e.size) for e in entries] == [
            ("pb.txt", "file", 24), ("raw.txt", "file", 14), ("sharded", "dir", 300), ("to-raw", "symlink", 0)]
        assert entries[3].target == "raw.txt"
        assert repo.read(f"{root}/pb.txt") == b"first half, second half\n"
        assert repo.read(f"{root}/sharded/mid") == b"raw leaf file\n"
        assert repo.info(str(root)).kind == "dir"
        with pytest.raises(PathNotFoundError, match="no entry 'nope'"):
            repo.read(f"{root}/nope")


def test_a_hamt_sharded_directory_lists_every_entry_in_name_order(tree: tuple[Path, CID, CID]) -> None:
    path, _, hamt = tree
    with cas.open_repository(path) as repo:
        assert [e.name for e in repo.list_dir(hamt)] == list(HAMT_NAMES)
        assert repo.read(f"{hamt}/alpha") == b"first half, second half\n"
        for name in HAMT_NAMES[1:]:  # each found by its hash, through the sub-shards
            assert repo.read(f"{hamt}/{name}") == b"raw leaf file\n"
        with pytest.raises(PathNotFoundError):
            repo.read(f"{hamt}/omega")


def test_cas_ls_cat_and_get_take_an_ipfs_directory(tree: tuple[Path, CID, CID], tmp_path: Path) -> None:
    path, root, _ = tree
    listing = run_cas("ls", str(root), repo=path).stdout.decode().splitlines()
    assert listing == ["pb.txt", "raw.txt", "sharded/", "to-raw -> raw.txt"]
    assert run_cas("ls", f"{root}/sharded", repo=path).stdout.decode().split() == list(HAMT_NAMES)
    assert run_cas("cat", f"{root}/sharded/alpha", repo=path).stdout == b"first half, second half\n"
    run_cas("get", str(root), "-o", str(tmp_path / "out"), repo=path)
    out = tmp_path / "out"
    assert (out / "pb.txt").read_bytes() == b"first half, second half\n"
    assert (out / "sharded" / "zeta").read_bytes() == b"raw leaf file\n"
    assert sorted(p.name for p in (out / "sharded").iterdir()) == list(HAMT_NAMES)
    assert (out / "to-raw").readlink() == Path("raw.txt")
    message = run_cas("cat", str(root), repo=path, check=False).stderr.decode()
    assert "is a directory" in message


def test_the_view_of_an_empty_cas_directory_is_the_empty_unixfs_directory(tmp_path: Path) -> None:
    from cas.names import dirtree
    from cas.unixfs_view import build_view

    with cas.open_repository(tmp_path / "repo") as repo:
        empty = dirtree.empty_directory(repo.blocks)
        view, blocks = build_view(repo.blocks, empty)
    # The node every IPFS implementation makes for an empty directory
    # (QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn under sha2-256),
    # here under BLAKE3: the dag-pb vector of docs/formats.md.
    assert blocks == {view: bytes.fromhex("0a020801")}
    assert str(view) == "bafyb4igcwu4aknzxeunla7d6swhtgjcpcdpi7hk5twl4ubnlczrqh3gmme"
    assert str(CID.v0(CID.for_data(DAG_PB, blocks[view], SHA2_256).digest)) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
