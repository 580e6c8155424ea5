"""The control ops, each declared once: its request, its result, its shape.

Owns: one frozen record per op (:class:`Request` subclasses, made by
:func:`op`), naming
the op on the wire (``OP``), its arguments with their types and defaults,
whether it streams (``STREAMING``), whether it takes a descriptor
(``TAKES_FD``) and what it answers (``RESULT``, or ``ITEM`` for each item
of a stream); the checks that turn a request's ``args`` map into one of
these (:meth:`Request.from_args`, on the server) and back
(:meth:`Request.to_args`, on the client), and the same both ways for the
answer. :data:`OPS` lists them all by name.

Must never: do I/O, or decide what an op does (the node's handlers in
:mod:`cas.node.ops` do). The wire format is the one documented in
docs/node.md: the names and keys here are the socket's, byte for byte, and
a daemon of an older cas answers the same requests.

Theory of operation
===================

A client builds a request (``Get(cid)``) and hands it to
:meth:`cas.control.ControlClient.call`, which sends ``{"op": Get.OP,
"args": request.to_args()}`` and turns the ``ok`` value back into the
declared result (``Get.result_from_value``). The server looks the name up
in its op table, parses ``args`` with ``from_args`` (a missing or
malformed argument is a :class:`ControlArgumentError` naming the op and
the argument; an unknown op an :class:`UnknownOpError`), calls the
handler with the typed request, and sends ``result_to_value`` of what it
returns.

Rules for this file:

1. An argument is declared as ``name: Annotated[type, KIND]``; ``KIND``
   (an :class:`Arg`, a module constant: annotations hold names only) says
   what the wire carries and how it is checked.
   An argument with a default may be left out of a request; one marked
   ``OMIT`` is left out by the client when it has its default (an older
   daemon then never sees it).
2. Arguments the server does not know are ignored, as they always were.
3. A result or item is declared as an :class:`Arg` too; the client checks
   the daemon's answer with it (a malformed answer is a
   :class:`ControlProtocolError`).
4. ``add_file`` and ``write_file`` stream plain maps (their shapes are in
   their docstrings); their one reader and one writer parse them.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, NamedTuple, TypeVar

from ..cid import CID, parse_cid
from ..errors import CasError, ControlArgumentError, ControlProtocolError, InvalidCIDError, UnknownOpError
from ..store import RepoStat, RootRow
from ._framing import MAX_PROBLEMS

if TYPE_CHECKING:  # imported when first used: a client that reads blocks never loads the namespace
    from ..names.changes import Change
    from ..names.namespace import Node, RootState
    from ..store import GcReport, VerifyReport  # nor the maintenance reports (and dataclasses with them)

R = TypeVar("R")

MAX_PUT_BATCH = 1024
"""Blocks one ``put_many`` may carry (the frame limit bounds their bytes)."""

MAX_STATUS_CIDS = 1024
"""CIDs one ``replication_status`` may ask about."""

MAX_PREFETCH = 1024
"""CIDs one ``prefetch`` may name (a walk's hint is 64 leaves at a time)."""

MAX_PINS_PAGE = 8192
"""CIDs one ``pins`` answer carries (~40 bytes each: ~320 KiB)."""

MAX_ROOTS_PAGE = 1024
"""Root rows one ``roots`` answer carries (a row is ~250 bytes: ~256 KiB)."""

MAX_STATUS_WAIT = 3600
"""Seconds ``replication_status`` may wait for placements (whole seconds:
DAG-CBOR carries no floats here)."""


# -- argument and result kinds ------------------------------------------------------------


class _Bad(Exception):
    """A value is not of its kind (turned into the caller's error by the
    code that knows the op and the field)."""


def _same(value: Any) -> Any:
    return value


class Arg(NamedTuple):
    """A kind of value on the wire: ``what`` it must be (for the error
    message), ``parse`` (wire value → Python value; raises on a bad one)
    and ``dump`` (the way back)."""

    what: str
    parse: Callable[[Any], Any]
    dump: Callable[[Any], Any] = _same


OMIT = "omit"
"""Marks an argument the client leaves out when it has its default."""


def _check(test: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if not test(value):
            raise _Bad
        return value
    return parse


def _cid(value: Any) -> CID:
    if isinstance(value, CID):
        return value
    if isinstance(value, str):
        try:
            return parse_cid(value)
        except InvalidCIDError:
            raise _Bad from None
    raise _Bad


def _whole(value: Any) -> bool:
    return type(value) is int


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def optional(kind: Arg) -> Arg:
    """``kind`` or null."""
    return Arg(f"{kind.what} or null", lambda v: None if v is None else kind.parse(v),
               lambda v: None if v is None else kind.dump(v))


def list_of(kind: Arg, what: str) -> Arg:
    return Arg(what, lambda v: [kind.parse(i) for i in _check(lambda v: isinstance(v, list))(v)],
               lambda v: [kind.dump(i) for i in v])


A_CID = Arg("a CID", _cid)
A_BYTES = Arg("bytes", _check(lambda v: isinstance(v, bytes)))
A_TEXT = Arg("text", _check(lambda v: isinstance(v, str)))
A_WHOLE = Arg("a whole number", _check(_whole))
A_COUNT = Arg("a whole number >= 0", _check(_count))
A_BYTE_COUNT = Arg("a byte offset or length (byte counts are integers >= 0)", _check(_count))
A_BOOL = Arg("true or false", _check(lambda v: type(v) is bool))
A_TRUTHY = Arg("true or false (any value, taken as one)", bool)
A_ANY = Arg("any value", _same)
A_NONE = Arg("null", lambda v: None, lambda v: None)
A_MAP = Arg("a map", _check(lambda v: isinstance(v, dict)))
A_MAPS = Arg("a list of maps", _check(lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v)))
A_CIDS = list_of(Arg("a CID", _check(lambda v: isinstance(v, CID))), "a list of CIDs")


def _blocks(value: Any) -> list[tuple[CID, bytes]]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_PUT_BATCH or not all(
            isinstance(i, list) and len(i) == 2 and isinstance(i[1], bytes) for i in value):
        raise _Bad
    return [(_cid(cid), data) for cid, data in value]


A_BLOCKS = Arg(f"a list of 1 to {MAX_PUT_BATCH} [cid, bytes] pairs", _blocks,
               lambda v: [[cid, data] for cid, data in v])


def _status_cids(value: Any) -> list[CID]:
    if not isinstance(value, list) or len(value) > MAX_STATUS_CIDS or not all(isinstance(c, CID) for c in value):
        raise _Bad
    return value


def _prefetch_cids(value: Any) -> list[CID]:
    if not isinstance(value, list) or len(value) > MAX_PREFETCH or not all(isinstance(c, CID) for c in value):
        raise _Bad
    return value


def _public_key(value: Any) -> bytes:
    if isinstance(value, str):
        from ..names.record import parse_public_key

        value = parse_public_key(value)
    if not isinstance(value, bytes) or len(value) != 32:
        raise _Bad
    return value


def _change(value: Any) -> Change:
    from ..names.changes import change_from_value

    return change_from_value(value)  # its own InvalidInputError says what is wrong


def _change_value(change: Change) -> Any:
    from ..names.changes import change_to_value

    return change_to_value(change)


A_BYTE_COUNT_OR_NULL = optional(A_BYTE_COUNT)
A_CID_OR_NULL = optional(A_CID)
A_COUNT_OR_NULL = optional(A_COUNT)
A_WHOLE_OR_NULL = optional(A_WHOLE)
A_CHANGE = Arg("a namespace change", _change, _change_value)
A_TARGET = Arg("a node ID or a CID", A_TEXT.parse)
A_STATUS_CIDS = Arg(f"a list of at most {MAX_STATUS_CIDS} CIDs", _status_cids, list)
A_STATUS_WAIT = Arg(f"a number of seconds from 0 to {MAX_STATUS_WAIT}",
                    _check(lambda v: _whole(v) and 0 <= v <= MAX_STATUS_WAIT))
A_PREFETCH_CIDS = Arg(f"a list of at most {MAX_PREFETCH} CIDs", _prefetch_cids, list)
A_PUBLIC_KEY = Arg("a namespace key (32 bytes or 64 hex digits)", _public_key)
A_TEXTS = Arg("a list of texts", _check(lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v)), list)


