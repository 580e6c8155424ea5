"""Running ``cas daemon`` processes in tests: start, wait for readiness,
stop by PID. Every wait has a deadline; nothing sleeps as synchronisation.

Use :class:`Daemons` as a context manager (or the ``daemons`` fixture in
the test modules): whatever happens in the test, every process it started is
stopped by PID on the way out (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cas.cid import CID
from cas.control import ControlClient, socket_path
from cas.store._links import links_of

from .conftest import CAS


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    repo: Path
    node_id: str = ""
    host: str = ""
    port: int = 0
    stderr_path: Path | None = None
    gateway: str = ""  # its gateway's URL (http://HOST:PORT/), when started with --gateway

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CAS_HOME"}


@dataclass
class Daemons:
    """Starts daemons and guarantees they are stopped."""

    started: list[Daemon] = field(default_factory=list)
    argv_prefix: Sequence[str] = ()

    def start(self, repo: Path, *, listen: str | None = "127.0.0.1:0", bootstrap: Sequence[str] = (),
              extra: Sequence[str] = (), wait: bool = True, timeout: float = 30,
              prefix: Sequence[str] = ()) -> Daemon:
        repo.mkdir(parents=True, exist_ok=True)
        stderr_path = repo.parent / f"{repo.name}.daemon.err"
        argv = [*prefix, CAS, "--repo", str(repo), "daemon", *(["--listen", listen] if listen else [])]
        for b in bootstrap:
            argv += ["--bootstrap", b]
        argv += list(extra)
        with open(stderr_path, "ab") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=_env())
        daemon = Daemon(proc, repo, stderr_path=stderr_path)
        self.started.append(daemon)
        if wait:
            self.wait_ready(daemon, timeout)
        return daemon

    def wait_ready(self, daemon: Daemon, timeout: float = 30) -> Daemon:
        """Read the daemon's ready line (``node ID listening on HOST:PORT``)."""
        assert daemon.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"daemon for {daemon.repo} not ready in {timeout:g} s: {daemon.stderr()}")
            ready, _, _ = select.select([daemon.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(daemon.proc.stdout.fileno(), 1)
                if not chunk:
                    raise AssertionError(
                        f"daemon for {daemon.repo} exited ({daemon.proc.wait(5)}): {daemon.stderr()}")
                line += chunk
        words = line.decode().split()
        assert words[0] == "node" and words[2:4] == ["listening", "on"], line
        daemon.node_id = words[1]
        daemon.host, port = words[4].rsplit(":", 1)
        daemon.port = int(port)
        if "(gateway" in words:  # after "(announced as HOST:PORT)", if it announces one
            daemon.gateway = words[words.index("(gateway") + 1].rstrip(")")
        return daemon

    def stop(self, daemon: Daemon, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` to the daemon's PID and wait for it to exit."""
        if daemon.proc.poll() is None:
            os.kill(daemon.pid, sig)
        try:
            return daemon.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.proc.wait(10)
            raise AssertionError(f"daemon {daemon.pid} ignored signal {sig} for {timeout:g} s") from None

    def close(self) -> None:
        for daemon in self.started:
            if daemon.proc.poll() is None:
                os.kill(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for daemon in self.started:
            try:
                daemon.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(daemon.pid, signal.SIGKILL)
                daemon.proc.wait(10)
            if daemon.proc.stdout is not None:
                daemon.proc.stdout.close()

    def __enter__(self) -> Daemons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replication_stats(daemon: Daemon, timeout: float = 30) -> dict[str, Any]:
    """The daemon's ``replication_stats``, with a patient client (a daemon
    busy repairing may take longer than the CLI's 2 s connect check)."""
    with ControlClient(socket_path(daemon.repo), timeout=timeout) as client:
        return dict(client.call("replication_stats"))


def has(daemon: Daemon | Path, cid: CID) -> bool:
    """Whether ``daemon``'s repository (or the daemon owning the repository
    at a path) holds ``cid`` (never fetching it)."""
    repo = daemon if isinstance(daemon, Path) else daemon.repo
    with ControlClient(socket_path(repo), timeout=30) as client:
        return bool(client.call("has", cid=cid))


def dag_of(daemon: Daemon | Path, root: CID) -> list[CID]:
    """Every block under ``root``, read through ``daemon`` (or the daemon
    owning the repository at a path)."""
    repo = daemon if isinstance(daemon, Path) else daemon.repo
    out, stack = [], [root]
    with ControlClient(socket_path(repo), timeout=60) as client:
        while stack:
            cid = stack.pop()
            out.append(cid)
            stack.extend(links_of(cid, client.call("get", cid=cid)))
    return out


def start_network(daemons: Daemons, base: Path, count: int, extra: Sequence[str] = (),
                  timeout: float = 120) -> list[Daemon]:
    """``count`` daemons in ``base/n0``, ``base/n1``..., node i listening on
    127.0.0.(10 + i), all bootstrapped through the first and then refreshed
    at once (``cas dht refresh``) so that each knows the others."""
    first = daemons.start(base / "n0", listen="127.0.0.10:0", extra=extra)
    rest = [daemons.start(base / f"n{i}", listen=f"127.0.0.{10 + i}:0", bootstrap=[first.address],
                          wait=False, extra=extra) for i in range(1, count)]
    for daemon in rest:
        daemons.wait_ready(daemon, timeout=timeout)
    nodes = [first, *rest]
    refreshes = [subprocess.Popen([CAS, "--repo", str(d.repo), "dht", "refresh"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for d in nodes]
    deadline = time.monotonic() + timeout
    for proc in refreshes:  # each waited for, whatever the others do
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"cas dht refresh did not finish in {timeout:g} s") from None
        if proc.returncode != 0:
            raise AssertionError(f"cas dht refresh failed: {err.decode().strip()}")
    return nodes
