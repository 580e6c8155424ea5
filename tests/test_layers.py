"""The layering rule, checked on the source: nothing below the node imports
the control protocol or the node (docs/architecture.md, cas/control)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CAS = Path(__file__).resolve().parent.parent / "cas"

BELOW_THE_NODE = ["store", "dht", "net", "names", "files.py", "gateway"]
"""Modules (files or packages under cas/) that a node is built from."""

ABOVE = ("cas.control", "cas.node")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, those
    inside functions included."""
    package = ".".join(path.relative_to(CAS.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _files(name: str) -> list[Path]:
    target = CAS / name
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


@pytest.mark.parametrize("name", BELOW_THE_NODE)
def test_nothing_below_the_node_imports_the_control_protocol_or_the_node(name: str) -> None:
    files = _files(name)
    assert files
    offending = [f"{path.relative_to(CAS.parent)}:{line}: {module}"
                 for path in files for line, module in _imports(path)
                 if any(module == above or module.startswith(above + ".") for above in ABOVE)]
    assert offending == []


def test_the_import_scan_sees_relative_and_lazy_imports() -> None:
    sample = CAS / "control" / "_client.py"  # imports ..files lazily, .schema relatively
    modules = {module for _, module in _imports(sample)}
    assert {"cas.files", "cas.control.schema", "cas.control._framing"} <= modules