def _repo_stat(v: Any) -> RepoStat:
    return RepoStat(path=v["path"], blocks=v["blocks"], bytes=v["bytes"], pinned=v["pinned"],
                    pack_bytes=v.get("pack_bytes", 0), dead_bytes=v.get("dead_bytes", 0))


def _repo_stat_value(st: RepoStat) -> dict[str, Any]:
    return {"path": st.path, "blocks": st.blocks, "bytes": st.bytes, "pinned": st.pinned,
            "pack_bytes": st.pack_bytes, "dead_bytes": st.dead_bytes}


def _verify_report(v: Any) -> VerifyReport:
    from ..store import Problem, VerifyReport

    return VerifyReport(blocks_checked=v["blocks_checked"], bytes_checked=v["bytes_checked"],
                        problems=[Problem(p["cid"], p["what"]) for p in v["problems"]],
                        repaired=v.get("repaired", 0))


def _verify_report_value(report: VerifyReport) -> dict[str, Any]:
    return {"blocks_checked": report.blocks_checked, "bytes_checked": report.bytes_checked,
            "problems": [{"cid": p.cid, "what": p.what} for p in report.problems[:MAX_PROBLEMS]],
            "repaired": report.repaired}


def _gc_report(v: Any) -> GcReport:
    from ..store import GcReport

    return GcReport(blocks_freed=v["blocks_freed"], bytes_freed=v["bytes_freed"],
                    roots_dropped=v["roots_dropped"], expired_freed=v.get("expired_freed", 0))


