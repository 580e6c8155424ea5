"""The control socket: how the CLI, the library and the mount reach a node.

Owns, one job per module (this package re-exports their public names):

* :mod:`._framing` — the frame, its limits, the error classes and how an
  error crosses the socket; shared by both ends, no I/O.
* :mod:`.schema` — every op declared once: its request (arguments, types,
  defaults), whether it streams or takes a descriptor, its result; the
  checks both ends run on them.
* :mod:`._server` — the trio server loop (owner-only socket, one task per
  client, descriptors passed with requests).
* :mod:`._client` — the synchronous :class:`ControlClient`, and
  :class:`RemoteBlockStore` / :class:`RemoteStore`, the client-side
  stand-ins for :class:`cas.store.LocalStore` that let ``cas.api.Repository``
  run unchanged against a running daemon.

Must never: decide what an op means (the node's op table does), trust a
frame's length before checking it, or accept a connection from another user.
Nothing below the node (``cas.store``, ``cas.dht``, ``cas.net``,
``cas.files``, ``cas.names``) imports this package (tests/test_layers.py).

The protocol (docs/node.md has the full op table)
=================================================

The socket is ``<repo>/control.sock``, a Unix stream socket created mode
0600 in the repository directory; the server also checks each client's
``SO_PEERCRED`` uid against its own. Each message, both ways, is

    length: u32 big-endian ‖ body: one DAG-CBOR value (≤ MAX_FRAME bytes)

A request is ``{"op": text, "args": map}``; the answer is ``{"ok": value}``
or ``{"error": {"type": text, "message": text}}``. ``type`` is the name of a
:class:`cas.errors.CasError` subclass; the client raises that class again
with the same message, so a command prints the same one line whether it ran
locally or through the daemon. A *streaming* op (``iterate``) answers with
any number of ``{"more": [items]}`` frames before its final ``{"ok": n}``.
Requests on one connection are answered in order, one at a time.

Ops
===

Each op is declared once in :mod:`.schema` (``Get``: ``OP = "get"``, a
``cid`` argument, a ``bytes`` result). The server is given a table
(:data:`OpTable`) of name → :class:`Op` (the op's request class and an
async ``handler(request, client)``; for a streaming op an async generator
of lists of items); it parses each request's ``args`` through the schema
(a bad argument is a :class:`ControlArgumentError` naming op and
argument), calls the handler with the typed request and encodes its
result through the schema again. ``client`` is the connection's
:class:`ClientState`, where a handler keeps per-connection state (the node
keeps each connection's write session there, so gc spares what a client
has put until it disconnects). The node's handlers and their table are in
:mod:`cas.node.ops`. Clients send typed requests:
``client.call(schema.Get(cid))`` returns the declared result. Handlers
raise :class:`CasError` subclasses for the caller's errors; anything else
is reported as :class:`NodeError` and logged by the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ControlArgumentError, ControlProtocolError, DaemonNotRunningError, NodeError, UnknownOpError
from ._client import (
    BATCHES_AHEAD,
    PUT_BATCH_BYTES,
    SEND_BUFFER,
    ControlClient,
    RemoteBlockStore,
    RemoteStore,
    connect,
    socket_path,
)
from ._framing import (
    CONNECT_TIMEOUT,
    MAX_FDS,
    MAX_FRAME,
    MAX_ITERATE_BATCH,
    MAX_PROBLEMS,
    SOCKET_NAME,
    check_length,
    decode_body,
    encode_frame,
    error_from_value,
    error_value,
)

if TYPE_CHECKING:
    from ._server import ClientState, Handler, Op, OpTable, StreamingHandler, bind_socket, serve_control

_SERVER = frozenset({"ClientState", "Handler", "Op", "OpTable", "StreamingHandler", "bind_socket", "serve_control"})
"""The server's names, loaded on first use: a client (every command through
a daemon) never pays for the server's module and what it imports."""


def __getattr__(name: str) -> Any:
    if name in _SERVER:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BATCHES_AHEAD", "CONNECT_TIMEOUT", "MAX_FDS", "MAX_FRAME", "MAX_ITERATE_BATCH", "MAX_PROBLEMS",
    "PUT_BATCH_BYTES", "SEND_BUFFER", "SOCKET_NAME",
    "ClientState", "ControlArgumentError", "ControlClient", "ControlProtocolError", "DaemonNotRunningError",
    "Handler", "NodeError", "Op", "OpTable", "RemoteBlockStore", "RemoteStore", "StreamingHandler",
    "UnknownOpError", "bind_socket", "check_length", "connect", "decode_body", "encode_frame",
    "error_from_value", "error_value", "serve_control", "socket_path",
]
