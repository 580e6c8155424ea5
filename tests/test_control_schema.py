"""The control ops' schema (cas/control/schema.py): every op's request and
result round trip through DAG-CBOR, the wire keeps its old shape, and a
malformed request is refused with an error naming the op and the argument."""

from __future__ import annotations

from typing import Any

import pytest

from cas import dagcbor
from cas.blocks import Block
from cas.cid import CID, DAG_CBOR, RAW
from cas.control import Op
from cas.control import schema as ops
from cas.control._server import _parse_request
from cas.errors import ControlArgumentError, ControlProtocolError, InvalidInputError, UnknownOpError
from cas.names.changes import Mkdir
from cas.names.namespace import Node, RootState
from cas.store import GcReport, Problem, RepoStat, RootRow, VerifyReport

CID_A = CID.for_data(RAW, b"a")
CID_B = CID.for_data(DAG_CBOR, b"b")
KEY = b"\x07" * 32
RECORD_DOC = {"key": KEY.hex(), "seq": 3, "root": CID_B, "time_ns": 5, "record": b"signed"}

# One request and one result (for a streaming op: one item) per op.
EXAMPLES: dict[str, tuple[ops.Request[Any], Any]] = {
    "ping": (ops.Ping(), "pong"),
    "has": (ops.Has(CID_A), True),
    "get": (ops.Get(CID_A), b"a"),
    "prefetch": (ops.Prefetch([CID_A, CID_A]), None),
    "put": (ops.Put(CID_A, b"a"), False),
    "put_many": (ops.PutMany([(CID_A, b"a"), (CID_B, b"b")]), [True, False]),
    "add_file": (ops.AddFile(offset=12), {"cid": CID_A, "size": 1, "blocks": 1, "new_blocks": 1, "new_bytes": 1}),
    "write_file": (ops.WriteFile(CID_A, 3, 100), {"written": 100}),
    "protect": (ops.Protect(CID_A), None),
    "barrier": (ops.Barrier(), None),
    "delete": (ops.Delete(CID_A), True),
    "iterate": (ops.Iterate(), CID_B),
    "pin": (ops.Pin(CID_A), True),
    "unpin": (ops.Unpin(CID_A), False),
    "pins": (ops.Pins(limit=2, after=CID_A), [CID_A, CID_B]),
    "stat": (ops.Stat(), RepoStat(path="/r", blocks=2, bytes=3, pinned=1, pack_bytes=4, dead_bytes=5)),
    "verify": (ops.Verify(repair=True), VerifyReport(blocks_checked=2, bytes_checked=9,
                                                     problems=[Problem(str(CID_A), "corrupt")], repaired=1)),
    "gc": (ops.Gc(history=4), GcReport(blocks_freed=1, bytes_freed=2, roots_dropped=3, expired_freed=4)),
    "roots": (ops.Roots(newest_first=False, limit=2, after=0), [RootRow(1, CID_B, 10, b"r1"), RootRow(2, CID_B, 11, b"r2")]),
    "prune": (ops.Prune(dry_run=True), {"versions": 9, "kept": 5, "dropped": 4, "newest_dropped": 7,
                                        "oldest_dropped": 2, "policy": "1h:all"}),
    "commit_root": (ops.CommitRoot(2, CID_B, 11, b"r2"), None),
    "namespace_change": (ops.NamespaceChange(Mkdir("/x", parents=True)), RootState(3, CID_B, 12, KEY)),
    "namespace_resolve": (ops.NamespaceResolve("/d/f", at=2), Node("/d/f", "f", "file", 1, 0o644, 7, CID_A)),
    "id": (ops.Id(), {"id": "ab" * 32, "host": "127.0.0.1", "port": 4001, "peers": 0}),
    "peers": (ops.Peers(), [{"id": "ab" * 32, "host": "h", "port": 1, "connected": True, "failures": 0}]),
    "dht_find": (ops.DhtFind(str(CID_A)), {"target": "00" * 32, "cid": None, "closest": [], "hops": 1}),
    "dht_refresh": (ops.DhtRefresh(), 3),
    "replication_status": (ops.ReplicationStatus([CID_A], wait=5),
                           [{"cid": CID_A, "blocks": 1, "replicas": 3, "copies": 1, "settled": True,
                             "reachable": 0}]),
    "replication_repair": (ops.ReplicationRepair(), {"blocks": 1, "stores": 0, "dropped": 0, "short": 0,
                                                     "expired": 0}),
    "replication_stats": (ops.ReplicationStats(), {"replicas": 3, "last_failure": None}),
    "net_stats": (ops.NetStats(), {"handshakes_in": 1, "frame_memory": {"limit": 1}}),
    "name_publish": (ops.NamePublish(interval_ms=60_000), {"publishing": True, "interval_ms": 60_000,
                                                           **RECORD_DOC}),
    "name_resolve": (ops.NameResolve(KEY), {"found": RECORD_DOC, "answers": 2, "asked": 3}),
    "name_status": (ops.NameStatus(), {"publishing": False, "interval_ms": None, "last": None,
                                       "last_error": None, "held_records": 0}),
    "mount": (ops.Mount("/home/u/cas", read_only=True, cache_bytes=1 << 20, options=["noatime"]),
              {"mountpoint": "/home/u/cas", "read_only": True}),
    "unmount": (ops.Unmount("/home/u/cas"), True),
}


