"""The mount's write-back: changes applied at once, committed as one
namespace version per interval and on fsync; what a crash may lose.

Real mounts (tests/fusemount.py) driven with plain system calls; crashes
are kill -9 of the process serving the mount, at moments the test does not
choose.
"""

from __future__ import annotations

import json
import os
import random
import signal
import tarfile
import threading
from pathlib import Path

import pytest

from tests.conftest import pseudo_random, run_cas
from tests.fusemount import kill_9, mounted, pids_of, require_fuse, wait_for

pytestmark = pytest.mark.fuse


def versions(repo: Path) -> int:
    return len(json.loads(run_cas("--json", "log", repo=repo).stdout))


def test_many_changes_make_few_versions_and_reads_see_them_at_once(tmp_path: Path, repo: Path) -> None:
    with mounted(repo, tmp_path / "mnt", "--commit-interval", "30") as mnt:
        for d in range(5):
            (mnt / f"d{d}").mkdir()
            for i in range(40):
                (mnt / f"d{d}" / f"f{i}").write_bytes(f"{d}/{i}".encode())
                os.utime(mnt / f"d{d}" / f"f{i}", ns=(0, 1_000_000_000 * i))
        os.rename(mnt / "d0" / "f0", mnt / "d1" / "moved")
        os.unlink(mnt / "d0" / "f1")
        assert (mnt / "d1" / "moved").read_bytes() == b"0/0"
        assert sorted(os.listdir(mnt / "d0")) == sorted(f"f{i}" for i in range(2, 40))
        assert os.stat(mnt / "d4" / "f7").st_mtime_ns == 7_000_000_000
        # A command run after the changes sees them (its read commits them first)...
        assert run_cas("cat", "/d1/moved", repo=repo).stdout == b"0/0"
        # ... as one version, not one per create, write, close and utime (~600 here).
        assert versions(repo) == 1
    assert run_cas("ls", "/d0", repo=repo).stdout.split()[:2] == [b"f10", b"f11"]


def test_the_commit_interval_commits_without_a_reader(tmp_path: Path, repo: Path) -> None:
    with mounted(repo, tmp_path / "mnt", "--commit-interval", "0.2") as mnt:
        (mnt / "a").write_bytes(b"a")
        store = repo / "meta.sqlite"

        def committed() -> bool:  # read the repository's roots without asking the mount (which would commit)
            import sqlite3

            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                return bool(db.execute("SELECT count(*) FROM roots").fetchone()[0])

        wait_for(committed, timeout=10, what="the interval's commit")


def test_fsync_makes_a_file_and_every_change_before_it_durable(tmp_path: Path, repo: Path) -> None:
    require_fuse()
    m = tmp_path / "mnt"
    with mounted(repo, m, "--commit-interval", "3600"):
        (m / "before").mkdir()
        (m / "before" / "x").write_bytes(b"closed before the fsync")
        fd = os.open(m / "synced", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"fsynced")
        os.fsync(fd)
        (m / "after").write_bytes(b"closed after the fsync, never synced")
        kill_9(m)
        try:
            os.close(fd)
        except OSError:
            pass  # the mount died under it
        run_cas("umount", str(m), repo=repo)
    assert run_cas("cat", "/synced", repo=repo).stdout == b"fsynced"
    assert run_cas("cat", "/before/x", repo=repo).stdout == b"closed before the fsync"
    assert run_cas("ls", "/", repo=repo).stdout.split() == [b"before/", b"synced"]  # the rest was lost whole
    run_cas("repo", "verify", repo=repo)


