"""Benchmark the FUSE mount against its baselines, in one run.

    python bench/mount.py [--only stream|work] [--size-mib 1024] [--files 10000] [--dir DIR]

**work** (bench/mount_workloads.py): untar, git, rsync, sqlite3, fsx, 4 KiB
random writes and ``ls -lR`` on plain disk, through bindfs (a C passthrough
FUSE file system; installed with apt if missing, or said so) and through
the cas mount, each with its ratio to bindfs; and the mount process's peak
RSS.

**stream** prints, each with its ratio:

* sequential read of one file through the mount vs ``cas cat`` of the same
  file vs the same read through a minimal in-memory file system on the
  mount's own FUSE session (cas.fuse.session: the ceiling of the request
  loop on this machine, with the same kernel read-ahead as the cas mount
  sets for itself); target (issue 16): >= 0.8x cas cat; the ceiling says
  how much of that the loop itself allows;
* sequential write through the mount (dd, including the close that commits)
  vs ``cas add`` of a file of the same size; target (issue 16) >= 0.8x;
  and vs the same dd into the minimal file system with the kernel's
  write-back cache, which drops every byte (the floor: what the kernel's
  FUSE write path and the loop cost on this machine before anything is
  stored; if the floor itself is under 0.8x cas add, no mount storing the
  bytes can reach the target here);
* the same file written with an fsync every 16 MiB (a log, a download that
  syncs as it goes), through the mount vs on plain disk: each fsync stores
  the file, and the next part is followed on from where the last left off;
* 4 KiB random reads per second through the mount;
* ``ls -l`` and ``stat`` of 10,000 files in one directory vs a local directory.

Every figure is from this run on this machine (these machines are noisy:
compare ratios, not absolute numbers). Mounts are always unmounted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cas.fuse.mountd import KERNEL_READ_AHEAD_KIB, set_kernel_read_ahead

CAS = str(Path(sys.executable).with_name("cas"))
MIB = 1024 * 1024


def cas(repo: Path, *args: str, stdout: int | None = None) -> None:
    subprocess.run([CAS, "--repo", str(repo), *args], check=True, stdout=stdout or subprocess.DEVNULL)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    piece = rng.randbytes(16 * MIB)
    with open(path, "wb") as f:
        written, i = 0, 0
        while written < size:
            chunk = (piece[i:] + piece[:i])[: size - written]
            f.write(chunk)
            written += len(chunk)
            i += 4099
    subprocess.run(["sync"], check=False)


def read_all(path: Path, block: int = MIB) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(block)
        while n := f.readinto(buf):
            total += n
    return total


def dd(src: Path, dst: Path) -> None:
    # conv=fsync: the figure includes storing the file and committing it (the mount stores closed
    # files in the background, so a plain close would return before the work is done).
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"], check=True)


SYNC_EVERY = 16 * MIB


def write_syncing(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` 1 MiB at a time with an fsync every
    :data:`SYNC_EVERY` bytes and at the end."""
    with open(src, "rb", buffering=0) as inp, open(dst, "wb", buffering=0) as out:
        done = 0
        while piece := inp.read(MIB):
            out.write(piece)
            done += len(piece)
            if done % SYNC_EVERY == 0:
                os.fsync(out.fileno())
        os.fsync(out.fileno())


def unmount(mnt: Path) -> None:
    subprocess.run([CAS, "umount", str(mnt)], capture_output=True)
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


# -- the session's own limits: a minimal in-memory file system on the mount's own FUSE session --------------


CEILING_SERVER = r'''
import errno, os, stat, sys
import trio
from cas.fuse.session import Operations, Session
from cas.fuse.wire import EntryAttributes, FileInfo, FUSEError

SIZE, MODE = int(sys.argv[2]), sys.argv[3]
DATA = memoryview(os.urandom(16 * 1024 * 1024))

class Mem(Operations):
    # "read": one file "f" of SIZE bytes. "write": the kernel's write-back
    # cache and HANDLE_KILLPRIV_V2, as the cas mount asks for them, and one
    # file "w" whose bytes are dropped as they come.
    enable_writeback_cache = handles_killpriv = MODE == "write"
    written = 0
    def _attr(self, ino):
        a = EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o755) if ino == 1 else (stat.S_IFREG | 0o644)
        a.st_size = 0 if ino == 1 else SIZE if ino == 2 else self.written
        a.st_nlink = 1
        a.attr_timeout = a.entry_timeout = 60
        return a
    async def getattr(self, ino, ctx=None):
        return self._attr(ino)
    async def lookup(self, parent, name, ctx=None):
        if name != b"f":
            raise FUSEError(errno.ENOENT)
        return self._attr(2)
    async def open(self, ino, flags, ctx, kill_suidgid=False):
        return FileInfo(fh=ino)
    async def create(self, parent, name, mode, flags, ctx):
        if name != b"w" or MODE != "write":
            raise FUSEError(errno.EACCES)
        return FileInfo(fh=3), self._attr(3)
    async def read(self, fh, off, size):
        size = max(0, min(size, SIZE - off))
        start = off % (len(DATA) // 2)
        return DATA[start:start + size]
    async def setattr(self, ino, attr, fields, fh, ctx):  # with the write-back cache: times at fsync
        return self._attr(ino)
    async def write(self, fh, off, buf, ctx, kill_suidgid=False):
        self.written = max(self.written, off + len(buf))
        return len(buf)
    async def flush(self, fh):
        pass
    async def release(self, fh):
        pass
    async def fsync(self, fh, datasync):
        pass

session = Session(Mem(), sys.argv[1], {"fsname=memceiling"})
print("ready", flush=True)
try:
    trio.run(session.serve)
finally:
    session.close()
'''


