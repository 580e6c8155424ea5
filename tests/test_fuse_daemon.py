"""One node per machine: a daemon serving the read-write mount.

``cas mount`` on a repository whose daemon runs asks the daemon to serve
the mount; what is written there is the node's own content, placed on the
network as an add's blocks are; ``cas umount`` asks the daemon to end it
and the daemon goes on. Real daemons (tests/nodeproc.py), real mounts
(tests/fusemount.py), every wait a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cas.fuse.mountd import is_mounted

from cas.cid import parse_cid
from tests import nodeproc
from tests.conftest import pseudo_random, run_cas
from tests.fusemount import mounted, pids_of, require_fuse, wait_for
from tests.nodeproc import Daemon, Daemons, wait_until

pytestmark = [pytest.mark.fuse, pytest.mark.timeout(120)]


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


@pytest.fixture
def daemon(daemons: Daemons, repo: Path) -> Daemon:
    require_fuse()
    return daemons.start(repo)


def error_of(result: object) -> str:
    return result.stderr.decode(errors="replace").strip()  # type: ignore[attr-defined]


def test_the_daemon_serves_the_mount_and_the_cli_works_beside_it(tmp_path: Path, repo: Path,
                                                                  daemon: Daemon) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    said = json.loads(run_cas("--json", "mount", str(mnt), repo=repo).stdout)
    try:
        assert said["daemon"] is True and said["mountpoint"] == str(mnt) and said["read_only"] is False
        assert is_mounted(mnt) and pids_of(mnt) == []  # no mount process: the daemon serves it
        (mnt / "docs").mkdir()
        (mnt / "docs" / "a.txt").write_bytes(b"written through the mount\n")
        run_cas("add", "-", "--to", "/docs/b.txt", repo=repo, input=b"added beside it\n")
        assert run_cas("cat", "/docs/a.txt", repo=repo).stdout == b"written through the mount\n"
        wait_for(lambda: (mnt / "docs" / "b.txt").exists(), what="the CLI's file in the mount")
        assert (mnt / "docs" / "b.txt").read_bytes() == b"added beside it\n"
        # One mount per node: a second is refused, saying where.
        other = tmp_path / "other"
        other.mkdir()
        refused = run_cas("mount", str(other), repo=repo, check=False)
        assert refused.returncode != 0 and f"already serves a mount at {mnt}" in error_of(refused)
        refused = run_cas("mount", str(other), "--foreground", repo=repo, check=False)
        assert refused.returncode == 2 and "without --foreground" in error_of(refused)
        run_cas("umount", str(mnt), repo=repo)
        assert not is_mounted(mnt)
    finally:
        if is_mounted(mnt):
            os.system(f"fusermount3 -u -z {mnt}")
    assert daemon.proc.poll() is None  # the daemon goes on, and serves a new mount
    assert run_cas("ls", "/docs", repo=repo).stdout.split() == [b"a.txt", b"b.txt"]
    with mounted(repo, mnt, "--ro"):
        assert (mnt / "docs" / "a.txt").read_bytes() == b"written through the mount\n"
        with pytest.raises(OSError):
            (mnt / "x").write_bytes(b"no")
    assert "mounted the namespace at" in daemon.stderr() and "unmounted" in daemon.stderr()


def test_umount_of_a_busy_mount_is_refused_and_changes_nothing(tmp_path: Path, repo: Path, daemon: Daemon) -> None:
    with mounted(repo, tmp_path / "mnt") as mnt:
        with open(mnt / "open.txt", "w") as f:
            f.write("still open")
            refused = run_cas("umount", str(mnt), repo=repo, check=False)
            assert refused.returncode != 0 and "busy" in error_of(refused).lower()
            assert is_mounted(mnt)
        run_cas("umount", str(mnt), repo=repo)
        assert not is_mounted(mnt)
    assert run_cas("cat", "/open.txt", repo=repo).stdout == b"still open"


def test_stopping_the_daemon_commits_open_files_and_unmounts(tmp_path: Path, repo: Path, daemons: Daemons,
                                                             daemon: Daemon) -> None:
    mnt = tmp_path / "mnt"
    with mounted(repo, mnt):
        f = open(mnt / "staged.txt", "w")
        f.write("written, never closed")
        f.flush()
        assert daemons.stop(daemon) == 0
        assert not is_mounted(mnt)
        with pytest.raises(OSError):
            f.close()  # the mount is gone under it
    assert run_cas("cat", "/staged.txt", repo=repo).stdout == b"written, never closed"


def test_a_mount_process_refuses_a_second_mount_and_a_daemon_saying_what_to_do(tmp_path: Path, repo: Path) -> None:
    with mounted(repo, tmp_path / "mnt") as mnt:
        (tmp_path / "other").mkdir()
        refused = run_cas("mount", str(tmp_path / "other"), repo=repo, check=False)
        assert refused.returncode != 0 and f"already serves a mount at {mnt}" in error_of(refused)
        refused = run_cas("--wait", "0", "daemon", "--listen", "127.0.0.1:0", repo=repo, check=False, timeout=30)
        assert refused.returncode != 0
        assert f"'cas umount {mnt}', start the daemon, then 'cas mount {mnt}' again" in error_of(refused)


def test_files_written_through_the_mount_reach_the_other_nodes(tmp_path: Path, daemons: Daemons) -> None:
    require_fuse()
    a, b, c = nodeproc.start_network(daemons, tmp_path, 3)  # R = 3: every block on every node
    data = pseudo_random(3_000_000, "through the mount")
    with mounted(a.repo, tmp_path / "mnt") as mnt:
        (mnt / "photo.jpg").write_bytes(data)
        cid = parse_cid(json.loads(run_cas("--json", "stat", "/photo.jpg", repo=a.repo).stdout)["cid"])
        blocks = nodeproc.dag_of(a, cid)
        assert len(blocks) > 1
        for other in (b, c):
            wait_until(lambda other=other: all(nodeproc.has(other, block) for block in blocks), 60,
                       f"the mount's blocks on {other.repo.name}")
    daemons.stop(a)  # read from the others alone
    assert run_cas("cat", str(cid), repo=c.repo).stdout == data


def test_the_daemon_publishes_what_the_mount_changes(tmp_path: Path, daemons: Daemons, daemon: Daemon) -> None:
    run_cas("mkdir", "/d", repo=daemon.repo)
    run_cas("name", "publish", repo=daemon.repo)
    first = json.loads(run_cas("--json", "name", "status", repo=daemon.repo).stdout)["last"]["seq"]
    with mounted(daemon.repo, tmp_path / "mnt") as mnt:
        (mnt / "new.txt").write_bytes(b"new")

        def published() -> int:
            last = json.loads(run_cas("--json", "name", "status", repo=daemon.repo).stdout)["last"]
            return int(last["seq"]) if last else 0

        wait_until(lambda: published() > first, 30, "the mount's change published")


def test_sighup_leaves_the_mount_up(tmp_path: Path, repo: Path, daemon: Daemon) -> None:
    with mounted(repo, tmp_path / "mnt") as mnt:
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(lambda: "settings read again" in daemon.stderr(), 10, "the reload")
        (mnt / "after.txt").write_bytes(b"after the reload")
        assert run_cas("cat", "/after.txt", repo=repo).stdout == b"after the reload"
