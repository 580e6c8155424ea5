"""``cas mount DIR --name KEY --ro``: another node's published namespace as
a read-only directory that follows new versions.

Real daemons on 127.0.0.1 (tests/nodeproc.py), a real mount (tests/fusemount.py)
read with plain ``ls``, ``cat`` and ``diff -r``. Every wait is a condition
polled with a deadline; every process is stopped by PID and every mount
unmounted, whatever the test did.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.keys import Ed25519Key
from cas.names.record import RootRecord, record_key
from cas.names.remote import RemoteNamespace
from tests.conftest import pseudo_random, run_cas
from tests.fusemount import errno_of, mounted, pids_of, require_fuse
from tests.nodeproc import Daemon, Daemons, wait_until
from tests.test_published_names import _stored_record, put_raw

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(120)]

REFRESH = "0.3"  # seconds between re-resolutions in these tests (default 30)
DEADLINE = 30.0  # for a new version to show in the mount


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def two_nodes(tmp_path: Path, daemons: Daemons) -> tuple[Daemon, Daemon]:
    a = daemons.start(tmp_path / "a")
    b = daemons.start(tmp_path / "b", bootstrap=[a.address])
    for node in (a, b):
        run_cas("dht", "refresh", repo=node.repo)
    return a, b


def cas_json(daemon: Daemon, *args: str) -> dict:
    return json.loads(run_cas("--json", *args, repo=daemon.repo, timeout=60).stdout)


def same_tree(left: Path, right: Path) -> bool:
    return subprocess.run(["diff", "-r", str(left), str(right)], capture_output=True).returncode == 0


def add_to(daemon: Daemon, src: Path, to: str) -> None:
    run_cas("add", str(src), "--to", to, repo=daemon.repo)


def test_another_nodes_namespace_is_mounted_read_only_and_follows_new_versions(
    tmp_path: Path, daemons: Daemons
) -> None:
    require_fuse()
    a, b = two_nodes(tmp_path, daemons)
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_bytes(b"<h1>version 1</h1>\n")
    (site / "sub" / "big.bin").write_bytes(pseudo_random(3_000_000, "published big"))  # several blocks
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        add_to(a, path, "/site/" + path.relative_to(site).as_posix())
    key = cas_json(a, "name", "publish", "--every", "60")["key"]

    # --name implies --ro: another node's namespace is read-only here.
    with mounted(b.repo, tmp_path / "mnt", "--name", key, "--refresh", REFRESH) as mnt:
        # Read as a user would: the tree is byte-identical, blocks B lacked came from A.
        assert subprocess.run(["ls", str(mnt)], capture_output=True, text=True).stdout.split() == ["site"]
        assert same_tree(site, mnt / "site")
        assert subprocess.run(["cat", str(mnt / "site" / "index.html")], capture_output=True).stdout \
            == b"<h1>version 1</h1>\n"

        # Every change fails with EROFS.
        target = mnt / "site" / "index.html"
        assert errno_of(open, mnt / "site" / "new.txt", "wb") == errno.EROFS
        assert errno_of(open, target, "r+b") == errno.EROFS
        assert errno_of(os.mkdir, mnt / "site" / "dir") == errno.EROFS
        assert errno_of(os.unlink, target) == errno.EROFS
        assert errno_of(os.rename, target, mnt / "site" / "moved.html") == errno.EROFS
        assert errno_of(os.chmod, target, 0o600) == errno.EROFS
        copy = subprocess.run(["cp", str(site / "index.html"), str(mnt / "site" / "copy.html")],
                              capture_output=True, text=True)
        assert copy.returncode != 0 and "Read-only file system" in copy.stderr

        # A file opened before an update keeps reading the version it opened.
        old_big = (site / "sub" / "big.bin").read_bytes()
        reader = open(mnt / "site" / "sub" / "big.bin", "rb")
        try:
            assert reader.read(1000) == old_big[:1000]

            # A changes two files and adds one; publishing is on, so it goes out by itself.
            (site / "index.html").write_bytes(b"<h1>version 2</h1>\n")
            (site / "sub" / "big.bin").write_bytes(pseudo_random(2_500_000, "published big v2"))
            (site / "news.txt").write_bytes(b"new file\n")
            for name in ("index.html", "sub/big.bin", "news.txt"):
                add_to(a, site / name, f"/site/{name}")
            wait_until(lambda: same_tree(site, mnt / "site"), DEADLINE, "the mount to show A's new version")
            assert sorted(os.listdir(mnt / "site")) == ["index.html", "news.txt", "sub"]
            assert os.stat(mnt / "site" / "sub" / "big.bin").st_size == 2_500_000

            assert reader.read() == old_big[1000:]
            assert os.fstat(reader.fileno()).st_size == len(old_big)
        finally:
            reader.close()

        # Forged and older records are refused by B's daemon; had the forged
        # record (ten ahead) been taken anywhere, A's next genuine one could never show.
        seq = cas_json(b, "name", "resolve", key)["seq"]
        rkey = record_key(bytes.fromhex(key))
        good = RootRecord.decode(_stored_record(a, seq))
        forged = RootRecord(good.public_key, seq + 10, good.root, good.time_ns, bytes(64))
        assert put_raw(b, tmp_path, rkey, forged.encode())[0] == "refused"
        status, reason = put_raw(b, tmp_path, rkey, _stored_record(a, 1))
        assert status == "refused" and "stale" in reason, reason
        (site / "news.txt").unlink()
        run_cas("rm", "/site/news.txt", repo=a.repo)
        wait_until(lambda: not (mnt / "site" / "news.txt").exists(), DEADLINE, "the removal to show")
        assert same_tree(site, mnt / "site")
        assert cas_json(b, "name", "resolve", key)["seq"] == seq + 1
    assert not pids_of(tmp_path / "mnt")


def test_a_name_that_cannot_be_resolved_mounts_nothing(tmp_path: Path, daemons: Daemons) -> None:
    require_fuse()
    _a, b = two_nodes(tmp_path, daemons)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    unknown = Ed25519Key.generate().public_key.hex()
    result = run_cas("mount", str(mnt), "--name", unknown, "--ro", repo=b.repo, check=False, timeout=60)
    assert result.returncode == 1
    message = result.stderr.decode().strip()
    assert len(message.splitlines()) == 1 and "no published record found" in message and unknown in message
    assert not os.path.ismount(mnt) and not pids_of(mnt)


def test_refresh_without_name_is_bad_usage_also_as_json(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = run_cas("mount", str(tmp_path / "mnt"), "--refresh", "5", "--json", repo=tmp_path / "r", check=False)
    assert result.returncode == 2
    message = "--refresh applies to --name (a published namespace) only"
    assert result.stderr.decode().strip().splitlines() == [f"cas mount: error: {message}"]
    assert json.loads(result.stdout) == {"error": {"command": "mount", "type": "usage", "message": message}}
    assert not os.path.ismount(tmp_path / "mnt")


def test_mount_help_states_the_refresh_default_the_mount_uses() -> None:
    from cas.fuse.mountd import DEFAULT_REFRESH

    help_text = " ".join(run_cas("mount", "--help").stdout.decode().split())
    assert f"newer version this often (default {DEFAULT_REFRESH:g})" in help_text


# -- the rule the mount switches by (no processes) ------------------------------

KEY = Ed25519Key.from_seed(bytes(range(32)))


def _record(seq: int, key: Ed25519Key = KEY) -> bytes:
    from cas.cid import CID, DAG_CBOR

    root = CID.for_data(DAG_CBOR, b"\xa0")
    return RootRecord.sign(key, seq, root, 1_700_000_000_000_000_000 + seq).encode()


def test_a_mounted_namespace_switches_only_to_a_valid_higher_sequence() -> None:
    held = RemoteNamespace(None, KEY.public_key, [_record(2)])  # type: ignore[arg-type]
    forged = RootRecord.decode(_record(2))
    forged = RootRecord(forged.public_key, 9, forged.root, forged.time_ns, bytes(64))
    assert held.newer([_record(1)]) is None  # lower
    assert held.newer([_record(2)]) is None  # the same
    assert held.newer([forged.encode()]) is None  # bad signature
    assert held.newer([_record(9, Ed25519Key.generate())]) is None  # another key's
    assert held.newer([b"\xa0garbage"]) is None
    newer = held.newer([_record(1), _record(3), forged.encode()])
    assert newer is not None and newer.current().seq == 3



def test_the_mount_outlives_a_restart_of_the_daemon_it_reads_through(tmp_path: Path, daemons: Daemons) -> None:
    require_fuse()
    a, b = two_nodes(tmp_path, daemons)
    data = pseudo_random(1_500_000, "read after the restart")
    (tmp_path / "later.bin").write_bytes(data)
    add_to(a, tmp_path / "later.bin", "/later.bin")
    key = cas_json(a, "name", "publish", "--every", "60")["key"]
    with mounted(b.repo, tmp_path / "mnt", "--name", key, "--ro", "--refresh", REFRESH) as mnt:
        assert os.listdir(mnt) == ["later.bin"]
        daemons.stop(b)
        b = daemons.start(b.repo, bootstrap=[a.address])
        # Nothing of the file was read before: every block comes through the new daemon.
        assert (mnt / "later.bin").read_bytes() == data
        (tmp_path / "new.txt").write_bytes(b"after the restart\n")
        add_to(a, tmp_path / "new.txt", "/new.txt")
        wait_until(lambda: (mnt / "new.txt").exists(), DEADLINE, "a new version after the restart")
        assert (mnt / "new.txt").read_bytes() == b"after the restart\n"
