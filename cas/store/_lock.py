"""The repository's lock: one owner at a time, and who it is.

This module owns the file ``lock`` in a repository directory: taking an
exclusive ``flock`` on it (at once, or waiting up to a deadline), writing
the owner's line into it, and reading that line back to name the owner to
a process that has to wait or give up. It never touches anything else in
the repository, and it never returns or raises with the lock's descriptor
open except to hand it, locked, to the caller.

The lock file holds one line, ``process PID (COMMAND)\\n``, written by each
owner after it takes the lock. The flock, not the line, is the lock: the
kernel drops it when its descriptor closes, however the owner dies, so a
line left by a dead owner is stale, never binding.

The rules:

1. **The line is replaced, never emptied.** An owner ``pwrite``s its line
   at offset 0 and then cuts the file to the line's length, so a reader
   sees the old line, the new one, or the new one followed by the end of a
   longer old one; it only reads up to the first newline. (Truncating
   first, as cas once did, left an empty file for a moment, and 127 of the
   refusals of 16 concurrent writers named nobody.)
2. **A reader trusts only a whole line naming a live process.** An empty
   file (a new repository whose first owner has not written yet), a line
   without its newline, or one naming a process that no longer exists (the
   new owner has the lock but has not replaced its predecessor's line)
   is read again, for at most ``HOLDER_READ_TIMEOUT``, trying the lock
   itself between reads: it may have come free meanwhile.
3. **Waiting is done by the kernel where it can be.** See ``acquire``:
   in the main thread a blocking ``flock`` interrupted by a timer, so the
   waiter is queued in the kernel and wakes as the lock is released; in
   other threads (where signals cannot be used) polling with a short,
   capped backoff.
4. **The descriptor is never leaked.** Every path out of ``acquire`` but
   success closes it, a ``KeyboardInterrupt`` while waiting included.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import RepositoryError, RepositoryLockedError
from ._modes import open_private

LOCK_FILE = "lock"

NOTICE_AFTER = 1.0
"""Seconds of waiting after which ``on_wait`` is told who holds the lock:
shorter waits (another command finishing) pass without a word."""

HOLDER_READ_TIMEOUT = 0.02
"""Seconds a reader keeps re-reading a holder line it cannot trust (rule
2). The gap it covers is one owner's ``flock`` to its ``pwrite``, two
system calls apart; 20 ms lets a busy two-core machine schedule that
owner a few times over, and is never spent when the line is whole."""

POLL_FIRST = 0.002
POLL_MAX = 0.025
"""Polling backoff (threads other than the main one): the first retry after
2 ms, each next one twice as late, at most 25 ms apart, so a released lock
is noticed within ~25 ms while a long wait costs ~40 wake-ups a second."""

UNKNOWN_HOLDER = "another process"


class _Alarm(Exception):
    """Raised by the SIGALRM handler to end a blocking ``flock``."""


def acquire(path: Path, *, wait: float = 0.0, on_wait: Callable[[str], None] | None = None) -> int:
    """Open ``path/lock`` and lock it exclusively; return the descriptor,
    whose closing releases the lock.

    If another process holds it, keep trying for ``wait`` seconds, then
    raise :class:`RepositoryLockedError` naming the holder (at once if
    ``wait`` is 0). After ``NOTICE_AFTER`` seconds of waiting ``on_wait``
    is called once with a phrase naming the holder, such as "in use by
    process 123 (cas add big.iso)".
    """
    line = _own_line()  # made before the lock is taken: rule 2's gap stays two system calls
    try:
        fd = open_private(path / LOCK_FILE, os.O_RDWR)  # 0600, whatever the umask (_modes.py)
    except OSError as exc:
        raise RepositoryError(f"cannot open {path}/{LOCK_FILE}: {exc.strerror}") from None
    try:
        _take(fd, path, wait, on_wait)
        os.pwrite(fd, line, 0)  # rule 1: replace the line in place,
        os.ftruncate(fd, len(line))  # then cut what is left of a longer old one
    except BaseException:
        os.close(fd)
        raise
    return fd


def locked_error(path: Path | str, holder: str, waited: float) -> RepositoryLockedError:
    """The error for a repository still held by ``holder`` after ``waited``
    seconds; ``holder`` is kept on it as ``exc.holder``."""
    if waited > 0:
        advice = (f"it was still in use after {waited:g} s: wait for it to finish (or stop it) "
                  "and try again, or give --wait more seconds")
    else:
        advice = "wait for it to finish (or stop it) and try again"
    exc = RepositoryLockedError(f"repository {path} is in use by {holder}; {advice}")
    exc.holder = holder
    return exc


def _own_line() -> bytes:
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    command = command[:200].replace("\n", " ").replace("\r", " ")
    return f"process {os.getpid()} ({command})\n".encode("utf-8", "replace")


def _take(fd: int, path: Path, wait: float, on_wait: Callable[[str], None] | None) -> None:
    """Lock ``fd`` within ``wait`` seconds, or raise RepositoryLockedError."""
    if _try_lock(fd, path):
        return
    start = time.monotonic()
    deadline = start + max(wait, 0.0)
    notice = start + NOTICE_AFTER if on_wait is not None else math.inf
    sleep_until = None
    while True:
        now = time.monotonic()
        if now >= deadline or now >= notice:
            holder = _holder(fd, path)
            if holder is None:
                return  # released while we looked: ours now
            if now >= deadline:
                raise locked_error(path, holder, wait)
            notice = math.inf
            assert on_wait is not None
            on_wait(f"in use by {holder}")
        if sleep_until is None:
            sleep_until = _wait_blocking if _can_block() else _wait_polling
        sleep_until(fd, path, min(deadline, notice))
        if _try_lock(fd, path):
            return


def _try_lock(fd: int, path: Path, mode: int = fcntl.LOCK_EX) -> bool:
    """Take the lock (``mode``: exclusive, or shared) if it is free (True),
    or find it held (False). Asking again on a descriptor that holds it
    already answers True. ``path`` names the lock in an error."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise RepositoryError(f"cannot lock {path}: {exc.strerror}") from None
    return True


