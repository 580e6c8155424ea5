"""Who may read a repository: its owner only (issue 14).

Driven as a user would: the ``cas`` commands in subprocesses under the
umask of a shell (``umask 022``, and the careless ``umask 000``), then
every file and directory under the repository is looked at, and, as
root, another user (``nobody``) tries to read it with ``cat`` and ``ls``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CAS, make_world_readable, not_private, pseudo_random, run_cas
from tests.fusemount import mounted
from tests.nodeproc import Daemons

UMASKS = pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
NOBODY = 65534


@contextmanager
def shell_umask(umask: int) -> Iterator[None]:
    """Run what is inside with ``umask``, as a shell that said ``umask
    NNN`` would: every cas process started meanwhile inherits it."""
    old = os.umask(umask)
    try:
        yield
    finally:
        os.umask(old)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run as user and group 65534, with no other groups."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to act as another user")
    return subprocess.run([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory other users can reach (pytest's own is private to root),
    so that only the repository's own modes keep them out."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    work = Path(tempfile.mkdtemp(prefix="cas-modes-", dir="/tmp"))
    os.chmod(work, 0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


@UMASKS
def test_offline_commands_leave_the_repository_private(tmp_path, umask):
    repo = tmp_path / "repo"
    src = tmp_path / "big.bin"
    src.write_bytes(pseudo_random(700_000, seed="modes offline"))
    with shell_umask(umask):
        cid = run_cas("add", str(src), repo=repo).stdout.decode().strip()
        run_cas("mkdir", "/docs", repo=repo)
        run_cas("add", "--to", "/docs/again.bin", str(src), repo=repo)
        run_cas("mv", "/docs/again.bin", "/docs/moved.bin", repo=repo)
        run_cas("gc", repo=repo)
    assert run_cas("cat", cid, repo=repo).stdout == src.read_bytes()
    assert os.listdir(repo / "packs")
    assert not_private(repo) == []


@UMASKS
def test_a_daemon_keeps_the_repository_private_while_it_runs_and_after(tmp_path, umask):
    repo = tmp_path / "repo"
    src = tmp_path / "big.bin"
    src.write_bytes(pseudo_random(700_000, seed="modes daemon"))
    with shell_umask(umask), Daemons() as daemons:
        daemon = daemons.start(repo)
        run_cas("add", "--to", "/big.bin", str(src), repo=repo)  # through the daemon
        run_cas("mkdir", "/docs", repo=repo)
        names = set(os.listdir(repo))
        assert {"control.sock", "meta.sqlite-wal", "meta.sqlite-shm"} <= names, names
        assert not_private(repo) == []
        assert daemons.stop(daemon) == 0
    assert (repo / "dht" / "routing.cbor").exists()  # saved on the way out
    assert (repo / "keys" / "node.key").exists()
    assert not_private(repo) == []
    assert "open to other users" not in daemon.stderr()


@UMASKS
def test_a_mount_keeps_the_repository_private_while_files_are_written_and_after(tmp_path, umask):
    repo = tmp_path / "repo"
    data = pseudo_random(300_000, seed="modes mount")
    with shell_umask(umask):
        with mounted(repo, tmp_path / "mnt") as mnt:
            with open(mnt / "written.bin", "wb") as f:
                f.write(data)
                f.flush()
                assert not_private(repo) == []  # staged in tmp/ meanwhile
            os.mkdir(mnt / "docs")
            assert (mnt / "written.bin").read_bytes() == data
            assert not_private(repo) == []
        assert (repo / "mount.log").exists()
        assert run_cas("cat", "/written.bin", repo=repo).stdout == data
    assert not_private(repo) == []


def test_any_command_makes_a_world_readable_repository_private_again_and_says_so_once(tmp_path):
    repo = tmp_path / "repo"
    run_cas("add", "--to", "/f", "-", input=pseudo_random(300_000, seed="old repo"), repo=repo)
    make_world_readable(repo)
    (repo / "mount.log").write_text("from an older cas\n")
    (repo / "mount.log").chmod(0o644)
    assert not_private(repo) != []
    first = run_cas("ls", "/", repo=repo)  # a command that only reads
    assert f"cas: repository {repo} was open to other users" in first.stderr.decode()
    assert not_private(repo) == []
    again = run_cas("ls", "/", repo=repo)
    assert again.stdout == first.stdout and again.stderr == b""


def test_another_user_can_read_nothing_of_a_repository(shared_tmp):
    repo = shared_tmp / "repo"
    secret = b"the text of a 0600 file\n" * 10
    run_cas("add", "--to", "/secret.txt", "-", input=secret, repo=repo)
    run_cas("add", "--to", "/big.bin", "-", input=pseudo_random(700_000, seed="nobody"), repo=repo)
    pack = sorted((repo / "packs").iterdir())[0]

    # What the test can see: a repository made world-readable by hand is
    # read by nobody (the grep of issue 14)...
    make_world_readable(repo)
    assert as_nobody("grep", "-c", "the text of a 0600 file", str(repo / "meta.sqlite")).returncode == 0
    assert as_nobody("ls", str(repo / "packs")).returncode == 0
    # ...and after any command has opened it, not at all.
    run_cas("ls", "/", repo=repo)
    for argv in (["cat", str(repo / "meta.sqlite")], ["ls", str(repo)], ["ls", str(repo / "packs")],
                 ["cat", str(pack)], ["cat", str(repo / "config.json")]):
        result = as_nobody(*argv)
        assert result.returncode != 0 and "Permission denied" in result.stderr, (argv, result)


def test_a_file_owned_by_another_user_is_named_and_the_command_still_works(shared_tmp):
    repo = shared_tmp / "repo"
    repo.mkdir()
    os.chown(repo, NOBODY, NOBODY)
    created = as_nobody(CAS, "--repo", str(repo), "mkdir", "/docs")  # the repository is nobody's
    assert created.returncode == 0, created.stderr
    log = repo / "mount.log"
    log.write_text("left by root\n")  # root ran a mount in it
    log.chmod(0o644)
    result = as_nobody(CAS, "--repo", str(repo), "ls", "/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "docs/\n"
    assert (f"cas: warning: {log} (owned by user 0, not by you) stays open to other users (mode 0644)"
            in result.stderr)
    assert f"its owner can run: chmod go-rwx {log}" in result.stderr
    assert not_private(repo) == ["mount.log 0644"]
