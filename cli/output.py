"""How the ``cas`` command talks to its user: results, notes and progress.

Results go to stdout (plain text for people and shell scripts, or one JSON
document with ``--json``); notes and progress go to stderr. A progress bar is
drawn only when stderr is a terminal and neither ``--quiet`` nor ``--json``
was given, so pipes and scripts never see one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def result(self, text: str) -> None:
        """One line of plain-text result (not printed in JSON mode)."""
        if not self.json_mode:
            print(text, flush=True)

    def document(self, value: Any) -> None:
        """The JSON result (printed only in JSON mode)."""
        if self.json_mode:
            json.dump(value, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
            sys.stdout.flush()

    def note(self, text: str) -> None:
        """A remark for a person, on stderr; silenced by --quiet."""
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, total: int | None, what: str) -> Iterator[Callable[[int], None]]:
        """Yield a callback taking byte counts; draws a bar on a terminal."""
        if self.quiet or self.json_mode or not sys.stderr.isatty():
            yield lambda n: None
            return
        from tqdm import tqdm  # here: its import costs ~20% of the start of every command

        bar = tqdm(
            total=total,
            desc=what,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            leave=False,
            file=sys.stderr,
            mininterval=0.2,
            delay=0.5,  # short work draws nothing at all
        )
        try:
            yield bar.update
        finally:
            bar.close()


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
