"""History kept by age: which namespace versions stay, as snapshot tools
keep their snapshots.

Owns the retention policy (:class:`Policy`, written as ``history.keep`` in
the repository's settings), the planner that says which versions it keeps
(:class:`Thinning`, sans-IO: versions and the time are passed in, decisions
come out) and the thinning step that drops the others from a repository,
a page of versions at a time (:class:`Thin`, :func:`thin`).

Must never: read a clock (``now_ns`` is passed in), drop the newest version
or a protected one, or delete a block (dropping a version only deletes its
root row; ``gc`` then frees the blocks no kept version, pin or name needs).

Theory of operation
===================

A policy is a list of tiers by age, each keeping one version per interval::

    1h:all 1d:1h 30d:1d forever:30d      (the default)

reads "versions younger than an hour: all of them; younger than a day: one
per hour; younger than 30 days: one per day; older: one per 30 days".
Intervals are buckets of UTC time from the epoch (``time_ns // every``), so
an hour is 10:00-11:00 and a day starts at midnight UTC. The version a
bucket keeps is its newest. A policy whose last tier is not ``forever``
drops every version older than that tier's age.

Rules of the planner:

1. The newest version is always kept (it is the namespace's current root),
   and so is every version the caller protects (one whose root CID is
   pinned, the one published on the network).
2. A version younger than the first tier's age, or dated in the future (a
   clock set back), is kept.
3. Otherwise its tier is the first whose age it is younger than; it is kept
   if the version just newer than it (by sequence number, kept or not) lies
   in another bucket of that tier's interval. Versions are fed newest
   first, so this needs O(1) memory however long the history: with times
   that rise with the sequence number, as a namespace commits them, it
   keeps exactly the newest version of each bucket.
4. Each tier's interval divides the next one's (an hour divides a day, a
   day 30 days), so the version a coarse bucket keeps is the one its finer
   buckets kept: thinning again later never wants back a version it
   dropped. :func:`parse_policy` refuses a policy that breaks this.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from ..cid import CID
from ..errors import InvalidInputError

SECOND = 10**9
_UNITS = {"s": SECOND, "m": 60 * SECOND, "h": 3600 * SECOND, "d": 86400 * SECOND, "w": 7 * 86400 * SECOND,
          "y": 365 * 86400 * SECOND}

DEFAULT_POLICY_TEXT = "1h:all 1d:1h 30d:1d forever:30d"
"""Every version of the last hour, then hourly for a day, daily for a month,
then one per 30 days for good (Time Machine's tiers, with months kept)."""

THIN_INTERVAL = 600.0
"""Seconds between a daemon's thinning rounds: a mount making a version a
second leaves at most ~4,200 versions at any time (an hour of all, 24
hourly, 30 daily, the rest monthly, plus ten minutes of all)."""


class Tier(NamedTuple):
    """Versions younger than ``within_ns`` (None: any age) keep one per
    ``every_ns`` (0: all of them)."""

    within_ns: int | None
    every_ns: int


class Policy(NamedTuple):
    tiers: tuple[Tier, ...]

    def __str__(self) -> str:
        return " ".join(f"{_duration_text(t.within_ns)}:{_duration_text(t.every_ns) if t.every_ns else 'all'}"
                        for t in self.tiers)


def _duration_text(ns: int | None) -> str:
    if ns is None:
        return "forever"
    for unit in ("y", "d", "h", "m", "s"):  # a week reads back as 7d
        if ns % _UNITS[unit] == 0:
            return f"{ns // _UNITS[unit]}{unit}"
    raise AssertionError("durations are whole seconds")


def _duration(text: str, what: str) -> int:
    match = re.fullmatch(r"([0-9]+)([smhdwy])", text)
    if match is None or int(match[1]) == 0:
        raise InvalidInputError(f"history.keep: {what} {text!r} is not a duration such as 90m, 1h, 30d, 1y")
    return int(match[1]) * _UNITS[match[2]]


def parse_policy(text: str | Iterable[str]) -> Policy:
    """The policy written as ``AGE:EVERY`` tiers (``1h:all 1d:1h 30d:1d
    forever:30d``); InvalidInputError saying what is wrong."""
    words = text.split() if isinstance(text, str) else [w for part in text for w in part.split()]
    if not words:
        raise InvalidInputError("history.keep needs at least one AGE:EVERY tier, e.g. " + DEFAULT_POLICY_TEXT)
    tiers: list[Tier] = []
    for word in words:
        age, sep, every = word.partition(":")
        if not sep:
            raise InvalidInputError(f"history.keep: {word!r} is not AGE:EVERY (e.g. 1d:1h: one per hour for a day)")
        if tiers and tiers[-1].within_ns is None:
            raise InvalidInputError("history.keep: 'forever' must be the last tier")
        within = None if age == "forever" else _duration(age, "age")
        interval = 0 if every == "all" else _duration(every, "interval")
        if tiers:
            last = tiers[-1]
            assert last.within_ns is not None
            if within is not None and within <= last.within_ns:
                raise InvalidInputError(f"history.keep: the ages must grow ({age} after {_duration_text(last.within_ns)})")
            if interval == 0 and last.every_ns != 0:
                raise InvalidInputError("history.keep: 'all' only in the first tiers")
            if last.every_ns and interval % last.every_ns:
                raise InvalidInputError(f"history.keep: each interval must be a multiple of the one before "
                                        f"({every} after {_duration_text(last.every_ns)})")
        tiers.append(Tier(within, interval))
    return Policy(tuple(tiers))


DEFAULT_POLICY = parse_policy(DEFAULT_POLICY_TEXT)


def policy_from_config(config: dict[str, Any]) -> Policy:
    """The policy a repository's settings give (``history.keep``), or the default."""
    value = config.get("history.keep")
    if value is None:
        return DEFAULT_POLICY
    try:
        return parse_policy(value if isinstance(value, str) else [str(v) for v in value])
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}; change it with 'cas config set history.keep ...'") from None