def on_memory_fs(work: Path, size: int, mode: str, fn: Callable[[Path], float]) -> float:
    """``fn(mount point)`` with the minimal file system mounted in ``mode``
    ("read" or "write"), unmounted after."""
    mnt = work / f"ceiling-{mode}"
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", CEILING_SERVER, str(mnt), str(size), mode],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        os.stat(mnt / "f")  # returns once the kernel has initialised the mount
        return fn(mnt)
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ceiling_read(work: Path, size: int) -> float:
    """The read ceiling: the file read through the minimal file system,
    with the same kernel read-ahead as the cas mount sets for itself (so
    both are measured with the same request sizes)."""
    def read(mnt: Path) -> float:
        set_kernel_read_ahead(mnt, KERNEL_READ_AHEAD_KIB)
        return timed(lambda: read_all(mnt / "f"))

    return on_memory_fs(work, size, "read", read)


def floor_write(work: Path, src: Path) -> float:
    """The write floor: the same dd as into the cas mount, into the minimal
    file system with the write-back cache, which drops every byte: what
    the kernel's FUSE write path and the session cost before anything is
    stored."""
    def write(mnt: Path) -> float:
        os.sync()
        return timed(lambda: dd(src, mnt / "w"))

    return on_memory_fs(work, os.path.getsize(src), "write", write)


