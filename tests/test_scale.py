"""Big inputs: hundreds of MiB through the command, 1 GiB range reads that
touch only a root-to-leaf path, and 2 GiB streams in bounded memory."""

from __future__ import annotations

import hashlib
import random
import subprocess
import threading
from pathlib import Path

import blake3
import pytest

from cas import dagpb, files
from cas.blocks import Block
from cas.cid import CID, RAW
from cas.store import LocalStore
from tests.conftest import CAS, PseudoRandomReader, pseudo_random_stream, run_cas

MiB = 1 << 20
GiB = 1 << 30
RSS_LIMIT = 150 * MiB


@pytest.mark.slow
def test_a_300_mib_file_round_trips_through_the_command(tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for piece in pseudo_random_stream(300 * MiB, seed="300 MiB"):
            f.write(piece)
    repo = tmp_path / "repo"
    cid = run_cas("add", str(src), repo=repo).stdout.decode().strip()
    out = tmp_path / "out.bin"
    run_cas("get", cid, "-o", str(out), repo=repo)
    assert _sha256(out) == _sha256(src)
    cat = subprocess.Popen([CAS, "--repo", str(repo), "cat", cid], stdout=subprocess.PIPE)
    streamed = hashlib.sha256()
    while piece := cat.stdout.read(4 * MiB):
        streamed.update(piece)
    assert cat.wait(timeout=600) == 0
    assert streamed.hexdigest() == _sha256(src)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 * MiB):
            h.update(piece)
    return h.hexdigest()


class CountingStore:
    """Wraps a block store and records every block fetched."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.fetched: list[CID] = []

    def get(self, cid: CID) -> bytes:
        self.fetched.append(cid)
        return self.inner.get(cid)

    def has(self, cid: CID) -> bool:
        return self.inner.has(cid)

    def put(self, block: Block) -> bool:
        return self.inner.put(block)

    def delete(self, cid: CID) -> bool:
        return self.inner.delete(cid)

    def iterate(self):
        return self.inner.iterate()

    def barrier(self) -> None:
        self.inner.barrier()


def _depth(store, cid: CID) -> int:
    depth = 0
    while cid.codec != RAW:
        cid = dagpb.decode_node(store.get(cid)).links[0].hash
        depth += 1
    return depth


@pytest.mark.slow
def test_a_one_byte_read_of_a_1_gib_file_touches_one_path(tmp_path):
    with LocalStore.open(tmp_path / "repo") as store:
        result = files.add_stream(store.blocks, PseudoRandomReader(GiB, seed="1 GiB"))
        depth = _depth(store.blocks, result.cid)
        assert depth >= 2  # a real tree, not a flat list
        rng = random.Random(7)
        for _ in range(20):
            offset = rng.randrange(GiB)
            counting = CountingStore(store.blocks)
            got = files.read_range(counting, result.cid, offset, 1)
            assert got == blake3.blake3(b"1 GiB").digest(length=1, seek=offset)
            assert len(counting.fetched) <= depth + 1, (offset, counting.fetched)


def _peak_rss_of(proc: subprocess.Popen, *workers) -> tuple[int, int]:
    """Run ``proc`` to its end while ``workers`` (callables, run in threads)
    feed and drain it; return (exit code, peak RSS in bytes).

    The peak is the kernel's high-water mark, VmHWM in /proc/PID/status,
    sampled every 10 ms until the process exits. (getrusage/wait4's
    ru_maxrss would be wrong here: it carries over the RSS of the test process
    that forked the child.)
    """
    threads = [threading.Thread(target=w, daemon=True) for w in workers]
    for t in threads:
        t.start()
    peak = 0
    status_path = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status_path) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            break
        try:
            proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()
    for t in threads:
        t.join(timeout=60)
    return proc.returncode, peak


@pytest.mark.slow
def test_adding_and_reading_a_2_gib_stream_stays_under_150_mib(tmp_path):
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    size = 2 * GiB
    expected = hashlib.sha256()

    add = subprocess.Popen(
        [CAS, "--repo", str(repo), "add", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    cid_out: list[bytes] = []

    def feed() -> None:
        for piece in pseudo_random_stream(size, seed="2 GiB", piece=4 * MiB):
            expected.update(piece)
            add.stdin.write(piece)
        add.stdin.close()

    def read_cid() -> None:
        cid_out.append(add.stdout.read())

    code, peak = _peak_rss_of(add, feed, read_cid)
    assert code == 0
    assert 0 < peak < RSS_LIMIT, f"cas add peaked at {peak / MiB:.1f} MiB"
    cid = cid_out[0].decode().strip()

    cat = subprocess.Popen([CAS, "--repo", str(repo), "cat", cid], stdout=subprocess.PIPE)
    got = hashlib.sha256()
    total = [0]

    def drain() -> None:
        while piece := cat.stdout.read(4 * MiB):
            got.update(piece)
            total[0] += len(piece)

    code, peak = _peak_rss_of(cat, drain)
    assert code == 0
    assert total[0] == size and got.hexdigest() == expected.hexdigest()
    assert 0 < peak < RSS_LIMIT, f"cas cat peaked at {peak / MiB:.1f} MiB"
