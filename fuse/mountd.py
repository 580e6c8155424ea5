"""The mount process: the node that owns the repository, serving a FUSE mount.

One trio run holds, in one nursery, a :class:`cas.node.Node` (the repository
lock, the store, the control socket through which ``cas add/cat/ls/...``
keep working while the mount is up) and the FUSE session. The FUSE
handlers reach the store only through ``node.in_store_thread``, so they are
serialised with the control socket's operations.

Lifecycle: mount → tell the parent "ready" (a line on an inherited pipe, as
sshfs returns once its mount works) → serve until unmounted (``cas umount``
/ fusermount3 -u) or SIGTERM/SIGINT, which commit every staged file and
unmount cleanly. kill -9 loses only writes not yet closed or fsynced: every
commit was one durable root update, and staged files are anonymous temporary
files. ``cas umount`` clears the dead mount.

With ``--name KEY`` the process mounts another node's published namespace,
read-only (:mod:`cas.fuse.published`): through the daemon that owns the
repository if one runs (then this process holds no lock), else through a
node it runs itself as above.

Also owns the command-line side of mounting (start, wait for readiness,
unmount, wait for the process to go) so cli/mount_cmds.py stays thin.
Must never: serve FUSE requests without the repository lock being held (by
its own node or by the daemon it goes through), or leave a mount behind
when it exits normally.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CasError, FuseUnavailableError, MountError
from . import require_fuse

if TYPE_CHECKING:  # trio and the node load only in the mount process
    import trio

    from ..node import Node
    from .operations import CasOperations
    from .published import NodeLink

FSNAME = "cas"
MOUNT_PROCESS = "cas mount"
"""What a mount process calls itself where the repository lock names its holder."""
KERNEL_READ_AHEAD_KIB = 1024
"""How far the kernel reads ahead in the mount's files. FUSE's default of
128 KiB also caps each read request at 128 KiB; at 1 MiB a sequential read
costs the mount ~35% less CPU per byte (bench/mount.py): fewer, larger
requests, several in flight at once."""
DEFAULT_REFRESH = 30.0
"""Seconds between re-resolutions of a mounted published namespace
(``--refresh``). Its publisher republishes right after each new root, so a
change shows within about this long; each one is a small DHT lookup."""
MIN_REFRESH = 0.1
DEFAULT_COMMIT_INTERVAL = 1.0
"""Seconds between commits of the mount's changes (``--commit-interval``):
what a crash may lose of changes not fsynced (ext4 loses up to 5 s)."""
MIN_COMMIT_INTERVAL = 0.01
MAX_COMMIT_INTERVAL = 3600.0
READY_TIMEOUT = 60.0
UNMOUNT_TIMEOUT = 30.0

STACKS_SIGNAL = signal.SIGUSR1
"""Asks a mount process for every thread's stack (on stderr)."""


@dataclass(frozen=True)
class MountConfig:
    repo: Path
    mountpoint: Path
    read_only: bool = False
    cache_bytes: int | None = None
    name: bytes | None = None
    """The public key of another node's published namespace to mount
    (read-only) instead of the repository's own namespace."""
    refresh: float = DEFAULT_REFRESH
    """Seconds between re-resolutions of ``name``."""
    wait: float = 0.0
    """Seconds to wait for the repository while another process uses it."""
    allow_other: bool = False
    """Let other users use the mount (FUSE's ``allow_other``; permissions are
    still checked by the kernel, ``default_permissions``)."""
    options: tuple[str, ...] = ()
    """More FUSE mount options (``cas mount -o``)."""
    commit_interval: float = DEFAULT_COMMIT_INTERVAL
    """Seconds between commits of what was changed through the mount (one
    namespace version each, at most); fsync commits at once."""


FUSE_CONF = Path("/etc/fuse.conf")

REFUSED_OPTIONS = frozenset({"allow_root"})
"""Options ``-o`` may not set: ``allow_root`` conflicts with ``allow_other``
and would let root alone in, which ``--allow-other`` does better."""


