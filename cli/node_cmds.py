"""``cas daemon``, ``cas id``, ``cas peers`` and ``cas dht find|refresh``: the node.

``cas daemon`` runs a node in the foreground and prints one line, ``node
<id> listening on HOST:PORT``, once it listens and has bootstrapped (tests
and scripts wait on that line). The other commands ask the running daemon
through the control socket; ``cas id`` also works without one (it reads the
node key).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas.errors import InvalidCIDError, InvalidInputError, RepositoryLockedError

if TYPE_CHECKING:
    from cas import control
    from cas.node import NodeConfig

from .output import Output, human_size
from .repo_cmds import repo_path, waiting_note


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "daemon", parents=common, help="run a node (in the foreground)",
        description="Run a node for the repository: listen for peers, join the DHT through the "
        "bootstrap peers, and serve the other cas commands through the control socket. "
        "SIGTERM or Ctrl-C shuts it down cleanly.")
    p.add_argument("--listen", metavar="HOST:PORT", type=_address, default=None,
                   help="address to listen on (default 0.0.0.0:4710; port 0 picks a free one)")
    p.add_argument("--bootstrap", metavar="HOST:PORT", type=_address, action="append", default=[],
                   help="a peer to join the network through (more than once for several)")
    p.add_argument("--announce", metavar="HOST:PORT", type=_address, default=None,
                   help="the address other nodes are to dial this one at, when it is not the one they "
                   "see it come from and its --listen port: a port forwarded to it behind NAT "
                   "(the router's public address and the forwarded port)")
    p.add_argument("--reachable", type=_reachable, default=None, metavar="yes|no|auto",
                   help="whether other nodes can dial this one at its address and --listen port "
                   "(default yes); 'no' (behind NAT without a forwarded port) makes it a DHT client: "
                   "it stores and reads through the nodes it dials but is never offered as a contact; "
                   "'auto' asks peers to dial it back and becomes a client if none can")
    p.add_argument("--handshake-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="close connections that do not complete the handshake in time (default 10)")
    p.add_argument("--idle-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="close connections silent for this long (default 120)")
    p.add_argument("--frame-timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="close connections on which a message takes longer than this to arrive "
                   "or to be sent, from its first byte to its last (default 10)")
    p.add_argument("--frame-memory", type=_size, default=None, metavar="SIZE",
                   help="memory for large messages being received, over all connections "
                   "(default 32M); one address (an IPv6 /64) gets a quarter of it at most, and "
                   "more wait, the address holding least first")
    p.add_argument("--max-connections", type=_count, default=None, metavar="N",
                   help="connections from other nodes held at once (default 512); beyond it a "
                   "newcomer replaces the least useful")
    p.add_argument("--max-connections-per-address", type=_count, default=None, metavar="N",
                   help="connections from one address (an IPv6 /64) held at once (default 128)")
    p.add_argument("--handshake-rate-per-address", type=_rate, default=None, metavar="N",
                   help="new connections from one address (an IPv6 /64) accepted per second, on "
                   "average, 64 at once (default 16); more are closed before any cryptography")
    p.add_argument("--replicas", type=_replicas, default=None, metavar="R",
                   help="copies of every block kept on the nodes closest to it (default 3)")
    p.add_argument("--quota", type=_size, default=None, metavar="SIZE",
                   help="storage for other nodes' blocks, e.g. 500M or 20G (default 10G)")
    p.add_argument("--peer-quota", type=_size, default=None, metavar="SIZE",
                   help="storage any one other node may use here, e.g. 500M (default 1G)")
    p.add_argument("--disk-reserve", type=_size, default=None, metavar="SIZE",
                   help="free disk never given to other nodes' blocks, kept for your own "
                   "(default: a quarter of the disk, at most 10G)")
    p.add_argument("--id-difficulty", type=_bits, default=None, metavar="BITS",
                   help="work a node ID must show to be let in (S/Kademlia's puzzle); every node of a "
                   "network should use the same (default: the repository's config.json, else 12)")
    p.add_argument("--repair-interval", type=_seconds, default=None, metavar="SECONDS",
                   help="how often every block's copies are checked and repaired (default 600)")
    p.add_argument("--lease", type=_lease, default=None, metavar="DURATION",
                   help="how long blocks held for other nodes are kept unless their owner renews them "
                   "(it does every repair round), e.g. 7d; what nobody renews is reclaimed (default 30d)")
    p.add_argument("--scrub-rate", type=_size, default=None, metavar="SIZE",
                   help="bytes per second the scrub re-reads stored blocks at most, e.g. 16M (the default)")
    p.add_argument("--scrub-period", type=_seconds, default=None, metavar="SECONDS",
                   help="every stored block is verified again within this time (default 86400, a day)")
    p.add_argument("--thin-interval", type=_seconds, default=None, metavar="SECONDS",
                   help="how often the namespace history is thinned by its policy, history.keep "
                   "(see 'cas prune'; default 600)")
    p.add_argument("--gateway", type=_gateway, default=None, metavar="[HOST:]PORT|off",
                   help="serve HTTP at this address: the IPFS trustless gateway (/ipfs/CID as raw blocks, "
                   "CAR files, file bytes and listings), published names (/ns/KEY/path), the node's "
                   "status page (/) and Prometheus metrics (/metrics); a bare port listens on "
                   "127.0.0.1 only, e.g. --gateway 8080 (default off)")
    p.add_argument("--network-key", type=Path, default=None, metavar="FILE",
                   help="join the private network of this key (made by 'cas network init'); "
                   "default: the repository's keys/network.key if it has one, else the open network")
    p.set_defaults(run=cmd_daemon)

    p = sub.add_parser("id", parents=common, help="this node's ID and address",
                       description="This node's ID (the hash of its public key), and whether its "
                       "daemon runs (with the address it listens on).")
    p.set_defaults(run=cmd_id)

    p = sub.add_parser("peers", parents=common,
                       help="the peers in the running node's routing table, what we store with each and it with us",
                       description="The peers in the running node's routing table: address, last "
                       "contact, and the bytes each holds of ours and we of its.")
    p.set_defaults(run=cmd_peers)

    p = sub.add_parser("dht", parents=common, help="query the DHT through the running node",
                       description="Query the DHT through the running node (needs 'cas daemon').")
    dht_sub = p.add_subparsers(dest="dht_command", metavar="find|refresh", required=True)
    f = dht_sub.add_parser("find", parents=common,
                           help="the k closest nodes to a CID or node ID, and which have the block",
                           description="Look up the k nodes closest to each target on the network; for "
                           "a CID, also which of them have the block.")
    f.add_argument("targets", nargs="+", metavar="CID|NODE-ID", help="CIDs or 64-hex-digit node IDs")
    f.set_defaults(run=cmd_dht_find)
    r = dht_sub.add_parser("refresh", parents=common, help="refresh every bucket of the routing table now",
                           description="Look up a random ID in every bucket of the routing table now, "
                           "instead of waiting for the hourly refresh.")
    r.set_defaults(run=cmd_dht_refresh)


def _address(text: str) -> tuple[str, int]:
    from cas.node import parse_address

    try:
        return parse_address(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gateway(text: str) -> tuple[str, int] | str:
    from cas.node import parse_gateway

    if text.strip().lower() == "off":
        return "off"
    try:
        return parse_gateway(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _reachable(text: str) -> str:
    answer = text.strip().lower()
    if answer not in ("yes", "no", "auto"):
        raise argparse.ArgumentTypeError(f"say yes, no or auto, not {text!r}")
    return answer


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _seconds(text: str) -> float:
    """A duration: seconds, or a number with s, m, h or d (``90``, ``15m``, ``30d``)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write seconds, or e.g. 90s, 15m, 12h, 30d")
    value = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _rate(text: str) -> float:
    """A positive, finite number of events per second."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number per second") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _lease(text: str) -> float:
    """A lease for ``cas daemon --lease``, within the bound a network key's
    lease has (one bound, declared in ``NetworkSettings.LIMITS``)."""
    from cas.net.network_key import NetworkSettings

    value = _seconds(text)
    most = NetworkSettings.LIMITS["lease"][2]
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most // 86400}d")
    return value


def _whole(low: int, high: int | None, unit: str = "", why: str = "") -> Callable[[str], int]:
    """A parser of a whole number of ``unit`` from ``low`` to ``high`` (None: no top)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{' of ' + unit if unit else ''}") from None
        if value < low or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {span}{' ' + unit if unit else ''}{why}")
        return value

    return parse


