"""Reading beside the owner: commands that only read never wait for a
writer (``LocalStore.open(read_only=True)``, ``readers.lock``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.blocks import Block
from cas.cid import RAW
from cas.errors import RepositoryError, RepositoryLockedError
from cas.store import LocalStore, _lock
from tests.conftest import CAS, Holder, pseudo_random, read_line, run_cas


def filled(repo: Path, tmp_path: Path) -> bytes:
    data = pseudo_random(600_000, "read beside the owner")
    (tmp_path / "f.bin").write_bytes(data)
    run_cas("add", str(tmp_path / "f.bin"), "--to", "/d/f.bin", repo=repo)
    return data


def test_reading_commands_do_not_wait_for_a_writer_and_changes_still_do(repo: Path, tmp_path: Path) -> None:
    data = filled(repo, tmp_path)
    with Holder(repo) as holder:  # as a long 'cas add' holds it
        assert run_cas("--wait", "0", "cat", "/d/f.bin", repo=repo).stdout == data
        assert run_cas("--wait", "0", "ls", "/d", repo=repo).stdout == b"f.bin\n"
        for argv in (["stat", "/d/f.bin"], ["log"], ["root"], ["repo", "stat"],
                     ["get", "/d/f.bin", "-o", str(tmp_path / "out.bin")]):
            assert run_cas("--wait", "0", *argv, repo=repo).returncode == 0, argv
        assert (tmp_path / "out.bin").read_bytes() == data
        changed = run_cas("--wait", "0", "mkdir", "/x", repo=repo, check=False)
        assert changed.returncode == 1 and f"in use by process {holder.pid}" in changed.stderr.decode()


def test_a_new_repository_reads_as_empty_beside_its_first_writer(repo: Path, tmp_path: Path) -> None:
    run_cas("init", repo=repo)  # the first add (a pin, no namespace yet) still running:
    with Holder(repo):
        assert run_cas("--wait", "0", "ls", "/", repo=repo).stdout == b""
        for argv in (["stat", "/"], ["log"], ["root"], ["repo", "stat"]):
            assert run_cas("--wait", "0", *argv, repo=repo).returncode == 0, argv
        missing = run_cas("--wait", "0", "cat", "/nothing", repo=repo, check=False)
        assert missing.returncode == 1 and "/nothing" in missing.stderr.decode()
    assert run_cas("ls", "/", repo=repo).stdout == b""  # and its owner after it
    run_cas("mkdir", "/d", repo=repo)
    assert run_cas("ls", "/", repo=repo).stdout == b"d/\n"


def test_a_reader_sees_what_the_owner_commits_after_it_opened(repo: Path, tmp_path: Path) -> None:
    filled(repo, tmp_path)
    with LocalStore.open(repo, read_only=True) as reader:
        block = Block.of(RAW, b"committed later")
        with LocalStore.open(repo) as owner:  # the owner is not held up by the reader
            owner.blocks.put(block)
            owner.pin(block.cid)
        assert reader.blocks.get(block.cid) == b"committed later"
        assert block.cid in reader.pins()


def test_a_reader_writes_nothing(repo: Path, tmp_path: Path) -> None:
    filled(repo, tmp_path)
    with LocalStore.open(repo, read_only=True) as reader:
        with pytest.raises(RepositoryError, match="open for reading only"):
            reader.blocks.put(Block.of(RAW, b"x" * 100_000))  # a pack block
        with pytest.raises(RepositoryError, match="open for reading only"):
            reader.pin(reader.roots()[0].root)


def test_gc_waits_for_readers_and_keeps_new_ones_out_while_it_deletes(repo: Path, tmp_path: Path) -> None:
    filled(repo, tmp_path)
    with LocalStore.open(repo, read_only=True) as reader:
        gc = subprocess.Popen([CAS, "--repo", str(repo), "gc"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = read_line(gc.stderr, 30)
            assert b"waiting for the repository: other commands are reading it" in line, line
            assert gc.poll() is None  # still waiting: nothing deleted under the reader
            assert reader.blocks.get(reader.roots()[0].root)
        finally:
            reader.close()
            _, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err
    # While the owner keeps readers out (as gc and a daemon do), a reader
    # waits for it, then says why it gives up.
    held = _lock.exclusive_readers(repo)
    try:
        start = time.monotonic()
        with pytest.raises(RepositoryLockedError, match="deletes blocks from it"):
            LocalStore.open(repo, read_only=True, wait=0.3)
        assert time.monotonic() - start >= 0.3
    finally:
        import os

        os.close(held)
    LocalStore.open(repo, read_only=True).close()


def test_a_repository_that_needs_upgrading_is_opened_by_a_reader_as_by_its_owner(repo: Path, tmp_path: Path) -> None:
    import sqlite3

    filled(repo, tmp_path)
    conn = sqlite3.connect(repo / "meta.sqlite")
    conn.execute("PRAGMA user_version = 6")  # as a repository from before leases
    conn.close()
    store = LocalStore.open(repo, read_only=True)
    try:
        assert not store.read_only  # upgraded, which a reader may not do
    finally:
        store.close()
    assert subprocess.run([sys.executable, "-c", "import sqlite3; print(sqlite3.connect("
                           f"{str(repo / 'meta.sqlite')!r}).execute('PRAGMA user_version').fetchone()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip() == "7"


def test_a_daemon_starts_once_the_readers_beside_the_last_owner_are_done(repo: Path, tmp_path: Path) -> None:
    from tests.nodeproc import Daemons, wait_until

    filled(repo, tmp_path)
    reader = LocalStore.open(repo, read_only=True)
    try:
        with Daemons() as daemons:
            daemon = daemons.start(repo, wait=False)
            wait_until(lambda: "waiting for the commands reading the repository to finish" in daemon.stderr(),
                       30, "the daemon to say it waits for the reader")
            assert daemon.proc.poll() is None and not daemon.node_id  # not serving yet
            reader.close()
            daemons.wait_ready(daemon)
            # Serving now: reading commands go through it, none beside it.
            assert run_cas("cat", "/d/f.bin", repo=repo).stdout == (tmp_path / "f.bin").read_bytes()
            with pytest.raises(RepositoryLockedError, match="deletes blocks from it"):
                LocalStore.open(repo, read_only=True, wait=0)
    finally:
        reader.close()
