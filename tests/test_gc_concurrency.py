"""Garbage collection running while an add is in flight, from two processes
talking to the node that owns the repository."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CAS, pseudo_random_stream, run_cas
from tests.nodeproc import Daemons

MiB = 1 << 20


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


@pytest.mark.slow
def test_gc_in_another_process_never_deletes_what_an_add_is_about_to_reference(daemons: Daemons, tmp_path: Path) -> None:
    daemon = daemons.start(tmp_path / "repo")
    big = tmp_path / "big"
    with open(big, "wb") as f:
        for piece in pseudo_random_stream(160 * MiB, seed="gc race"):
            f.write(piece)
    add = subprocess.Popen(
        [CAS, "--repo", str(daemon.repo), "add", str(big), "--to", "/big"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    gcs = 0
    try:
        # Collect garbage over and over for as long as the add runs: every
        # block it has put so far is unreferenced until its final link.
        while add.poll() is None:
            run_cas("gc", "--history", "0", repo=daemon.repo)
            gcs += 1
        out, err = add.communicate(timeout=300)
    finally:
        if add.poll() is None:
            add.kill()
            add.wait()
    assert add.returncode == 0, err
    assert gcs >= 2, "the add finished before gc could run beside it; the test proves nothing"
    run_cas("gc", "--history", "0", repo=daemon.repo)
    got = subprocess.run([CAS, "--repo", str(daemon.repo), "cat", "/big"], capture_output=True, timeout=300)
    assert got.returncode == 0 and got.stdout == big.read_bytes()
    assert run_cas("repo", "verify", repo=daemon.repo).returncode == 0


def test_init_while_a_daemon_owns_the_repository_reports_it_exists(daemons: Daemons, tmp_path: Path) -> None:
    daemon = daemons.start(tmp_path / "repo")
    out = run_cas("init", repo=daemon.repo).stdout.decode()
    assert "already" in out
