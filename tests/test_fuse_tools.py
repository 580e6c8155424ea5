"""Real programs in the mount, compared with the same work on a local disk:
cp -a, tar, git, sqlite3, rsync, dd of 1 GiB. All ``slow`` (CI runs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import skip_unless_ci
from tests.fusemount import mounted

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

SOURCE_TREE = Path(__file__).resolve().parent.parent / "cas"


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        skip_unless_ci(f"{tool} is not installed (scripts/setup-env --test)")


def sh(*argv: str | Path, cwd: Path | None = None, **kw) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{argv} failed: {result.stderr}"
    return result.stdout


@pytest.fixture
def mnt(tmp_path: Path, repo: Path):
    with mounted(repo, tmp_path / "mnt") as path:
        yield path


def test_cp_a_in_and_out_and_tar(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(SOURCE_TREE, src, ignore=shutil.ignore_patterns("__pycache__"))
    os.symlink("names/namespace.py", src / "link")
    sh("cp", "-a", src, mnt / "tree")
    sh("diff", "-r", "--no-dereference", src, mnt / "tree")
    sh("cp", "-a", mnt / "tree", tmp_path / "back")
    sh("diff", "-r", "--no-dereference", src, tmp_path / "back")
    assert os.stat(mnt / "tree" / "api.py").st_mtime_ns == os.stat(src / "api.py").st_mtime_ns
    # tar: create in the mount from the mount, extract in the mount, compare.
    sh("tar", "-cf", mnt / "t.tar", "-C", mnt, "tree")
    (mnt / "x").mkdir()
    sh("tar", "-xf", mnt / "t.tar", "-C", mnt / "x")
    sh("diff", "-r", "--no-dereference", src, mnt / "x" / "tree")
    sh("tar", "-cf", tmp_path / "local.tar", "-C", tmp_path, "src")
    sh("tar", "-xf", tmp_path / "local.tar", "-C", mnt / "x")
    sh("diff", "-r", "--no-dereference", src, mnt / "x" / "src")


def test_rsync_a(mnt: Path, tmp_path: Path) -> None:
    need("rsync")
    src = tmp_path / "src"
    shutil.copytree(SOURCE_TREE, src, ignore=shutil.ignore_patterns("__pycache__"))
    sh("rsync", "-a", f"{src}/", f"{mnt / 'r'}/")
    sh("diff", "-r", src, mnt / "r")
    (src / "api.py").write_text("changed\n")
    sh("rsync", "-a", "--delete", f"{src}/", f"{mnt / 'r'}/")
    sh("diff", "-r", src, mnt / "r")


def test_git_init_add_commit_log(mnt: Path, tmp_path: Path) -> None:
    need("git")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "HOME": str(tmp_path)}
    results = []
    for where in (tmp_path / "local", mnt / "repo"):
        where.mkdir()
        sh("git", "init", "-q", cwd=where, env=env)
        shutil.copytree(SOURCE_TREE / "names", where / "names", ignore=shutil.ignore_patterns("__pycache__"))
        sh("git", "add", ".", cwd=where, env=env)
        sh("git", "commit", "-q", "-m", "first", cwd=where, env=env)
        (where / "names" / "record.py").write_text("edited\n")
        sh("git", "commit", "-q", "-am", "second", cwd=where, env=env)
        sh("git", "fsck", "--strict", cwd=where, env=env)
        results.append((sh("git", "log", "--format=%s", cwd=where, env=env),
                        sh("git", "ls-files", "-s", cwd=where, env=env),
                        sh("git", "status", "--porcelain", cwd=where, env=env)))
    assert results[0] == results[1]
    assert results[1][0] == "second\nfirst\n"


def test_sqlite3_create_fill_query(mnt: Path, tmp_path: Path) -> None:
    need("sqlite3")
    script = (
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
        "INSERT INTO t (v) SELECT hex(randomblob(32)) || i FROM n;"
        "UPDATE t SET v = 'x' WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0;"
        "CREATE INDEX iv ON t (v);"
    )
    query = "SELECT count(*), sum(length(v)), sum(v = 'x') FROM t; PRAGMA integrity_check;"
    answers = []
    for where in (tmp_path / "local.db", mnt / "m.db"):
        sh("sqlite3", where, script)
        for i in range(20):  # many small transactions: fsync after each
            sh("sqlite3", where, f"INSERT INTO t (v) VALUES ('row{i}');")
        answers.append(sh("sqlite3", where, query).split("\n")[1:])
    assert answers[0] == answers[1]
    assert answers[1][0] == "ok"


def test_dd_of_one_gib(mnt: Path, tmp_path: Path) -> None:
    sh("dd", "if=/dev/urandom", f"of={tmp_path / 'seed'}", "bs=1M", "count=16", "status=none")
    seed = (tmp_path / "seed").read_bytes()
    local = tmp_path / "local"
    with open(local, "wb") as f:  # 1 GiB of varied blocks (copies of one piece would dedup away)
        for i in range(64):
            f.write(seed[i:] + seed[:i])
    sh("dd", f"if={local}", f"of={mnt / 'big'}", "bs=1M", "status=none")
    assert os.stat(mnt / "big").st_size == 1 << 30
    sh("dd", f"if={mnt / 'big'}", f"of={tmp_path / 'copy'}", "bs=1M", "status=none")
    sh("cmp", local, tmp_path / "copy")
