"""History that scales (issue 16): no control message grows with the
repository (roots, ``log`` and ``ls`` are read a page or a node at a time),
and history is kept by age."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import run_cas
from .histories import add_versions, big_directory
from .nodeproc import Daemons

VERSIONS = 20_000
ENTRIES = 100_000


@pytest.mark.slow
def test_the_cli_works_through_a_daemon_with_a_long_history_and_a_huge_directory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_cas("mkdir", "/docs", repo=repo)
    big_directory(repo, "/big", ENTRIES)
    now = time.time_ns()
    add_versions(repo, [now - (VERSIONS - i) * 1_000_000 for i in range(VERSIONS)])
    newest = 2 + VERSIONS
    with Daemons() as daemons:
        daemons.start(repo, listen=None)
        log = run_cas("log", repo=repo).stdout.decode().splitlines()
        assert len(log) == newest and log[0].split()[0] == str(newest) and log[-1].split()[0] == "1"
        five = json.loads(run_cas("--json", "log", "-n", "5", repo=repo).stdout)
        assert [v["seq"] for v in five] == list(range(newest, newest - 5, -1))
        page = json.loads(run_cas("--json", "log", "-n", "3", "--before", "100", repo=repo).stdout)
        assert [v["seq"] for v in page] == [99, 98, 97]
        root = json.loads(run_cas("--json", "root", repo=repo).stdout)
        assert root["seq"] == newest
        listing = run_cas("ls", "/big", repo=repo).stdout.decode().splitlines()
        assert len(listing) == ENTRIES and listing[0] == "f0000000" and listing[-1] == f"f{ENTRIES - 1:07d}"
        stat = json.loads(run_cas("--json", "stat", "/big", repo=repo).stdout)
        assert stat["kind"] == "dir" and stat["entries"] == ENTRIES
        assert run_cas("ls", "--at", "1", "/", repo=repo).stdout.decode().split() == ["docs/"]
        assert run_cas("mkdir", "/more", repo=repo).returncode == 0  # and it still takes changes