def _over_the_wire(value: Any) -> Any:
    return dagcbor.decode_noncanonical(dagcbor.encode(value))


def test_every_op_has_an_example_and_a_handler() -> None:
    from cas.node.ops import HANDLERS

    assert set(EXAMPLES) == set(ops.OPS)
    assert {request.OP for request in HANDLERS} == set(ops.OPS)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_request_and_result_round_trips(name: str) -> None:
    request, result = EXAMPLES[name]
    cls = type(request)
    assert cls.OP == name and ops.request_class(name) is cls
    assert cls.from_args(_over_the_wire(request.to_args())) == request
    assert cls.result_from_value(_over_the_wire(cls.result_to_value(result))) == result


def test_the_wire_keeps_the_keys_older_daemons_know() -> None:
    assert ops.Verify().to_args() == {}  # 'repair' only when asked for
    assert ops.Verify(repair=True).to_args() == {"repair": True}
    assert ops.Gc().to_args() == {"history": None}
    assert ops.Roots().to_args() == {"newest_first": True, "limit": None}
    assert ops.WriteFile(CID_A).to_args() == {"cid": CID_A, "offset": 0, "length": None}
    assert ops.NamePublish().to_args() == {}
    assert ops.NamePublish(stop=True).to_args() == {"stop": True}
    assert ops.PutMany([(CID_A, b"a")]).to_args() == {"blocks": [[CID_A, b"a"]]}
    assert ops.NamespaceChange(Mkdir("/x")).to_args()["change"]["kind"] == "mkdir"
    assert ops.AddFile.TAKES_FD and ops.WriteFile.TAKES_FD and not ops.Get.TAKES_FD
    assert {name for name, cls in ops.OPS.items() if cls.STREAMING} == {"add_file", "write_file", "iterate"}


def test_arguments_left_out_take_their_defaults_and_text_cids_are_parsed() -> None:
    assert ops.WriteFile.from_args({"cid": str(CID_A)}) == ops.WriteFile(CID_A, 0, None)
    assert ops.Roots.from_args({}) == ops.Roots(True, None)
    assert ops.NameResolve.from_args({"key": KEY.hex()}) == ops.NameResolve(KEY)
    assert ops.Has.from_args({"cid": CID_A, "unknown": 1}) == ops.Has(CID_A)  # extra keys ignored


@pytest.mark.parametrize(("name", "args", "field"), [
    ("has", {}, "cid"),
    ("get", {"cid": 7}, "cid"),
    ("get", {"cid": "not a cid"}, "cid"),
    ("put", {"cid": CID_A, "data": "text"}, "data"),
    ("put_many", {"blocks": []}, "blocks"),
    ("put_many", {"blocks": [[CID_A, b"a", b"extra"]]}, "blocks"),
    ("put_many", {"blocks": [[CID_A, b"a"]] * (ops.MAX_PUT_BATCH + 1)}, "blocks"),
    ("write_file", {"cid": CID_A, "offset": -1}, "offset"),
    ("write_file", {"cid": CID_A, "length": True}, "length"),
    ("add_file", {"offset": 1.5}, "offset"),
    ("verify", {"repair": 1}, "repair"),
    ("gc", {"history": -2}, "history"),
    ("roots", {"limit": "all"}, "limit"),
    ("commit_root", {"seq": 1, "root": CID_A, "time_ns": 2}, "record"),
    ("namespace_change", {"change": {"kind": "explode"}}, "change"),
    ("namespace_resolve", {"path": 7}, "path"),
    ("namespace_resolve", {"path": "/", "at": -1}, "at"),
    ("dht_find", {"target": b"id"}, "target"),
    ("replication_status", {"cids": [str(CID_A)]}, "cids"),
    ("replication_status", {"cids": [], "wait": 3601}, "wait"),
    ("name_publish", {"interval_ms": "soon"}, "interval_ms"),
    ("name_resolve", {"key": b"short"}, "key"),
])
def test_a_malformed_request_names_its_op_and_argument(name: str, args: dict[str, Any], field: str) -> None:
    with pytest.raises(ControlArgumentError, match=rf"^{name}: argument '{field}'") as caught:
        ops.request_class(name).from_args(args)
    assert isinstance(caught.value, InvalidInputError)  # the class a user's bad input always had


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_no_wrong_value_gets_past_the_schema_but_as_its_error(name: str) -> None:
    """Any argument of any op set to any wrong-typed value: the request
    parses (a lenient argument) or is refused naming op and argument."""
    cls = ops.OPS[name]
    request = EXAMPLES[name][0]
    for field in cls._FIELDS:
        for junk in (None, "x", -1, 1.5, True, b"", [], {}, [[1, 2]], {"kind": None}):
            args = {**request.to_args(), field: junk}
            try:
                cls.from_args(args)
            except ControlArgumentError as exc:
                assert str(exc).startswith(f"{name}: argument {field!r}"), exc


