"""A test network of hosts: network namespaces joined by a user-space switch
that adds delay, jitter, loss and a bandwidth limit per link, with a
partition switch and hosts behind NAT.

Theory of operation
===================

Every host is a network namespace (``casnet-<pid>-<rand>-hN``) with one
interface, ``tun0``, a TUN device holding the host's address
(``10.77.0.(10 + N)/24``). A TUN device hands every packet the host sends to
the process that opened it, instead of to a wire; that process is the
*switch* (``python -m tests.testnet _switch``, one per network). It opened
every host's TUN device from inside that host's namespace (``setns``), reads
each IPv4 packet, finds the destination host by address, and then plays the
two links the packet crosses (the sender's uplink, the receiver's downlink):

- *loss*: dropped with the probability of either link's ``loss``;
- *bandwidth*: each link with a ``rate`` sends one packet at a time, so a
  packet leaves when the link is free plus its own size at that rate; a
  link more than :data:`QUEUE_SECONDS` behind drops (a router's tail drop);
- *delay and jitter*: held for both links' ``delay`` plus a normally
  distributed jitter, never overtaking an earlier packet of the same pair
  (TCP would read reordering as loss, and netem's default is the same);
- *partition*: hosts in different groups, or a host whose link is cut,
  exchange nothing.

Then the switch writes it into the receiver's TUN device. The switch plays
the kernel bridge's part: this machine's kernel has no ``netem`` qdisc, and a
user-space switch gives delay, loss and rate on any kernel. The round trip
between hosts A and B is therefore ``2 × (delay_A + delay_B)``.

A host behind NAT lives in its own namespace with a veth pair to a *router*
namespace (``…-natN``), which is attached to the switch like a host and
masquerades (nftables) what leaves by ``tun0``. It can dial every host; no
host can dial it (its address, ``192.168.(77 + N).2``, is routed nowhere
outside the pair, and the router forwards nothing it did not see leave),
unless a port is forwarded to it (:meth:`Testnet.forward`: the router's
``SUBNET.(200 + N)`` at that port leads to it, a home router's port forward).

Containment: the namespaces have no other interface and no default route
(the NAT'd host's default route is its router), the switch forwards only
between the addresses it made, and the addresses exist only inside those
namespaces. Nothing reaches the machine's own network.

Clean-up, always: the switch exits when its stdin closes (the owner died),
and the TUN devices vanish with it; :class:`Testnet` is a context manager
that also registers an ``atexit`` hook; ``python -m tests.testnet cleanup``
(``scripts/testnet cleanup``) removes the namespaces of owners that are no
longer running, killing by PID what still runs inside them.

Each network measures what it actually produced (ICMP echo between the
namespaces, :meth:`Testnet.measure`) and prints it when asked.

Command line (root)::

    scripts/testnet up --hosts 4 --delay 25ms --loss 0.01   # until Ctrl-C
    scripts/testnet check --hosts 3 --delay 10ms            # build, measure, remove
    scripts/testnet cleanup                                 # leftovers of dead runs

What may live in this file: building and removing the namespaces, the
switch, measuring. Not here: anything about cas (the tests start daemons in
the namespaces with :meth:`Testnet.prefix`).
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import fcntl
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import IO, Any

PREFIX = "casnet-"
"""Every namespace this module makes starts so; ``cleanup`` looks for it."""

SUBNET = "10.77.0"
"""The hosts' /24; it exists only inside the namespaces."""

MTU = 9000
"""The TUN devices' MTU: a jumbo frame, so the switch (one Python process)
moves six times fewer packets than at 1500 for the same bytes."""

QUEUE_SECONDS = 0.1
"""A rate-limited link drops a packet that would wait longer than this (a
router's buffer of 100 ms, the usual rule of thumb)."""

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Link:
    """One host's link to the switch. ``delay`` and ``jitter`` are one-way
    seconds, added in each direction; ``loss`` a probability per crossing;
    ``rate`` bytes per second each way (``None``: unlimited)."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: float | None = None


@dataclass(frozen=True)
class Host:
    index: int
    namespace: str
    address: str
    behind_nat: bool = False
    attachment: int = 0  # its index in the switch: its own, or its router's
    outside: str = ""  # behind NAT: its router's address on the switch (what others see it come from)

    @property
    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside this host."""
        return ["ip", "netns", "exec", self.namespace]