_bits = _whole(0, 40, "bits")
_count = _whole(1, None)
_replicas = _whole(1, 20, why=" (k)")


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 500M or 20G")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _client(args: argparse.Namespace) -> control.ControlClient:
    from cas import control

    client = control.connect(repo_path(args))
    if client is None:
        raise control.DaemonNotRunningError(
            f"no daemon is running for {repo_path(args)}; start one with 'cas daemon'")
    return client


_DAEMON_FLAGS = (
    "handshake_timeout", "idle_timeout", "frame_timeout", "frame_memory", "max_connections",
    "max_connections_per_address", "handshake_rate_per_address", "replicas", "quota", "peer_quota",
    "disk_reserve", "repair_interval", "lease", "id_difficulty", "scrub_rate", "scrub_period",
    "thin_interval", "reachable", "announce",
)
"""``cas daemon``'s flags that set the :class:`~cas.node.NodeConfig` field of
the same name."""


def cmd_daemon(args: argparse.Namespace, out: Output) -> int:
    from cas.node import NodeAddress, run_daemon
    from cas.node.config import format_address

    config = node_config(args)

    # Wait for a command using the repository here, on the main thread, which
    # says so after a second; the node waits again (silently) in case another
    # command slips in before it takes the repository.
    from cas.store import LocalStore

    try:
        LocalStore.open(config.repo, create=True, wait=args.wait, on_wait=waiting_note(args)).close()
    except RepositoryLockedError as exc:
        raise _mounted_advice(exc) from None
    config.lock_wait = args.wait

    def reload() -> NodeConfig:  # SIGHUP: the same command line, the settings as they are now
        again = node_config(args)
        again.lock_wait = args.wait
        return again

    def ready(address: NodeAddress) -> None:
        from cas.node.config import gateway_url

        out.document({"id": address.node_id.hex(), "host": address.host, "port": address.port,
                      "announce": None if address.announce is None else format_address(*address.announce),
                      "gateway": None if address.gateway is None else gateway_url(address.gateway)})
        out.result(address.describe())

    run_daemon(config, ready, reload)
    out.note("cas daemon: stopped")
    return 0


