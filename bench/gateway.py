"""The HTTP gateway against ``cas cat``, on the same file in the same run.

One file of pseudo-random bytes is added, a daemon started with
``--gateway``, and the file read, each way three times (the best kept),
all warm (the page cache holds the packs after the first read):

* **cas cat** through the daemon (the baseline: the file's bytes handed
  to the daemon's worker as a descriptor, never crossing a socket);
* **GET /ipfs/CID**: the whole file over HTTP (one connection);
* **GET /ipfs/CID?format=car**: the file's DAG as a CAR;
* **GET /ipfs/LEAF?format=raw**: every block of the file, one request per
  block on one keep-alive connection, as a trustless client (helia's
  block broker) fetches them.

MiB/s of the file's size; ratios against ``cas cat``.

    .venv/bin/python bench/gateway.py                 # 256 MiB
    .venv/bin/python bench/gateway.py --sizes 64M,1G
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3
from benchutil import compile_cas, parse_size

ROOT = Path(__file__).resolve().parent.parent
CAS = str(ROOT / ".venv" / "bin" / "cas")
sys.path.insert(0, str(ROOT))

from cas.car import END, CarBlock, CarReader  # noqa: E402
from cas.cid import RAW  # noqa: E402


def write_file(path: Path, size: int) -> None:
    seed = blake3.blake3(b"gateway bench").digest(length=size)
    path.write_bytes(seed)


def best(fn: Callable[[], int], size: int, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - start)
        assert got == size, (got, size)
    return size / min(times) / 2**20


def read_all(conn: http.client.HTTPConnection, path: str) -> int:
    """Bytes of the answer to GET ``path``, read 1 MiB at a time."""
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200, (path, response.status)
    n = 0
    while piece := response.read(1 << 20):
        n += len(piece)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256M")
    args = parser.parse_args()
    compile_cas()
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            bench_size(Path(tmp), size)


def bench_size(base: Path, size: int) -> None:
    repo = base / "repo"
    write_file(base / "file", size)
    cid = subprocess.run([CAS, "--repo", str(repo), "add", str(base / "file")], check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    daemon = subprocess.Popen([CAS, "--repo", str(repo), "daemon", "--listen", "127.0.0.1:0", "--gateway", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert daemon.stdout is not None
        url = daemon.stdout.readline().decode().split("(gateway ")[1].rstrip(")\n")
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=600)

        def cat() -> int:
            with open(os.devnull, "wb") as sink:
                subprocess.run([CAS, "--repo", str(repo), "cat", cid], stdout=sink, check=True)
            return size

        def get() -> int:
            return read_all(conn, f"/ipfs/{cid}")

        def car() -> int:
            assert read_all(conn, f"/ipfs/{cid}?format=car") > size
            return size

        conn.request("GET", f"/ipfs/{cid}?format=car")
        reader = CarReader()
        reader.receive_data(conn.getresponse().read())
        reader.receive_data(b"")
        leaves = []
        while (event := reader.next_event()) is not END:
            if isinstance(event, CarBlock) and event.cid.codec == RAW:
                leaves.append(event.cid)

        def raw() -> int:
            total = 0
            for leaf in leaves:
                conn.request("GET", f"/ipfs/{leaf}?format=raw")
                total += len(conn.getresponse().read())
            return total

        rates = {"cas cat": best(cat, size), "GET /ipfs/CID": best(get, size),
                 "GET ?format=car": best(car, size), f"GET ?format=raw x {len(leaves)}": best(raw, size)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    print(f"{size / 2**20:.0f} MiB file, {len(leaves)} leaves, load {os.getloadavg()[0]:.1f}")
    for name, rate in rates.items():
        print(f"  {name:<28} {rate:8.0f} MiB/s   {rate / rates['cas cat']:5.2f} x cas cat")


if __name__ == "__main__":
    main()
