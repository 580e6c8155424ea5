"""Namespace changes as records: what a writer asks for, apart from any root.

A change names paths, never a root: "make directory /a/b", "link this entry
at /a/f", "move /a to /b", "remove /a", "set the mode of /a". That is what
the namespace's concurrency rule rests on (``cas.names.namespace``, and
docs/architecture.md, "Concurrent changes"): a change is applied to whatever
root is newest when it commits, and applied again to a newer root if another
writer committed first, so no writer ever commits a change made to a root
that is no longer current.

Because a change is plain data it can also travel: a daemon's clients send
their changes over the control socket (:func:`change_to_value` /
:func:`change_from_value`) and the daemon applies them, one at a time, to
the repository it owns.

This module owns the records and their wire form, with strict checking of
what arrives (a bad value is an InvalidInputError naming the field). It
never resolves a path or touches a store: applying a change is
``Namespace.apply``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidBlockError, InvalidInputError
from .directory import DirEntry


@dataclass(frozen=True)
class Mkdir:
    """Create directory ``path``; with ``parents``, also the missing ones
    above it, and no error if it exists already as a directory."""

    path: str
    parents: bool = False
    mode: int = 0o755


@dataclass(frozen=True)
class Link:
    """Make ``path`` name ``entry`` (whose name is the path's last part;
    its content is stored already). An existing file there is replaced with
    ``replace_file``; a directory never is. ``parents`` creates missing
    directories above it."""

    path: str
    entry: DirEntry
    replace_file: bool = True
    parents: bool = False


@dataclass(frozen=True)
class Move:
    """Rename ``src`` to ``dst``; see ``Namespace.move`` for the flags."""

    src: str
    dst: str
    into_directory: bool = True
    no_replace: bool = False


@dataclass(frozen=True)
class Remove:
    """Remove ``path``; a directory that is not empty only with ``recursive``."""

    path: str
    recursive: bool = False


@dataclass(frozen=True)
class SetAttributes:
    """Change the mode and/or mtime of ``path``; None leaves one as it is."""

    path: str
    mode: int | None = None
    mtime: int | None = None


Change = Mkdir | Link | Move | Remove | SetAttributes

_KINDS: dict[str, type] = {
    "mkdir": Mkdir, "link": Link, "move": Move, "remove": Remove, "set_attributes": SetAttributes,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}

# The fields of each kind and their types on the wire (None: may be null).
_FIELDS: dict[type, dict[str, tuple[type, ...]]] = {
    Mkdir: {"path": (str,), "parents": (bool,), "mode": (int,)},
    Link: {"path": (str,), "entry": (dict,), "replace_file": (bool,), "parents": (bool,)},
    Move: {"src": (str,), "dst": (str,), "into_directory": (bool,), "no_replace": (bool,)},
    Remove: {"path": (str,), "recursive": (bool,)},
    SetAttributes: {"path": (str,), "mode": (int, type(None)), "mtime": (int, type(None))},
}


def change_to_value(change: Change) -> dict[str, Any]:
    """The change as a DAG-CBOR-ready map: ``{"kind": ..., field: value}``."""
    value: dict[str, Any] = {"kind": _NAMES[type(change)]}
    for name in _FIELDS[type(change)]:
        item = getattr(change, name)
        value[name] = item.to_value() if isinstance(item, DirEntry) else item
    return value


def change_from_value(value: Any) -> Change:
    """The change a map describes, checked field by field; raises
    InvalidInputError saying what is wrong (it comes from a client)."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise InvalidInputError('a namespace change is a map with a "kind"')
    cls = _KINDS.get(value["kind"])
    if cls is None:
        raise InvalidInputError(f"unknown namespace change {value['kind'][:40]!r}")
    fields = _FIELDS[cls]
    if set(value) != {"kind", *fields}:
        raise InvalidInputError(f"a {value['kind']} change has the fields {sorted(fields)}, not {sorted(set(value) - {'kind'})}")
    args: dict[str, Any] = {}
    for name, types in fields.items():
        item = value[name]
        # bool is an int to Python; an int field never takes one
        if not isinstance(item, types) or (bool not in types and isinstance(item, bool)):
            raise InvalidInputError(f"field {name!r} of a {value['kind']} change has the wrong type")
        args[name] = item
    if cls is Link:
        try:
            args["entry"] = DirEntry.from_value(args["entry"])
        except InvalidBlockError as exc:
            raise InvalidInputError(f"the entry of a link change is malformed: {exc}") from None
    change: Change = cls(**args)
    check_change(change)
    return change


def paths_of(change: Change) -> list[str]:
    """The paths ``change`` may change (what a cache of them must forget)."""
    if isinstance(change, Move):
        return [change.src, change.dst]
    return [change.path]


def check_change(change: Change) -> None:
    """What can be checked without a root: modes in range, and a link's
    entry named after its path. Raises InvalidInputError."""
    if isinstance(change, Mkdir) and not 0 <= change.mode <= 0o7777:
        raise InvalidInputError(f"mode {change.mode:o} is not a permission mode")
    if isinstance(change, SetAttributes) and change.mode is not None and not 0 <= change.mode <= 0o7777:
        raise InvalidInputError(f"mode {change.mode:o} is not a permission mode")
    if isinstance(change, Link):
        last = [part for part in change.path.split("/") if part][-1:] or [""]
        if change.entry.name != last[0]:
            raise InvalidInputError(f"a link to {change.path} must carry an entry named {last[0]!r}")