def _mounted_advice(exc: RepositoryLockedError) -> RepositoryLockedError:
    """``exc``, or, when a mount process holds the repository, the same
    error saying how to have the daemon serve the mount instead."""
    from cas.fuse.mountd import MOUNT_PROCESS

    holder = exc.holder or ""
    opening = f"({MOUNT_PROCESS} "
    if opening not in holder or not holder.endswith(")"):
        return exc
    mountpoint = holder[holder.index(opening) + len(opening):-1]
    better = RepositoryLockedError(
        f"{exc}; it is mounted at {mountpoint} by a mount process: 'cas umount {mountpoint}', start the "
        f"daemon, then 'cas mount {mountpoint}' again, and the daemon serves the mount")
    better.holder = exc.holder
    return better


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The node's configuration: each flag given, else the repository's
    setting (``cas config``), else the default. ``args`` is left as parsed."""
    from cas.node import DEFAULT_PORT, NodeConfig

    args = copy.copy(args)
    apply_settings(args)
    host, port = args.listen or ("0.0.0.0", DEFAULT_PORT)
    config = NodeConfig(repo=repo_path(args), listen_host=host, listen_port=port,
                        bootstrap=list(args.bootstrap))
    if args.frame_memory is not None:
        from cas.net.framing import MAX_FRAME_SIZE

        if args.frame_memory < MAX_FRAME_SIZE:
            raise InvalidInputError("--frame-memory must hold at least one 2 MiB message and its framing: 3M or more")
    if args.scrub_rate is not None and args.scrub_rate <= 0:
        raise InvalidInputError("--scrub-rate must be more than 0")
    for name in _DAEMON_FLAGS:  # a flag given replaces NodeConfig's default
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.network_key is not None:
        config.network_key = args.network_key.expanduser()
    if args.gateway is not None and args.gateway != "off":
        config.gateway = args.gateway
    return config


def apply_settings(args: argparse.Namespace) -> None:
    """The repository's settings (``cas config``) for the flags not given."""
    from cas.store import LocalStore

    from .config_cmds import settings_for_daemon

    repo = repo_path(args)
    if not (repo / "config.json").exists():
        return  # a new repository: nothing set yet
    for name, value in settings_for_daemon(LocalStore.check_config(repo)).items():
        if getattr(args, name) in (None, []):
            setattr(args, name, value)


REPLICATION_WAIT = 120
"""Seconds ``cas add`` waits at its end for placements still in flight
before it reports (they go on in the daemon either way)."""


