"""The namespace through the cas command, as a user drives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cas as cas_lib
from cas.chunker import chunk_bytes
from cas.cid import CID, RAW
from tests.conftest import pseudo_random, run_cas

MiB = 1 << 20


def cas(repo: Path, *args: str, input: bytes | None = None) -> str:
    return run_cas(*args, repo=repo, input=input).stdout.decode()


def error_of(repo: Path, *args: str) -> str:
    result = run_cas(*args, repo=repo, check=False)
    assert result.returncode == 1, result
    [line] = result.stderr.decode().strip().splitlines()
    assert result.stdout == b""
    return line


def leaves(data: bytes) -> dict:
    """The raw leaf CIDs of a file's content, with their sizes."""
    return {CID.for_data(RAW, c): len(c) for c in chunk_bytes(data)}


def snapshot(repo: Path) -> dict:
    return json.loads(cas(repo, "root", "--json"))


def test_add_to_links_into_the_namespace_and_cat_reads_by_path(repo, tmp_path):
    (tmp_path / "notes.txt").write_text("remember\n")
    cid = cas(repo, "add", str(tmp_path / "notes.txt"), "--to", "/docs/").strip()
    assert cas(repo, "ls", "/docs") == "notes.txt\n"
    assert cas(repo, "cat", "/docs/notes.txt") == "remember\n"
    stat = json.loads(cas(repo, "stat", "/docs/notes.txt", "--json"))
    assert stat["cid"] == cid and stat["size"] == 9 and stat["kind"] == "file"
    cas(repo, "add", "-", "--to", "/docs/from-stdin", input=b"piped")
    assert cas(repo, "cat", "/docs/from-stdin") == "piped"
    assert cas(repo, "pin", "ls") == ""  # kept by the namespace, not by pins


def test_add_to_a_directory_tree_and_get_it_back(repo, tmp_path):
    src = tmp_path / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(b"A")
    (src / "b").write_bytes(pseudo_random(300_000))
    cas(repo, "add", "-r", str(src), "--to", "/backup/2026/")
    assert cas(repo, "ls", "/backup/2026/proj") == "b\nsub/\n"
    run_cas("get", "/backup/2026/proj", "-o", str(tmp_path / "out"), repo=repo)
    assert (tmp_path / "out" / "b").read_bytes() == (src / "b").read_bytes()
    assert (tmp_path / "out" / "sub" / "a").read_bytes() == b"A"


def test_ls_is_sorted_and_long_and_json(repo):
    for name in ["zeta", "Alpha", "beta", "émile"]:
        cas(repo, "add", "-", "--to", f"/d/{name}", input=name.encode())
    cas(repo, "mkdir", "/d/sub")
    assert cas(repo, "ls", "/d").splitlines() == ["Alpha", "beta", "sub/", "zeta", "émile"]
    long = cas(repo, "ls", "-l", "/d").splitlines()
    assert long[0].startswith("-rw-r--r--") and long[0].endswith(" Alpha")
    assert long[2].startswith("drwxr-xr-x") and long[2].endswith(" sub/")
    listing = json.loads(cas(repo, "ls", "--json", "/d"))
    assert [e["name"] for e in listing] == ["Alpha", "beta", "sub", "zeta", "émile"]
    assert listing[0]["size"] == 5 and listing[0]["cid"].startswith("bafkr4i")


def test_mkdir_p_mv_cp_rm(repo):
    cas(repo, "mkdir", "-p", "/a/b/c")
    cas(repo, "add", "-", "--to", "/a/b/c/file", input=b"payload")
    cas(repo, "mv", "/a/b", "/moved")
    assert cas(repo, "cat", "/moved/c/file") == "payload"
    cas(repo, "cp", "/moved/c/file", "/copy")
    cid = json.loads(cas(repo, "stat", "--json", "/copy"))["cid"]
    cas(repo, "cp", cid, "/by-cid")
    assert cas(repo, "cat", "/by-cid") == "payload"
    cas(repo, "add", "-", "--to", "/other", input=b"other")
    cas(repo, "mv", "/other", "/copy")  # replaces a file, as mv does
    assert cas(repo, "cat", "/copy") == "other"
    cas(repo, "rm", "-r", "/moved")
    assert cas(repo, "ls", "/").splitlines() == ["a/", "by-cid", "copy"]


def test_log_and_at_bring_back_a_deleted_file(repo):
    cas(repo, "add", "-", "--to", "/precious", input=b"v1")
    cas(repo, "add", "-", "--to", "/precious", input=b"v2")
    cas(repo, "rm", "/precious")
    log = json.loads(cas(repo, "log", "--json"))
    assert [entry["seq"] for entry in log] == [3, 2, 1]
    assert cas(repo, "cat", "/precious", "--at", "1") == "v1"
    assert cas(repo, "cat", "/precious", "--at", "2") == "v2"
    assert "precious" in cas(repo, "ls", "--at", "2")
    assert "no such file" in error_of(repo, "cat", "/precious")