def _gc_report_value(report: GcReport) -> dict[str, Any]:
    return {"blocks_freed": report.blocks_freed, "bytes_freed": report.bytes_freed,
            "roots_dropped": report.roots_dropped, "expired_freed": report.expired_freed}


def _root_rows(value: Any) -> list[RootRow]:
    return [RootRow(r["seq"], r["root"], r["time_ns"], r["record"]) for r in value]


def _root_rows_value(rows: Sequence[RootRow]) -> list[dict[str, Any]]:
    return [{"seq": r.seq, "root": r.root, "time_ns": r.time_ns, "record": r.record} for r in rows]


def _root_state(v: Any) -> RootState:
    from ..names.namespace import RootState

    if not (isinstance(v, dict) and type(v.get("seq")) is int and isinstance(v.get("root"), CID)
            and type(v.get("time_ns")) is int and isinstance(v.get("public_key"), bytes)):
        raise _Bad
    return RootState(v["seq"], v["root"], v["time_ns"], v["public_key"])


def _root_state_value(state: RootState) -> dict[str, Any]:
    return {"seq": state.seq, "root": state.root, "time_ns": state.time_ns, "public_key": state.public_key}


def _path_node(value: Any) -> Node:
    from ..names.namespace import Node

    return Node.from_value(value)


def doc(*keys: str) -> Arg:
    """A map answer with these keys: what a report op sends. The client
    checks only that it is a map (an older daemon may send fewer keys, and
    the commands read the newer ones with a default); the keys are its
    declaration here, their meaning is in docs/node.md's op table."""
    return Arg("a map with " + ", ".join(keys), _check(lambda v: isinstance(v, dict)))


def docs(*keys: str) -> Arg:
    """A list of :func:`doc` maps."""
    return Arg("a list of maps with " + ", ".join(keys), A_MAPS.parse)


OPS: dict[str, type[Request[Any]]] = {}
"""Every op, by its name on the wire (each :class:`Request` subclass adds itself)."""


# -- the request base ---------------------------------------------------------------------


MISSING: Any = object()
"""An argument without a default."""

Q = TypeVar("Q", bound="Request[Any]")


@typing.dataclass_transform(frozen_default=True)
def op(cls: type[Q]) -> type[Q]:
    """Make ``cls`` an op's request: a frozen record of the arguments its
    annotations declare, in order, with the defaults its body gives.
    Type checkers see a frozen dataclass; at run time the methods are
    :class:`Request`'s own, shared, so declaring 35 ops costs a client's
    start nothing (dataclasses generate and compile each class's methods:
    ~10 ms, and ~7 ms more to import, for every command through a daemon)."""
    names = tuple(cls.__dict__.get("__annotations__", {}))
    cls._FIELDS = names
    cls._DEFAULTS = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    return cls


