"""Read the test vectors that docs/formats.md publishes.

A vector block in the document is a fenced code block whose info string is
``json vectors:<section>``; each non-empty line inside is one JSON object.
Tests load them with :func:`vectors` so the published page is what is tested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FORMATS_MD = Path(__file__).resolve().parent.parent / "docs" / "formats.md"

_BLOCK = re.compile(r"^```json vectors:(?P<section>[\w-]+)\n(?P<body>.*?)^```", re.M | re.S)


def vectors(section: str) -> list[dict]:
    """All vectors of ``section``, in document order; fails if there are none."""
    text = FORMATS_MD.read_text(encoding="utf-8")
    found = [
        json.loads(line)
        for match in _BLOCK.finditer(text)
        if match["section"] == section
        for line in match["body"].splitlines()
        if line.strip()
    ]
    assert found, f"docs/formats.md has no 'json vectors:{section}' block"
    return found
