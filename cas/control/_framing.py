"""The control protocol's framing and errors, shared by both ends.

Owns: the frame (``length: u32 big-endian ‖ one DAG-CBOR value``) and its
limits, the error classes of the control socket, and how an error crosses
it (``{"type", "message"}``, raised again on the client as the same
:class:`~cas.errors.CasError` subclass). Also how a long socket path is
reached (both ends need it).

Must never: know what an op is (cas.control.schema does) or do I/O.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from .. import dagcbor
from ..errors import CasError, ControlProtocolError, InvalidBlockError

SOCKET_NAME = "control.sock"

MAX_FRAME = 2 * 1024 * 1024
"""Largest control message either way: a block (≤ 1 MiB, blocks.MAX_BLOCK_SIZE)
plus its envelope, with the same 2 MiB ceiling as a network message."""

MAX_ITERATE_BATCH = 1024
"""CIDs per ``{"more": ...}`` frame of ``iterate`` (about 40 KiB)."""

MAX_PROBLEMS = 1000
"""Problems returned by ``verify`` over the socket; the count says if more."""

MAX_FDS = 1
"""Descriptors a request may carry (``add_file`` passes one); more are
closed by the kernel on arrival."""

CONNECT_TIMEOUT = 2.0
"""Seconds to wait for a daemon to accept and answer the probe."""

_HEADER = struct.Struct(">I")


# -- framing (shared by both ends) ----------------------------------------------------


def encode_frame(value: Any) -> bytes:
    body = dagcbor.encode(value)
    if len(body) > MAX_FRAME:
        raise ControlProtocolError(f"control message of {len(body)} bytes is over the limit")
    return _HEADER.pack(len(body)) + body


def check_length(header: bytes) -> int:
    length: int = _HEADER.unpack(header)[0]
    if length > MAX_FRAME:
        raise ControlProtocolError(f"control message of {length} bytes is over the {MAX_FRAME}-byte limit")
    return length


def decode_body(body: bytes | memoryview) -> Any:
    try:
        return dagcbor.decode_noncanonical(body)
    except (InvalidBlockError, RecursionError) as exc:
        raise ControlProtocolError(f"malformed control message: {exc}") from None


# -- errors across the socket -----------------------------------------------------------


def error_value(exc: BaseException) -> dict[str, str]:
    """The ``error`` map for an exception raised by a handler."""
    if isinstance(exc, CasError):
        return {"type": type(exc).__name__, "message": str(exc)[:4096]}
    return {"type": "NodeError", "message": f"the node failed: {type(exc).__name__}: {exc}"[:4096]}


def _error_classes() -> dict[str, type[CasError]]:
    found: dict[str, type[CasError]] = {}
    stack: list[type[CasError]] = [CasError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    return found


def error_from_value(value: Any) -> CasError:
    """Rebuild the :class:`CasError` a handler raised: the same class (found by
    name among CasError's subclasses; CasError if unknown), the same message."""
    if not isinstance(value, dict) or not isinstance(value.get("message"), str):
        return ControlProtocolError("the daemon sent a malformed error")
    cls = _error_classes().get(str(value.get("type")), CasError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, value["message"])
    return exc


class _short_path:
    """``sun_path`` holds about 107 bytes; a longer socket path is reached
    through ``/proc/self/fd/N/`` of its directory (Linux)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> str:
        text = os.fspath(self._path)
        if len(os.fsencode(text)) < 100:
            return text
        self._fd = os.open(self._path.parent, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{self._path.name}"

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)