class Request(Generic[R]):
    """One op's request. ``R`` is what :meth:`result_from_value` gives (for
    a streaming op: each item). Subclasses are made by :func:`op`."""

    OP: ClassVar[str]
    STREAMING: ClassVar[bool] = False
    TAKES_FD: ClassVar[bool] = False
    RESULT: ClassVar[Arg] = A_NONE
    ITEM: ClassVar[Arg] = A_ANY  # a streaming op's items; its final ``ok`` is their count
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    _DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        assert cls.OP not in OPS, f"two ops called {cls.OP!r}"
        OPS[cls.OP] = cls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names, kind = self._FIELDS, type(self).__name__
        if len(args) > len(names):
            raise TypeError(f"{kind}() takes {len(names)} arguments, not {len(args)}")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names or name in values:
                raise TypeError(f"{kind}() got an unexpected or repeated argument {name!r}")
            values[name] = value
        for name in names:
            if name not in values:
                if name not in self._DEFAULTS:
                    raise TypeError(f"{kind}() is missing its argument {name!r}")
                values[name] = self._DEFAULTS[name]
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a {type(self).__name__} request cannot be changed")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    def __hash__(self) -> int:
        return hash((type(self), *(getattr(self, n) for n in self._FIELDS)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self._FIELDS)})"

    def to_args(self) -> dict[str, Any]:
        """The ``args`` map on the wire."""
        args = {}
        for name, kind, default, omit in _arguments(type(self)):
            value = getattr(self, name)
            if omit and value == default:
                continue
            args[name] = kind.dump(value)
        return args

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> typing.Self:
        """The request ``args`` make, or :class:`ControlArgumentError` naming
        the op and the argument that is missing or malformed."""
        values = {}
        for name, kind, default, _ in _arguments(cls):
            if name not in args:
                if default is MISSING:
                    raise ControlArgumentError(f"{cls.OP}: argument {name!r} is missing; it must be {kind.what}")
                continue
            try:
                values[name] = kind.parse(args[name])
            except CasError as exc:  # a parser's own reason (a change, a key, a CID)
                raise ControlArgumentError(f"{cls.OP}: argument {name!r}: {exc}") from None
            except (_Bad, TypeError, ValueError):
                raise ControlArgumentError(f"{cls.OP}: argument {name!r} must be {kind.what}") from None
        return cls(**values)

    @classmethod
    def result_from_value(cls, value: Any) -> R:
        """The declared result (or item) from the daemon's answer."""
        kind = cls.ITEM if cls.STREAMING else cls.RESULT
        try:
            return typing.cast(R, kind.parse(value))
        except (_Bad, KeyError, TypeError, ValueError, CasError):
            raise ControlProtocolError(f"the daemon sent a malformed {cls.OP} answer") from None

    @classmethod
    def result_to_value(cls, result: Any) -> Any:
        """The ``ok`` value (or item) on the wire for a handler's result."""
        return (cls.ITEM if cls.STREAMING else cls.RESULT).dump(result)


_ARGUMENTS: dict[str, list[tuple[str, Arg, Any, bool]]] = {}


def _annotation_names(cls: type[Request[Any]]) -> dict[str, Any]:
    """The names ``cls``'s annotations use that are imported only when
    needed: an op that names none of them (``get``, ``write_file``: every
    read through a daemon) never loads the namespace (~10 ms of a start)."""
    text = " ".join(str(a) for a in cls.__dict__.get("__annotations__", {}).values())
    names: dict[str, Any] = {}
    if "Change" in text:
        from ..names.changes import Change

        names["Change"] = Change
    if "Node" in text or "RootState" in text:
        from ..names.namespace import Node, RootState

        names.update(Node=Node, RootState=RootState)
    return names


def _arguments(cls: type[Request[Any]]) -> list[tuple[str, Arg, Any, bool]]:
    """(name, kind, default or MISSING, omitted at its default) per argument
    of an op, read once from its annotations."""
    found = _ARGUMENTS.get(cls.OP)
    if found is None:
        hints = typing.get_type_hints(cls, localns=_annotation_names(cls), include_extras=True)
        found = []
        for name in cls._FIELDS:
            marks = typing.get_args(hints[name])[1:]
            kind = next(m for m in marks if isinstance(m, Arg))
            found.append((name, kind, cls._DEFAULTS.get(name, MISSING), OMIT in marks))
        _ARGUMENTS[cls.OP] = found
    return found


