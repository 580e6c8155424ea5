"""What the repository's maintenance reports: ``cas repo verify``, ``cas
gc`` and pack compaction fill these in as they go.

Records that change while an operation runs, so dataclasses (and the
problems verify lists); this module loads with the first of those
operations, not with every command (see "Records" in
docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Problem(NamedTuple):
    """One thing wrong with a repository, found by :meth:`LocalStore.verify`."""

    cid: str
    what: str


@dataclass
class VerifyReport:
    blocks_checked: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    corrupt: list[Any] = field(default_factory=list)
    """The CorruptBlockError of each stored block that failed verification
    (``verify --repair`` quarantines them and fetches good copies)."""
    repaired: int = 0
    """Blocks ``verify --repair`` brought back from the network."""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class CompactReport:
    """What :meth:`PackStore.compact` did."""

    packs_removed: int = 0
    blocks_moved: int = 0
    bytes_moved: int = 0
    bytes_freed: int = 0


@dataclass
class GcReport:
    """What ``cas gc`` removed."""

    blocks_freed: int = 0
    bytes_freed: int = 0
    roots_dropped: int = 0
    expired_freed: int = 0
    """Of ``blocks_freed``, blocks held for other nodes whose lease ran out."""
    compaction: CompactReport = field(default_factory=CompactReport)