@dataclass(frozen=True)
class Measurement:
    source: int
    target: int
    sent: int
    received: int
    rtt_p50: float
    rtt_mean: float
    rtt_max: float

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0

    def line(self) -> str:
        return (f"h{self.source} -> h{self.target}: rtt p50 {self.rtt_p50 * 1000:.1f} ms, "
                f"mean {self.rtt_mean * 1000:.1f} ms, max {self.rtt_max * 1000:.1f} ms, "
                f"loss {self.loss:.1%} ({self.received}/{self.sent})")


def _run(*argv: str, input: str | None = None) -> None:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


def available() -> str | None:
    """Why a test network cannot be built here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    for tool in ("ip", "nft"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
                   + ["/usr/sbin", "/sbin"]):
            return f"needs the {tool} command (scripts/setup-env --test installs it)"
    return None


@dataclass
class Testnet:
    """``hosts`` public hosts and ``nat_hosts`` hosts behind NAT (the last
    indices), every link as ``link`` unless ``links`` gives one per host.
    A context manager: built on entry, removed on exit."""

    __test__ = False  # not a pytest test class, whatever its name

    hosts_count: int
    link: Link = Link()
    links: Sequence[Link] | None = None
    nat_hosts: int = 0
    mtu: int = MTU
    seed: int | None = None
    hosts: list[Host] = field(default_factory=list)
    tag: str = ""
    _namespaces: list[str] = field(default_factory=list)
    _switch: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}-{random.randrange(16 ** 4):04x}"

    # -- building --------------------------------------------------------

    def __enter__(self) -> Testnet:
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        _run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")

    def _build(self) -> None:
        links = list(self.links) if self.links is not None else [self.link] * (self.hosts_count + self.nat_hosts)
        if len(links) != self.hosts_count + self.nat_hosts:
            raise ValueError("links must give one Link per host")
        attachments: list[tuple[str, str]] = []  # (namespace, address) on the switch
        for i in range(self.hosts_count):
            ns = f"{self.tag}-h{i}"
            self._add_namespace(ns)
            self.hosts.append(Host(i, ns, f"{SUBNET}.{10 + i}", attachment=len(attachments)))
            attachments.append((ns, f"{SUBNET}.{10 + i}"))
        routers = []
        for j in range(self.nat_hosts):
            i = self.hosts_count + j
            router, ns = f"{self.tag}-nat{j}", f"{self.tag}-h{i}"
            self._add_namespace(router)
            self._add_namespace(ns)
            routers.append((router, ns, j))
            self.hosts.append(Host(i, ns, f"192.168.{77 + j}.2", behind_nat=True, attachment=len(attachments),
                                   outside=f"{SUBNET}.{200 + j}"))
            attachments.append((router, f"{SUBNET}.{200 + j}"))
        config = {"namespaces": [ns for ns, _ in attachments], "addresses": [a for _, a in attachments],
                  "links": [asdict(links[h.index]) for h in sorted(self.hosts, key=lambda h: h.attachment)],
                  "seed": self.seed}
        self._switch = subprocess.Popen(
            [sys.executable, "-m", "tests.testnet", "_switch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=_ROOT)
        self._command(config)
        for ns, address in attachments:
            _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "tun0")
            _run("ip", "-n", ns, "link", "set", "tun0", "mtu", str(self.mtu), "up")
        for router, ns, j in routers:
            lan = f"192.168.{77 + j}"
            _run("ip", "-n", router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "-n", router, "addr", "add", f"{lan}.1/24", "dev", "lan0")
            _run("ip", "-n", router, "link", "set", "lan0", "mtu", str(self.mtu), "up")
            _run("ip", "-n", ns, "addr", "add", f"{lan}.2/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "mtu", str(self.mtu), "up")
            _run("ip", "-n", ns, "route", "add", "default", "via", f"{lan}.1")
            _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # Masquerade what leaves for the switch; let in only the answers
            # to what went out (a home router's stance).
            _run("ip", "netns", "exec", router, "nft", "-f", "-", input=(
                "table ip casnat {\n"
                " chain postrouting { type nat hook postrouting priority 100; oifname \"tun0\" masquerade; }\n"
                " chain forward { type filter hook forward priority 0; policy drop;\n"
                "  iifname \"lan0\" accept; ct state established,related accept; }\n"
                "}\n"))

    def _command(self, command: dict[str, Any]) -> None:
        switch = self._switch
        if switch is None or switch.stdin is None or switch.stdout is None:
            raise RuntimeError("the test network is not running")
        switch.stdin.write(json.dumps(command) + "\n")
        switch.stdin.flush()
        answer = switch.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the test network's switch failed: {answer or 'it exited'}")

    # -- changing the network ----------------------------------------------

    def set_link(self, host: int, link: Link) -> None:
        self._command({"op": "link", "attachment": self.hosts[host].attachment, "link": asdict(link)})

    def partition(self, *groups: Sequence[int]) -> None:
        """Split the hosts: only hosts in the same group reach each other
        (hosts in no group are alone)."""
        self._command({"op": "partition",
                       "groups": [[self.hosts[i].attachment for i in group] for group in groups]})

    def heal(self) -> None:
        """Undo :meth:`partition` and :meth:`cut`."""
        self._command({"op": "heal"})

    def cut(self, host: int) -> None:
        """Drop everything to and from ``host``: it goes silent."""
        self._command({"op": "cut", "attachment": self.hosts[host].attachment})

    def forward(self, host: int, port: int) -> None:
        """Forward TCP ``port`` of the NAT router of ``host`` (behind NAT)
        to the same port of ``host``, as a home router's port forward:
        others reach it at ``outside:port``."""
        inside = self.hosts[host]
        if not inside.behind_nat:
            raise ValueError(f"host {host} is not behind NAT")
        router = f"{self.tag}-nat{host - self.hosts_count}"
        _run("ip", "netns", "exec", router, "nft", "-f", "-", input=(
            "table ip casfwd {\n"
            f" chain prerouting {{ type nat hook prerouting priority -100;"
            f" iifname \"tun0\" tcp dport {port} dnat to {inside.address}:{port}; }}\n"
            "}\n"
            "add rule ip casnat forward ct status dnat accept\n"))

    # -- measuring -----------------------------------------------------------

    def measure(self, source: int, target: int, count: int = 50, interval: float = 0.01,
                timeout: float = 2.0) -> Measurement:
        """ICMP echo from ``source`` to ``target``, run inside ``source``."""
        out = subprocess.run(
            [*self.hosts[source].prefix, sys.executable, "-m", "tests.testnet", "_ping",
             self.hosts[target].address, str(count), str(interval), str(timeout)],
            capture_output=True, text=True, timeout=count * interval + timeout + 30,
            cwd=_ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"ping inside {self.hosts[source].namespace} failed: {out.stderr.strip()}")
        rtts = json.loads(out.stdout)
        return Measurement(source, target, count, len(rtts), statistics.median(rtts) if rtts else float("inf"),
                           statistics.fmean(rtts) if rtts else float("inf"), max(rtts, default=float("inf")))

    def tcp_transfer(self, source: int, target: int, size: int, timeout: float = 300) -> float:
        """Seconds to send ``size`` bytes over one TCP connection from
        ``source`` to ``target`` (the link's own ceiling, iperf-style):
        from the connect to the receiver's count of the last byte."""
        receiver = subprocess.Popen(
            [*self.hosts[target].prefix, sys.executable, "-m", "tests.testnet", "_sink", self.hosts[target].address],
            stdout=subprocess.PIPE, text=True, cwd=_ROOT)
        try:
            assert receiver.stdout is not None
            port = receiver.stdout.readline().strip()
            if not port:
                raise RuntimeError("the TCP receiver did not start")
            out = subprocess.run(
                [*self.hosts[source].prefix, sys.executable, "-m", "tests.testnet", "_source",
                 self.hosts[target].address, port, str(size)],
                capture_output=True, text=True, timeout=timeout, cwd=_ROOT)
            if out.returncode != 0:
                raise RuntimeError(f"the TCP sender failed: {out.stderr.strip()}")
            return float(out.stdout)
        finally:
            receiver.kill()
            receiver.wait(10)
            if receiver.stdout:
                receiver.stdout.close()

    def report(self, count: int = 50, out: IO[str] | None = None) -> list[Measurement]:
        """Measure from host 0 to every other host (from a host behind NAT
        to host 0: no one can dial it) and print each line."""
        found = [self.measure(i, 0, count) if self.hosts[i].behind_nat else self.measure(0, i, count)
                 for i in range(1, len(self.hosts))]
        for m in found:
            print(f"testnet: {m.line()}", file=out or sys.stdout, flush=True)
        return found

    # -- removing ------------------------------------------------------------

    def close(self) -> None:
        atexit.unregister(self.close)
        switch, self._switch = self._switch, None
        if switch is not None:
            with suppress(OSError):
                if switch.stdin:
                    switch.stdin.close()
            try:
                switch.wait(5)
            except subprocess.TimeoutExpired:
                switch.kill()
                switch.wait(5)
            if switch.stdout:
                switch.stdout.close()
        for ns in reversed(self._namespaces):
            _remove_namespace(ns)
        self._namespaces.clear()


def _remove_namespace(ns: str) -> None:
    """Kill by PID whatever still runs inside ``ns``, then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20).stdout.split()
    for pid in pids:
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def leftovers(all_owners: bool = False) -> list[str]:
    """Namespaces of this module whose owning process is gone (or all)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout.split("\n")
    found = []
    for line in names:
        name = line.split(" ")[0]
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if not match:
            continue
        owner = int(match.group(1))
        alive = True
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass
        if all_owners or not alive:
            found.append(name)
    return found


# -- the switch (its own process) -------------------------------------------


def _open_tun(namespace: str) -> int:
    """A TUN device ``tun0`` made inside ``namespace``; it lives as long as
    the returned descriptor."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(there, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", b"tun0", _IFF_TUN | _IFF_NO_PI))
        return fd
    finally:
        libc.setns(home, _CLONE_NEWNET)
        os.close(there)
        os.close(home)


class _Switch:
    """The forwarding loop; see the module docstring."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.fds = [_open_tun(ns) for ns in config["namespaces"]]
        self.by_address = {socket.inet_aton(a): i for i, a in enumerate(config["addresses"])}
        self.links = [Link(**link) for link in config["links"]]
        self.random = random.Random(config.get("seed"))
        n = len(self.fds)
        self.group = [0] * n
        self.cut = [False] * n
        self.up_free = [0.0] * n  # when each uplink / downlink is next free
        self.down_free = [0.0] * n
        self.last: dict[tuple[int, int], float] = {}
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.seq = 0

    def command(self, command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "link":
            self.links[command["attachment"]] = Link(**command["link"])
        elif op == "partition":
            self.group = [-1 - i for i in range(len(self.fds))]  # alone unless grouped
            for g, members in enumerate(command["groups"]):
                for i in members:
                    self.group[i] = g
        elif op == "heal":
            self.group = [0] * len(self.fds)
            self.cut = [False] * len(self.fds)
        elif op == "cut":
            self.cut[command["attachment"]] = True
        else:
            raise ValueError(f"unknown op {op!r}")

    def _serialise(self, free: list[float], i: int, start: float, size: int) -> float | None:
        rate = self.links[i].rate
        if not rate:
            return start
        begin = max(start, free[i])
        if begin - start > QUEUE_SECONDS:
            return None
        free[i] = begin + size / rate
        return free[i]

    def packet(self, src: int, data: bytes, now: float) -> None:
        if len(data) < 20 or data[0] >> 4 != 4:
            return
        dst = self.by_address.get(data[16:20])
        if dst is None or dst == src or self.cut[src] or self.cut[dst] or self.group[src] != self.group[dst]:
            return
        a, b = self.links[src], self.links[dst]
        if (a.loss and self.random.random() < a.loss) or (b.loss and self.random.random() < b.loss):
            return
        sent = self._serialise(self.up_free, src, now, len(data))
        if sent is None:
            return
        jitter = a.jitter + b.jitter
        arrive = sent + a.delay + b.delay + (self.random.gauss(0, jitter) if jitter else 0.0)
        delivered = self._serialise(self.down_free, dst, max(arrive, sent), len(data))
        if delivered is None:
            return
        due = max(delivered, self.last.get((src, dst), 0.0))
        self.last[(src, dst)] = due
        self.seq += 1
        heapq.heappush(self.queue, (due, self.seq, dst, data))

    def run(self, commands: IO[str], answers: IO[str]) -> None:
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        poller.register(commands.fileno(), select.POLLIN)
        index = {fd: i for i, fd in enumerate(self.fds)}
        stdin = commands.fileno()
        while True:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, dst, data = heapq.heappop(self.queue)
                with suppress(BlockingIOError, OSError):
                    os.write(self.fds[dst], data)
            wait = max(0, int((self.queue[0][0] - now) * 1000 + 0.999)) if self.queue else -1
            for fd, _ in poller.poll(wait):
                if fd == stdin:
                    line = commands.readline()
                    if not line:
                        return
                    try:
                        self.command(json.loads(line))
                    except (ValueError, KeyError, TypeError) as error:
                        answers.write(f"error: {error}\n")
                    else:
                        answers.write("ok\n")
                    answers.flush()
                    continue
                now = time.monotonic()
                for _ in range(64):  # drain, a bounded batch per device
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    self.packet(index[fd], data, now)


def _switch_main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides; stdin's end stops it
    config = json.loads(sys.stdin.readline())
    switch = _Switch(config)
    print("ok", flush=True)
    switch.run(sys.stdin, sys.stdout)


# -- ICMP echo, run inside a namespace -----------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(address: str, count: int, interval: float, timeout: float) -> list[float]:
    """Round trips (seconds) of the echoes answered, out of ``count`` sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    rtts: list[float] = []
    next_send = time.monotonic()
    seq = 0
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"casnet" + bytes(50)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            sock.sendto(packet, (address, 0))
            sent[seq] = now
            seq += 1
            next_send = now + interval
        if seq >= count and (len(rtts) == count or now > next_send + timeout):
            return rtts
        wait = max(0.0, (next_send if seq < count else next_send + timeout) - now)
        ready, _, _ = select.select([sock], [], [], wait)
        if ready:
            data = sock.recv(2048)
            arrived = time.monotonic()
            icmp = data[(data[0] & 0x0F) * 4:]
            kind, _, _, their_id, their_seq = struct.unpack("!BBHHH", icmp[:8])
            if kind == 0 and their_id == ident and their_seq in sent:
                rtts.append(arrived - sent.pop(their_seq))


def _sink(address: str) -> None:
    """Accept one connection, read it to the end, answer one byte."""
    with socket.create_server((address, 0)) as server:
        print(server.getsockname()[1], flush=True)
        conn, _ = server.accept()
        with conn:
            while conn.recv(1 << 20):
                pass
            conn.sendall(b"k")


def _source(address: str, port: int, size: int) -> float:
    buffer = bytes(1 << 20)
    start = time.monotonic()
    with socket.create_connection((address, port)) as conn:
        left = size
        while left > 0:
            left -= conn.send(memoryview(buffer)[:min(left, len(buffer))])
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)
    return time.monotonic() - start


# -- the command line -----------------------------------------------------------


def parse_seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)\s*(ms|s)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 25ms or 0.025)")
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


def parse_rate(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)\s*([kKmMgG]?)(bit|B)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (say 100mbit or 10MB)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    return value / 8 if match.group(3) == "bit" else value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/testnet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "build a network and keep it until Ctrl-C"),
                       ("check", "build a network, measure it, remove it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--hosts", type=int, default=3)
        p.add_argument("--nat", type=int, default=0, help="hosts behind NAT (after the others)")
        p.add_argument("--delay", type=parse_seconds, default=0.0, help="one-way delay of every host's link")
        p.add_argument("--jitter", type=parse_seconds, default=0.0)
        p.add_argument("--loss", type=float, default=0.0, help="loss probability per link crossing")
        p.add_argument("--rate", type=parse_rate, default=None, help="each link's bandwidth, e.g. 100mbit")
    cleanup = sub.add_parser("cleanup", help="remove the namespaces of runs whose owner is gone")
    cleanup.add_argument("--all", action="store_true", help="also those of running owners")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_switch"]:
        _switch_main()
        return 0
    if args[:1] == ["_ping"]:
        address, count, interval, timeout = args[1], int(args[2]), float(args[3]), float(args[4])
        print(json.dumps(ping(address, count, interval, timeout)))
        return 0
    if args[:1] == ["_sink"]:
        _sink(args[1])
        return 0
    if args[:1] == ["_source"]:
        print(_source(args[1], int(args[2]), int(args[3])))
        return 0
    ns = _parser().parse_args(args)
    if ns.command == "cleanup":
        for name in leftovers(ns.all):
            _remove_namespace(name)
            print(f"removed {name}")
        return 0
    problem = available()
    if problem:
        print(f"testnet: {problem}", file=sys.stderr)
        return 1
    link = Link(ns.delay, ns.jitter, ns.loss, ns.rate)
    with Testnet(ns.hosts, link, nat_hosts=ns.nat) as net:
        for host in net.hosts:
            print(f"h{host.index} {host.namespace} {host.address}{' (behind NAT)' if host.behind_nat else ''}")
        net.report()
        if ns.command == "check":
            size = 64 << 20
            seconds = net.tcp_transfer(0, 1, size)
            print(f"testnet: h0 -> h1: TCP {size / seconds / (1 << 20):.1f} MiB/s ({size >> 20} MiB in {seconds:.2f} s)")
        if ns.command == "up":
            def stop(signum: int, frame: object) -> None:
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, stop)  # also when started in the background, where it was ignored
            signal.signal(signal.SIGTERM, stop)
            print("up: run commands with 'ip netns exec NAMESPACE ...'; Ctrl-C (or SIGTERM) removes it",
                  flush=True)
            with suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
