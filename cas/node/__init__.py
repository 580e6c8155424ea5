"""The node: one trio process that owns a repository and joins the network.

* :mod:`.config` — how to run a node: its tunables, :class:`NodeConfig`,
  and the settings a network shares (:func:`network_settings`).
* :mod:`.table` — the routing table on disk.
* :mod:`.daemon` — :class:`Node` (the repository, the identity, the DHT,
  replication, integrity, the control socket, in one nursery) and
  :func:`run_daemon` (``cas daemon``: signals, the ready line).
* :mod:`.ops` — the control ops the CLI, the library and the mount call:
  one handler per op (requests declared in :mod:`cas.control.schema`),
  the store's here, the node's in :mod:`.ops_node`, the namespace's and
  published names' in :mod:`.ops_names`, all in one table; what a handler
  is given is :class:`.ops_context.OpContext`.

Nothing below the node (the store, the DHT, the network, the names)
imports this package or :mod:`cas.control` (tests/test_layers.py).
"""

from .config import (
    DEFAULT_PORT,
    HAVE_VERIFY_BYTES,
    KEY_PATH,
    NodeAddress,
    NodeConfig,
    Settings,
    id_difficulty,
    network_settings,
    parse_address,
    parse_gateway,
)
from .daemon import IntegrityStats, Node, first_cas_error, run_daemon
from .ops import control_ops, parse_target
from .table import TABLE_PATH, load_table, save_table

__all__ = [
    "DEFAULT_PORT",
    "HAVE_VERIFY_BYTES",
    "KEY_PATH",
    "TABLE_PATH",
    "IntegrityStats",
    "Node",
    "NodeAddress",
    "NodeConfig",
    "Settings",
    "control_ops",
    "first_cas_error",
    "id_difficulty",
    "load_table",
    "network_settings",
    "parse_address",
    "parse_gateway",
    "parse_target",
    "run_daemon",
    "save_table",
]
