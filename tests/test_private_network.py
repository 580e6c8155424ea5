"""Private networks, as a user meets them: ``cas network init`` writes a
key, daemons holding the same key join and replicate, and a daemon with
another key, or none, is refused and learns nothing: no peers, no blocks,
no records, no place in anyone's routing table.

Daemons listen on different loopback addresses (127.0.0.x), so that each
log line names the other end: the dialler's the address it was refused by,
the refuser's the address the dialler listens on (a daemon bound to one
address dials from it); every
wait is a condition polled with a deadline, and every daemon is stopped by
PID (:class:`tests.nodeproc.Daemons`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cas.errors import PeerRefusedError
from cas.net.network_key import NetworkKey
from cas.net.noise import KEY_DIFFERS, PEER_HAS_NO_KEY, WE_HAVE_NO_KEY
from cas.node import TABLE_PATH, load_table
from tests.conftest import pseudo_random, run_cas
from tests.nodeproc import Daemon, Daemons, has, replication_stats, wait_until
from tests.test_dht_driver import network

pytestmark = pytest.mark.timeout(240)

HEADER = "cas-network-key v1"


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def peer_ids(daemon: Daemon) -> set[str]:
    out = run_cas("peers", "--json", repo=daemon.repo, timeout=60).stdout
    return {p["id"] for p in json.loads(out)}


def key_hex(path: Path) -> str:
    return path.read_text().splitlines()[1]


def stderr_lines(result: object) -> list[str]:
    return result.stderr.decode().strip().splitlines()  # type: ignore[attr-defined]


# -- the key file --------------------------------------------------------------------


def test_network_init_writes_a_private_key_into_the_repository_and_never_overwrites_it(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = run_cas("network", "init", "--json", repo=repo)
    path = repo / "keys" / "network.key"
    doc = json.loads(result.stdout)
    assert doc["path"] == str(path.absolute()) and len(doc["fingerprint"]) == 16
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 2 and len(bytes.fromhex(lines[1])) == 32
    assert lines[1] not in (result.stdout + result.stderr).decode()  # the key is never shown
    before = path.read_bytes()
    again = run_cas("network", "init", repo=repo, check=False)
    assert again.returncode == 1
    assert stderr_lines(again) == [f"cas network: error: the network key {path} already exists; "
                                   "it was left as it is"]
    assert path.read_bytes() == before


def test_network_init_out_writes_a_file_to_copy_and_refuses_an_existing_one(tmp_path: Path) -> None:
    out = tmp_path / "shared.key"
    text = run_cas("network", "init", "--out", str(out), repo=tmp_path / "repo").stdout.decode()
    assert text.startswith(f"wrote network key {out}") and "fingerprint" in text
    assert out.stat().st_mode & 0o777 == 0o600 and out.read_text().startswith(HEADER + "\n")
    assert not (tmp_path / "repo" / "keys" / "network.key").exists()
    before = out.read_bytes()
    again = run_cas("network", "init", "--out", str(out), check=False)
    assert again.returncode == 1 and "already exists" in stderr_lines(again)[0]
    assert out.read_bytes() == before


@pytest.mark.parametrize("flag, value, complaint", [
    ("--lease", "4000d", "argument --lease: must be from 1 s to 3650d"),
    ("--repair-interval", "0", "argument --repair-interval: must be more than 0"),
    ("--replicas", "21", "argument --replicas: must be from 1 to 20 (k)"),
])
def test_a_network_setting_out_of_its_range_is_one_usage_error_and_no_key(
        tmp_path: Path, flag: str, value: str, complaint: str) -> None:
    out = tmp_path / "network.key"
    result = run_cas("network", "init", "--out", str(out), flag, value, check=False)
    assert result.returncode == 2
    assert stderr_lines(result)[-1] == f"cas network init: error: {complaint}"
    assert not out.exists()


@pytest.mark.parametrize("problem", ["missing", "damaged", "readable-by-others"])
def test_a_daemon_with_an_unusable_key_file_says_why_in_one_line_and_exits_1(
        tmp_path: Path, problem: str) -> None:
    repo = tmp_path / "repo"
    key = tmp_path / "network.key"
    run_cas("network", "init", "--out", str(key))
    expected = {"missing": "does not exist", "damaged": "damaged or not a cas network key",
                "readable-by-others": "chmod 600"}[problem]
    args = ["--network-key", str(key)]
    if problem == "missing":
        key.unlink()
    elif problem == "damaged":
        key.write_text(HEADER + "\nnot hex\n")
    else:
        key.chmod(0o644)
    result = run_cas("daemon", "--listen", "127.0.0.1:0", *args, repo=repo, check=False, timeout=60)
    assert result.returncode == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("cas daemon: error: the network key") and expected in lines[0]
    assert not (repo / "control.sock").exists()


def test_a_repository_key_readable_by_others_is_made_private_with_a_warning_and_still_used(
        tmp_path: Path, daemons: Daemons) -> None:
    # Never silently the open network instead: the repository is tightened
    # when opened (as every file in it is), and the owner told the key may be known.
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    run_cas("network", "init", "--out", str(tmp_path / "network.key"))
    shutil.copy(tmp_path / "network.key", repo / "keys" / "network.key")
    (repo / "keys" / "network.key").chmod(0o644)
    daemon = daemons.start(repo)
    assert (repo / "keys" / "network.key").stat().st_mode & 0o777 == 0o600
    assert "network.key was readable by other users" in daemon.stderr()
    assert "private network" in daemon.stderr()


# -- the network ---------------------------------------------------------------------


def test_nodes_with_the_same_key_replicate_and_nodes_of_other_networks_learn_nothing(
        tmp_path: Path, daemons: Daemons) -> None:
    shared, other = tmp_path / "shared.key", tmp_path / "other.key"
    fingerprint = json.loads(run_cas("network", "init", "--json", "--out", str(shared)).stdout)["fingerprint"]
    run_cas("network", "init", "--out", str(other))
    # a: the key in its repository, used by default; b: the same key given as a file;
    # c: another private network's key; d: no key at all, the open network.
    a_repo = tmp_path / "a"
    run_cas("init", repo=a_repo)
    shutil.copy(shared, a_repo / "keys" / "network.key")
    a = daemons.start(a_repo, listen="127.0.0.1:0")
    c = daemons.start(tmp_path / "c", listen="127.0.0.3:0", extra=["--network-key", str(other)])
    d = daemons.start(tmp_path / "d", listen="127.0.0.4:0")
    # b joins through a, and also dials c and d, which refuse it (so its
    # bootstrap succeeds through a alone).
    b = daemons.start(tmp_path / "b", listen="127.0.0.2:0", bootstrap=[a.address, c.address, d.address],
                      extra=["--network-key", str(shared)])

    # Each says once which network it is on, by fingerprint, never the key.
    for member in (a, b):
        assert f"private network, key fingerprint {fingerprint}" in member.stderr()
        assert key_hex(shared) not in member.stderr()
    assert "open network" in d.stderr()

    # The same key: they join and replicate.
    data = pseudo_random(300_000, "private network")
    cid = run_cas("add", "-q", "-", repo=b.repo, input=data).stdout.decode().split()[-1]
    wait_until(lambda: has(a, cid), 30, "b's add to be placed on a")
    assert run_cas("cat", cid, repo=a.repo).stdout == data
    # And b's published namespace (a record) is found by a.
    run_cas("add", "-q", "-", "--to", "/x", repo=b.repo, input=b"a record's content\n")
    published = json.loads(run_cas("name", "publish", "--json", repo=b.repo, timeout=60).stdout)
    record_key = published["key"]
    assert published["stored"] >= 1
    resolved = json.loads(run_cas("name", "resolve", "--json", record_key, repo=a.repo, timeout=60).stdout)
    assert resolved["root"] == published["root"]

    # Both ends of every refused handshake say why, naming the address.
    assert f"refused peer {c.address}: {KEY_DIFFERS}" in b.stderr()
    assert f"refused peer {d.address}: {PEER_HAS_NO_KEY}" in b.stderr()
    wait_until(lambda: KEY_DIFFERS in c.stderr(), 15, "c to log b's refusal")
    assert f"refused peer {b.host}:" in c.stderr()
    wait_until(lambda: WE_HAVE_NO_KEY in d.stderr(), 15, "d to log b's refusal")
    assert f"refused peer {b.host}:" in d.stderr()
    assert "refused" not in a.stderr()

    # Outsiders bootstrapping through a member are refused: one line, exit 1,
    # and they come away with an empty routing table.
    for name, extra, reason in [("e", ["--network-key", str(other)], KEY_DIFFERS),
                                ("f", [], WE_HAVE_NO_KEY)]:
        result = run_cas("daemon", "--listen", "127.0.0.5:0", "--bootstrap", a.address, *extra,
                         repo=tmp_path / name, check=False, timeout=60)
        assert result.returncode == 1
        lines = stderr_lines(result)
        assert len(lines) == 1, lines
        assert lines[0] == f"cas daemon: error: bootstrap failed: refused peer {a.address}: {reason}"
        assert a.node_id not in lines[0]
        saved = load_table(tmp_path / name / TABLE_PATH, 0, 0.0)
        assert list(saved.contacts()) == []
    wait_until(lambda: a.stderr().count("refused peer") == 2, 15, "a to log both refusals")
    assert KEY_DIFFERS in a.stderr() and PEER_HAS_NO_KEY in a.stderr()

    # Nobody learnt anything: the members know only each other (even after
    # looking around again), the outsiders know nobody, and cannot get the block.
    for member in (a, b):
        run_cas("dht", "refresh", repo=member.repo, timeout=60)
    assert peer_ids(a) == {b.node_id} and peer_ids(b) == {a.node_id}
    for outsider in (c, d):
        assert peer_ids(outsider) == set()
        result = run_cas("cat", cid, repo=outsider.repo, check=False, timeout=60)
        assert result.returncode == 1 and not result.stdout
        assert not has(outsider, cid)
        result = run_cas("name", "resolve", record_key, repo=outsider.repo, check=False, timeout=60)
        assert result.returncode == 1 and b"no record found" in result.stderr
        for member in (a, b):
            assert member.node_id not in outsider.stderr()


def test_a_networks_settings_come_with_its_key_and_a_node_with_other_settings_is_refused(
        tmp_path: Path, daemons: Daemons) -> None:
    shared = tmp_path / "shared.key"
    run_cas("network", "init", "--out", str(shared), "--replicas", "2", "--repair-interval", "90",
            "--lease", "7d", "--id-difficulty", "0")
    a = daemons.start(tmp_path / "a", extra=["--network-key", str(shared)])
    b = daemons.start(tmp_path / "b", listen="127.0.0.2:0", bootstrap=[a.address],
                      extra=["--network-key", str(shared)])
    for member in (a, b):  # no flags: the key's settings are the node's
        stats = replication_stats(member)
        assert (stats["replicas"], stats["lease_s"]) == (2, 7 * 86400)
        assert "settings: replicas 2, repair-interval 90 s, lease 604800 s, id-difficulty 0 bits" in member.stderr()
    assert peer_ids(a) == {b.node_id}

    # The same secret with another setting is another network: refused.
    drifted = tmp_path / "drifted.key"
    drifted.write_text(shared.read_text().replace("replicas 2", "replicas 3"))
    drifted.chmod(0o600)
    result = run_cas("daemon", "--listen", "127.0.0.3:0", "--bootstrap", a.address, "--network-key", str(drifted),
                     repo=tmp_path / "c", check=False, timeout=60)
    assert result.returncode == 1
    assert stderr_lines(result) == [f"cas daemon: error: bootstrap failed: refused peer {a.address}: {KEY_DIFFERS}"]

    # A flag that contradicts the key is refused before the node starts.
    result = run_cas("daemon", "--listen", "127.0.0.4:0", "--network-key", str(shared), "--replicas", "3",
                     repo=tmp_path / "d", check=False, timeout=60)
    assert result.returncode == 1
    assert stderr_lines(result) == [
        f"cas daemon: error: --replicas 3 differs from the network's 2, set in its key {shared}; "
        "every node of a network uses its key's settings (leave --replicas out)"]


def test_refusals_are_counted_per_address_and_told_the_1st_10th_100th_time() -> None:
    """A peer that keeps knocking is counted every time, and the log hears
    of it a bounded number of times."""
    told: list[str] = []

    async def main() -> None:
        async with network() as net:
            member = await net.add(network_key=NetworkKey.generate(), on_refused=told.append)
            outsider = await net.add(network_key=NetworkKey.generate())
            for _ in range(12):
                with pytest.raises(PeerRefusedError, match="network key differs"):
                    await outsider.pool.dial("127.0.0.1", member.listen_port or 0, None)
            with trio.fail_after(10):
                while member.refused["127.0.0.1"] < 12:  # the refuser counts after answering
                    await trio.sleep(0.01)
            assert outsider.refused["127.0.0.1"] == 12
            assert len(member.table) == 0 and len(outsider.table) == 0

    trio.run(main)
    assert len(told) == 2
    assert told[0].startswith("refused peer 127.0.0.1:") and told[0].endswith(KEY_DIFFERS)
    assert told[1].endswith(f"{KEY_DIFFERS} (10 times from 127.0.0.1)")