def request_class(name: str) -> type[Request[Any]]:
    """The request class of the op called ``name``, or :class:`UnknownOpError`."""
    found = OPS.get(name)
    if found is None:
        raise UnknownOpError(f"the daemon has no operation {name[:64]!r}")
    return found


# -- the store ops --------------------------------------------------------------------------


@op
class Ping(Request[str]):
    """Is a daemon there? It answers ``"pong"``."""

    OP = "ping"
    RESULT = A_TEXT


@op
class Has(Request[bool]):
    OP = "has"
    RESULT = Arg("true or false", bool)
    cid: Annotated[CID, A_CID]


@op
class Get(Request[bytes]):
    """The block's bytes (the client verifies them); a block the node lacks
    is fetched from the network, a damaged one healed."""

    OP = "get"
    RESULT = A_BYTES
    cid: Annotated[CID, A_CID]


@op
class Prefetch(Request[None]):
    """The blocks a reader will ask for next (its walk's read-ahead hint,
    :class:`cas.blocks.Prefetches`): the node asks its disk for those it
    stores and fetches those it lacks from the network, in the background,
    and answers at once."""

    OP = "prefetch"
    cids: Annotated[Sequence[CID], A_PREFETCH_CIDS]


@op
class Put(Request[bool]):
    """Store one block (≤ 1 MiB, verified); whether it was new."""

    OP = "put"
    RESULT = Arg("true or false", bool)
    cid: Annotated[CID, A_CID]
    data: Annotated[bytes, A_BYTES]


@op
class PutMany(Request[list[bool]]):
    """Several blocks in one request (a frame holds up to 2 MiB), stored in
    order; for each, whether it was new."""

    OP = "put_many"
    RESULT = Arg("a list of true or false", list)
    blocks: Annotated[Sequence[tuple[CID, bytes]], A_BLOCKS]


@op
class AddFile(Request[dict[str, Any]]):
    """Add the regular file passed with the request, from ``offset`` to its
    end. Items: ``{"read": n}`` after each step, then ``{"cid", "size",
    "blocks", "new_blocks", "new_bytes"}``."""

    OP = "add_file"
    STREAMING = True
    TAKES_FD = True
    offset: Annotated[int, A_BYTE_COUNT] = 0


@op
class WriteFile(Request[dict[str, Any]]):
    """Write bytes [offset, offset + length) of file ``cid`` to the
    descriptor passed with the request. Items: ``{"written": n}`` (the
    total so far), or ``{"failed": errno}`` if a write failed."""

    OP = "write_file"
    STREAMING = True
    TAKES_FD = True
    cid: Annotated[CID, A_CID]
    offset: Annotated[int, A_BYTE_COUNT] = 0
    length: Annotated[int | None, A_BYTE_COUNT_OR_NULL] = None


@op
class Protect(Request[None]):
    """Keep ``cid`` from gc while this connection lasts."""

    OP = "protect"
    cid: Annotated[CID, A_CID]


@op
class Barrier(Request[None]):
    """Everything put so far is durable."""

    OP = "barrier"


@op
class Delete(Request[bool]):
    OP = "delete"
    RESULT = Arg("true or false", bool)
    cid: Annotated[CID, A_CID]


@op
class Iterate(Request[CID]):
    """Every CID stored, in batches of MAX_ITERATE_BATCH."""

    OP = "iterate"
    STREAMING = True
    ITEM = Arg("a CID", _check(lambda v: isinstance(v, CID)))


@op
class Pin(Request[bool]):
    OP = "pin"
    RESULT = Arg("true or false", bool)
    cid: Annotated[CID, A_CID]


@op
class Unpin(Request[bool]):
    OP = "unpin"
    RESULT = Arg("true or false", bool)
    cid: Annotated[CID, A_CID]


@op
class Pins(Request[list[CID]]):
    """One page of the pinned CIDs, in the order of their binary form: at
    most ``limit`` and never more than MAX_PINS_PAGE, those after ``after``."""

    OP = "pins"
    RESULT = Arg("a list of CIDs", list)
    limit: Annotated[int | None, A_COUNT_OR_NULL, OMIT] = None
    after: Annotated[CID | None, A_CID_OR_NULL, OMIT] = None


