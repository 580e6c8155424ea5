"""cas add -r and cas get keep what tar and rsync -aHX keep: modes with
setuid, setgid and sticky, times to the nanosecond, owners (restored as
root), extended attributes, hard links, symlinks, fifos, sockets and device
nodes; cas ls -l and cas stat show it. Driven as a user drives the command,
and compared attribute by attribute with the source (tests/trees_compare.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import cas
from cas.names.directory import MAX_XATTR_BYTES, Meta
from tests.conftest import CAS, run_cas
from tests.trees_compare import compare_trees

ROOT = os.geteuid() == 0
LONG_NAME = "é" * 127 + "x"  # 255 bytes of UTF-8, the most a name may have
OTHER_UID, OTHER_GID = 54321, 54320  # owners no one on the machine has


def _times(path: Path, seed: int) -> None:
    os.utime(path, ns=(1_600_000_000_123_456_789 + seed, 1_700_000_000_987_654_321 + seed), follow_symlinks=False)


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """Linux's binary form of a POSIX ACL (system.posix_acl_*): version 2,
    then (tag, permissions, id) per entry."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF


def make_tree(root: Path) -> Path:
    """A tree of every kind of inode and attribute (owners, devices and
    trusted.* only as root), with odd nanosecond times everywhere."""
    root.mkdir()
    (root / "sticky").mkdir(mode=0o755)
    (root / "sticky" / "deeper").mkdir()
    (root / "setgid").mkdir()
    suid = root / "run.sh"
    suid.write_bytes(b"#!/bin/sh\necho hi\n")
    if ROOT:
        os.chown(suid, OTHER_UID, OTHER_GID)  # before chmod: chown clears setuid
    suid.chmod(0o4755)
    os.setxattr(suid, "user.origin", b"\x00binary\xff")
    shared = root / "shared"
    shared.write_bytes(b"a named user may write")
    os.setxattr(shared, "system.posix_acl_access", posix_acl(
        (ACL_USER_OBJ, 6, UNDEFINED_ID), (ACL_USER, 6, OTHER_UID), (ACL_GROUP_OBJ, 4, UNDEFINED_ID),
        (ACL_MASK, 6, UNDEFINED_ID), (ACL_OTHER, 4, UNDEFINED_ID)))
    os.setxattr(root / "sticky", "system.posix_acl_default", posix_acl(
        (ACL_USER_OBJ, 7, UNDEFINED_ID), (ACL_GROUP_OBJ, 5, UNDEFINED_ID), (ACL_OTHER, 0, UNDEFINED_ID)))
    pair = root / "pair-a"
    pair.write_bytes(b"two names")
    os.link(pair, root / "sticky" / "pair-b")
    trio = root / "trio"
    trio.write_bytes(b"three names")
    os.link(trio, root / "sticky" / "deeper" / "trio-2")
    os.link(trio, root / "setgid" / "trio-3")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "sock", stat.S_IFSOCK | 0o755)
    (root / LONG_NAME).write_text("long name")
    with open(root / "sparse", "wb") as f:
        f.seek((4 << 20) - 5)  # three leaves of zeros, then one ending in a tail
        f.write(b"tail!")
    (root / "link").symlink_to("run.sh")
    os.link(root / "link", root / "sticky" / "link-too", follow_symlinks=False)  # a hard-linked symlink
    if ROOT:
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
        os.setxattr(root / "setgid", "trusted.kept", b"for root's eyes")
        os.setxattr(root / "link", "trusted.on-a-symlink", b"yes")
        os.lchown(root / "link", OTHER_UID, OTHER_GID)
    for seed, (dirpath, dirnames, filenames) in enumerate(os.walk(root, topdown=False)):
        for name in filenames + dirnames:
            _times(Path(dirpath) / name, seed)
    (root / "setgid").chmod(0o2775)
    (root / "sticky").chmod(0o1777)
    for seed, directory in enumerate([root / "setgid", root / "sticky", root]):
        _times(directory, 100 + seed)
    return root


def test_a_tree_of_every_kind_round_trips_attribute_by_attribute(repo, tmp_path):
    src = make_tree(tmp_path / "src")
    cid = run_cas("add", "-r", str(src), "--to", "/t", repo=repo).stdout.decode().strip()
    got = run_cas("get", "/t", "-o", str(tmp_path / "out"), repo=repo)
    assert b"warning" not in got.stderr
    assert compare_trees(src, tmp_path / "out", skip_xattrs=()) == []  # POSIX ACLs too
    out = tmp_path / "out"
    assert os.lstat(out / "pair-a").st_ino == os.lstat(out / "sticky" / "pair-b").st_ino
    assert os.lstat(out / "setgid" / "trio-3").st_nlink == 3
    assert os.lstat(out / "sparse").st_blocks * 512 <= (1 << 20) + 8192  # its 3 MiB of zeros are a hole
    # By CID, the same tree (its own root's attributes are the parent's to keep).
    run_cas("get", cid, "-o", str(tmp_path / "by-cid"), repo=repo)
    assert compare_trees(src, tmp_path / "by-cid", top=False) == []