def test_root_shows_sequence_cid_and_key_but_never_the_secret(repo):
    cas(repo, "mkdir", "/x")
    root = snapshot(repo)
    assert root["seq"] == 1 and root["root"].startswith("bafyr4i") and len(root["public_key"]) == 64
    text = cas(repo, "root")
    key_file = (repo / "keys" / "namespace.key").read_text().split()[1]
    assert key_file not in text and key_file not in json.dumps(root)
    assert oct((repo / "keys" / "namespace.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "args, message",
    [
        (("mkdir", "/"), "exists already"),
        (("mkdir", "/a/" + "x" * 256), "limit is 255"),
        (("mkdir", "/a/../b"), "not supported"),
        (("rm", "/missing"), "no such file or directory"),
        (("ls", "/missing"), "no such file or directory"),
        (("cat", "/missing"), "no such file or directory"),
        (("mv", "/missing", "/x"), "no such file or directory"),
        (("cat", "/d", "--at", "99"), "no kept namespace root 99"),
    ],
)
def test_namespace_errors_are_one_line_and_change_nothing(repo, args, message):
    cas(repo, "mkdir", "/d")
    before = snapshot(repo)
    assert message in error_of(repo, *args)
    assert snapshot(repo) == before


def test_structural_errors(repo):
    cas(repo, "mkdir", "/d")
    cas(repo, "add", "-", "--to", "/d/f", input=b"x")
    before = snapshot(repo)
    assert "not a directory" in error_of(repo, "add", "-", "--to", "/d/f/g")
    assert "not empty; use -r" in error_of(repo, "rm", "/d")
    assert "into itself" in error_of(repo, "mv", "/d", "/d/inner")
    assert "exists already" in error_of(repo, "mkdir", "/d")
    assert "not a directory" in error_of(repo, "ls", "/d/f")
    assert snapshot(repo) == before


def test_gc_frees_unique_blocks_and_keeps_shared_pinned_and_history(repo, tmp_path):
    shared = pseudo_random(2 * MiB, seed="shared")
    unique = pseudo_random(2 * MiB, seed="unique")
    (tmp_path / "f").write_bytes(shared + unique)
    (tmp_path / "g").write_bytes(shared)
    (tmp_path / "p").write_bytes(pseudo_random(MiB, seed="pinned"))
    cas(repo, "add", str(tmp_path / "f"), "--to", "/f")
    cas(repo, "add", str(tmp_path / "g"), "--to", "/g")
    pinned = cas(repo, "add", str(tmp_path / "p")).strip()
    cas(repo, "rm", "/f")
    # With history kept, the removed file is still readable in its old root:
    cas(repo, "gc")
    assert run_cas("cat", "/f", "--at", "2", repo=repo).stdout == shared + unique
    before = json.loads(cas(repo, "repo", "stat", "--json"))
    report = json.loads(cas(repo, "gc", "--history", "0", "--json"))
    after = json.loads(cas(repo, "repo", "stat", "--json"))
    assert report["blocks_freed"] > 0
    assert before["bytes"] - after["bytes"] == report["bytes_freed"]
    # The pack still holds the freed records (3 of its 5 MiB live: not
    # compacted), and stat says how much of it is dead: the freed leaves
    # (freed bytes also count small nodes, which live in the database).
    assert after["pack_bytes"] == before["pack_bytes"]
    assert abs(after["dead_bytes"] - report["bytes_freed"]) < 64 * 1024
    assert "of it deleted blocks" in cas(repo, "repo", "stat")
    # Every leaf only /f had is gone; every leaf of /g stays.
    f_leaves, g_leaves = leaves(shared + unique), leaves(shared)
    only_f = set(f_leaves) - set(g_leaves)
    assert sum(f_leaves[c] for c in only_f) <= report["bytes_freed"]
    with cas_lib.open_repository(repo) as lib:
        assert not any(lib.has_block(c) for c in only_f)
        assert all(lib.has_block(c) for c in g_leaves)
    assert run_cas("cat", "/g", repo=repo).stdout == shared
    assert run_cas("cat", pinned, repo=repo).stdout == (tmp_path / "p").read_bytes()
    assert "no kept namespace root 2" in error_of(repo, "cat", "/f", "--at", "2")
    assert run_cas("repo", "verify", repo=repo).returncode == 0
    cas(repo, "unpin", pinned)
    assert json.loads(cas(repo, "gc", "--json"))["bytes_freed"] >= MiB


def test_a_tampered_root_record_is_reported_and_the_last_good_root_kept(repo):
    import sqlite3

    cas(repo, "mkdir", "/kept")
    cas(repo, "mkdir", "/lost")
    db = sqlite3.connect(repo / "meta.sqlite")
    record = bytearray(db.execute("SELECT record FROM roots WHERE seq = 2").fetchone()[0])
    record[-1] ^= 1  # one bit of the record changed on disk
    db.execute("UPDATE roots SET record = ? WHERE seq = 2", (bytes(record),))
    db.commit()
    db.close()
    result = run_cas("root", repo=repo)
    assert "root record 2 failed verification" in result.stderr.decode()
    assert "seq   1" in result.stdout.decode()
    assert cas(repo, "ls", "/") == "kept/\n"
    cas(repo, "mkdir", "/next")  # a new root supersedes the bad one
    assert json.loads(cas(repo, "root", "--json"))["seq"] == 3


def test_add_to_keeps_the_source_mode_and_time_and_says_where_it_linked(repo, tmp_path):
    import os

    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o750)
    os.utime(script, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    doc = json.loads(cas(repo, "add", "--json", str(script), "--to", "/bin/"))
    assert doc["added"][0]["linked_at"] == "/bin/run.sh"
    stat = json.loads(cas(repo, "stat", "--json", "/bin/run.sh"))
    assert (stat["mode"], stat["mtime_ns"]) == (0o750, 1_600_000_000_000_000_000)