@op
class Stat(Request[RepoStat]):
    OP = "stat"
    RESULT = Arg("a repository's counts", _repo_stat, _repo_stat_value)


@op
class Verify(Request["VerifyReport"]):
    """Verify every block (at most MAX_PROBLEMS problems are listed); with
    ``repair``, quarantine what is corrupt and fetch good copies."""

    OP = "verify"
    RESULT = Arg("a verify report", _verify_report, _verify_report_value)
    repair: Annotated[bool, A_BOOL, OMIT] = False


@op
class Gc(Request["GcReport"]):
    OP = "gc"
    RESULT = Arg("a gc report", _gc_report, _gc_report_value)
    history: Annotated[int | None, A_COUNT_OR_NULL] = None


@op
class Prune(Request[dict[str, Any]]):
    """Drop the namespace versions the history policy (``history.keep``) no
    longer keeps (none with ``dry_run``): counts, never a list, so the
    answer stays small whatever the history's length."""

    OP = "prune"
    RESULT = doc("versions", "kept", "dropped", "newest_dropped", "oldest_dropped", "policy")
    dry_run: Annotated[bool, A_BOOL, OMIT] = False


@op
class Roots(Request[list[RootRow]]):
    """One page of the stored namespace roots: at most ``limit`` rows and
    never more than MAX_ROOTS_PAGE (a history of 10^6 versions is read a
    page at a time, never in one message), newest first or oldest first,
    those past sequence number ``after`` in that order."""

    OP = "roots"
    RESULT = Arg("a list of root rows", _root_rows, _root_rows_value)
    newest_first: Annotated[bool, A_TRUTHY] = True
    limit: Annotated[int | None, A_COUNT_OR_NULL] = None
    after: Annotated[int | None, A_WHOLE_OR_NULL, OMIT] = None


@op
class CommitRoot(Request[None]):
    OP = "commit_root"
    seq: Annotated[int, A_WHOLE]
    root: Annotated[CID, A_CID]
    time_ns: Annotated[int, A_WHOLE]
    record: Annotated[bytes, A_BYTES]


# -- the namespace ops -------------------------------------------------------------------


@op
class NamespaceChange(Request["RootState"]):
    """Apply a namespace change on the daemon; the root it made."""

    OP = "namespace_change"
    RESULT = Arg("a root state", _root_state, _root_state_value)
    change: Annotated[Change, A_CHANGE]


@op
class NamespaceResolve(Request["Node"]):
    """What ``path`` names in the namespace (at root ``at``, or the newest)."""

    OP = "namespace_resolve"
    RESULT = Arg("a namespace node", _path_node, lambda node: node.to_value())
    path: Annotated[str, A_TEXT]
    at: Annotated[int | None, A_COUNT_OR_NULL] = None


# -- the node ops -----------------------------------------------------------------------


@op
class Id(Request[dict[str, Any]]):
    OP = "id"
    RESULT = doc("id", "host", "port", "announce", "reachable", "peers")


@op
class Peers(Request[list[dict[str, Any]]]):
    OP = "peers"
    RESULT = docs("id", "host", "port", "connected", "failures", "last_seen_ms", "stores", "store_failures",
                  "bad_blocks", "ours_blocks", "ours_bytes", "held_blocks", "held_bytes")


@op
class DhtFind(Request[dict[str, Any]]):
    """A lookup of ``target``: a node ID (64 hex digits) or a CID."""

    OP = "dht_find"
    RESULT = doc("target", "cid", "closest", "local_has", "hops", "messages", "failures", "elapsed_us")
    target: Annotated[str, A_TARGET]


@op
class DhtRefresh(Request[int]):
    """Refresh the routing table now; how many lookups it ran."""

    OP = "dht_refresh"
    RESULT = Arg("a whole number", _check(_whole))


@op
class ReplicationStatus(Request[list[dict[str, Any]]]):
    """Per CID: how many of the R closest nodes hold all its blocks."""

    OP = "replication_status"
    RESULT = docs("cid", "blocks", "replicas", "copies", "settled", "reachable")
    cids: Annotated[Sequence[CID], A_STATUS_CIDS]
    wait: Annotated[int, A_STATUS_WAIT] = 0