def _holder(fd: int, path: Path) -> str | None:
    """Who holds the lock, as "process 123 (cas add x)"; None if it came
    free while we read and is now ours (rule 2)."""
    give_up = time.monotonic() + HOLDER_READ_TIMEOUT
    best = UNKNOWN_HOLDER
    while True:
        line = _read_line(fd)
        if line is not None:
            best = line
            if _alive(line):
                return line
        if _try_lock(fd, path):
            return None
        if time.monotonic() >= give_up:
            return best  # a line naming a process we cannot see (another PID namespace), or none
        time.sleep(0.001)


def _read_line(fd: int) -> str | None:
    """The first whole line of the lock file if it has the holder form."""
    data = os.pread(fd, 512, 0)
    end = data.find(b"\n")
    if end < 0:
        return None  # empty, or cut short
    line = data[:end].decode("utf-8", "replace")
    pid = line[len("process "):].split(" ", 1)[0]
    if not (line.startswith("process ") and pid.isdigit() and line.endswith(")")):
        return None
    return line


def _alive(line: str) -> bool:
    pid = int(line[len("process "):].split(" ", 1)[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but there
    return True


# -- waiting ---------------------------------------------------------------------------
#
# Why a blocking flock where possible: a waiter blocked in flock() is queued
# by the kernel behind the holder (and behind earlier waiters) and is woken
# when the lock is released; a poller only finds out at its next try, and a
# process that starts just then can take the lock first, again and again.
# With 16 processes each running 5 offline `cas mkdir` at once (2 cores),
# polling left the slowest commands waiting longest and some were refused
# at the default 5 s: docs/architecture.md, "Decisions taken by
# measurement".
#
# The timer: flock() has no timeout, so ITIMER_REAL delivers SIGALRM at the
# deadline and the handler raises _Alarm out of the call (PEP 475 retries a
# call interrupted by a signal only if the handler returns). Signals can be
# handled only in the main thread, so elsewhere the lock is polled. The
# timer is used only when nobody else is using SIGALRM (no handler of
# theirs, no timer of theirs running: pytest-timeout, for one, uses both),
# and the handler is put back afterwards.


def _can_block() -> bool:
    import signal
    import threading

    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN)
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    )


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


