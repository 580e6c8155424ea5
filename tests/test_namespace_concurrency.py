"""No acknowledged namespace change is lost, with many writers at once.

Real processes, as users run them: 16 concurrent ``cas`` clients through a
daemon, with ``cas gc --history 1`` running over and over beside them; the same clients while a mount's own writers write files through
it; the same clients with no daemon at all, waiting their turn for the
repository. Each client keeps a model of what it was told succeeded
(tests/namespace_mix.py); afterwards every acknowledged path is there with
its bytes, and after ``cas gc --history 1`` every acknowledged CID still
reads. Every run is bounded in time.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

import cas
from tests.conftest import run_cas
from tests.fusemount import mounted
from tests.namespace_mix import (
    Model,
    cas_runner,
    cli_client,
    gc_client,
    missing_changes,
    mount_writer,
    run_clients,
)
from tests.nodeproc import Daemons

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

CLIENTS = 16
SECONDS = 15.0


def check_everything_survived(repo_path: Path, models: list[Model]) -> None:
    failures = [failure for model in models for failure in model.failures]
    assert failures == [], f"{len(failures)} commands failed, e.g. {failures[:3]}"
    with cas.open_repository(repo_path) as repo:
        lost = missing_changes(repo, models)
    assert lost == [], f"{len(lost)} acknowledged changes lost, e.g. {lost[:5]}"
    # What only the namespace keeps is kept: no pin protects these CIDs.
    run_cas("gc", "--history", "1", repo=repo_path)
    with cas.open_repository(repo_path) as repo:
        unreadable = [cid for model in models for cid, path in model.cids.items()
                      if repo.read(cid) != repo.read(_where_now(model, path))]
    assert unreadable == []
    run_cas("repo", "verify", repo=repo_path)  # exits 1 on any problem


def _where_now(model: Model, added_at: str) -> str:
    """Where a file added at ``added_at`` is now (moved into archive/ or flipped)."""
    if added_at in model.files:
        return added_at
    parent, name = added_at.rsplit("/", 1)
    for candidate in (f"{parent}/archive/{name}", f"{parent}/x", f"{parent}/y"):
        if candidate in model.files:
            return candidate
    raise AssertionError(f"{added_at} is nowhere in the model")


def test_sixteen_clients_through_a_daemon_lose_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    with Daemons() as daemons:
        daemons.start(repo)
        run = cas_runner(repo)
        models = [Model() for _ in range(CLIENTS)]
        collector = Model()
        deadline = time.monotonic() + SECONDS
        run_clients([partial(cli_client, k, run, deadline, tmp_path / f"client{k}", models[k])
                     for k in range(CLIENTS)] + [partial(gc_client, run, deadline, collector)])
        assert collector.failures == [] and collector.commands > 1
        check_everything_survived(repo, models)


def test_clients_and_writers_through_a_mount_lose_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    with mounted(repo, tmp_path / "mnt") as mnt:
        run = cas_runner(repo)
        cli_models = [Model() for _ in range(8)]
        mount_models = [Model() for _ in range(4)]
        deadline = time.monotonic() + SECONDS
        run_clients([partial(cli_client, k, run, deadline, tmp_path / f"client{k}", cli_models[k])
                     for k in range(len(cli_models))]
                    + [partial(mount_writer, k, mnt, deadline, mount_models[k]) for k in range(len(mount_models))])
        assert all(m.commands for m in mount_models), "a mount writer wrote nothing"
        with cas.open_repository(repo) as through_the_mount:
            assert missing_changes(through_the_mount, cli_models + mount_models) == []
    # And still there after a clean unmount, with no daemon.
    check_everything_survived(repo, cli_models + mount_models)


def test_sixteen_clients_with_no_daemon_wait_their_turn_and_lose_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    # Each waits its turn, however long: how long sixteen clients queue on a
    # busy two-core machine (beyond the default --wait of 5 s when other
    # tests run beside them) is a speed figure, not what this test checks.
    run = cas_runner(repo, "--wait", "120")
    models = [Model() for _ in range(CLIENTS)]
    collector = Model()
    deadline = time.monotonic() + SECONDS
    run_clients([partial(cli_client, k, run, deadline, tmp_path / f"client{k}", models[k])
                 for k in range(CLIENTS)] + [partial(gc_client, run, deadline, collector)])
    assert collector.failures == [], "a gc was refused instead of waiting its turn"
    check_everything_survived(repo, models)