def replication_report(args: argparse.Namespace, cids: list[Any]) -> list[dict[str, Any]] | None:
    """Copies reached by each added item, if a daemon with peers did the add
    (None when offline or alone: there is nothing to report)."""
    from cas import control
    from cas.control.schema import ReplicationStatus

    client = control.connect(repo_path(args))
    if client is None:
        return None
    with client:
        try:
            reports = client.call(ReplicationStatus(cids, REPLICATION_WAIT))
        except control.ControlProtocolError:
            return None  # an older daemon without the op
    if not reports or all(r["reachable"] == 0 for r in reports):
        return None
    return list(reports)


def replication_line(name: str, report: dict[str, Any]) -> str:
    copies, wanted = report["copies"], report["replicas"]
    line = f"{name}: stored on {copies} of {wanted} nodes"
    if copies < wanted:
        if report["reachable"] + 1 < wanted:
            line += f" (only {report['reachable'] + 1} nodes reachable); retrying in the background"
        elif not report["settled"]:
            line += "; placement continues in the background"
        else:
            line += "; retrying in the background"
    return line


def cmd_id(args: argparse.Namespace, out: Output) -> int:
    from cas import control
    from cas.control.schema import Id

    client = control.connect(repo_path(args))
    if client is not None:
        with client:
            info = client.call(Id())
        doc = {"id": info["id"], "host": info["host"], "port": info["port"], "running": True,
               "announce": info.get("announce"), "reachable": info.get("reachable")}
    else:
        from cas.net.identity import Identity
        from cas.node import KEY_PATH, id_difficulty
        from cas.store import LocalStore

        with LocalStore.open(repo_path(args), create=True, wait=args.wait, on_wait=waiting_note(args)) as store:
            (store.path / "keys").mkdir(mode=0o700, exist_ok=True)
            identity, _ = Identity.for_node(store.path / KEY_PATH, id_difficulty(store))
        doc = {"id": identity.node_id.hex(), "host": None, "port": None, "running": False,
               "announce": None, "reachable": None}
    out.document(doc)
    where = f"{doc['host']}:{doc['port']}" if doc["running"] else "not running"
    if doc["announce"]:
        where += f", announced as {doc['announce']}"
    if doc["reachable"] not in (None, "yes"):  # what to act on: a client, or not known yet
        where += f" (reachable: {doc['reachable']})"
    out.result(f"{doc['id']}  {where}")
    return 0


def cmd_peers(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import Peers
    with _client(args) as client:
        peers = client.call(Peers())
    out.document(peers)
    for p in peers:
        state = "connected" if p["connected"] else "-"
        out.result(f"{p['id']}  {p['host']}:{p['port']}  {state}  stores {p.get('stores', 0)}  "
                   f"ours {human_size(p.get('ours_bytes', 0))} ({p.get('ours_blocks', 0)} blocks)  "
                   f"holds {human_size(p.get('held_bytes', 0))}  "
                   f"failures {p['failures']}/{p.get('store_failures', 0)}/{p.get('bad_blocks', 0)}")
    out.note(f"{len(peers)} peer(s); stores: blocks we placed on it (since start); ours: our own blocks "
             "it holds now (as placement and repair confirmed them); holds: what it stored with us; "
             "failures: in a row / stores failed / wrong blocks sent")
    return 0


def cmd_dht_find(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import DhtFind
    from cas.node import parse_target

    for text in args.targets:  # bad input fails before any lookup
        try:
            parse_target(text)
        except InvalidCIDError:
            raise InvalidInputError(f"{text!r} is neither a CID nor a 64-hex-digit node ID") from None
    results = []
    with _client(args) as client:
        for text in args.targets:
            results.append(client.call(DhtFind(text)))
    if out.json_mode:
        out.document(results[0] if len(results) == 1 else results)
        return 0
    for r in results:
        out.result(f"{r['cid'] or r['target']}: {len(r['closest'])} closest "
                   f"({r['hops']} hops, {r['messages']} messages)")
        for c in r["closest"]:
            has = "" if c["has"] is None else ("  has it" if c["has"] else "  -")
            out.result(f"  {c['id']}  {c['host']}:{c['port']}{has}")
    return 0


def cmd_dht_refresh(args: argparse.Namespace, out: Output) -> int:
    from cas.control.schema import DhtRefresh
    with _client(args) as client:
        lookups = client.call(DhtRefresh())
    out.document({"lookups": lookups})
    out.result(f"refreshed: {lookups} lookups")
    return 0