def test_an_unknown_op_is_an_unknown_op_error() -> None:
    with pytest.raises(UnknownOpError, match="no operation 'format_the_disk'"):
        ops.request_class("format_the_disk")

    async def ping(request: ops.Ping, client: Any) -> str:
        return "pong"

    table = {"ping": Op(ops.Ping, ping)}
    with pytest.raises(UnknownOpError):
        _parse_request({"op": "get", "args": {"cid": CID_A}}, table)
    with pytest.raises(ControlProtocolError, match="op"):
        _parse_request({"op": "ping"}, table)
    op, request = _parse_request({"op": "ping", "args": {}}, table)
    assert op.request is ops.Ping and request == ops.Ping()


def test_a_malformed_answer_is_a_protocol_error_naming_the_op() -> None:
    for cls, value in [(ops.Get, "text"), (ops.Stat, {"path": "/r"}), (ops.NamespaceChange, {"seq": 1}),
                       (ops.NamespaceResolve, {"path": "/"}), (ops.Iterate, b"not a cid"), (ops.Id, [1])]:
        with pytest.raises(ControlProtocolError, match=f"malformed {cls.OP} answer"):
            cls.result_from_value(value)


def test_verify_sends_at_most_max_problems() -> None:
    from cas.control import MAX_PROBLEMS

    many = VerifyReport(problems=[Problem(str(CID_A), "missing")] * (MAX_PROBLEMS + 5))
    assert len(ops.Verify.result_to_value(many)["problems"]) == MAX_PROBLEMS


def test_a_typed_request_carries_its_own_arguments() -> None:
    from cas.control._client import _name_and_args

    assert _name_and_args(ops.Get(CID_A), {}) == ("get", {"cid": CID_A})
    assert _name_and_args("get", {"cid": CID_A}) == ("get", {"cid": CID_A})
    with pytest.raises(TypeError):
        _name_and_args(ops.Get(CID_A), {"cid": CID_B})
    assert Block(CID_A, b"a").data == b"a"  # the example CID is the block's


def test_the_control_package_exports_what_it_lists() -> None:
    import cas.control

    assert all(hasattr(cas.control, name) for name in cas.control.__all__)
    assert all(hasattr(ops, name) for name in ops.__all__)
    assert {cls.__name__ for cls in ops.OPS.values()} <= set(ops.__all__)


def test_a_library_reader_through_a_daemon_hands_it_the_walks_read_ahead_hint(tmp_path) -> None:
    import cas
    from cas.blocks import Prefetches
    from cas.control import RemoteBlockStore
    from tests.conftest import pseudo_random
    from tests.nodeproc import Daemons, replication_stats

    data = pseudo_random(3_000_000, "read through a daemon")
    with Daemons() as daemons:
        daemon = daemons.start(tmp_path / "repo")
        with cas.open_repository(daemon.repo) as repo:
            assert isinstance(repo.blocks, RemoteBlockStore) and isinstance(repo.blocks, Prefetches)
            cid = repo.add_bytes(data)
            asked = []
            real = repo.blocks.prefetch
            repo.blocks.prefetch = lambda cids: (asked.extend(cids), real(cids))  # type: ignore[method-assign]  # watch the calls
            assert repo.read(cid) == data
        assert len(asked) >= 3 and len(set(asked)) == len(asked)  # each leaf named once, ahead of its read
        assert replication_stats(daemon)["read_ahead"] == 0  # alone: all of it on its disk, nothing to fetch


def test_a_client_reading_blocks_loads_neither_the_namespace_nor_dataclasses() -> None:
    """What keeps a command through a daemon starting as fast as one
    without (bench/startup.py): the schema's 33 ops cost it nothing."""
    import subprocess
    import sys

    script = (
        "import sys; import cas.control; from cas.control import schema as ops; from cas.cid import parse_cid; "
        f"cid = parse_cid({str(CID_A)!r}); ops.Get(cid).to_args(); ops.WriteFile(cid).to_args(); "
        "ops.Prefetch([cid]).to_args(); print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not loaded & {"dataclasses", "cas.names.namespace", "cas.names.changes", "cas.store._reports", "trio",
                         "cas.control._server"}


def test_a_request_is_an_immutable_record_of_its_arguments() -> None:
    request = ops.WriteFile(CID_A, length=10)
    assert (request.cid, request.offset, request.length) == (CID_A, 0, 10)
    assert request == ops.WriteFile(CID_A, 0, 10) != ops.WriteFile(CID_A, 1, 10)
    assert repr(request) == f"WriteFile(cid={CID_A!r}, offset=0, length=10)"
    with pytest.raises(AttributeError, match="cannot be changed"):
        request.offset = 5  # type: ignore[misc]  # what is checked: it is refused at run time too
    with pytest.raises(TypeError, match="missing its argument 'cid'"):
        ops.WriteFile()  # type: ignore[call-arg]  # what is checked: a missing argument
    with pytest.raises(TypeError, match="unexpected or repeated argument 'size'"):
        ops.WriteFile(CID_A, size=3)  # type: ignore[call-arg]  # what is checked: an unknown one
