"""History that scales (issue 16): no control message grows with the
repository (roots, ``log`` and ``ls`` are read a page or a node at a time),
and history is kept by age."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cas.cid import parse_cid
from cas.control import ControlClient, socket_path
from cas.control import schema as ops

from .conftest import pseudo_random, run_cas
from .histories import add_versions, age_history, big_directory, many_pins
from .nodeproc import Daemons, wait_until

VERSIONS = 20_000
ENTRIES = 100_000
PINS = 60_000  # ~3.5 MB of CIDs: more than one control message holds


@pytest.mark.slow
def test_the_cli_works_through_a_daemon_with_a_long_history_and_a_huge_directory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_cas("mkdir", "/docs", repo=repo)
    big_directory(repo, "/big", ENTRIES)
    now = time.time_ns()
    add_versions(repo, [now - (VERSIONS - i) * 1_000_000 for i in range(VERSIONS)])
    many_pins(repo, PINS)
    newest = 2 + VERSIONS
    with Daemons() as daemons:
        daemons.start(repo, listen="127.0.0.1:0")
        log = run_cas("log", repo=repo).stdout.decode().splitlines()
        assert len(log) == newest and log[0].split()[0] == str(newest) and log[-1].split()[0] == "1"
        five = json.loads(run_cas("--json", "log", "-n", "5", repo=repo).stdout)
        assert [v["seq"] for v in five] == list(range(newest, newest - 5, -1))
        page = json.loads(run_cas("--json", "log", "-n", "3", "--before", "100", repo=repo).stdout)
        assert [v["seq"] for v in page] == [99, 98, 97]
        with ControlClient(socket_path(repo)) as client:  # an old client asking for every row gets one page
            assert len(client.call(ops.Roots())) == ops.MAX_ROOTS_PAGE
        root = json.loads(run_cas("--json", "root", repo=repo).stdout)
        assert root["seq"] == newest
        listing = run_cas("ls", "/big", repo=repo).stdout.decode().splitlines()
        assert len(listing) == ENTRIES and listing[0] == "f0000000" and listing[-1] == f"f{ENTRIES - 1:07d}"
        stat = json.loads(run_cas("--json", "stat", "/big", repo=repo).stdout)
        assert stat["kind"] == "dir" and stat["entries"] == ENTRIES
        assert run_cas("ls", "--at", "1", "/", repo=repo).stdout.decode().split() == ["docs/"]
        pins = run_cas("pin", "ls", repo=repo).stdout.decode().split()
        assert len(pins) == PINS and pins == sorted(pins, key=lambda text: parse_cid(text))
        assert run_cas("mkdir", "/more", repo=repo).returncode == 0  # and it still takes changes


HOUR = 3600 * 10**9
DAY = 24 * HOUR


def _log(repo: Path) -> list[dict]:
    return json.loads(run_cas("--json", "log", repo=repo).stdout)


@pytest.mark.parametrize("through", ["offline", "daemon"])
def test_prune_drops_by_age_and_gc_then_frees_what_only_dropped_versions_needed(tmp_path: Path, through: str) -> None:
    repo = tmp_path / "repo"
    old = tmp_path / "old.bin"
    old.write_bytes(pseudo_random(3 << 20, seed="only in old versions"))
    run_cas("add", str(old), "--to", "/old.bin", repo=repo)  # 1
    run_cas("rm", "/old.bin", repo=repo)  # 2
    run_cas("mkdir", "/kept", repo=repo)  # 3
    age_history(repo, 5 * DAY)  # versions 1-3 were made 5 days ago
    now = time.time_ns()
    # 4..363: one every 30 s over the last three hours
    add_versions(repo, [now - 3 * HOUR + i * 30 * 10**9 for i in range(360)])
    with Daemons() as daemons:
        if through == "daemon":
            daemons.start(repo)
        _prune_and_gc(repo, old, now)


def _prune_and_gc(repo: Path, old: Path, now: int) -> None:
    before = _log(repo)
    assert len(before) == 363

    dry = json.loads(run_cas("--json", "prune", "--dry-run", repo=repo).stdout)
    assert dry["dry_run"] and dry["versions"] == 363 and dry["dropped"] > 0
    assert _log(repo) == before  # a dry run drops nothing

    done = json.loads(run_cas("--json", "prune", repo=repo).stdout)
    assert {k: done[k] for k in ("versions", "kept", "dropped")} == {k: dry[k] for k in ("versions", "kept", "dropped")}
    after = _log(repo)
    seqs = [v["seq"] for v in after]
    ages = {v["seq"]: now - v["time_ns"] for v in after}
    assert len(after) == done["kept"] and seqs[0] == 363  # the newest stays
    assert all(seq in seqs for seq, age in ((v["seq"], now - v["time_ns"]) for v in before) if age < HOUR - 60 * 10**9)
    older = [s for s in seqs if HOUR <= ages[s] < DAY]
    assert len(older) == len({(now - ages[s]) // HOUR for s in older})  # one per hour
    assert 3 in seqs and 1 not in seqs and 2 not in seqs  # the newest of its day stays, the others go
    failed = run_cas("cat", "/old.bin", "--at", "1", repo=repo, check=False)
    assert failed.returncode == 1 and b"no kept namespace root 1" in failed.stderr

    report = json.loads(run_cas("--json", "gc", repo=repo).stdout)
    assert report["bytes_freed"] >= old.stat().st_size  # only the dropped versions named it
    assert run_cas("ls", "/", repo=repo).stdout == b"kept/\n"
    assert run_cas("repo", "verify", repo=repo).returncode == 0


def test_a_daemon_thins_on_its_own_and_keeps_pinned_versions_and_the_policy_is_a_setting(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_cas("mkdir", "/a", repo=repo)  # 1
    run_cas("mkdir", "/b", repo=repo)  # 2
    run_cas("mkdir", "/c", repo=repo)  # 3
    age_history(repo, 2 * DAY)
    add_versions(repo, [time.time_ns() - 10 * 10**9])  # 4: just now
    pinned = json.loads(run_cas("--json", "pin", "/", "--at", "2", repo=repo).stdout)["pinned"][0]
    assert pinned == next(v for v in _log(repo) if v["seq"] == 2)["root"]
    bad = run_cas("config", "set", "history.keep", "1d:1h", "12h:all", repo=repo, check=False)
    assert bad.returncode == 1 and b"ages must grow" in bad.stderr
    run_cas("config", "set", "history.keep", "1h:all", repo=repo)  # nothing older than an hour
    assert run_cas("config", "get", "history.keep", repo=repo).stdout == b"1h:all\n"
    with Daemons() as daemons:
        daemons.start(repo, extra=["--thin-interval", "0.2"])
        wait_until(lambda: [v["seq"] for v in _log(repo)] == [4, 2], 30, "the daemon's thinning")
        run_cas("unpin", pinned, repo=repo)
        wait_until(lambda: [v["seq"] for v in _log(repo)] == [4], 30, "the unpinned version's thinning")
        run_cas("config", "unset", "history.keep", repo=repo)
        report = json.loads(run_cas("--json", "prune", "--dry-run", repo=repo).stdout)
        assert report == {"versions": 1, "kept": 1, "dropped": 0, "newest_dropped": None, "oldest_dropped": None,
                          "policy": "1h:all 1d:1h 30d:1d forever:30d", "dry_run": True}
