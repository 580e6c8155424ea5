"""How to run a node: its tunables, :class:`NodeConfig`, and the settings a
network shares.

Owns the node's constants (ports, paths, timers, memory bounds), the
configuration a daemon is started with (:class:`NodeConfig`, filled from
``cas daemon``'s flags), the address a node listens on, and how the
settings every node of a network must agree on (R, the repair period, the
lease, the work in a node ID) are chosen: the daemon's flag, else the
network key's, else the repository's config.json or the default
(:func:`network_settings`).

Must never: open a socket, start a task, or write a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..dht.replication import DEFAULT_REPLICAS
from ..dht.replicator import REPAIR_INTERVAL, RETRY_INTERVAL
from ..dht.routing import REFRESH_INTERVAL
from ..errors import (
    InvalidInputError,
    RepositoryError,
)
from ..names.history import THIN_INTERVAL
from ..net.admission import (
    HANDSHAKE_RATE_PER_ADDRESS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
)
from ..net.connection import FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT
from ..net.framing import FRAME_MEMORY
from ..net.identity import DEFAULT_ID_DIFFICULTY
from ..net.network_key import (
    NetworkKey,
    NetworkSettings,
)
from ..scrub import DEFAULT_SCRUB_PERIOD, DEFAULT_SCRUB_RATE
from ..store import DEFAULT_QUOTA, LocalStore
from ..store._held import DEFAULT_LEASE, DEFAULT_PEER_QUOTA

DEFAULT_PORT = 4710
KEY_PATH = Path("keys") / "node.key"
SAVE_INTERVAL = 300.0
"""Seconds between saves of the routing table while running (and once more
at shutdown): a kill -9 loses at most this much table history."""
READERS_POLL = 0.05
READERS_NOTICE = 1.0
"""How often a starting daemon looks whether the commands reading its
repository beside the last owner are done, and after how long it says it
waits for them."""

ADD_STEP_BYTES = 2 * 1024 * 1024
"""File content ``add_file`` reads and stores per trip to the store thread;
the step's blocks are queued for placement before the next one."""
BOOTSTRAP_RETRY_FIRST = 1.0
BOOTSTRAP_RETRY_MAX = 60.0
"""Seconds between tries to join through the bootstrap peers while none
answers: from the first, doubling after each failure, up to the most."""
REACHABILITY_RETRY = 30.0
"""Seconds before asking again when a reachability check could not tell
(too few peers answered), up to REACHABILITY_TRIES checks."""
REACHABILITY_TRIES = 5
RECENT_LOG = 50
"""Log lines the node keeps for its status page."""
REJOIN_CHECK = 5.0
"""Seconds between checks that the routing table still has someone in it."""
MAX_VERIFIED_MEMORY = 1 << 16
"""Blocks whose last verification the node remembers (CID -> when), for
HAVE: beyond it the oldest are forgotten and read again when asked about."""
HAVE_VERIFY_BYTES = 16 * 1024 * 1024
"""Bytes one HAVE may make this node read and hash to verify blocks it has
not verified within the scrub period: a peer's batch of 1024 blocks must
not hold the store thread for a gigabyte of reading (nor be a way to make
it). Blocks past it are answered no."""
SCRUB_FIRST_DELAY = 60.0
"""Seconds after start before the first scrub pass (or the scrub period, if
shorter)."""
THIN_FIRST_DELAY = 60.0
"""Seconds after start before the history is first thinned (or the thin
interval, if shorter)."""
SCRUB_PAGE = 16
"""Blocks the scrub looks up, then reads and verifies, per trip to the store
thread: at most 16 MiB, so the store thread is never held long (measured:
one trip per block scrubbed 256 MiB at 244 MiB/s, 16 per trip at 629)."""
MAX_CHANGES_PER_GROUP = 64
"""Namespace changes committed with one barrier, at most: bounds how long
one group holds the store thread (the rest wait for the next group)."""
WRITE_REPORT_BYTES = 4 * 1024 * 1024
"""How often ``write_file`` tells its client how far it is: also how far a
copy runs on after the client has gone (a report is how the op sees it)."""


RELOADABLE = frozenset({
    "quota", "peer_quota", "disk_reserve", "bootstrap", "max_connections", "max_connections_per_address",
    "refresh_interval", "retry_interval", "save_interval", "scrub_rate", "scrub_period",
})
"""The settings a running node takes on SIGHUP (``Node.reload`` in daemon.py): the
room it gives others' blocks, the peers it joins through when it has none,
how many connections it admits (new ones; those open stay), and the pace of
its background work. The others (its address and key, the network's shared
settings, the timeouts bound into connections) change at the next start."""


