"""How the ``cas`` command talks to its user: results, notes and progress.

Results go to stdout (plain text for people and shell scripts, or one JSON
document with ``--json``); notes and progress go to stderr. A progress bar is
drawn only when stderr is a terminal and neither ``--quiet`` nor ``--json``
was given, so pipes and scripts never see one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
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

    def documents(self, values: Iterable[Any]) -> None:
        """A JSON array of ``values``, written as they come (a listing of
        10^5 entries never sits in memory), laid out exactly as
        :meth:`document` lays out a list. Printed only in JSON mode."""
        if not self.json_mode:
            return
        out = sys.stdout
        out.write("[")
        count = 0
        for value in values:
            text = json.dumps(value, indent=2, sort_keys=True).replace("\n", "\n  ")
            out.write(("," if count else "") + "\n  " + text)
            count += 1
        out.write("\n]\n" if count else "]\n")
        out.flush()

    def error(self, command: str | None, kind: str, message: str) -> None:
        """A failed command: one line on stderr for a person and, in JSON
        mode, ``{"error": {...}}`` on stdout for a program."""
        print(f"cas {command}: error: {message}" if command else f"cas: error: {message}",
              file=sys.stderr, flush=True)
        if self.json_mode:
            self.document({"error": {"command": command, "type": kind, "message": message}})

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
