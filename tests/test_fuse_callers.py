"""cas.fuse.callers: a request's caller's groups and CAP_FSETID, read from
/proc as the kernel shows them, with a doubt counted as neither."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from cas.fuse.callers import CAP_FSETID, in_group_or_capable
from cas.fuse.wire import RequestContext

from tests.conftest import skip_unless_ci

OTHER = 54_321  # a uid and gid no account has


def _capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff in /proc/self/status")


@contextmanager
def other_user(groups: list[int]) -> Iterator[int]:
    """A child process that has become the second user with these
    supplementary groups (its pid), alive until the block ends."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)
            os.close(done_w)  # so that the parent's close is the end of the pipe
            os.setgroups(groups)
            os.setgid(OTHER)
            os.setuid(OTHER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"1", "the child could not become the second user"
        yield pid
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def test_the_callers_own_group_needs_no_lookup() -> None:
    assert in_group_or_capable(RequestContext(OTHER, OTHER, 0), OTHER)


def test_a_supplementary_group_counts_and_others_do_not() -> None:
    if os.geteuid() != 0:
        skip_unless_ci("taking another user's identity needs root (CI runs as root)")
    with other_user([777, 778]) as pid:
        ctx = RequestContext(OTHER, OTHER, pid)
        assert in_group_or_capable(ctx, 777) and in_group_or_capable(ctx, 778)
        assert not in_group_or_capable(ctx, 0)  # not root's group, and no CAP_FSETID as another user


def test_cap_fsetid_counts_for_every_group() -> None:
    me = RequestContext(os.getuid(), os.getgid(), os.getpid())
    unheld = max(os.getgroups() + [os.getgid()]) + 1
    assert in_group_or_capable(me, unheld) == bool(_capabilities() >> CAP_FSETID & 1)


def test_a_caller_that_is_gone_is_in_no_other_group() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # reaped: its /proc entry is gone
    assert not in_group_or_capable(RequestContext(0, 0, pid), 4242)
    assert not in_group_or_capable(RequestContext(0, 0, 0), 4242)  # no pid (the kernel's own request)
