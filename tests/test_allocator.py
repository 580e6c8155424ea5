"""cas.allocator: buffers of a megabyte are reused, not faulted in afresh."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Joins 1 MiB out of two pieces 200 times, as sealing and framing do, and
# prints the page faults that took.
PROBE = """
import resource, sys
from cas.allocator import keep_freed_buffers
if sys.argv[1] == "tuned":
    assert keep_freed_buffers()
data = bytes(1 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    joined = b"".join([data[:300000], data[300000:]])
    del joined
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc")
def test_freed_megabyte_buffers_are_reused_without_page_faults() -> None:
    # 200 fresh 1 MiB buffers would fault in 256 pages each (51,200 in all).
    assert faults("tuned") < 2000