def fuse_options(config: MountConfig, read_only: bool, *, uid: int | None = None,
                 fuse_conf: Path = FUSE_CONF) -> set[str]:
    """The options the mount is made with: the kernel checks permissions
    (``default_permissions``, always), the file system's name, ``ro``,
    ``allow_other`` if asked, and ``-o``'s. Raises :class:`MountError` for an
    option the user may not set, and for ``allow_other`` by a user other
    than root when ``/etc/fuse.conf`` does not say ``user_allow_other``
    (fusermount3 would refuse it with a less helpful message)."""
    options = {"default_permissions", f"fsname={FSNAME}", f"subtype={FSNAME}"}
    if read_only:
        options.add("ro")
    for option in config.options:
        if not option or "," in option or option.split("=", 1)[0] in REFUSED_OPTIONS:
            raise MountError(f"-o {option!r}: not an option cas mount passes on (one option each, "
                             f"not {', '.join(sorted(REFUSED_OPTIONS))})")
        options.add(option)
    if config.allow_other or "allow_other" in options:
        options.add("allow_other")
        uid = os.getuid() if uid is None else uid
        if uid != 0 and not _user_allow_other(fuse_conf):
            raise MountError(f"--allow-other needs 'user_allow_other' in {fuse_conf} for a user other than "
                             "root (add that line as root), or mount as root")
    return options


def _user_allow_other(fuse_conf: Path) -> bool:
    try:
        text = fuse_conf.read_text()
    except OSError:
        return False
    return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in text.splitlines())


def check_mountpoint(mountpoint: Path, *, nonempty: bool = False) -> Path:
    """The mount point as an absolute path, or MountError saying why it
    cannot be one. A directory with something in it is refused unless
    ``nonempty``: the mount would hide its files, silently, until unmounted."""
    path = mountpoint.expanduser().absolute()
    if is_mounted(path):
        raise MountError(f"{path} is already a mount point; 'cas umount {path}' first")
    if not path.is_dir():
        raise MountError(f"{path} is not a directory; create it first")
    if not nonempty:
        try:
            with os.scandir(path) as entries:
                occupied = next(entries, None) is not None
        except OSError as exc:
            raise MountError(f"cannot read {path}: {exc.strerror or exc}") from None
        if occupied:
            raise MountError(f"{path} is not empty, and the mount would hide what is in it; "
                             "use an empty directory, or --nonempty to mount over it anyway")
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailableError("/dev/fuse is missing: this machine (or container) has no FUSE device")
    return path


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point (also a dead FUSE mount)."""
    target = str(path.expanduser().absolute())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        pass
    return False


def mount_device(path: Path) -> str | None:
    """The "major:minor" of the file system mounted at ``path``, from
    /proc/self/mountinfo (a stat() of our own mount point from the process
    that serves it would wait for itself)."""
    target = str(path.expanduser().absolute())
    device = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    device = fields[2]  # the last one listed is the top mount
    except OSError:
        return None
    return device


def set_kernel_read_ahead(path: Path, kib: int) -> bool:
    """Let the kernel read ``kib`` KiB ahead in files of the mount at
    ``path`` (the FUSE default is 128 KiB, which also caps each read request
    at 128 KiB). Needs root; False, with nothing changed, where not allowed."""
    device = mount_device(path)
    if device is None:
        return False
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(kib))
    except OSError:
        return False
    return True


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


# -- the mount process -------------------------------------------------------------


async def serve(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Mount ``config.repo``'s namespace (or, with ``config.name``, another
    node's published namespace) at ``config.mountpoint`` and serve it until
    unmounted or signalled. Raises CasError if it cannot start."""
    require_fuse()
    if config.name is None:
        await _serve_own(config, on_ready)
    else:
        await _serve_published(config, on_ready)


