"""Small pieces the benchmark scripts share (they run as scripts, with this
directory first on the import path)."""

from __future__ import annotations

import compileall
import os
import time
from collections.abc import Callable
from pathlib import Path


def parse_size(text: str) -> int:
    """A byte count written like 256M, 1G or 4096."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes, started with no writeback of earlier work pending."""
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compile_cas() -> None:
    """Write the bytecode of every cas module, as pip does when it installs
    a package: with PYTHONDONTWRITEBYTECODE set (as in some shells here),
    every ``cas`` process would otherwise compile the modules it imports
    from source, ~0.05-0.15 s per start, and an editable install whose
    sources changed since their last compile would pay it too."""
    import cas.cli
    import cas.fuse

    import cas

    for package in (cas, cas.cli, cas.fuse):
        compileall.compile_dir(Path(package.__file__).parent, quiet=1)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by the processes ``pids``."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
