"""What a request's caller may do that the request does not say: whether
it is in a group beyond the one the request names (its supplementary
groups), and whether it holds CAP_FSETID. Read from the caller's
``/proc/<pid>/status``, as the kernel shows it to the mount.

Owns only that reading, for the one rule that needs it: a write, truncate
or chown that must drop privileges keeps a setgid bit the group may not
execute only for a caller in the file's group or with CAP_FSETID (Linux's
``in_group_or_capable``). A caller that is gone, or a status that cannot
be read, counts as in no other group and without the capability, so that
a doubt clears the bit rather than keeps it.

Never caches: groups and capabilities change (setgroups, capset), and the
rule is asked only when a privilege bit is to be dropped.
"""

from __future__ import annotations

from pathlib import Path

from .wire import RequestContext

CAP_FSETID = 4
"""The capability's bit in the ``CapEff`` mask (linux/capability.h)."""


def in_group_or_capable(ctx: RequestContext, gid: int) -> bool:
    """Whether the caller is in group ``gid`` (as its own group or a
    supplementary one) or holds CAP_FSETID."""
    if ctx.gid == gid:
        return True
    groups, capabilities = _status(ctx.pid)
    return gid in groups or bool(capabilities >> CAP_FSETID & 1)


def _status(pid: int) -> tuple[frozenset[int], int]:
    """The supplementary groups and effective capabilities of process
    ``pid``; none of either if it cannot be read."""
    if pid <= 0:
        return frozenset(), 0
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return frozenset(), 0
    groups: frozenset[int] = frozenset()
    capabilities = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        try:
            if key == "Groups":
                groups = frozenset(int(g) for g in value.split())
            elif key == "CapEff":
                capabilities = int(value, 16)
        except ValueError:
            return frozenset(), 0
    return groups, capabilities
