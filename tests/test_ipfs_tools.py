"""Moving data between cas and the real IPFS tools, both ways, by CAR file.

The other side is the IPFS JavaScript stack from npm (tests/js, installed by
the test set-up): ``ipfs-car pack`` (sha2-256, CIDv1, raw leaves: what
ipfs-car and helia make), ``ipfs-unixfs-importer`` with kubo's classic
profile (CIDv0, dag-pb leaves) and HAMT-sharded directories, and for
reading, ``@ipld/car`` with every block re-hashed plus
``ipfs-unixfs-exporter`` (tests/js/car_tools.mjs).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import cas
from cas.dagpb import TYPE_HAMT_SHARD, decode_node, decode_unixfs
from tests.conftest import JS_DIR, pseudo_random, run_cas

TOOLS = JS_DIR / "car_tools.mjs"
IPFS_CAR = JS_DIR / "node_modules" / "ipfs-car" / "bin.js"


def _node(node_js: str, *args: str) -> str:
    run = subprocess.run([node_js, *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def js_read(node_js: str, car: Path, *paths: str) -> dict:
    """What @ipld/car and the UnixFS exporter find in ``car``, every block
    re-hashed (and the content of ``paths`` below its root, looked up)."""
    return json.loads(_node(node_js, str(TOOLS), "read", str(car), *paths))


def ipfs_car_pack(node_js: str, source: Path, car: Path, *, wrap: bool = True) -> str:
    args = [str(IPFS_CAR), "pack", str(source), "--output", str(car)]
    if not wrap:
        args.append("--no-wrap")
    return _node(node_js, *args).strip()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "docs").mkdir(parents=True)
    (root / "big.bin").write_bytes(pseudo_random(2_300_000, seed="ipfs tools"))
    (root / "docs" / "readme.txt").write_bytes(b"hello from the other side\n")
    (root / "empty").write_bytes(b"")
    return root


def test_a_car_cas_exports_is_read_by_ipld_car_and_the_unixfs_exporter(
    node_js: str, tree: Path, tmp_path: Path
) -> None:
    data = (tree / "big.bin").read_bytes()
    repo = tmp_path / "repo"
    cid = run_cas("add", "-q", str(tree / "big.bin"), repo=repo).stdout.decode().strip()
    run_cas("car", "export", cid, "-o", str(tmp_path / "f.car"), repo=repo)
    seen = js_read(node_js, tmp_path / "f.car")
    assert seen["roots"] == [cid]
    assert seen["blocks"] > 3  # a tree of several blocks, each one re-hashed (BLAKE3)
    assert seen["entries"] == [{"path": cid, "type": "file", "cid": cid, "size": len(data), "sha256": _sha256(data)}]


def test_a_car_ipfs_car_packs_imports_and_cas_cat_gives_the_same_bytes_under_the_same_root(
    node_js: str, tree: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    root = ipfs_car_pack(node_js, tree, tmp_path / "tree.car")
    assert root.startswith("bafybei")  # CIDv1, dag-pb, sha2-256
    assert run_cas("car", "import", str(tmp_path / "tree.car"), repo=repo).stdout.decode().split() == [root]
    assert run_cas("ls", root, repo=repo).stdout.decode().split() == ["big.bin", "docs/", "empty"]
    for name in ("big.bin", "docs/readme.txt", "empty"):
        assert run_cas("cat", f"{root}/{name}", repo=repo).stdout == (tree / name).read_bytes()
    run_cas("get", root, "-o", str(tmp_path / "out"), repo=repo)
    assert (tmp_path / "out" / "docs" / "readme.txt").read_bytes() == b"hello from the other side\n"
    with cas.open_repository(repo) as r:
        assert [str(pin) for pin in r.pins()] == [root]
    # Into the namespace: adopted as a cas directory over the same file DAGs.
    run_cas("cp", root, "/site", repo=repo)
    assert run_cas("ls", "/site/docs", repo=repo).stdout.decode().split() == ["readme.txt"]
    assert run_cas("cat", "/site/big.bin", repo=repo).stdout == (tree / "big.bin").read_bytes()
    with cas.open_repository(repo) as r:
        assert r.stat("/site/big.bin").cid == r.resolve(f"{root}/big.bin")
    # A single file, not wrapped: its own root.
    file_root = ipfs_car_pack(node_js, tree / "big.bin", tmp_path / "file.car", wrap=False)
    assert run_cas("car", "import", str(tmp_path / "file.car"), repo=repo).stdout.decode().split() == [file_root]
    assert run_cas("cat", file_root, repo=repo).stdout == (tree / "big.bin").read_bytes()
    # And back: cas exports the IPFS tree it imported, and the tools read it whole.
    run_cas("car", "export", root, "-o", str(tmp_path / "again.car"), repo=repo)
    seen = js_read(node_js, tmp_path / "again.car")
    files = {entry["path"]: entry.get("sha256") for entry in seen["entries"] if "sha256" in entry}
    assert files == {f"{root}/{name}": _sha256((tree / name).read_bytes())
                     for name in ("big.bin", "docs/readme.txt", "empty")}


def test_kubo_style_cidv0_trees_and_hamt_sharded_directories_are_read(
    node_js: str, tree: Path, tmp_path: Path
) -> None:
    for i in range(60):
        (tree / "docs" / f"note-{i:03}.txt").write_bytes(f"note {i}\n".encode())
    repo = tmp_path / "repo"
    # kubo's classic profile (CIDv0, dag-pb leaves); directories over 1 KB sharded.
    root = _node(node_js, str(TOOLS), "make", str(tree), str(tmp_path / "v0.car"), "unixfs-v0-2015", "1000")
    assert root.startswith("Qm")
    assert run_cas("car", "import", str(tmp_path / "v0.car"), repo=repo).stdout.decode().split() == [root]
    names = run_cas("ls", f"{root}/docs", repo=repo).stdout.decode().split()
    assert names == sorted([f"note-{i:03}.txt" for i in range(60)] + ["readme.txt"])
    assert run_cas("cat", f"{root}/docs/note-042.txt", repo=repo).stdout == b"note 42\n"
    assert run_cas("cat", f"{root}/big.bin", repo=repo).stdout == (tree / "big.bin").read_bytes()
    long = run_cas("ls", "-l", root, repo=repo).stdout.decode()
    assert f" {len((tree / 'big.bin').read_bytes())} " in long


def _victim_is_empty(repo: Path) -> None:
    with cas.open_repository(repo) as r:
        assert r.repo_stat().blocks == 0 and r.pins() == []


def test_a_corrupt_or_truncated_ipfs_car_is_refused_and_nothing_is_stored(
    node_js: str, tree: Path, tmp_path: Path
) -> None:
    ipfs_car_pack(node_js, tree, tmp_path / "tree.car")
    car = (tmp_path / "tree.car").read_bytes()
    corrupt = bytearray(car)
    corrupt[len(car) // 2] ^= 0x01  # inside big.bin's leaves
    (tmp_path / "corrupt.car").write_bytes(bytes(corrupt))
    (tmp_path / "truncated.car").write_bytes(car[: len(car) - 1000])
    for name, reason in (("corrupt", "does not match its sha2-256 hash"), ("truncated", "truncated")):
        repo = tmp_path / name
        refused = run_cas("car", "import", str(tmp_path / f"{name}.car"), repo=repo, check=False)
        assert refused.returncode == 1 and reason in refused.stderr.decode() and "nothing" in refused.stderr.decode()
        _victim_is_empty(repo)


def test_a_cas_directory_exports_as_a_unixfs_view_that_ipfs_tools_list_and_read(
    node_js: str, tree: Path, tmp_path: Path
) -> None:
    (tree / "docs" / "link").symlink_to("readme.txt")
    repo = tmp_path / "repo"
    run_cas("add", "-r", str(tree), "--to", "/site", repo=repo)
    listed = {line.split()[-1]: line.split()[-2] for line in
              run_cas("ls", "-l", "/site", repo=repo).stdout.decode().splitlines()}
    run_cas("car", "export", "/site", "-o", str(tmp_path / "view.car"), repo=repo)
    seen = js_read(node_js, tmp_path / "view.car", "docs/readme.txt", "big.bin")
    root = seen["roots"][0]
    assert root.startswith("bafyb4i")  # a dag-pb (UnixFS) root, BLAKE3
    by_path = {entry["path"]: entry for entry in seen["entries"]}
    assert by_path[root]["type"] == "directory" and by_path[f"{root}/docs"]["type"] == "directory"
    for name in ("big.bin", "docs/readme.txt", "empty"):
        assert by_path[f"{root}/{name}"]["sha256"] == _sha256((tree / name).read_bytes())
    assert by_path[f"{root}/big.bin"]["cid"] == listed["big.bin"]  # the file DAG is shared, not copied
    assert seen["paths"] == {"docs/readme.txt": _sha256(b"hello from the other side\n"),
                             "big.bin": _sha256((tree / "big.bin").read_bytes())}


def test_a_big_cas_directory_exports_as_a_hamt_that_ipfs_tools_look_names_up_in(
    node_js: str, tmp_path: Path
) -> None:
    from cas.names import dirtree
    from cas.names.directory import DirEntry

    names = [f"{i:05}-" + "long-name-" * 9 for i in range(2500)]  # ~100 bytes: past kubo's 256 KiB
    with cas.open_repository(tmp_path / "repo") as r:
        files = [r.add_bytes(f"entry {i}\n".encode(), pin=False) for i in range(3)]
        entries = [DirEntry(name, "file", len(f"entry {i % 3}\n"), 0o644, 0, files[i % 3]) for i, name in enumerate(names)]
        directory = dirtree.build(r.blocks, entries).cid
        r.pin(directory)
        r.export_car(directory, tmp_path / "big.car")
    picks = [names[7], names[1234], names[2499]]
    seen = js_read(node_js, tmp_path / "big.car", *picks)
    root = seen["roots"][0]
    assert sorted(entry["path"] for entry in seen["entries"] if entry["path"] != root) == [f"{root}/{n}" for n in names]
    assert seen["paths"] == {name: _sha256(f"entry {names.index(name) % 3}\n".encode()) for name in picks}
    with cas.open_repository(tmp_path / "other") as other:  # and back: cas reads its own view as IPFS's
        other.import_car(tmp_path / "big.car")
        assert decode_unixfs(decode_node(other.get_block(root)).data).type == TYPE_HAMT_SHARD
        assert [e.name for e in other.list_dir(root)] == names
        assert other.read(f"{root}/{names[1234]}") == b"entry 1\n"


def test_modes_and_mtimes_ipfs_tools_preserve_are_shown_and_restored(node_js: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"kept\n")
    (src / "d" / "f").chmod(0o600)
    when = 1_614_834_367_123_456_789  # 2021-03-04 05:06:07.123456789 UTC
    os.utime(src / "d" / "f", ns=(when, when))
    root = _node(node_js, str(TOOLS), "make", str(src), str(tmp_path / "meta.car"), "unixfs-v1-2025", "262144", "meta")
    repo = tmp_path / "repo"
    run_cas("car", "import", str(tmp_path / "meta.car"), repo=repo)
    [entry] = json.loads(run_cas("--json", "ls", f"{root}/d", repo=repo).stdout)
    assert (entry["name"], entry["mode"], entry["mtime_ns"]) == ("f", 0o600, when)
    run_cas("get", root, "-o", str(tmp_path / "out"), repo=repo)
    got = (tmp_path / "out" / "d" / "f").stat()
    assert (got.st_mode & 0o777, got.st_mtime_ns) == (0o600, when)
