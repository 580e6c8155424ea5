"""``cas name publish``, ``cas name resolve KEY`` and ``cas name status``:
published namespaces.

Both need the running node (``cas daemon``): publishing puts the signed root
record on the nodes closest to its key, resolving asks them. Reading a
published namespace is ``cas ls|cat|get|stat /ns/KEY/path`` (cas.api).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from cas.errors import CasError, DaemonNotRunningError

if TYPE_CHECKING:
    from cas.api import Repository
    from cas.control import ControlClient

from .output import Output
from .repo_cmds import open_repo


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("name", parents=common, help="publish this namespace, resolve others",
                       description="Publish this node's namespace on the network under its key, and "
                       "resolve the namespaces other nodes publish (needs 'cas daemon').")
    name_sub = p.add_subparsers(dest="name_command", metavar="publish|resolve|status", required=True)
    s = name_sub.add_parser(
        "publish", parents=common, help="publish the namespace root on the network, and keep doing so",
        description="Put the namespace's signed root record on the nodes closest to its key, now, after "
        "every change and every --every seconds, until 'cas name publish --stop'.")
    s.add_argument("--every", type=float, default=None, metavar="SECONDS",
                   help="republish interval (default 1800)")
    s.add_argument("--stop", action="store_true", help="stop publishing (records already out expire with "
                   "their holders)")
    s.set_defaults(run=cmd_publish)
    r = name_sub.add_parser("resolve", parents=common, help="the newest root record of a published namespace",
                            description="Find the newest valid root record of a published namespace "
                            "on the network; mount it with 'cas mount DIR --name PUBKEY'.")
    r.add_argument("key", metavar="PUBKEY", help="the namespace's public key, 64 hex digits")
    r.set_defaults(run=cmd_resolve)
    t = name_sub.add_parser("status", parents=common, help="publishing on or off, last publication, records held",
                            description="Whether this node publishes its namespace, how the last "
                            "publication went, and how many other namespaces' records it holds.")
    t.set_defaults(run=cmd_status)


def _client(repo: Repository) -> ControlClient:
    client = repo.daemon
    if client is None:
        raise DaemonNotRunningError("this command needs the running node; start it with 'cas daemon'")
    return client


def _time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import NamePublish
    with open_repo(args) as repo:
        every_ms = None if args.every is None else int(args.every * 1000)
        result = _client(repo).call(NamePublish(stop=args.stop, interval_ms=every_ms))
    if not result["publishing"]:
        out.document({"publishing": False})
        out.note("stopped publishing")
        return 0
    out.document({k: (str(v) if k == "root" else v) for k, v in result.items() if k != "record"})
    out.result(f"key      {result['key']}")
    out.result(f"seq      {result['seq']}")
    out.result(f"root     {result['root']}")
    out.result(f"stored   on {result['stored']} of {result['asked']} nodes; republished every "
               f"{result['interval_ms'] / 1000:g} s and after each change")
    return 0


def cmd_resolve(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import NameResolve
    from cas.names.record import parse_public_key

    key = parse_public_key(args.key)
    with open_repo(args) as repo:
        result = _client(repo).call(NameResolve(key))
    found = result["found"]
    if found is None:
        raise CasError(f"no record found for namespace {key.hex()} (asked {result['asked']} nodes)")
    out.document({"key": found["key"], "seq": found["seq"], "root": str(found["root"]),
                  "time_ns": found["time_ns"], "answers": result["answers"], "asked": result["asked"]})
    out.result(f"key   {found['key']}")
    out.result(f"seq   {found['seq']}")
    out.result(f"root  {found['root']}")
    out.result(f"time  {_time(found['time_ns'])}")
    return 0


def cmd_status(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import NameStatus
    with open_repo(args) as repo:
        result = _client(repo).call(NameStatus())
    last = result["last"]
    doc = {**result, "last": None if last is None else
           {k: (str(v) if k == "root" else v) for k, v in last.items() if k != "record"}}
    out.document(doc)
    if result["publishing"]:
        out.result(f"publishing    every {result['interval_ms'] / 1000:g} s and after each change")
    else:
        out.result("publishing    off ('cas name publish' turns it on)")
    if last is not None:
        out.result(f"last          seq {last['seq']} on {last['stored']} of {last['asked']} nodes")
    if result["last_error"]:
        out.result(f"last error    {result['last_error']}")
    out.result(f"records held  {result['held_records']} (for other nodes)")
    return 0