def _wait_blocking(fd: int, path: Path, until: float) -> None:
    """Block in flock() until the lock is ours or ``until`` (monotonic) has
    come; the caller checks which."""
    import signal

    left = until - time.monotonic()
    if left <= 0:
        return
    previous = signal.signal(signal.SIGALRM, _raise_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, left)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except _Alarm:
        pass  # the deadline (or the alarm came just after the lock: the caller sees it is ours)
    except OSError as exc:
        raise RepositoryError(f"cannot lock {path}: {exc.strerror}") from None
    finally:
        # The alarm may still arrive (or be pending) while this runs, and
        # signal.signal() itself runs pending handlers: repeat until both
        # the timer is stopped and the old handler is back.
        while True:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except _Alarm:
                continue


def _wait_polling(fd: int, path: Path, until: float) -> None:
    """Try the lock with a growing pause (``POLL_FIRST`` to ``POLL_MAX``)
    until it is ours or ``until`` (monotonic) has come."""
    pause = POLL_FIRST
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(pause, left))
        if _try_lock(fd, path):
            return
        pause = min(pause * 2, POLL_MAX)


# -- readers beside the owner -----------------------------------------------------

READERS_FILE = "readers.lock"
"""Shared-``flock``ed by each process reading the repository beside its
owner (``LocalStore.open(read_only=True)``), exclusively by the owner
while it deletes what a reader could be reading (gc and compaction)."""

READERS_WAIT_NOTICE = 1.0
"""Seconds gc waits for readers before it says so."""


def acquire_shared(path: Path, *, wait: float = 0.0) -> int:
    """A shared lock on ``path/readers.lock``: the repository may be read
    beside its owner, and nothing a reader can reach is deleted until it
    lets go. Held off only while gc or compaction deletes (seconds at most);
    after ``wait`` seconds of that, RepositoryLockedError."""
    fd = _readers_lock(path, fcntl.LOCK_SH, time.monotonic() + max(wait, 0.0))
    if fd is None:
        raise RepositoryLockedError(
            f"{path} is held by a process that deletes blocks from it ('cas gc', or a node "
            "daemon, which reading commands go through); try again when it is done, or give "
            "--wait more seconds")
    return fd


def exclusive_readers(path: Path, on_wait: Callable[[str], None] | None = None) -> int:
    """The owner's exclusive lock on ``path/readers.lock``, taken before it
    deletes blocks or packs: it waits for every reader to finish (saying so
    after ``READERS_WAIT_NOTICE`` seconds), and keeps new ones off until
    the descriptor returned is closed."""
    fd = _readers_lock(path, fcntl.LOCK_EX, math.inf, on_wait)
    assert fd is not None  # no deadline
    return fd


def try_exclusive_readers(path: Path) -> int | None:
    """:func:`exclusive_readers` if no reader is open now, else None (for
    an owner that waits its own way: the daemon, cancellably)."""
    return _readers_lock(path, fcntl.LOCK_EX, deadline=0.0)


def _readers_lock(path: Path, mode: int, deadline: float,
                  on_wait: Callable[[str], None] | None = None) -> int | None:
    """``readers.lock`` locked in ``mode``, polling until ``deadline`` (a
    ``time.monotonic()``; None if it passed): gc's deletions and readers
    are short, and polling works from any thread. ``on_wait`` is told after
    ``READERS_WAIT_NOTICE`` seconds."""
    fd = _open_readers(path)
    try:
        notice = time.monotonic() + READERS_WAIT_NOTICE if on_wait is not None else math.inf
        pause = POLL_FIRST
        while not _try_lock(fd, path / READERS_FILE, mode):
            now = time.monotonic()
            if now >= deadline:
                os.close(fd)
                return None
            if now >= notice:
                notice = math.inf
                assert on_wait is not None
                on_wait("other commands are reading it")
            time.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_readers(path: Path) -> int:
    try:
        return open_private(path / READERS_FILE, os.O_RDWR)  # 0600, whatever the umask
    except OSError as exc:
        raise RepositoryError(f"cannot open {path}/{READERS_FILE}: {exc.strerror}") from None
