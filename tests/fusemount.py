"""A real cas mount for tests: mounted in a temp dir, always unmounted.

``mounted(repo, mnt)`` runs ``cas mount`` as a user would and, whatever the
test did, unmounts in ``finally`` (``cas umount``, then fusermount3 -uz) and
kills the mount process by PID if it is still there. A machine without
/dev/fuse or fusermount3 skips (fails in CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import run_cas, skip_unless_ci


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        skip_unless_ci("no /dev/fuse or fusermount3 on this machine")


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def errno_of(fn: Callable[..., object], *args: object) -> int:
    """The errno ``fn(*args)`` fails with (an AssertionError if it succeeds)."""
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    raise AssertionError(f"{fn.__name__}{args} did not fail")


def pids_of(mnt: Path) -> list[int]:
    from cas.fuse.mountd import mount_processes

    return mount_processes(mnt)


def kill_9(mnt: Path) -> None:
    """kill -9 the process serving ``mnt`` and wait until it is gone (the
    dead mount stays: ``cas umount`` clears it)."""
    for pid in pids_of(mnt):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pids_of(mnt), what="the mount process to die")


def _alive(pid: int) -> bool:
    from cas.fuse.mountd import _alive as alive

    return alive(pid)


@contextmanager
def mounted(repo: Path, mnt: Path, *options: str) -> Iterator[Path]:
    from cas.fuse.mountd import is_mounted

    require_fuse()
    mnt.mkdir(parents=True, exist_ok=True)
    run_cas("mount", str(mnt), *options, repo=repo, timeout=60)
    pids = pids_of(mnt)
    try:
        yield mnt
    finally:
        if is_mounted(mnt):
            try:
                run_cas("umount", str(mnt), repo=repo, check=False, timeout=60)
            except subprocess.TimeoutExpired:
                pass  # a mount stuck under load: forced off below, never left behind
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        for pid in pids:
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