# -- the planner (sans-IO) -----------------------------------------------------------------


class Thinning:
    """Which versions ``policy`` keeps at ``now_ns`` (rules in the module
    docstring). Feed every version newest first, one call each:
    :meth:`keeps` answers at once, in O(1) memory."""

    def __init__(self, policy: Policy, now_ns: int, protected: frozenset[int] = frozenset()) -> None:
        self.policy = policy
        self.now_ns = now_ns
        self.protected = protected
        self._newer: int | None = None  # the time of the version fed last (just newer than the next)
        self._last_seq: int | None = None

    def keeps(self, seq: int, time_ns: int) -> bool:
        """Whether version ``seq``, made at ``time_ns``, is kept."""
        if self._last_seq is not None and seq >= self._last_seq:
            raise ValueError("versions are fed newest first")  # our bug, not the user's
        newer, self._newer, first = self._newer, time_ns, self._last_seq is None
        self._last_seq = seq
        if first or seq in self.protected:
            return True
        age = self.now_ns - time_ns
        for tier in self.policy.tiers:
            if tier.within_ns is None or age < tier.within_ns:
                if tier.every_ns == 0 or age < 0:
                    return True
                assert newer is not None
                return newer // tier.every_ns != time_ns // tier.every_ns
        return False  # older than the last tier


def plan(versions: Iterable[tuple[int, int]], policy: Policy, now_ns: int,
         protected: frozenset[int] = frozenset()) -> Iterator[tuple[int, bool]]:
    """(seq, kept) for each (seq, time_ns) of ``versions``, newest first."""
    thinning = Thinning(policy, now_ns, protected)
    for seq, time_ns in versions:
        yield seq, thinning.keeps(seq, time_ns)


# -- the thinning step ---------------------------------------------------------------------


class ThinRepo(Protocol):
    """What thinning needs of a repository: its root rows a page at a time,
    the pins, and a way to drop root rows (:class:`cas.store.LocalStore`)."""

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[Any]: ...

    def pins(self) -> list[CID]: ...

    def drop_roots(self, seqs: list[int]) -> int: ...


class ThinReport(NamedTuple):
    """What a thinning did (or, dry, would do)."""

    versions: int
    kept: int
    dropped: int
    newest_dropped: int | None
    oldest_dropped: int | None
    policy: str


class Thin:
    """One thinning of ``repo``'s history by ``policy`` at ``now_ns``, a page
    of versions per :meth:`step`, so that its owner can let commits in
    between pages (the daemon runs each step as its own trip to the store
    thread). Versions whose root CID is pinned, and those in ``protected``
    (the published one), stay; with ``dry_run`` nothing is dropped. Run it
    where commits cannot race a step: the repository's owner (the daemon's
    store thread, or the command holding the lock). A commit between two
    steps only adds versions newer than any the thinning still reads."""

    def __init__(self, repo: ThinRepo, policy: Policy, now_ns: int, *, protected: Iterable[int] = (),
                 dry_run: bool = False) -> None:
        self._repo = repo
        self._policy = policy
        self._thinning = Thinning(policy, now_ns, frozenset(protected))
        self._pinned = set(repo.pins())
        self._dry_run = dry_run
        self._after: int | None = None
        self._versions = self._kept = self._dropped = 0
        self._newest_dropped: int | None = None
        self._oldest_dropped: int | None = None

    def step(self) -> ThinReport | None:
        """Thin the next page; the report once the last page is done, else None."""
        from .namespace import ROOTS_PAGE

        rows = self._repo.roots(newest_first=True, limit=ROOTS_PAGE, after=self._after)
        going = []
        for row in rows:
            self._versions += 1
            if self._thinning.keeps(row.seq, row.time_ns) or row.root in self._pinned:
                self._kept += 1
            else:
                going.append(row.seq)
        if going:
            self._dropped += len(going)
            if self._newest_dropped is None:
                self._newest_dropped = going[0]
            self._oldest_dropped = going[-1]
            if not self._dry_run:
                self._repo.drop_roots(going)
        if len(rows) == ROOTS_PAGE:
            self._after = rows[-1].seq
            return None
        return ThinReport(self._versions, self._kept, self._dropped, self._newest_dropped, self._oldest_dropped,
                          str(self._policy))


def thin(repo: ThinRepo, policy: Policy, now_ns: int, *, protected: Iterable[int] = (),
         dry_run: bool = False) -> ThinReport:
    """A whole :class:`Thin` at once: drop the versions ``policy`` no longer
    keeps at ``now_ns`` (none with ``dry_run``)."""
    job = Thin(repo, policy, now_ns, protected=protected, dry_run=dry_run)
    while (report := job.step()) is None:
        pass
    return report
