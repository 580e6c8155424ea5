"""Namespace operations per second with 1, 4 and 16 concurrent clients.

A daemon owns a fresh repository; N client processes, each with one
connection through the library (``cas.open_repository``), run a mix of
durable namespace operations in their own directory for a fixed time:

    mkdir     a new directory
    add --to  a 1 KiB file stored and linked
    mv        the file just added, renamed into the client's archive/

Every operation is acknowledged only once its root is committed (one
fsync). The figure is the total operations per second of all clients, and
the ratio against one client in the same run: the issue's target (13) is
that the total does not fall as clients are added. Afterwards every
acknowledged path is checked to be there ("missing"); "refused" counts
the operations that failed (none should: each client works in its own
directory).

With ``--cli`` the clients are shell-script-like loops of ``cas`` commands
(one process per operation, as users' scripts run them), through the
daemon; with ``--offline`` the same loops with no daemon, each command
waiting its turn for the repository (``--wait``).

Run:  .venv/bin/python bench/namespace_clients.py [--seconds 10] [--clients 1,4,16] [--cli] [--offline]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAS = str(Path(sys.executable).with_name("cas"))


def worker(repo: Path, k: int, start: float, stop: float, cli: bool) -> None:
    """One client: operations from ``start`` to ``stop`` (wall clock);
    prints how many were acknowledged and the paths they left, as JSON."""
    import cas
    from cas.errors import CasError

    base = f"/c{k}"
    env = {key: value for key, value in os.environ.items() if key != "CAS_HOME"}
    library = None if cli else cas.open_repository(repo)

    def run(*args: str, data: bytes | None = None) -> bool:
        """One operation, as ``cas ARGS`` or the library's same call."""
        if library is None:
            return subprocess.run([CAS, "--repo", str(repo), *args], input=data, capture_output=True,
                                  env=env).returncode == 0
        try:
            if args[0] == "mkdir":
                library.mkdir(args[-1], parents="-p" in args)
            elif args[0] == "add":
                library.add_bytes(data or b"", to=args[-1])
            else:
                library.mv(args[1], args[2])
        except CasError:
            return False
        return True

    acknowledged, failed, paths = 0, 0, set()
    try:
        assert run("mkdir", "-p", f"{base}/archive")
        while time.time() < start:
            time.sleep(0.001)
        i = 0
        while time.time() < stop:
            if i % 3 == 0:
                ok = run("mkdir", f"{base}/d{i}")
                paths |= {f"{base}/d{i}"} if ok else set()
            elif i % 3 == 1:
                ok = run("add", "-q", "-", "--to", f"{base}/f{i}", data=b"y" * 1024 + f"{k}/{i}".encode())
                paths |= {f"{base}/f{i}"} if ok else set()
            else:
                ok = f"{base}/f{i - 1}" in paths and run("mv", f"{base}/f{i - 1}", f"{base}/archive/f{i - 1}")
                if ok:
                    paths = (paths - {f"{base}/f{i - 1}"}) | {f"{base}/archive/f{i - 1}"}
            acknowledged += ok
            failed += not ok and (i % 3 != 2 or f"{base}/f{i - 1}" in paths)
            i += 1
    finally:
        if library is not None:
            library.close()
    print(json.dumps({"ops": acknowledged, "failed": failed, "paths": sorted(paths)}))


def start_daemon(repo: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready or not proc.stdout.readline().startswith(b"node "):
        proc.kill()
        raise SystemExit("the daemon did not start")
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(base: Path, clients: int, seconds: float, cli: bool, offline: bool) -> tuple[float, int, int]:
    """(total acknowledged ops/s, operations refused, paths missing
    afterwards) for ``clients``."""
    repo = base / f"repo-{clients}"
    subprocess.run([CAS, "--repo", str(repo), "init"], check=True, capture_output=True)
    daemon = None if offline else start_daemon(repo)
    try:
        start = time.time() + 1.0 + 0.1 * clients  # every client connected first
        stop = start + seconds
        procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(k), "--repo", str(repo),
                                   "--start", repr(start), "--stop", repr(stop)] + (["--cli"] if cli else []),
                                  stdout=subprocess.PIPE) for k in range(clients)]
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 120)
            results.append(json.loads(out))
        ops = sum(r["ops"] for r in results)
        failed = sum(r["failed"] for r in results)
        paths = [p for r in results for p in r["paths"]]
        import cas
        from cas.errors import PathNotFoundError

        missing = 0
        with cas.open_repository(repo) as check:
            for path in paths:
                try:
                    check.stat(path)
                except PathNotFoundError:
                    missing += 1
        return ops / seconds, failed, missing
    finally:
        if daemon is not None:
            stop_daemon(daemon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per client count (default 10)")
    parser.add_argument("--clients", default="1,4,16", help="client counts (default 1,4,16)")
    parser.add_argument("--cli", action="store_true", help="clients run cas commands, one process per operation")
    parser.add_argument("--offline", action="store_true", help="no daemon: cas commands wait for the repository")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir under /var/tmp)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(Path(args.repo), args.worker, args.start, args.stop, args.cli)
        return
    cli = args.cli or args.offline
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cas-bench-clients-", dir="/var/tmp"))
    counts = [int(n) for n in args.clients.split(",")]
    mode = "offline, cas commands" if args.offline else ("cas commands through a daemon" if cli
                                                         else "library clients through a daemon")
    print(f"\n== namespace operations, {mode}, {args.seconds:g} s each (load {os.getloadavg()[0]:.1f})")
    print(f"  {'clients':>7} {'ops/s':>8} {'ratio to 1':>11} {'refused':>8} {'missing':>8}")
    first = None
    try:
        for n in counts:
            rate, failed, missing = measure(base, n, args.seconds, cli, args.offline)
            first = first or rate
            print(f"  {n:>7} {rate:>8.1f} {rate / first:>11.2f} {failed:>8} {missing:>8}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