@dataclass
class NodeConfig:
    """How to run a node. ``listen_port`` 0 picks a free port."""

    repo: Path
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    bootstrap: list[tuple[str, int]] = field(default_factory=list)
    reachable: str = "yes"
    """Whether other nodes can dial this one: ``yes``; ``no``, a DHT client
    (its hellos name no listening port, so no peer files it as a contact);
    ``auto``, ask peers to dial it back and become a client if none can
    (:mod:`cas.dht.reachability`)."""
    announce: tuple[str, int] | None = None
    """The address this node hands out for itself (``--announce HOST:PORT``:
    a port forwarded to it behind NAT), instead of the one peers see its
    connections come from and the port it listens on; the reachability
    check dials it."""
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    frame_timeout: float = FRAME_TIMEOUT
    """Seconds a frame may take from its first byte to its last, either way."""
    frame_memory: int = FRAME_MEMORY
    """Bytes of large frames being received at once, over all connections."""
    max_connections: int = MAX_CONNECTIONS
    """Inbound connections held at once (docs/network.md, "Admission")."""
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    handshake_rate_per_address: float = HANDSHAKE_RATE_PER_ADDRESS
    """New inbound handshakes a second from one address, on average (docs/network.md, "Admission")."""
    refresh_interval: float = REFRESH_INTERVAL
    save_interval: float = SAVE_INTERVAL
    quota: int = DEFAULT_QUOTA
    """Bytes of other nodes' blocks this node keeps (STORE_BLOCK and blocks
    fetched to answer reads); beyond it STORE_BLOCK is refused as ``full``."""
    peer_quota: int = DEFAULT_PEER_QUOTA
    """Bytes of blocks any one other node may have placed here."""
    disk_reserve: int | None = None
    """Free disk never given to other nodes' blocks (None: a quarter of the
    disk, at most 10 GiB)."""
    lease: float | None = None
    """Seconds a block held for another node is kept without a renewal; the
    longest lease this node grants, and the one it asks for its own. None:
    the network key's setting, else the default."""
    replicas: int | None = None
    """Copies of every block; None: the network key's setting, else the default."""
    repair_interval: float | None = None
    """Seconds between repair rounds; None: the network key's, else the default."""
    retry_interval: float = RETRY_INTERVAL
    lock_wait: float = 0.0
    """Seconds to wait for the repository while another process uses it."""
    scrub_rate: float = DEFAULT_SCRUB_RATE
    """Bytes per second the scrub re-reads stored blocks at most."""
    scrub_period: float = DEFAULT_SCRUB_PERIOD
    """Seconds within which every stored block is verified again (the scrub
    runs a pass at most this often); also how long a verification stands
    for HAVE before the block is read again."""
    thin_interval: float = THIN_INTERVAL
    """Seconds between thinnings of the namespace history by its policy
    (cas.names.history)."""
    id_difficulty: int | None = None
    """Bits of work a node ID must show (cas.net.identity); None: the
    repository's ``"id_difficulty"`` in config.json, else the default."""
    gateway: tuple[str, int] | None = None
    """Where the HTTP gateway, status page and metrics listen (``--gateway``;
    docs/gateway.md); None: no gateway."""
    network_key: Path | None = None
    """The key file of the private network to join; None: the repository's
    ``keys/network.key`` if it has one, else the open network
    (:func:`cas.net.network_key.network_key_for`)."""


@dataclass(frozen=True)
class NodeAddress:
    node_id: bytes
    host: str
    port: int
    announce: tuple[str, int] | None = None  # the address it hands out, if not the above
    gateway: tuple[str, int] | None = None

    def describe(self) -> str:
        said = f"node {self.node_id.hex()} listening on {self.host}:{self.port}"
        if self.announce is not None:
            said += f" (announced as {format_address(*self.announce)})"
        if self.gateway is not None:
            said += f" (gateway {gateway_url(self.gateway)})"
        return said


def gateway_url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def parse_gateway(text: str) -> tuple[str, int]:
    """``--gateway``'s value: ``HOST:PORT``, or a bare ``PORT`` on loopback
    (127.0.0.1): a gateway answers anyone who can reach it, so it is
    offered beyond this machine only when an address says so."""
    text = text.strip()
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise InvalidInputError(f"port {port} is out of range")
        return "127.0.0.1", port
    return parse_address(text)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) → (host, port), or InvalidInputError."""
    m = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\s]+):(\d+)", text.strip())
    if not m:
        raise InvalidInputError(f"{text!r} is not an address; write HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"port {port} in {text!r} is out of range")
    return host, port


def format_address(host: str, port: int) -> str:
    """(host, port) → ``HOST:PORT`` (IPv6 in brackets), as :func:`parse_address` reads it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Settings:
    """The settings a node runs with that every node of its network shares."""

    replicas: int
    repair_interval: float
    lease: float
    id_difficulty: int


def network_settings(config: NodeConfig, key: NetworkKey | None, store: LocalStore) -> Settings:
    """Each shared setting from the daemon's flag, else the network key's
    settings, else (the ID difficulty) the repository's config.json, else
    the default. A flag that differs from the key's setting is refused: a
    node that kept its own would not be of that network."""
    from_key = key.settings if key is not None else NetworkSettings()

    def pick(name: str, flag: float | None, default: float, flag_name: str) -> float:
        shared = getattr(from_key, name)
        if flag is not None and shared is not None and flag != shared:
            assert key is not None
            raise InvalidInputError(
                f"{flag_name} {flag:g} differs from the network's {shared:g}, set in its key {key.source}; "
                f"every node of a network uses its key's settings (leave {flag_name} out)")
        return flag if flag is not None else shared if shared is not None else default

    return Settings(
        replicas=int(pick("replicas", config.replicas, DEFAULT_REPLICAS, "--replicas")),
        repair_interval=pick("repair_interval", config.repair_interval, REPAIR_INTERVAL, "--repair-interval"),
        lease=pick("lease", config.lease, DEFAULT_LEASE, "--lease"),
        id_difficulty=int(pick("id_difficulty", config.id_difficulty, id_difficulty(store, config.id_difficulty),
                               "--id-difficulty")))


def id_difficulty(store: LocalStore, configured: int | None = None) -> int:
    """The work node IDs must show: ``configured`` (the daemon's flag), else
    the repository's ``"id_difficulty"``, else DEFAULT_ID_DIFFICULTY."""
    if configured is not None:
        return configured
    value = store.config.get("id_difficulty", DEFAULT_ID_DIFFICULTY)
    if type(value) is not int or not 0 <= value <= 40:
        raise RepositoryError(f"{store.path}/config.json: \"id_difficulty\" must be a whole number of bits, 0 to 40")
    return value

