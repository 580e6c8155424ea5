"""``cas --wait``: offline commands take turns at a repository another
process is using, and name that process when they give up."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import CAS, Holder, read_line, run_cas


def start_cas(*args: str, repo: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    return subprocess.Popen([CAS, "--repo", str(repo), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().strip().splitlines()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    run_cas("init", repo=tmp_path / "repo")
    return tmp_path / "repo"


def test_a_writer_waits_for_the_owner_and_then_goes_ahead(repo):
    with Holder(repo) as holder:
        writer = start_cas("--wait", "60", "mkdir", "/a", repo=repo)
        try:
            line = read_line(writer.stderr, timeout=30).decode()  # after a second of waiting
            assert line.startswith(f"cas mkdir: waiting for the repository: in use by process {holder.pid} ("), line
            assert writer.poll() is None  # still waiting
        finally:
            holder.release()
            out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert run_cas("ls", "/", repo=repo).stdout == b"a/\n"


def test_with_wait_0_a_writer_fails_at_once_naming_the_owner(repo):
    with Holder(repo) as holder:
        result = run_cas("--wait", "0", "mkdir", "/a", repo=repo, check=False, timeout=60)
    assert result.returncode == 1
    [line] = stderr_lines(result)
    assert line.startswith(f"cas mkdir: error: repository {repo.absolute()} is in use by process {holder.pid} (")
    assert line.endswith("wait for it to finish (or stop it) and try again")


def test_a_writer_gives_up_when_its_wait_is_over_naming_the_owner(repo):
    with Holder(repo) as holder:
        result = run_cas("--wait", "1", "mkdir", "/a", repo=repo, check=False, timeout=60)
    assert result.returncode == 1
    error = stderr_lines(result)[-1]
    assert error.startswith(f"cas mkdir: error: repository {repo.absolute()} is in use by process {holder.pid} (")
    assert "--wait" in error
    assert run_cas("ls", "/", repo=repo).stdout == b""


def test_quiet_waits_without_a_word_but_still_says_why_it_gave_up(repo):
    with Holder(repo) as holder:
        result = run_cas("-q", "mkdir", "--wait", "2", "/a", repo=repo, check=False, timeout=60)
    assert result.returncode == 1
    [line] = stderr_lines(result)
    assert f"is in use by process {holder.pid} (" in line


def test_wait_takes_a_number_of_seconds(repo):
    for bad in ("-1", "soon", "inf", "nan"):
        result = run_cas("--wait", bad, "ls", repo=repo, check=False)
        assert result.returncode == 2 and b"--wait" in result.stderr, bad


def test_the_daemon_and_id_wait_too(repo):
    with Holder(repo) as holder:
        for args in (["id"], ["daemon", "--listen", "127.0.0.1:0"]):
            result = run_cas("--wait", "0", *args, repo=repo, check=False, timeout=60)
            assert result.returncode == 1, args
            assert f"is in use by process {holder.pid} (" in stderr_lines(result)[-1], args


def test_a_mount_waits_too(repo, tmp_path):
    from tests.fusemount import require_fuse

    require_fuse()
    (tmp_path / "mnt").mkdir()
    with Holder(repo) as holder:
        result = run_cas("--wait", "0", "mount", str(tmp_path / "mnt"), repo=repo, check=False, timeout=60)
    if result.returncode == 0:  # not expected: do not leave a mount behind
        run_cas("umount", str(tmp_path / "mnt"), repo=repo, check=False, timeout=60)
    assert result.returncode == 1
    assert f"is in use by process {holder.pid} (" in stderr_lines(result)[-1]


WRITERS = 16
COMMANDS_EACH = 5


def test_sixteen_offline_writers_all_get_through(repo, tmp_path):
    # Issue 13: with no daemon, 16 clients at once used to be refused 87 % of
    # the time. Now each waits its turn (the default --wait).
    (tmp_path / "f").write_bytes(b"content")

    def writer(k: int) -> list[subprocess.CompletedProcess[bytes]]:
        results = []
        for i in range(COMMANDS_EACH):
            if k % 2:
                args = ["mkdir", "-p", f"/c{k}/d{i}"]
            else:
                args = ["add", str(tmp_path / "f"), "--to", f"/c{k}/f{i}"]
            results.append(run_cas(*args, repo=repo, check=False, timeout=120))
        return results

    started = time.monotonic()
    with ThreadPoolExecutor(WRITERS) as pool:
        results = [r for rs in pool.map(writer, range(WRITERS)) for r in rs]
    elapsed = time.monotonic() - started
    refused = [stderr_lines(r)[-1] for r in results if r.returncode != 0]
    assert refused == [], f"{len(refused)} of {len(results)} refused in {elapsed:.1f} s"
    for k in range(WRITERS):
        names = "d" if k % 2 else "f"
        listing = run_cas("ls", f"/c{k}", repo=repo).stdout.decode().split()
        expected = [f"{names}{i}" + ("/" if k % 2 else "") for i in range(COMMANDS_EACH)]
        assert listing == expected, k
