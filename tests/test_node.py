"""The node as a process: start-up, the ready line, clean shutdown with the
routing table saved and reloaded, bad peers (silent, lying about their ID,
sending garbage), and a bootstrap that cannot reach anyone."""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cas import dagcbor
from cas.dht.ids import id_to_bytes
from cas.errors import InvalidInputError
from cas.net.connection import connect_tcp
from cas.net.identity import Identity
from cas.node import TABLE_PATH, load_table, parse_address, parse_target
from tests.conftest import run_cas
from tests.nodeproc import Daemons, wait_until


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def peer_ids(repo: Path) -> set[str]:
    out = run_cas("peers", "--json", repo=repo).stdout
    return {p["id"] for p in json.loads(out)}


def test_addresses_and_targets_parse_or_fail_clearly() -> None:
    assert parse_address("127.0.0.1:4710") == ("127.0.0.1", 4710)
    assert parse_address("[::1]:9") == ("::1", 9)
    with pytest.raises(InvalidInputError, match="HOST:PORT"):
        parse_address("localhost")
    node_id = "ab" * 32
    assert parse_target(node_id) == (int(node_id, 16), None)


def test_id_works_without_a_daemon_and_matches_the_running_one(tmp_path: Path, daemons: Daemons) -> None:
    repo = tmp_path / "repo"
    offline = json.loads(run_cas("id", "--json", repo=repo).stdout)
    assert offline["running"] is False and len(offline["id"]) == 64
    assert (repo / "keys" / "node.key").stat().st_mode & 0o777 == 0o600
    daemon = daemons.start(repo)
    online = json.loads(run_cas("id", "--json", repo=repo).stdout)
    assert online == {"id": offline["id"], "host": "127.0.0.1", "port": daemon.port, "running": True,
                      "announce": None, "reachable": "yes"}
    assert daemon.node_id == offline["id"]


def test_sigterm_saves_the_routing_table_and_a_restart_reloads_it(tmp_path: Path, daemons: Daemons) -> None:
    a = daemons.start(tmp_path / "a")
    b = daemons.start(tmp_path / "b", bootstrap=[a.address])
    wait_until(lambda: b.node_id in peer_ids(a.repo), 10, "a to learn b")
    assert daemons.stop(a) == 0
    assert "stopped" in a.stderr()
    table = load_table(a.repo / TABLE_PATH, int(a.node_id, 16), 0.0)
    assert [c.node_id for c in table.contacts()] == [int(b.node_id, 16)]
    record = dagcbor.decode((a.repo / TABLE_PATH).read_bytes())  # DAG-CBOR, not pickle
    assert record["node_id"] == id_to_bytes(int(a.node_id, 16))
    again = daemons.start(a.repo)  # no --bootstrap: the saved table is all it has
    assert again.node_id == a.node_id
    assert b.node_id in peer_ids(again.repo)


def test_sigint_also_shuts_down_cleanly(tmp_path: Path, daemons: Daemons) -> None:
    a = daemons.start(tmp_path / "a")
    assert daemons.stop(a, signal.SIGINT) == 0
    assert (a.repo / TABLE_PATH).exists()
    assert not (a.repo / "control.sock").exists()


def test_a_daemon_whose_bootstrap_peer_is_down_runs_and_joins_once_it_comes_up(
        tmp_path: Path, daemons: Daemons) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    late = daemons.start(tmp_path / "late", bootstrap=[f"127.0.0.1:{port}"])  # ready, not exited
    assert late.proc.poll() is None
    note = [line for line in late.stderr().splitlines() if "bootstrap" in line]
    assert note and all(line.startswith("cas daemon: bootstrap failed") for line in note)  # lines, not a traceback
    assert "Traceback" not in late.stderr()
    assert f"127.0.0.1:{port}" in note[0] and "retrying" in note[0]
    cid = run_cas("add", "-q", "-", repo=late.repo, input=b"alone meanwhile").stdout.decode().strip()
    assert run_cas("cat", cid, repo=late.repo).stdout == b"alone meanwhile"  # it serves its repository

    first = daemons.start(tmp_path / "first", listen=f"127.0.0.1:{port}")

    def joined() -> bool:
        peers = json.loads(run_cas("peers", "--json", repo=late.repo).stdout)
        return any(p["id"] == first.node_id for p in peers)

    wait_until(joined, timeout=30, what="the late daemon to join once its bootstrap peer is up", interval=0.2)
    # Said once the join is done (the peer shows a moment before the line).
    wait_until(lambda: "joined the network through 127.0.0.1:" in late.stderr(), timeout=30,
               what="the late daemon to say it joined", interval=0.1)


def test_a_silent_connection_is_closed_after_the_timeout(tmp_path: Path, daemons: Daemons) -> None:
    a = daemons.start(tmp_path / "a", extra=["--handshake-timeout", "1"])
    silent = socket.create_connection((a.host, a.port), timeout=15)
    started = time.monotonic()
    assert silent.recv(4096) == b""  # the node hung up on us
    assert time.monotonic() - started < 10
    silent.close()
    assert peer_ids(a.repo) == set()  # and it is still serving