def test_fsync_of_a_directory_commits_its_changes(tmp_path: Path, repo: Path) -> None:
    require_fuse()
    m = tmp_path / "mnt"
    with mounted(repo, m, "--commit-interval", "3600"):
        (m / "d").mkdir()
        (m / "d" / "f").write_bytes(b"f")
        fd = os.open(m / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        kill_9(m)
        run_cas("umount", str(m), repo=repo)
    assert run_cas("cat", "/d/f", repo=repo).stdout == b"f"


def test_a_directory_moved_before_the_commit_reads_whole_at_its_new_path(tmp_path: Path, repo: Path) -> None:
    run_cas("add", "-", "--to", "/a/sub/f", repo=repo, input=b"committed")
    with mounted(repo, tmp_path / "mnt", "--commit-interval", "3600") as mnt:
        os.rename(mnt / "a", mnt / "b")
        assert os.listdir(mnt / "b" / "sub") == ["f"]  # under the moved directory, before any commit
        assert (mnt / "b" / "sub" / "f").read_bytes() == b"committed"
        (mnt / "b" / "sub" / "g").write_bytes(b"new")
        assert sorted(os.listdir(mnt / "b" / "sub")) == ["f", "g"]
        assert not (mnt / "a").exists()
    assert run_cas("ls", "/b/sub", repo=repo).stdout.split() == [b"f", b"g"]
    assert run_cas("ls", "/", repo=repo).stdout.split() == [b"b/"]


def test_the_cli_and_the_mount_change_one_namespace_and_the_later_change_wins(tmp_path: Path, repo: Path) -> None:
    with mounted(repo, tmp_path / "mnt", "--commit-interval", "3600") as mnt:
        (mnt / "shared").write_bytes(b"from the mount, first")
        (mnt / "mine").write_bytes(b"the mount's")
        assert not (mnt / "theirs").exists()  # the kernel now remembers it is absent
        run_cas("add", "-", "--to", "/shared", repo=repo, input=b"from the cli, later")
        run_cas("add", "-", "--to", "/theirs", repo=repo, input=b"the cli's")
        # Shown the moment the commands return: the kernel was told to forget what it had.
        assert (mnt / "shared").read_bytes() == b"from the cli, later"
        assert (mnt / "theirs").read_bytes() == b"the cli's"
        assert (mnt / "mine").read_bytes() == b"the mount's"
    assert run_cas("cat", "/shared", repo=repo).stdout == b"from the cli, later"
    assert run_cas("cat", "/mine", repo=repo).stdout == b"the mount's"


def _tarball(tmp_path: Path, files: int) -> tuple[Path, dict[str, bytes]]:
    """A tar of ``files`` small files in a few directories, and their contents."""
    rng = random.Random(7)
    contents = {f"t/d{i % 7}/f{i}": pseudo_random(rng.randrange(0, 20_000), f"tar {i}") for i in range(files)}
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))
    return path, contents


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_kill_9_during_an_untar_leaves_a_consistent_earlier_tree(tmp_path: Path, repo: Path, seed: int) -> None:
    require_fuse()
    tar, contents = _tarball(tmp_path, 600)
    m = tmp_path / "mnt"
    with mounted(repo, m, "--commit-interval", "0.05"):
        (m / "synced").write_bytes(b"before the untar")
        with open(m / "synced", "rb+") as f:
            os.fsync(f.fileno())
        killer = threading.Timer(random.Random(seed).uniform(0.2, 1.5),
                                 lambda: [os.kill(pid, signal.SIGKILL) for pid in pids_of(m)])
        killer.start()
        import subprocess

        subprocess.run(["tar", "xf", str(tar), "-C", str(m)], capture_output=True, timeout=120)
        killer.join()
        wait_for(lambda: not pids_of(m), what="the mount process to die")
        run_cas("umount", str(m), repo=repo)
    run_cas("repo", "verify", repo=repo)
    assert run_cas("cat", "/synced", repo=repo).stdout == b"before the untar"
    with mounted(repo, m):
        found = {str(p.relative_to(m)): p for p in m.rglob("*") if p.is_file() and p.name != "synced"}
        for name, path in found.items():
            # Every file there has its whole content, or is empty (created, its content not yet in).
            assert path.read_bytes() in (contents[name], b""), name


@pytest.mark.slow
def test_the_cli_keeps_working_while_mounted_after_20000_files(tmp_path: Path, repo: Path) -> None:
    require_fuse()
    with mounted(repo, tmp_path / "mnt") as mnt:
        for d in range(20):
            (mnt / f"d{d:02}").mkdir()
            for i in range(1000):
                fd = os.open(mnt / f"d{d:02}" / f"f{i:04}", os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"%d/%d" % (d, i))
                os.close(fd)
        assert run_cas("cat", "/d19/f0999", repo=repo).stdout == b"19/999"
        listing = run_cas("ls", "/d07", repo=repo).stdout.split()
        assert len(listing) == 1000 and listing[0] == b"f0000"
        assert versions(repo) < 200  # coalesced: a version a second at most, not one per file
        stat = json.loads(run_cas("--json", "stat", "/d00", repo=repo).stdout)
        assert stat["kind"] == "dir"
        assert len(os.listdir(mnt / "d13")) == 1000
        # Memory stays bounded: the block cache (256 MiB by default) and 100 MiB more at most.
        for pid in pids_of(mnt):
            status = Path(f"/proc/{pid}/status").read_text()
            peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
            assert peak_kib < (256 + 100) * 1024, f"the mount process peaked at {peak_kib // 1024} MiB"
    run_cas("repo", "verify", repo=repo)


def _written_round(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2))
def test_kill_9_during_git_commits_leaves_a_readable_tree_and_a_clean_repository(
        tmp_path: Path, repo: Path, seed: int) -> None:
    require_fuse()
    import subprocess

    m = tmp_path / "mnt"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    with mounted(repo, m, "--commit-interval", "0.05"):
        work = m / "work"
        subprocess.run(["git", "init", "-q", str(work)], check=True, env=env)
        script = ("set -e; cd \"$1\"; for n in $(seq 1 200); do for i in $(seq 1 10); do "
                  "echo \"$n $i\" > f$i.txt; done; git add -A; git commit -qm \"c$n\"; done")
        git_err = tmp_path / "git.err"
        with open(git_err, "wb") as err:
            git = subprocess.Popen(["bash", "-c", script, "git", str(work)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)
        target = random.Random(seed).randrange(2, 30)  # a moment the test does not choose
        # A deadline for progress only (~12 processes a round through the
        # mount: slow on a busy machine); git ending first is the failure.
        wait_for(lambda: _written_round(work / "f7.txt") >= target or git.poll() is not None, timeout=300,
                 what=f"commit {target}")
        assert git.poll() is None, f"git stopped before commit {target}: {git_err.read_text(errors='replace')}"
        kill_9(m)
        git.wait(timeout=60)  # it fails, the mount gone under it
        run_cas("umount", str(m), repo=repo)
    run_cas("repo", "verify", repo=repo)
    with mounted(repo, m):
        for path in m.rglob("*"):
            if path.is_file():
                path.read_bytes()  # every file there reads back whole