@op
class ReplicationRepair(Request[dict[str, Any]]):
    OP = "replication_repair"
    RESULT = doc("blocks", "stores", "dropped", "short", "expired")


@op
class ReplicationStats(Request[dict[str, Any]]):
    OP = "replication_stats"
    RESULT = doc("replicas", "lease_s", "queued", "placed", "stores_sent", "store_messages", "repair_rounds",
                 "held_blocks", "held_bytes", "quota", "read_ahead", "short", "tracked", "copies_lost",
                 "placed_bytes", "repair_stores", "repair_bytes", "repair_dropped", "peers",
                 "repair_rounds_after_loss", "refusals", "store_failures", "last_failure", "quarantined",
                 "restored", "unrecoverable", "in_quarantine", "scrubbed_bytes", "scrub_passes", "fetches")


@op
class NetStats(Request[dict[str, Any]]):
    OP = "net_stats"
    RESULT = doc("handshakes_in", "handshakes_out", "handshakes", "connections", "addresses", "admitted",
                 "refused", "rate_limited", "evicted_handshakes", "evicted_connections", "frame_memory", "rtt",
                 "reachable")


# -- the mount ops ----------------------------------------------------------------------------


@op
class Mount(Request[dict[str, Any]]):
    """Serve a mount of the node's namespace at ``mountpoint`` (an absolute
    path), read-write unless ``read_only``, as ``cas mount`` makes one;
    answers once it is mounted. One at a time per node."""

    OP = "mount"
    RESULT = doc("mountpoint", "read_only")
    mountpoint: Annotated[str, A_TEXT]
    read_only: Annotated[bool, A_BOOL, OMIT] = False
    nonempty: Annotated[bool, A_BOOL, OMIT] = False
    cache_bytes: Annotated[int | None, A_COUNT_OR_NULL, OMIT] = None
    allow_other: Annotated[bool, A_BOOL, OMIT] = False
    options: Annotated[Sequence[str], A_TEXTS, OMIT] = ()
    commit_interval_ms: Annotated[int | None, A_COUNT_OR_NULL, OMIT] = None


@op
class Unmount(Request[bool]):
    """End the mount at ``mountpoint`` that the node serves, as ``umount``
    does (refused while it is busy); answers once what was written through
    it is committed and it is gone. False if the node serves none there."""

    OP = "unmount"
    RESULT = Arg("true or false", _check(lambda v: type(v) is bool))
    mountpoint: Annotated[str, A_TEXT]


# -- the published-name ops ----------------------------------------------------------------


@op
class NamePublish(Request[dict[str, Any]]):
    """Turn publishing on (every ``interval_ms``, the node's default if
    null) and publish now, or off with ``stop``."""

    OP = "name_publish"
    RESULT = doc("publishing")
    stop: Annotated[bool, A_TRUTHY, OMIT] = False
    interval_ms: Annotated[int | None, A_WHOLE_OR_NULL, OMIT] = None


@op
class NameResolve(Request[dict[str, Any]]):
    """The newest record of the namespace ``key``: ``found`` (null, or its
    key, seq, root, time_ns and record), ``answers``, ``asked``."""

    OP = "name_resolve"
    RESULT = doc("found", "answers", "asked")
    key: Annotated[bytes, A_PUBLIC_KEY]


@op
class NameStatus(Request[dict[str, Any]]):
    OP = "name_status"
    RESULT = doc("publishing", "interval_ms", "last", "last_error", "held_records")


__all__ = [
    "MAX_PINS_PAGE", "MAX_PREFETCH", "MAX_PUT_BATCH", "MAX_ROOTS_PAGE", "OPS", "AddFile", "Arg", "Barrier", "CommitRoot",
    "Delete", "DhtFind", "DhtRefresh", "Gc", "Get", "Has", "Id", "Iterate", "Mount", "NamePublish", "NameResolve",
    "NameStatus", "NamespaceChange", "NamespaceResolve", "NetStats", "Peers", "Pin", "Pins", "Ping", "Prefetch",
    "Protect", "Prune", "Put", "PutMany", "ReplicationRepair", "ReplicationStats", "ReplicationStatus", "Request",
    "Roots", "Stat", "Unmount", "Unpin",
    "Verify", "WriteFile", "request_class",
]