async def _serve_own(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """The repository's own namespace, served by a node run here that owns
    the repository, as a daemon serves it (:mod:`cas.fuse.served`)."""
    import trio

    from ..node import Node, NodeConfig
    from .served import ServedMount

    node = Node(NodeConfig(repo=config.repo, listen_host="127.0.0.1", listen_port=0, lock_wait=config.wait))
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(node.run)
            served = node.mount = ServedMount(node, config)
            await nursery.start(served.run)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

                async def watch() -> None:
                    async for _ in signals:
                        await served.end()
                        return

                nursery.start_soon(watch)
                on_ready()
                await served.ended.wait()
        finally:
            node.stop()
            nursery.cancel_scope.cancel()


async def _serve_published(config: MountConfig, on_ready: Callable[[], None]) -> None:
    require_fuse()
    import trio

    from .session import Session

    node: Node | None = None
    link = None
    async with trio.open_nursery() as nursery:
        try:
            node, link, ops = await _published(config, nursery)
            options = fuse_options(config, ops.read_only)
            try:
                session = ops.session = Session(ops, config.mountpoint, options)
            except MountError as exc:
                raise MountError(f"cannot mount at {config.mountpoint}: {exc}") from None
            try:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

                    async def watch() -> None:
                        async for _ in signals:
                            session.terminate()
                            return

                    nursery.start_soon(watch)
                    nursery.start_soon(tune_read_ahead, config.mountpoint)
                    from .published import PublishedTree, follow

                    assert isinstance(ops.tree, PublishedTree)
                    nursery.start_soon(follow, ops.tree, link, ops, config.refresh)
                    on_ready()
                    await session.serve()
            finally:
                session.close()  # synchronous: no checkpoint a cancel could interrupt
        finally:
            if node is not None:
                node.stop()
            if link is not None:
                link.close()
            nursery.cancel_scope.cancel()


async def _published(config: MountConfig, nursery: trio.Nursery) -> tuple[Node | None, NodeLink, CasOperations]:
    """(node or None, link, operations) for a published namespace: through
    the daemon owning the repository if one runs, else through a node run
    here, as the local mount does. Raises MountError, with nothing mounted,
    if the namespace cannot be resolved now."""
    import trio

    from ..node import Node, NodeConfig
    from .operations import CasOperations
    from .published import NodeLink, PublishedTree, SerialThread

    assert config.name is not None
    node = None
    link = await trio.to_thread.run_sync(NodeLink.connect, config.repo)
    if link is None:
        node = Node(NodeConfig(repo=config.repo, listen_host="127.0.0.1", listen_port=0, lock_wait=config.wait))
        await nursery.start(node.run)
        link = await trio.to_thread.run_sync(NodeLink.connect, config.repo)
        if link is None:
            raise MountError(f"the mount's own node for {config.repo} does not answer on its control socket")
    try:
        record = await trio.to_thread.run_sync(link.resolve, config.name)
        if record is None:
            raise MountError(
                f"no published record found for namespace {config.name.hex()}: is it published "
                "('cas name publish' on its node) and is this node's daemon on the network?")
        tree = PublishedTree(link, config.name, record, config.repo)
    except BaseException:
        link.close()
        raise
    ops = CasOperations(
        run=SerialThread(), tree=tree, staging_dir=config.repo / "tmp", nursery=nursery, read_only=True,
        cache_bytes=config.cache_bytes, parallel_get=link.get,
    )
    return node, link, ops


async def tune_read_ahead(mountpoint: Path) -> None:
    """Raise the kernel's read-ahead once the kernel has initialised the
    mount (it sets read_ahead_kb itself while processing FUSE's INIT). A
    stat() of the mount point from a worker thread returns only after INIT,
    since the kernel holds every request until then, and this process
    answers it."""
    import trio

    try:
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError:
        return
    set_kernel_read_ahead(mountpoint, KERNEL_READ_AHEAD_KIB)


def run_mount(config: MountConfig, on_ready: Callable[[], None]) -> None:
    """Run :func:`serve` in this process (``cas mount --foreground``)."""
    import trio

    from ..node import first_cas_error

    require_fuse()
    logging.basicConfig(level=logging.WARNING, format="cas mount: %(message)s", stream=sys.stderr)
    # A mount process that does not end after its unmount is asked where it
    # is (unmount(), below): every thread's stack to stderr, which is the
    # repository's mount.log for a mount in the background.
    faulthandler.register(STACKS_SIGNAL, all_threads=True)
    try:
        trio.run(serve, config, on_ready)
    except BaseExceptionGroup as group:
        raise first_cas_error(group) or group from None


def main(argv: list[str] | None = None) -> int:
    """``python -m cas.fuse.mountd``: the background mount started by
    ``cas mount``; reports "ok" or "error: ..." on ``--ready-fd``."""
    p = argparse.ArgumentParser(prog="cas.fuse.mountd")
    p.add_argument("--repo", required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--ro", action="store_true")
    p.add_argument("--cache-bytes", type=int, default=None)
    p.add_argument("--name", default=None, help="64 hex digits: a published namespace")
    p.add_argument("--refresh", type=float, default=DEFAULT_REFRESH)
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("--allow-other", action="store_true")
    p.add_argument("-o", dest="options", action="append", default=[])
    p.add_argument("--commit-interval", type=float, default=DEFAULT_COMMIT_INTERVAL)
    p.add_argument("mountpoint")
    args = p.parse_args(argv)
    # How the repository lock names this process to a command that meets it
    # ("in use by process N (cas mount DIR)"), rather than python's argv.
    sys.argv = [MOUNT_PROCESS, os.path.abspath(args.mountpoint)]
    ready_fd: int | None = args.ready_fd

    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            try:
                os.write(ready_fd, (line.replace("\n", " ") + "\n").encode())
                os.close(ready_fd)
            except OSError:
                pass
            ready_fd = None

    name = bytes.fromhex(args.name) if args.name else None
    config = MountConfig(Path(args.repo), Path(args.mountpoint), args.ro, args.cache_bytes, name, args.refresh,
                         args.wait, args.allow_other, tuple(args.options), args.commit_interval)
    try:
        run_mount(config, lambda: report("ok"))
    except CasError as exc:  # the mount process's edge, as the CLI's: one line for the user
        report(f"error: {exc}")
        return 1
    except BaseException as exc:
        report(f"error: the mount process failed: {type(exc).__name__}: {exc}")
        raise
    return 0


# -- the command-line side ---------------------------------------------------------


STOP_TIMEOUT = 10.0
"""Seconds a mount process that failed to start is given to exit before it
is killed."""


def start_background(config: MountConfig, timeout: float = READY_TIMEOUT, *,
                     on_wait: Callable[[str], None] | None = None) -> int:
    """Start the mount process and return its PID once the mount works.
    Waits ``config.wait`` seconds for a repository another process is
    using (calling ``on_wait`` after a second, as ``LocalStore.open``)."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "cas.fuse.mountd", "--repo", str(config.repo),
            "--ready-fd", str(write_fd), str(config.mountpoint)]
    if config.read_only:
        argv.append("--ro")
    if config.cache_bytes:
        argv += ["--cache-bytes", str(config.cache_bytes)]
    if config.name is not None:
        argv += ["--name", config.name.hex(), "--refresh", repr(config.refresh)]
    if config.wait:
        argv += ["--wait", repr(config.wait)]
    if config.allow_other:
        argv.append("--allow-other")
    for option in config.options:
        argv += ["-o", option]
    if config.commit_interval != DEFAULT_COMMIT_INTERVAL:
        argv += ["--commit-interval", repr(config.commit_interval)]
    from ..control import connect
    from ..store import LocalStore

    daemon = connect(config.repo) if config.name is not None else None
    if daemon is not None:
        daemon.close()  # a published namespace is mounted through the daemon: no lock needed
    else:
        # Create it; wait for a command using it, or fail early if it stays in use.
        LocalStore.open(config.repo, create=True, wait=config.wait, on_wait=on_wait).close()
    from ..store._modes import open_private

    log_path = config.repo / "mount.log"
    log_fd = open_private(log_path, os.O_WRONLY | os.O_APPEND)  # 0600, like all in the repository
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            pass_fds=(write_fd,), start_new_session=True,
        )
    finally:
        os.close(log_fd)
    os.close(write_fd)
    try:
        answer = _read_line(read_fd, timeout)
    finally:
        os.close(read_fd)
    if answer == "ok":
        return proc.pid
    if proc.poll() is None:
        proc.terminate()
    try:  # a mount that failed leaves no process behind when the command returns
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if answer is None:
        raise MountError(f"the mount process did not report ready within {timeout:.0f} s; see {log_path}")
    if answer.startswith("error: "):
        raise MountError(answer[len("error: "):])
    raise MountError(f"the mount process exited before the mount was ready; see {log_path}")


def _read_line(fd: int, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        piece = os.read(fd, 4096)
        if not piece:
            break
        data += piece
    return data.decode(errors="replace").strip()


def mount_processes(mountpoint: Path) -> list[int]:
    """PIDs of mount processes serving ``mountpoint`` (found by their command line)."""
    target = os.path.realpath(mountpoint)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        is_mount = "cas.fuse.mountd" in args or ("mount" in args and any(a.endswith("cas") for a in args[:2]))
        if is_mount and any(os.path.realpath(a) == target for a in args[1:] if a.startswith(("/", "."))
                            or os.path.exists(a)):
            found.append(int(entry))
    return found


def unmount(mountpoint: Path, timeout: float = UNMOUNT_TIMEOUT) -> None:
    """Unmount ``mountpoint`` (also a dead mount whose process was killed) and
    wait until its mount process has exited (its repository is free again)."""
    path = mountpoint.expanduser().absolute()
    if not is_mounted(path):
        raise MountError(f"{path} is not mounted")
    pids = mount_processes(path)
    result = subprocess.run(unmount_command(path), capture_output=True, text=True)
    if result.returncode != 0 and is_mounted(path):
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "unmount failed"
        raise MountError(f"cannot unmount {path}: {message}")
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid):
            if time.monotonic() > deadline:
                try:
                    os.kill(pid, STACKS_SIGNAL)
                except OSError:
                    pass
                raise MountError(f"{path} is unmounted but its mount process {pid} is still running "
                                 "(where each of its threads is now: the end of mount.log in its repository)")
            time.sleep(0.05)


def unmount_command(mountpoint: Path) -> list[str]:
    """The command that unmounts ``mountpoint`` as ``umount`` does (refused
    while it is busy): fusermount3 -u, which a user may run."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    return [tool, "-u", str(mountpoint)] if tool else ["umount", str(mountpoint)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


if __name__ == "__main__":
    sys.exit(main())