# -- the run ------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """The path of Debian's ``name``, installed if missing and we may (root)."""
    found = shutil.which(name)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print(f"{name} is not installed: installing it (apt-get install {name})", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", name], capture_output=True)
    return shutil.which(name)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def workloads(work: Path) -> None:
    import mount_workloads

    scratch = work / "scratch"
    scratch.mkdir()
    figures: dict[str, dict[str, float]] = {}
    plain = work / "plain"
    plain.mkdir()
    print("plain disk:", flush=True)
    figures["plain"] = mount_workloads.run_all(plain, scratch, lambda s: print("  " + s, flush=True))
    find_tool("fio")  # the random-write workload's, if it can be had (else its own loop)
    bindfs = find_tool("bindfs")
    if bindfs is None:
        print("bindfs is not installed and cannot be installed here: no bindfs column", flush=True)
    else:
        back, mnt = work / "bindfs-back", work / "bindfs-mnt"
        back.mkdir()
        mnt.mkdir()
        subprocess.run([bindfs, str(back), str(mnt)], check=True)
        try:
            print("bindfs:", flush=True)
            figures["bindfs"] = mount_workloads.run_all(mnt, scratch, lambda s: print("  " + s, flush=True))
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    repo, mnt = work / "cas-repo", work / "cas-mnt"
    mnt.mkdir()
    subprocess.run([CAS, "--repo", str(repo), "mount", str(mnt)], check=True, capture_output=True)
    try:
        from cas.fuse.mountd import mount_processes

        pid = mount_processes(mnt)[0]
        print("cas mount:", flush=True)
        figures["cas"] = mount_workloads.run_all(mnt, scratch, lambda s: print("  " + s, flush=True))
        rss = peak_rss_mib(pid)
        versions = len(subprocess.run([CAS, "--repo", str(repo), "log"], capture_output=True,
                                      text=True).stdout.splitlines())
    finally:
        unmount(mnt)
    base = "bindfs" if "bindfs" in figures else "plain"
    rows = [("untar 2,272 files", "untar_s", "s", "≥ 0.5x speed"), ("git: init, add 714, 4 commits", "git_s", "s",
            "≤ 2x time"), ("rsync -a of the tree", "rsync_s", "s", "≤ 2x time"),
            ("sqlite3 5,455 rows (DELETE)", "sqlite_s", "s", ""), ("fsx 10,000 operations", "fsx_ops", "ops/s",
            "≥ 0.3x"), ("4 KiB random writes, verified", "random_iops", "IOPS", "≥ 0.25x"),
            ("ls -lR warm", "ls_lr_s", "s", "≤ 2x time")]
    print(f"\n{'work':32} {'plain':>10} {'bindfs':>10} {'cas':>10}   cas vs {base} (target)")
    for label, key, unit, target in rows:
        cells = [f"{figures[t][key]:10.3f}" if t in figures else f"{'-':>10}" for t in ("plain", "bindfs", "cas")]
        ratio = (figures[base][key] / figures["cas"][key]) if unit != "ops/s" and unit != "IOPS" \
            else figures["cas"][key] / figures[base][key]
        print(f"{label:32} {' '.join(cells)} {unit:5}  {ratio:.2f}x speed {target}")
    print(f"cas mount process peak RSS {rss:.0f} MiB (block cache 256 MiB + 100 MiB allowed); "
          f"{versions} namespace versions made")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("stream", "work"), default=None, help="run one half (default: both)")
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = p.parse_args()
    if args.only != "stream":
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="cas-bench-work-") as tmp:
            workloads(Path(tmp))
    if args.only == "work":
        return 0
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cas-bench-mount-") as tmp:
        work = Path(tmp)
        repo, mnt = work / "repo", work / "mnt"
        mnt.mkdir()
        a, b = work / "a", work / "b"
        make_file(a, size, 1)
        make_file(b, size, 2)
        many = work / "many"
        many.mkdir()
        for i in range(args.files):
            (many / f"f{i:05d}").write_bytes(b"%d\n" % i)

        # Each timed write starts with the disk's queue empty (os.sync, not
        # timed): on these VMs a GiB still being written back halves the
        # speed of the next, whichever of the two it is.
        os.sync()
        t_add = timed(lambda: cas(repo, "add", str(a), "--to", "/a"))
        cas(repo, "add", "-r", str(many), "--to", "/many")
        with open(os.devnull, "wb") as null:
            cas(repo, "cat", "/a", stdout=null.fileno())  # warm the page cache, as the mount read will be
            t_cat = timed(lambda: cas(repo, "cat", "/a", stdout=null.fileno()))
        t_ceiling = ceiling_read(work, size)
        t_floor = floor_write(work, b)

        subprocess.run([CAS, "--repo", str(repo), "mount", str(mnt)], check=True)
        try:
            t_ls = timed(lambda: subprocess.run(["ls", "-l", str(mnt / "many")], check=True,
                                                stdout=subprocess.DEVNULL))
            names = os.listdir(mnt / "many")
            t_stat = timed(lambda: [os.stat(mnt / "many" / n) for n in names])
            t_read = timed(lambda: read_all(mnt / "a"))
            os.sync()
            t_write = timed(lambda: dd(b, mnt / "b"))
            os.sync()
            t_synced = timed(lambda: write_syncing(a, mnt / "synced"))
            fd = os.open(mnt / "a", os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # no kernel page-cache hits
                rng = random.Random(3)
                offsets = [rng.randrange(0, size - 4096) & ~4095 for _ in range(20_000)]
                start = time.perf_counter()
                deadline = start + 10
                done = 0
                for off in offsets:
                    os.pread(fd, 4096, off)
                    done += 1
                    if time.perf_counter() > deadline:
                        break
                t_random = time.perf_counter() - start
            finally:
                os.close(fd)
        finally:
            unmount(mnt)
        os.sync()
        t_synced_local = timed(lambda: write_syncing(a, work / "synced-local"))
        t_ls_local = timed(lambda: subprocess.run(["ls", "-l", str(many)], check=True, stdout=subprocess.DEVNULL))
        t_stat_local = timed(lambda: [os.stat(many / n) for n in names])

    mb = size / MIB

    def rate(t: float) -> str:
        return f"{mb / t:8.0f} MiB/s"

    print(f"file size {args.size_mib} MiB, {args.files} files; cache warm for every read")
    print(f"read   mount {rate(t_read)}   cas cat {rate(t_cat)}   loop ceiling {rate(t_ceiling)}")
    print(f"       mount / cas cat = {t_cat / t_read:.2f} (target >= 0.8)   "
          f"mount / ceiling = {t_ceiling / t_read:.2f}   ceiling / cas cat = {t_cat / t_ceiling:.2f}")
    print(f"write  mount {rate(t_write)}   cas add {rate(t_add)}   write floor {rate(t_floor)}")
    print(f"       mount / cas add = {t_add / t_write:.2f} (target >= 0.8)   mount / floor = {t_floor / t_write:.2f}"
          f"   floor / cas add = {t_add / t_floor:.2f}")
    print(f"write, fsync every {SYNC_EVERY // MIB} MiB: mount {rate(t_synced)}   plain disk {rate(t_synced_local)}   "
          f"mount / disk = {t_synced_local / t_synced:.2f}")
    print(f"random 4 KiB reads through the mount (kernel page cache dropped): {done / t_random:,.0f} per second")
    print(f"ls -l of {args.files} files: mount {t_ls:.2f} s, local {t_ls_local:.3f} s; "
          f"stat of each: mount {t_stat:.2f} s ({args.files / t_stat:,.0f}/s), local {t_stat_local:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