def test_cas_get_without_the_powers_of_root_restores_the_rest_and_warns_once_per_refusal(repo, tmp_path):
    if not ROOT or shutil.which("setpriv") is None:
        pytest.skip("needs root (to make devices and foreign owners) and setpriv (to give the powers up)")
    src = make_tree(tmp_path / "src")
    run_cas("add", "-r", str(src), "--to", "/t", repo=repo)
    out = tmp_path / "out"
    # uid 0 without capabilities: chown, mknod of devices and trusted.* are refused, as for any user.
    got = run_cas_unprivileged(CAS, "--repo", str(repo), "get", "/t", "-o", str(out))
    warnings = [line for line in got.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, got
    assert any("owners not restored on 2 entries" in line for line in warnings)
    assert any("device nodes not made" in line and "2 entries" in line for line in warnings)
    assert any("trusted.* not restored on 2 entries" in line for line in warnings)
    assert compare_trees(src, out, owners=False, skip_xattrs=("system.", "trusted.")) == [
        f"loop: only in {src}", f"null: only in {src}"]


def run_cas_unprivileged(*argv: str) -> str:
    """Run argv as uid 0 stripped of every capability; its stderr."""
    drop = ["setpriv", "--securebits", "+noroot", "--bounding-set", "-all", "--inh-caps", "-all"]
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    result = subprocess.run([*drop, *argv], capture_output=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return result.stderr.decode()


def _ls(repo: Path, path: str) -> dict[str, dict]:
    return {entry["name"]: entry for entry in json.loads(run_cas("ls", "--json", path, repo=repo).stdout)}


def _stat(repo: Path, path: str) -> dict:
    return json.loads(run_cas("stat", "--json", path, repo=repo).stdout)


def test_hard_links_are_groups_of_the_added_tree_only_and_never_merge(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"linked")
    os.link(src / "a", src / "b")
    (src / "half").write_bytes(b"its other name is outside")
    os.link(src / "half", tmp_path / "outside")
    run_cas("add", "-r", str(src), "--to", "/one", repo=repo)
    run_cas("add", "-r", str(src), "--to", "/two", repo=repo)
    run_cas("cp", "/one/a", "/copy", repo=repo)  # a copy is a new inode with one name
    run_cas("cp", "/one", "/three", repo=repo)  # a copied tree's links are its own groups
    run_cas("mkdir", "/plain", repo=repo)
    run_cas("cp", "/plain", "/plain-copy", repo=repo)  # no hard links: the very same directory
    one, two, three, top = (_ls(repo, path) for path in ("/one", "/two", "/three", "/"))
    assert one["a"]["nlink"] == one["b"]["nlink"] == 2 and one["a"]["ino"] == one["b"]["ino"] is not None
    assert two["a"]["ino"] != one["a"]["ino"]  # two adds: two inodes
    assert (one["half"]["nlink"], one["half"]["ino"]) == (1, None)
    assert (top["copy"]["nlink"], top["copy"]["ino"]) == (1, None)
    assert three["a"]["ino"] == three["b"]["ino"] not in (None, one["a"]["ino"]) and three["a"]["nlink"] == 2
    assert top["plain-copy"]["cid"] == top["plain"]["cid"]
    run_cas("get", "/one", "-o", str(tmp_path / "out"), repo=repo)
    out = tmp_path / "out"
    assert os.lstat(out / "a").st_ino == os.lstat(out / "b").st_ino and os.lstat(out / "half").st_nlink == 1


def test_more_extended_attributes_than_an_entry_keeps_are_an_error_naming_the_file(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big"
    big.write_bytes(b"x")
    try:  # ext4 holds a little more than an entry keeps: a small attribute in the inode, a big one in a block
        os.setxattr(big, "user.small", b"s" * 60)
        os.setxattr(big, "user.large", b"l" * (MAX_XATTR_BYTES - 40))
    except OSError:
        pytest.skip("this filesystem cannot hold more extended attributes than cas keeps")
    failed = run_cas("add", "-r", str(src), repo=repo, check=False)
    assert failed.returncode != 0
    assert str(big) in failed.stderr.decode() and "--no-xattrs" in failed.stderr.decode()
    run_cas("add", "-r", "--no-xattrs", str(src), "--to", "/t", repo=repo)
    assert _stat(repo, "/t/big")["xattrs"] == {}


def test_ls_long_and_stat_show_every_kind_and_attribute(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "run").write_bytes(b"12345")
    if ROOT:
        os.chown(src / "run", OTHER_UID, 0)
    (src / "run").chmod(0o4754)
    os.setxattr(src / "run", "user.k", b"v")
    (src / "acl").write_bytes(b"")
    os.setxattr(src / "acl", "system.posix_acl_access", posix_acl(
        (ACL_USER_OBJ, 6, UNDEFINED_ID), (ACL_USER, 4, OTHER_UID), (ACL_GROUP_OBJ, 4, UNDEFINED_ID),
        (ACL_MASK, 4, UNDEFINED_ID), (ACL_OTHER, 0, UNDEFINED_ID)))
    os.link(src / "run", src / "run2")
    os.mkfifo(src / "fifo")
    os.mknod(src / "sock", stat.S_IFSOCK | 0o600)
    (src / "tmp").mkdir()
    (src / "tmp").chmod(0o1777)
    if ROOT:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (src / "null").chmod(0o666)
    run_cas("add", "-r", str(src), "--to", "/t", repo=repo)
    lines = {line.split()[-1]: line for line in run_cas("ls", "-l", "/t", repo=repo).stdout.decode().splitlines()}
    assert lines["run"].startswith("-rwsr-xr--  2 ")
    if ROOT:  # an owner without a name here shows as its number
        assert lines["run"].split()[2:4] == [str(OTHER_UID), "root"]
    assert lines["fifo"].startswith("prw-r--r--  1 ") and lines["sock"].startswith("srw-------  1 ")
    assert lines["tmp/"].startswith("drwxrwxrwt  - ")
    assert lines["acl"].startswith("-rw-r-----+ 1 ")  # as ls marks an ACL
    if ROOT:
        assert lines["null"].startswith("crw-rw-rw-  1 root     root ") and " 1, 3 " in lines["null"]
    text = run_cas("stat", "/t/run", repo=repo).stdout.decode()
    assert "mode     -rwsr-xr-- (4754)" in text and "links    2 (hard-link group " in text
    assert "xattrs   user.k" in text and "accessed -" in text
    doc = _stat(repo, "/t/run")
    assert doc["xattrs"] == {"user.k": "76"} and doc["nlink"] == 2 and doc["atime_ns"] is None
    assert doc["uid"] == (OTHER_UID if ROOT else os.geteuid())
    if ROOT:
        assert "device   1, 3" in run_cas("stat", "/t/null", repo=repo).stdout.decode()
        assert _stat(repo, "/t/null")["rdev"] == os.makedev(1, 3)
    cat = run_cas("cat", "/t/fifo", repo=repo, check=False)
    assert cat.returncode != 0 and "is a fifo: it has no content" in cat.stderr.decode()
    car = run_cas("car", "export", "/t", "-o", str(tmp_path / "t.car"), repo=repo)
    assert "leaves out" in car.stderr.decode()  # UnixFS has no fifos, sockets or devices


def test_a_recorded_atime_and_a_path_s_own_metadata_are_restored(repo, tmp_path):
    with cas.open_repository(repo) as r:  # what a mount records: atime and ctime too
        cid = r.add_bytes(b"kept", pin=False)
        node = r.namespace.node_for_cid(cid, 4)
        meta = Meta(uid=os.geteuid(), gid=os.getegid(), atime=1_500_000_000_000_000_001,
                    ctime=1_600_000_000_000_000_002, xattrs=(("user.note", b"n"),))
        r.namespace.link("/f", replace(node, mode=0o640, mtime=1_650_000_000_000_000_003, meta=meta))
    text = run_cas("stat", "/f", repo=repo).stdout.decode()
    assert "accessed 2017-07-14" in text or "accessed 2017-07-13" in text  # (the zone)
    assert ".000000002 " in text.split("changed  ")[1].splitlines()[0]
    run_cas("get", "/f", "-o", str(tmp_path / "f"), repo=repo)
    st = os.lstat(tmp_path / "f")
    assert (st.st_atime_ns, st.st_mtime_ns, stat.S_IMODE(st.st_mode)) == (
        1_500_000_000_000_000_001, 1_650_000_000_000_000_003, 0o640)
    assert os.getxattr(tmp_path / "f", "user.note") == b"n"


def test_cas_get_as_a_user_leaves_owners_to_the_user_without_a_word(repo, tmp_path, monkeypatch):
    src = make_tree(tmp_path / "src")
    with cas.open_repository(repo) as r:
        r.add_path(src, recursive=True, to="/t")
        monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as tar without --same-owner: no chown tried
        warned: list[str] = []
        r.get("/t", tmp_path / "out", warn=warned.append)
    assert warned == []
    diffs = compare_trees(src, tmp_path / "out")
    assert all(": uid " in d or ": gid " in d for d in diffs) and (diffs or not ROOT), diffs
    assert compare_trees(src, tmp_path / "out", owners=False) == []
