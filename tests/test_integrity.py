"""Integrity end to end, with real daemons on 127.0.0.1: a holder whose
disk went bad neither claims nor serves its bad copies, heals them from
the network, and the file survives the death of two other holders.

The measured case of issue 14: 5 nodes, R = 3, a 32 MiB file; one holder's
pack bytes (and its database rows) go bad on disk while it runs. Before,
HAVE still said yes, repair stored nothing, the holder's own ``cas cat``
failed, and after two other holders died blocks existed only as corrupt
copies. Every wait is a condition with a deadline; every daemon is stopped
by PID."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.cid import CID, RAW, parse_cid
from tests import nodeproc
from tests.conftest import pseudo_random, run_cas
from tests.nodeproc import Daemon, Daemons, dag_of, has, replication_stats, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NODES = 5


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def start_network(tmp_path: Path, daemons: Daemons, extra: list[str]) -> list[Daemon]:
    return nodeproc.start_network(daemons, tmp_path, NODES, extra)


def damage(repo: Path, cids: list[CID]) -> list[CID]:
    """Flip a byte in the middle of each of ``cids`` that ``repo`` stores,
    in its pack or in its database row, behind its daemon's back; the CIDs
    damaged."""
    db = sqlite3.connect(repo / "meta.sqlite", timeout=30)
    damaged = []
    try:
        for cid in cids:
            row = db.execute("SELECT pack, start, length FROM pack_blocks WHERE cid = ?", (bytes(cid),)).fetchone()
            if row is not None:
                pack, start, length = row
                with open(repo / "packs" / f"{pack:08d}.pack", "r+b") as f:
                    f.seek(start + length // 2)
                    byte = f.read(1)
                    f.seek(start + length // 2)
                    f.write(bytes([byte[0] ^ 0x5A]))
                damaged.append(cid)
                continue
            row = db.execute("SELECT data FROM small_blocks WHERE cid = ?", (bytes(cid),)).fetchone()
            if row is not None:
                data = bytearray(row[0])
                data[len(data) // 2] ^= 0x5A
                db.execute("UPDATE small_blocks SET data = ? WHERE cid = ?", (bytes(data), bytes(cid)))
                db.commit()
                damaged.append(cid)
    finally:
        db.close()
    return damaged


def added(adder: Daemon, size: int, seed: str) -> tuple[bytes, CID, list[CID]]:
    """``size`` bytes added through ``adder``: (the bytes, the root, every block)."""
    data = pseudo_random(size, seed)
    root = parse_cid(run_cas("add", "-q", "-", repo=adder.repo, input=data, timeout=300).stdout.decode().strip())
    return data, root, dag_of(adder, root)


def busiest(nodes: list[Daemon], blocks: list[CID]) -> Daemon:
    """The node of ``nodes`` holding the most of ``blocks``."""
    return max(nodes, key=lambda d: sum(has(d, c) for c in blocks))


def quarantine_lines(daemon: Daemon) -> list[str]:
    return re.findall(r"block (\S+) failed verification in ([^;]+); quarantined", daemon.stderr())


def test_a_holders_own_read_heals_its_damaged_copies_from_the_network(tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons, ["--repair-interval", "3600", "--scrub-period", "3600"])
    adder = nodes[0]
    data, root, blocks = added(adder, 4_000_000, "heal on read")
    holder = busiest(nodes[1:], blocks)
    held = [c for c in blocks if has(holder, c)]
    bad = damage(holder.repo, held)
    assert len(bad) >= 2 and any(c.codec == RAW for c in bad)
    # Asked by a peer (HAVE, through ``cas dht find``), the holder no longer
    # claims a copy it cannot verify.
    leaf = next(c for c in bad if c.codec == RAW)
    answers = json.loads(run_cas("dht", "find", str(leaf), "--json", repo=adder.repo).stdout)
    assert [entry["has"] for entry in answers["closest"] if entry["id"] == holder.node_id] == [False]

    assert run_cas("cat", str(root), repo=holder.repo, timeout=120).stdout == data  # healed, not failed
    logged = quarantine_lines(holder)
    assert sorted(cid for cid, _ in logged) == sorted(str(c) for c in bad)  # each once, with its place
    assert [entry["has"] for entry in json.loads(run_cas("dht", "find", str(leaf), "--json", repo=adder.repo).stdout)[
        "closest"] if entry["id"] == holder.node_id] == [True]  # a good copy again
    assert all(".pack at offset" in place or "database" in place for _, place in logged)
    run_cas("repo", "verify", repo=holder.repo)  # every copy it keeps is good again
    assert replication_stats(holder)["restored"] == len(bad) and replication_stats(holder)["in_quarantine"] == 0


def test_damaged_copies_are_replaced_before_two_holders_die_and_nothing_is_lost(
        tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons, ["--repair-interval", "1.5", "--scrub-period", "2"])
    adder = nodes[0]
    data, root, blocks = added(adder, 32 * 1024 * 1024, "the measured case")
    others = nodes[1:]
    holder = busiest(others, blocks)
    bad = damage(holder.repo, [c for c in blocks if has(holder, c)])
    assert len(bad) > 10

    # HAVE, FIND_BLOCK and the scrub find the damage; the holder quarantines
    # each bad copy (it no longer claims it) and fetches a good one.
    def healed() -> bool:
        s = replication_stats(holder)
        return s["quarantined"] >= len(bad) and s["in_quarantine"] == 0
    wait_until(healed, timeout=120, what="the holder to quarantine and restore every damaged copy", interval=0.5)
    run_cas("repo", "verify", repo=holder.repo)

    # Two other holders die at once, the adder among them: every block still
    # has good copies, and the file reads intact from every survivor.
    victims = [adder, busiest([d for d in others if d is not holder], blocks)]
    for victim in victims:
        daemons.stop(victim, signal.SIGKILL)
    survivors = [d for d in nodes if d not in victims]
    for reader in survivors:
        assert run_cas("cat", str(root), repo=reader.repo, timeout=180).stdout == data
    assert len(quarantine_lines(holder)) == len(bad)  # each logged once


def test_verify_repair_offline_quarantines_and_through_a_daemon_fetches_good_copies(
        tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons, ["--repair-interval", "3600", "--scrub-period", "3600"])
    adder = nodes[0]
    data, root, blocks = added(adder, 3_000_000, "verify repair")
    holder = busiest(nodes[1:], blocks)
    held = [c for c in blocks if has(holder, c)]
    daemons.stop(holder)
    bad = damage(holder.repo, held)
    found = run_cas("repo", "verify", repo=holder.repo, check=False)
    assert found.returncode == 1 and all(str(c) in found.stdout.decode() for c in bad)
    offline = run_cas("repo", "verify", "--repair", repo=holder.repo, check=False)
    assert offline.returncode == 1 and b"start 'cas daemon'" in offline.stderr
    assert b"quarantined" in run_cas("repo", "verify", repo=holder.repo, check=False).stdout

    restarted = daemons.start(holder.repo, bootstrap=[adder.address],
                              extra=["--repair-interval", "3600", "--scrub-period", "3600"])
    run_cas("dht", "refresh", repo=restarted.repo)
    repaired = run_cas("repo", "verify", "--repair", repo=restarted.repo, timeout=120)
    assert f"repaired: {len(bad)} block(s)".encode() in repaired.stderr
    run_cas("repo", "verify", repo=restarted.repo)