def test_a_peer_claiming_a_wrong_node_id_is_refused(tmp_path: Path, daemons: Daemons) -> None:
    b = daemons.start(tmp_path / "b")
    a_repo = tmp_path / "a"
    run_cas("id", repo=a_repo)  # creates the key
    a_id = int(json.loads(run_cas("id", "--json", repo=a_repo).stdout)["id"], 16)
    impostor = Identity.generate().node_id  # an ID that does not live at b's address
    record = {"version": 1, "node_id": id_to_bytes(a_id), "k": 20, "replacements": [],
              "contacts": [{"id": impostor, "host": b.host, "port": b.port, "age_ms": 0, "failures": 0}]}
    (a_repo / "dht").mkdir(mode=0o700, exist_ok=True)
    (a_repo / TABLE_PATH).write_bytes(dagcbor.encode(record))
    a = daemons.start(a_repo)  # rejoins through its saved table: dials the impostor
    wait_until(lambda: impostor.hex() not in peer_ids(a.repo), 15, "the false contact to be dropped")
    assert b.node_id not in peer_ids(a.repo)  # an ID mismatch teaches nothing


def test_garbage_from_a_peer_does_not_stop_the_node(tmp_path: Path, daemons: Daemons) -> None:
    a = daemons.start(tmp_path / "a")
    # Bytes that are no handshake at all.
    raw = socket.create_connection((a.host, a.port), timeout=15)
    raw.sendall(b"\xff" * 100 + struct.pack(">I", 0xFFFFFFFF))
    assert raw.recv(4096) == b""
    raw.close()

    # A proper handshake, then undecryptable frames.
    async def handshake_then_garbage() -> None:
        channel = await connect_tcp(a.host, a.port, Identity.generate())
        await channel._stream.send_all(struct.pack(">I", 40) + b"\x00" * 40)
        with trio.fail_after(15):
            assert await channel._stream.receive_some(4096) == b""

    trio.run(handshake_then_garbage)
    # It still answers others: a new peer joins through it and finds it.
    b = daemons.start(tmp_path / "b", bootstrap=[a.address])
    found = json.loads(run_cas("dht", "find", "--json", a.node_id, repo=b.repo).stdout)
    assert [c["id"] for c in found["closest"]] == [a.node_id]


def test_sigterm_during_bootstrap_is_a_clean_exit(tmp_path: Path, daemons: Daemons) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    holder.settimeout(15)
    try:
        port = holder.getsockname()[1]
        a = daemons.start(tmp_path / "a", bootstrap=[f"127.0.0.1:{port}"], wait=False)
        conn, _ = holder.accept()  # the daemon is now in the handshake, waiting on us
        assert daemons.stop(a) == 0
        conn.close()
    finally:
        holder.close()
    assert "Traceback" not in a.stderr()
    assert not (a.repo / "control.sock").exists()


def test_dht_find_of_a_cid_says_which_close_nodes_hold_the_block(tmp_path: Path, daemons: Daemons) -> None:
    a = daemons.start(tmp_path / "a")
    b = daemons.start(tmp_path / "b", bootstrap=[a.address])
    c = daemons.start(tmp_path / "c", bootstrap=[a.address])
    cid = run_cas("add", "-q", "-", repo=a.repo, input=b"held by a").stdout.decode().strip()
    # With R = 3 and three nodes, the add placed a copy on each of the others.
    found = json.loads(run_cas("dht", "find", "--json", cid, repo=b.repo).stdout)
    assert found["cid"] == cid and found["local_has"] is True
    assert {x["id"]: x["has"] for x in found["closest"]} == {a.node_id: True, c.node_id: True}
    never = "bafkr4i" + "a" * 52  # a CID nobody holds
    found = json.loads(run_cas("dht", "find", "--json", never, repo=b.repo).stdout)
    assert found["local_has"] is False and {x["has"] for x in found["closest"]} == {False}
    text = run_cas("dht", "find", cid, repo=c.repo).stdout.decode()
    assert f"{a.node_id}  {a.address}  has it" in text


def test_a_node_whose_id_shows_too_little_work_is_refused_and_never_listed(tmp_path: Path, daemons: Daemons) -> None:
    # A new identity of difficulty 16 is ~65,000 hashes on average, and a
    # draw of several times that is not rare: on a busy machine it can take
    # longer than the usual 30 s before the node is ready.
    demanding = daemons.start(tmp_path / "demanding", extra=["--id-difficulty", "16"], timeout=180)
    cheap = daemons.start(tmp_path / "cheap", bootstrap=[demanding.address], extra=["--id-difficulty", "0"])
    worked = daemons.start(tmp_path / "worked", bootstrap=[demanding.address], extra=["--id-difficulty", "16"],
                           timeout=180)
    assert "bootstrap failed" in cheap.stderr() and "work" in cheap.stderr()
    listed = {p["id"] for p in json.loads(run_cas("peers", "--json", repo=demanding.repo).stdout)}
    assert worked.node_id in listed and cheap.node_id not in listed
    assert json.loads(run_cas("peers", "--json", repo=cheap.repo).stdout) == []
