"""The routing table on disk: ``<repo>/dht/routing.cbor``.

Owns the file's format (the table's DAG-CBOR record), reading it back on
start (an empty table if there is none or it belongs to another identity)
and writing it atomically and durably (:mod:`cas.durable`).

Must never: decide who belongs in the table (cas.dht.routing does).
"""

from __future__ import annotations

from pathlib import Path

from .. import dagcbor
from ..dht.ids import id_to_bytes
from ..dht.routing import RoutingTable
from ..durable import write_atomically
from ..errors import InvalidBlockError, RepositoryError
from ..store._modes import private_dir

TABLE_PATH = Path("dht") / "routing.cbor"
"""Where a repository keeps its routing table."""
MAX_TABLE_FILE = 1 << 20
"""Bytes a routing-table file may have (far more than k contacts in every bucket)."""


def load_table(path: Path, own_id: int, now: float) -> RoutingTable:
    """The saved table at ``path``, or an empty one if there is none or it
    belongs to another identity. A damaged file raises RepositoryError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RoutingTable(own_id, now=now)
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TABLE_FILE:
        raise RepositoryError(f"{path} is too large to be a routing table; delete it")
    try:
        record = dagcbor.decode(raw)
    except InvalidBlockError:
        raise RepositoryError(f"{path} is damaged; delete it to start from the bootstrap peers") from None
    if isinstance(record, dict) and record.get("node_id") != id_to_bytes(own_id):
        return RoutingTable(own_id, now=now)  # the key was replaced: the table is someone else's
    return RoutingTable.from_record(record, now)


def save_table(path: Path, table: RoutingTable, now: float) -> None:
    """Write the table atomically and durably (:mod:`cas.durable`)."""
    data = dagcbor.encode(table.to_record(now))
    private_dir(path.parent)  # 0700, and the file 0600, whatever the umask (cas/store/_modes.py)
    write_atomically(path, data)

