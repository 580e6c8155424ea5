"""Published namespaces between real daemons on 127.0.0.1: a namespace
published on A is resolved and read on B (``/ns/KEY/path``), an update on A
reaches B as a new sequence number, and a forged or older record put by a
test client straight onto the record's holders is refused.

Every wait is a condition polled with a deadline; every process is stopped
by PID (:class:`tests.nodeproc.Daemons`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cas.dht.driver import DhtDriver
from cas.dht.ids import id_from_bytes
from cas.dht.routing import Contact, RoutingTable
from cas.keys import Ed25519Key
from cas.names.record import RootRecord, record_key
from cas.net.identity import DEFAULT_ID_DIFFICULTY, Identity
from tests import nodeproc
from tests.conftest import run_cas
from tests.nodeproc import Daemon, Daemons, wait_until

NODES = 5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


def start_network(tmp_path: Path, daemons: Daemons) -> list[Daemon]:
    return nodeproc.start_network(daemons, tmp_path, NODES)


def cas_json(daemon: Daemon, *args: str) -> dict:
    return json.loads(run_cas("--json", *args, repo=daemon.repo, timeout=60).stdout)


def put_raw(target: Daemon, tmp_path: Path, key: bytes, data: bytes) -> tuple[str, str]:
    """PUT_RECORD from a throwaway in-process node; (status, reason)."""

    async def main() -> tuple[str, str]:
        identity = Identity.with_work(DEFAULT_ID_DIFFICULTY)  # throwaway, but it paid for its ID
        driver = DhtDriver(identity, RoutingTable(id_from_bytes(identity.node_id)))
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            contact = Contact(int(target.node_id, 16), target.host, target.port)
            outcome = await driver.put_record(contact, key, data)
            nursery.cancel_scope.cancel()
        return outcome.status, outcome.reason

    return trio.run(main)


def test_publish_on_a_resolve_and_read_on_b_then_update(tmp_path: Path, daemons: Daemons) -> None:
    nodes = start_network(tmp_path, daemons)
    a, b = nodes[1], nodes[3]
    (tmp_path / "x").write_bytes(b"first version\n")
    run_cas("add", str(tmp_path / "x"), "--to", "/docs/x", repo=a.repo)
    published = cas_json(a, "name", "publish", "--every", "2")
    key = published["key"]
    assert published["stored"] >= 1 and published["seq"] == 1

    found = cas_json(b, "name", "resolve", key)
    assert (found["seq"], found["root"]) == (published["seq"], published["root"])
    assert run_cas("cat", f"/ns/{key}/docs/x", repo=b.repo).stdout == b"first version\n"
    listing = run_cas("ls", f"/ns/{key}/docs", repo=b.repo).stdout.decode().split()
    assert listing == ["x"]

    # An update on A goes out by itself (publishing is on): B sees seq 2.
    (tmp_path / "y").write_bytes(b"second file\n")
    run_cas("add", str(tmp_path / "y"), "--to", "/docs/y", repo=a.repo)
    wait_until(lambda: cas_json(b, "name", "resolve", key)["seq"] == 2, 30, "B to see sequence 2")
    assert run_cas("cat", f"/ns/{key}/docs/y", repo=b.repo).stdout == b"second file\n"

    # Holders refuse an older record, a forged one and one misfiled under the key.
    rkey = record_key(bytes.fromhex(key))
    holder = next(d for d in nodes if d is not a and cas_json(d, "name", "status")["held_records"])
    status, reason = put_raw(holder, tmp_path, rkey, _stored_record(a, 1))
    assert status == "refused" and "stale" in reason, reason
    good = RootRecord.decode(_stored_record(a, 2))
    forged = RootRecord(good.public_key, 9, good.root, good.time_ns, bytes(64))
    assert put_raw(holder, tmp_path, rkey, forged.encode())[0] == "refused"
    other = RootRecord.sign(Ed25519Key.generate(), 10, good.root, good.time_ns)
    assert put_raw(holder, tmp_path, rkey, other.encode())[0] == "refused"
    assert cas_json(b, "name", "resolve", key)["seq"] == 2


def _stored_record(daemon: Daemon, seq: int) -> bytes:
    from cas.control import ControlClient, socket_path

    with ControlClient(socket_path(daemon.repo), timeout=10) as client:
        rows = client.call("roots", newest_first=True, limit=None)
    return next(r["record"] for r in rows if r["seq"] == seq)
