"""The Kademlia DHT: routing table, iterative lookups, and their simulator.

Owns: where peers sit in the key space (:mod:`cas.dht.ids`), which peers a
node remembers (:mod:`cas.dht.routing`), and how a lookup walks the network
(:mod:`cas.dht.lookup`). All three are sans-IO: they never touch sockets,
clocks, threads or randomness they were not handed, so the node's trio driver
and the discrete-event simulator (:mod:`cas.dht.sim`, ``python -m
cas.dht.sim``) run the same code. docs/dht.md is the theory of operation.

:mod:`cas.dht.driver` is that trio driver (connections, timers, requests on
the wire); it is imported by the node, not re-exported here, so the sans-IO
core and the simulator never load trio.
"""

from .ids import (
    ID_BITS,
    NodeID,
    bucket_index,
    distance,
    id_from_bytes,
    id_to_bytes,
    key_for_digest,
    node_id_for_public_key,
    random_id_in_bucket,
)
from .lookup import ALPHA, Lookup, LookupResult, LookupStatistics, SendQuery
from .routing import MAX_FAILURES, REFRESH_INTERVAL, Contact, K, RoutingTable

__all__ = [
    "ALPHA",
    "ID_BITS",
    "K",
    "MAX_FAILURES",
    "REFRESH_INTERVAL",
    "Contact",
    "Lookup",
    "LookupResult",
    "LookupStatistics",
    "NodeID",
    "RoutingTable",
    "SendQuery",
    "bucket_index",
    "distance",
    "id_from_bytes",
    "id_to_bytes",
    "key_for_digest",
    "node_id_for_public_key",
    "random_id_in_bucket",
]
