"""Shared fixtures for the cas test suite."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import blake3
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_unless_ci(reason: str) -> None:
    """Skip outside CI; inside CI a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


# -- running in parallel (pytest -n N, as scripts/test does) -----------------
#
# pytest-xdist runs the tests in N worker processes. Whatever a test makes is
# its own (tmp_path, port 0, its own namespaces and mounts), so tests meet
# only in the scheduling below:
#
# - the tests marked heavy (tens of daemons, sixteen clients racing for one
#   repository: most of both cores for a minute) are one group, run one
#   after another by one worker: two of them at once would each take three
#   times as long and crowd out the timing of everything else;
# - a test that uses a module-scoped fixture (a network of daemons, a big
#   file built once) is grouped with the module's other users of it, so that
#   one worker builds it once (with --dist loadgroup), not every worker that
#   got one of them;
# - the tests marked slow are handed out first, so that the run does not end
#   with one worker on a long test while the others are idle.


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    # Before every other plugin's hook (xdist's reads the marks):
    for item in items:
        group = _group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    yield
    # After them (pytest's own reorders by fixture):
    if not hasattr(config, "workerinput"):  # not a worker of pytest -n
        return
    if config.getvalue("loadgroup"):
        for item in items:
            mark = item.get_closest_marker("xdist_group")
            if mark is not None and "@" not in item.nodeid and hasattr(item, "_id"):
                # What xdist (3.8) does by setting item._nodeid, which pytest
                # 9.2 no longer reads: the group is the nodeid's suffix.
                from _pytest.nodeid import NodeId

                name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
                item._id = NodeId.parse(f"{item.nodeid}@{name}")
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow ones first


def _group_of(item: pytest.Item) -> str | None:
    """The group a test runs in (see above), or ``None`` for any worker."""
    if item.get_closest_marker("heavy") is not None:
        return "heavy"
    info = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames if info is not None else ():
        defs = info.name2fixturedefs.get(name)
        if defs and defs[-1].scope in ("module", "class", "package"):
            return f"{item.path.stem}.{name}"
    return None


# -- the IPFS JavaScript stack (tests/js) ----------------------------------------

JS_DIR = Path(__file__).resolve().parent / "js"
JS_PACKAGES = ("ipfs-unixfs", "@ipld/car", "ipfs-car", "ipfs-unixfs-exporter", "ipfs-unixfs-importer",
               "@noble/hashes", "@helia/block-brokers", "@helia/routers", "@libp2p/logger")
"""What tests/js/package.json installs; a checkout whose node_modules lacks
one (installed before it was added) is installed again from the lock file."""


@pytest.fixture(scope="session")
def node_js() -> str:
    """The node binary, with tests/js/node_modules installed from the lock file."""

    import fcntl
    import shutil

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        skip_unless_ci("node and npm are needed for the IPFS compatibility tests")
    # Parallel workers (pytest -n) each ask: one installs while the others
    # wait on the lock, then find node_modules complete.
    lock = os.open(JS_DIR, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all((JS_DIR / "node_modules" / package).is_dir() for package in JS_PACKAGES):
            install = subprocess.run(
                [npm, "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                capture_output=True, text=True, timeout=300,
            )
            if install.returncode != 0:
                skip_unless_ci(f"npm ci in tests/js failed: {install.stderr.strip()[-500:]}")
    finally:
        os.close(lock)  # and with it the lock
    return node  # type: ignore[return-value]


# -- running the cas command as a user would --------------------------------


CAS = str(Path(sys.executable).with_name("cas"))


def run_cas(
    *args: str,
    repo: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cas ARGS`` in a subprocess and return its result (bytes)."""
    argv = [CAS, *args]
    if repo is not None:
        argv[1:1] = ["--repo", str(repo)]
    full_env = {k: v for k, v in os.environ.items() if k != "CAS_HOME"}
    full_env.update(env or {})
    result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=full_env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"cas {' '.join(args)} exited {result.returncode}: {result.stderr.decode(errors='replace')}"
        )
    return result


class Holder:
    """Another process owning a repository (through ``LocalStore.open``)
    until :meth:`release` (or the end of the ``with``) closes its stdin."""

    def __init__(self, repo: Path, timeout: float = 60) -> None:
        code = ("import sys; from cas.store import LocalStore; "
                f"s = LocalStore.open({str(repo)!r}); print('held', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self._timeout = timeout
        try:
            assert read_line(self.proc.stdout, timeout) == b"held\n", "the holder did not take the repository"
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def release(self) -> None:
        """Let the repository go: returns once the holder has exited."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=self._timeout)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def read_line(stream: IO[Any], timeout: float) -> Any:
    """One line from a pipe (bytes or text, as the stream gives), or an
    empty one if none came within ``timeout`` seconds."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else stream.read(0)


def pseudo_random(size: int, seed: str = "cas tests") -> bytes:
    """Deterministic incompressible bytes (the BLAKE3 XOF of ``seed``)."""
    return blake3.blake3(seed.encode()).digest(length=size)


def pseudo_random_stream(size: int, seed: str = "cas tests", piece: int = 1 << 20) -> Iterator[bytes]:
    """The same bytes as :func:`pseudo_random`, in pieces, in bounded memory."""
    hasher = blake3.blake3(seed.encode())
    offset = 0
    while offset < size:
        n = min(piece, size - offset)
        yield hasher.digest(length=n, seek=offset)
        offset += n


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A path for a fresh repository (created on first use by cas)."""
    return tmp_path / "repo"


class PseudoRandomReader(io.RawIOBase):
    """A readable stream of :func:`pseudo_random` bytes, generated on demand."""

    def __init__(self, size: int, seed: str = "cas tests") -> None:
        self._hasher = blake3.blake3(seed.encode())
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        buffer[:n] = self._hasher.digest(length=n, seek=self._pos)
        self._pos += n
        return n


# -- who may read a repository (issue 14) -----------------------------------


def not_private(root: Path) -> list[str]:
    """Every entry under ``root`` (``root`` included) that another user could
    use, as "PATH MODE": a directory that is not 0700, anything else with a
    permission bit outside 0600. Links are not followed (nor listed). Empty
    for a private repository."""
    import stat

    found = []
    for where, dirs, files in os.walk(root):
        for name in ["", *dirs, *files]:
            path = os.path.join(where, name) if name else where
            if name == "" and where != str(root):
                continue  # a directory is looked at once, from its parent
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # removed while we looked (a running daemon's files)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                continue
            loose = mode != 0o700 if stat.S_ISDIR(info.st_mode) else bool(mode & ~0o600)
            if loose:
                found.append(f"{os.path.relpath(path, root)} {mode:04o}")
    return sorted(found)


def make_world_readable(root: Path) -> None:
    """What a repository made under a 022 umask looked like before issue 14,
    and worse: every directory 0755, every file 0644 (no link followed)."""
    for where, _dirs, files in os.walk(root):
        os.chmod(where, 0o755)
        for name in files:
            if not os.path.islink(os.path.join(where, name)):
                os.chmod(os.path.join(where, name), 0o644)


@contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"64m"``) mounted at ``mountpoint`` for a
    test (needs root, as in CI; skipped elsewhere), always unmounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                            capture_output=True)
    if result.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
