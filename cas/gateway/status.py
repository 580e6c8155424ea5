"""The node's figures as the status page and ``/metrics`` show them.

Owns :class:`NodeFigures` (one snapshot of what the node reports through
``cas id``, ``cas peers``, ``cas repo stat`` and ``replication_stats``,
taken by the node at the moment of the request), the status page
(:func:`status_page`: plain HTML, its one stylesheet inline, no script,
nothing loaded from elsewhere) and the Prometheus exposition
(:func:`metrics_text`: a prometheus-client collector over the snapshot,
so a scrape reads the figures as they are then, never a stale copy).

Must never: reach into the node (the node fills the snapshot), or do I/O.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from .router import human, page_start


@dataclass(frozen=True)
class PeerFigures:
    node_id: str
    host: str
    port: int
    connected: bool
    last_seen_ago: float | None  # seconds
    ours_blocks: int
    held_bytes: int


@dataclass(frozen=True)
class NodeFigures:
    """What the node is and does now (see the module docstring)."""

    node_id: str
    version: str
    listen: str
    gateway: str
    uptime: float
    reachable: str
    repo: str
    peers: list[PeerFigures]
    blocks: int
    bytes: int
    pinned: int
    disk_bytes: int
    held_blocks: int
    held_bytes: int
    quota: int
    replicas: int
    below_r: int
    tracked: int
    placed: int
    repair_rounds: int
    repair_stores: int
    repair_bytes: int
    scrub_passes: int
    scrubbed_bytes: int
    quarantined: int
    in_quarantine: int
    restored: int
    unrecoverable: int
    recent: list[tuple[float, str]] = field(default_factory=list)  # (unix time, log line)
    http_responses: Mapping[int, int] = field(default_factory=dict)
    http_open: int = 0
    http_refused: int = 0


def status_page(f: NodeFigures) -> bytes:
    """The status page (``/``): the node, its storage, replication, the scrub,
    its peers and its recent log."""
    e = html.escape
    out = [page_start(f"cas node {f.node_id[:16]}"),
           f"<h1>cas node <code>{e(f.node_id)}</code></h1>\n",
           "<table>\n"]
    rows = [
        ("version", f.version), ("repository", f.repo), ("listening on", f.listen),
        ("gateway", f.gateway), ("reachable", f.reachable), ("up", _duration(f.uptime)),
        ("peers", f"{len(f.peers)} ({sum(p.connected for p in f.peers)} connected)"),
    ]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>\n" for k, v in rows]
    out.append("</table>\n<h2>Storage</h2>\n<table>\n")
    quota_use = f"{human(f.held_bytes)} of {human(f.quota)}" + (
        f" ({100 * f.held_bytes / f.quota:.0f}%)" if f.quota else "")
    rows = [
        ("blocks stored", f"{f.blocks:,} ({human(f.bytes)}; {human(f.disk_bytes)} on disk)"),
        ("pinned", f"{f.pinned:,}"),
        ("held for other nodes", f"{f.held_blocks:,} blocks, {quota_use} of the quota"),
    ]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>\n" for k, v in rows]
    out.append("</table>\n<h2>Replication and integrity</h2>\n<table>\n")
    rows = [
        ("copies kept (R)", str(f.replicas)),
        ("blocks below R", f"{f.below_r:,} of {f.tracked:,} tracked"),
        ("blocks placed", f"{f.placed:,}"),
        ("repair rounds", f"{f.repair_rounds:,} ({f.repair_stores:,} copies made, {human(f.repair_bytes)})"),
        ("scrub", f"{f.scrub_passes:,} passes done, {human(f.scrubbed_bytes)} verified"),
        ("damaged blocks", f"{f.quarantined:,} found, {f.restored:,} restored, {f.unrecoverable:,} unrecoverable, "
                           f"{f.in_quarantine:,} in quarantine"),
    ]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>\n" for k, v in rows]
    out.append(f"</table>\n<h2>Peers ({len(f.peers)})</h2>\n")
    if f.peers:
        out.append("<table id=peers><tr><th>node</th><th>address</th><th>connected</th><th>last seen</th>"
                   "<th class=n>our blocks it holds</th><th class=n>its bytes held here</th></tr>\n")
        for p in f.peers:
            seen = "never" if p.last_seen_ago is None else _duration(p.last_seen_ago) + " ago"
            out.append(f"<tr><td><code>{e(p.node_id)}</code></td><td>{e(p.host)}:{p.port}</td>"
                       f"<td>{'yes' if p.connected else 'no'}</td><td>{e(seen)}</td>"
                       f"<td class=n>{p.ours_blocks:,}</td><td class=n>{e(human(p.held_bytes))}</td></tr>\n")
        out.append("</table>\n")
    else:
        out.append("<p>none: this node runs alone.</p>\n")
    out.append("<h2>Recent log</h2>\n")
    if f.recent:
        out.append("<table>\n")
        for when, line in reversed(f.recent):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
            out.append(f"<tr><td>{stamp}&nbsp;UTC</td><td>{e(line)}</td></tr>\n")
        out.append("</table>\n")
    else:
        out.append("<p>nothing logged since the node started.</p>\n")
    served = ", ".join(f"{n:,} &times; {s}" for s, n in sorted(f.http_responses.items())) or "none yet"
    out.append(f"<h2>Gateway</h2>\n<p>answers: {served}; {f.http_open} connections open, "
               f"{f.http_refused:,} turned away. Metrics at <a href=\"/metrics\">/metrics</a>.</p>\n")
    out.append("</body></html>\n")
    return "".join(out).encode()


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


class _Figures(Collector):
    """A prometheus-client collector over one snapshot."""

    def __init__(self, f: NodeFigures) -> None:
        self._f = f

    def collect(self) -> Iterator[Metric]:
        f = self._f

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"cas_{name}", text, value=value)

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"cas_{name}", text, value=value)

        info = GaugeMetricFamily("cas_node_info", "This node: its ID and version (value 1).",
                                 labels=["node_id", "version"])
        info.add_metric([f.node_id, f.version], 1)
        yield info
        yield gauge("uptime_seconds", "Seconds since the node started.", f.uptime)
        yield gauge("peers", "Peers in the routing table.", len(f.peers))
        yield gauge("peers_connected", "Peers with an open connection.", sum(p.connected for p in f.peers))
        yield gauge("blocks_stored", "Blocks in the repository.", f.blocks)
        yield gauge("stored_bytes", "Bytes of the blocks in the repository.", f.bytes)
        yield gauge("disk_bytes", "Bytes of the repository's pack files on disk.", f.disk_bytes)
        yield gauge("pinned", "Pins.", f.pinned)
        yield gauge("held_blocks", "Blocks held for other nodes.", f.held_blocks)
        yield gauge("held_bytes", "Bytes held for other nodes.", f.held_bytes)
        yield gauge("quota_bytes", "Bytes this node gives other nodes' blocks at most.", f.quota)
        yield gauge("replicas", "Copies kept of every block (R).", f.replicas)
        yield gauge("blocks_below_r", "Own blocks known to have fewer than R copies.", f.below_r)
        yield gauge("blocks_tracked", "Own blocks whose holders are tracked.", f.tracked)
        yield counter("blocks_placed", "Blocks placed on the network since start.", f.placed)
        yield counter("repair_rounds", "Repair rounds run since start.", f.repair_rounds)
        yield counter("repair_stores", "Copies made by repair since start.", f.repair_stores)
        yield counter("repair_bytes", "Bytes copied by repair since start.", f.repair_bytes)
        yield counter("scrub_passes", "Scrub passes completed since start.", f.scrub_passes)
        yield counter("scrubbed_bytes", "Bytes verified by the scrub since start.", f.scrubbed_bytes)
        yield counter("blocks_quarantined", "Stored blocks found damaged since start.", f.quarantined)
        yield counter("blocks_restored", "Damaged blocks restored from the network since start.", f.restored)
        yield counter("blocks_unrecoverable", "Damaged blocks no good copy was found for.", f.unrecoverable)
        yield gauge("blocks_in_quarantine", "Blocks in quarantine now.", f.in_quarantine)
        responses = CounterMetricFamily("cas_gateway_responses", "Gateway answers since start, by HTTP status.",
                                        labels=["status"])
        for status, n in sorted(f.http_responses.items()):
            responses.add_metric([str(status)], n)
        yield responses
        yield gauge("gateway_connections", "Gateway connections open.", f.http_open)
        yield counter("gateway_refused", "Gateway connections turned away at the bound.", f.http_refused)


def metrics_text(f: NodeFigures) -> bytes:
    """``/metrics``: the snapshot in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(f))
    return generate_latest(registry)
