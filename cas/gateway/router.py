"""The gateway's HTTP requests and responses, sans-IO: what a request asks
for and the headers its answer carries.

Theory of operation. The trio edge (:mod:`cas.gateway.server`) turns bytes
into an h11 request and hands its method, target and headers to
:func:`route`, which answers with one record saying what is wanted, or an
:class:`HttpError` saying what is wrong with the request (its status and a
line for the user). The node (:mod:`cas.node.gateway`) then finds the
content and builds the answer with the helpers here (:func:`etag`,
:func:`content_headers`, :func:`byte_range`, :func:`listing_page`...).
Nothing here does I/O, reads a clock or knows the node; every function is a
function of its arguments, so the tests drive it with plain values.

The rules it follows are the IPFS HTTP gateway specifications ("path
gateway" and "trustless gateway", specs.ipfs.tech):

1. ``/ipfs/{cid}[/{path}]`` and ``/ns/{key}[/{path}]`` (cas's published
   namespaces, as ``/ipns/`` is IPFS's) are content; ``/`` and ``/status``
   the status page; ``/metrics`` Prometheus text. Anything else is 404,
   and any method but GET and HEAD 405 (with ``Allow``).
2. The response format: ``?format=raw|car`` wins over ``Accept``; in
   ``Accept``, the first of ``application/vnd.ipld.raw``,
   ``application/vnd.ipld.car``, or anything a browser sends (``*/*``,
   ``text/html``...) for the plain answer; an ``Accept`` naming only types
   the gateway cannot make is 406. ``dag-scope`` and ``entity-bytes`` are
   CAR-only, and ``entity-bytes`` implies ``dag-scope=entity``.
3. A CID or a path that does not parse is 400; a name a path cannot hold
   (``..``, NUL) likewise. What parses but is absent is the node's 404.
4. ``Range`` is honoured for plain file answers, one range (a header with
   several is ignored and the whole file sent, as RFC 9110 allows); a
   range wholly past the end is 416.
5. ``ETag`` is the quoted CID, with the format as a suffix
   (``"CID.raw"``, ``"CID.car.HASH"`` where HASH covers the path and the
   scope, since a CAR of a path holds the path's blocks); ``If-None-Match``
   matching it (or ``*``) is 304.
"""

from __future__ import annotations

import html
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

import blake3

from ..cid import CID, parse_cid
from ..errors import CasError, HttpError

MAX_TARGET = 8 * 1024
"""Longest request target accepted (bytes): nginx's default for a request
line is 8 KiB; a longer one is 414."""

MAX_PATH_SEGMENTS = 256
"""Most path segments under a CID: deeper is refused (400) rather than
walked."""

IMMUTABLE = "public, max-age=29030400, immutable"
"""``Cache-Control`` for ``/ipfs/`` answers: a CID's content never changes
(the value kubo sends)."""

MUTABLE_MAX_AGE = 60
"""Seconds a ``/ns/`` answer may be cached: a published name changes."""

RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
CAR_CONTENT_TYPE = CAR + "; version=1; order=dfs; dups=y"
"""What a CAR answer is: CARv1, blocks depth first; a block met twice far
apart may be written twice (cas.carfile's bounded memory)."""

HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"

SCOPES = ("block", "entity", "all")


# -- what a request asks for ------------------------------------------------------


class EntityBytes(NamedTuple):
    """``entity-bytes=from:to``: ``to`` None for ``*``; either may be
    negative (from the end)."""

    start: int
    end: int | None

    def resolve(self, size: int) -> tuple[int, int] | None:
        """The byte span [first, last + 1) within a file of ``size`` bytes,
        or None if it is empty or wholly outside."""
        first = self.start if self.start >= 0 else max(0, size + self.start)
        last = size - 1 if self.end is None else (self.end if self.end >= 0 else size + self.end)
        last = min(last, size - 1)
        if first > last or first >= size:
            return None
        return first, last + 1


@dataclass(frozen=True)
class Content:
    """A request for content: ``/ipfs/CID/path`` (``cid`` set) or
    ``/ns/KEY/path`` (``key`` set)."""

    method: str
    cid: CID | None
    key: str | None
    segments: tuple[str, ...]
    format: str  # "raw", "car" or "plain"
    scope: str = "all"
    entity_bytes: EntityBytes | None = None
    range: str | None = None  # the Range header, parsed once the size is known
    if_none_match: tuple[str, ...] = ()
    explicit_format: bool = False  # ?format= given (else negotiated from Accept)

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    @property
    def content_path(self) -> str:
        """The path as the gateway names it (``/ipfs/CID/a/b``, ``/ns/KEY/a``)."""
        base = f"/ipfs/{self.cid}" if self.cid is not None else f"/ns/{self.key}"
        return base + "".join("/" + s for s in self.segments)


@dataclass(frozen=True)
class Page:
    """The status page (``/``, ``/status``) or ``/metrics``."""

    method: str
    name: str  # "status" or "metrics"

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


Route = Content | Page


def route(method: str, target: str, headers: Iterable[tuple[str, str]]) -> Route:
    """What a request asks for (rules 1-3), or :class:`HttpError`."""
    if len(target) > MAX_TARGET:
        raise HttpError(414, f"the request target is longer than {MAX_TARGET} bytes")
    if method not in ("GET", "HEAD"):
        raise HttpError(405, f"{method} is not served here: the gateway is read-only (GET, HEAD)",
                        [("Allow", "GET, HEAD")])
    split = urlsplit(target)
    raw_path = split.path
    try:
        query = parse_qs(split.query, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the query string is not valid UTF-8 percent-encoding") from None
    parts = raw_path.split("/")
    if raw_path in ("/", "/status", "/status/"):
        return Page(method, "status")
    if raw_path == "/metrics":
        return Page(method, "metrics")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ipfs", "ns") or not parts[2]:
        raise HttpError(404, f"nothing is served at {raw_path}; content is at /ipfs/CID[/path] or "
                        "/ns/KEY[/path], the node's status at /")
    segments = _segments(parts[3:])
    header_map = _headers(headers)
    cid: CID | None = None
    key: str | None = None
    if parts[1] == "ipfs":
        try:
            cid = parse_cid(unquote(parts[2]))
        except CasError as exc:
            raise HttpError(400, f"{unquote(parts[2])!r} is not a CID: {exc}") from None
    else:
        key = unquote(parts[2]).lower()
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise HttpError(400, f"{key!r} is not a namespace key (64 hex digits, as 'cas name publish' prints)")
    fmt, explicit = _format(query, header_map.get("accept"))
    scope = _one(query, "dag-scope")
    entity = _one(query, "entity-bytes")
    if (scope is not None or entity is not None) and fmt != "car":
        raise HttpError(400, "dag-scope and entity-bytes apply to CAR answers only (add format=car)")
    if scope is not None and scope not in SCOPES:
        raise HttpError(400, f"dag-scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    entity_bytes = parse_entity_bytes(entity) if entity is not None else None
    if entity_bytes is not None and scope is None:
        scope = "entity"
    inm = tuple(t.strip() for t in header_map.get("if-none-match", "").split(",") if t.strip())
    return Content(method, cid, key, segments, fmt, scope or "all", entity_bytes,
                   header_map.get("range"), inm, explicit)


def _headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


def _segments(parts: list[str]) -> tuple[str, ...]:
    out = []
    for part in parts:
        if not part:
            continue  # a trailing slash, or //
        try:
            name = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, f"path segment {part!r} is not UTF-8") from None
        if name in (".", "..") or "\x00" in name or "/" in name:
            raise HttpError(400, f"path segment {name!r} cannot name an entry")
        out.append(name)
    if len(out) > MAX_PATH_SEGMENTS:
        raise HttpError(400, f"the path is deeper than {MAX_PATH_SEGMENTS} segments")
    return tuple(out)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, f"{name} is given more than once")
    return values[0]


def _format(query: dict[str, list[str]], accept: str | None) -> tuple[str, bool]:
    """Rule 2: (format, whether ?format= chose it)."""
    given = _one(query, "format")
    if given is not None:
        if given not in ("raw", "car"):
            raise HttpError(400, f"format must be raw or car, not {given!r}")
        return given, True
    if not accept:
        return "plain", False
    media = [item.split(";")[0].strip().lower() for item in accept.split(",")]
    for m in media:
        if m == RAW:
            return "raw", False
        if m == CAR:
            return "car", False
        if m in ("*/*", "text/*", "text/html", "application/*", "application/octet-stream", "application/xhtml+xml",
                 "text/plain") or m.startswith(("image/", "video/", "audio/")):
            return "plain", False
    raise HttpError(406, f"no answer here is of the types accepted ({accept}); the gateway answers "
                    f"{RAW}, {CAR} or the content itself")


def parse_entity_bytes(text: str) -> EntityBytes:
    """``from:to`` as the trustless-gateway spec writes it (``to`` may be
    ``*``; either may be negative); HttpError 400 if it is not that."""
    start_text, sep, end_text = text.partition(":")
    try:
        if not sep:
            raise ValueError
        start = int(start_text)
        end = None if end_text == "*" else int(end_text)
    except ValueError:
        raise HttpError(400, f"entity-bytes must be FROM:TO (TO may be *), not {text!r}") from None
    if end is not None and start >= 0 and end >= 0 and end < start:
        raise HttpError(400, f"entity-bytes {text!r} ends before it starts")
    return EntityBytes(start, end)


# -- Range (rule 4) ---------------------------------------------------------------


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The span [first, last + 1) a ``Range`` header asks of ``size``
    bytes; None to send the whole (no header, several ranges, a unit we do
    not know, a malformed one); HttpError 416 if it lies wholly past the end."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_text == "":
            suffix = int(last_text)
            if suffix <= 0:
                raise _unsatisfiable(size)
            return max(0, size - suffix), size
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first < 0 or last < first and first < size:
        return None
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1) + 1


def _unsatisfiable(size: int) -> HttpError:
    return HttpError(416, f"the range asked lies past the end of the content ({size} bytes)",
                     [("Content-Range", f"bytes */{size}")])


# -- caching (rule 5) -------------------------------------------------------------


def etag(cid: CID, request: Content) -> str:
    """The answer's ETag, quoted."""
    if request.format == "raw":
        return f'"{cid}.raw"'
    if request.format == "car":
        shape = f"{request.content_path}\0{request.scope}\0{request.entity_bytes}".encode()
        return f'"{cid}.car.{blake3.blake3(shape).hexdigest()[:16]}"'
    return f'"{cid}"'


def not_modified(request: Content, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weakly) or is ``*``."""
    for candidate in request.if_none_match:
        if candidate == "*" or candidate.removeprefix("W/") == tag:
            return True
    return False


def common_headers(cid: CID, request: Content, tag: str) -> list[tuple[str, str]]:
    """The headers every content answer carries."""
    headers = [
        ("ETag", tag),
        ("X-Ipfs-Path", quote(request.content_path, safe="/")),
        ("X-Content-Type-Options", "nosniff"),
        ("Vary", "Accept"),
        ("Cache-Control", IMMUTABLE if request.cid is not None else f"public, max-age={MUTABLE_MAX_AGE}"),
    ]
    if request.cid is not None and request.segments:
        headers.append(("X-Ipfs-Roots", str(cid)))
    if not request.explicit_format and request.format != "plain":
        # The same URL answers other formats too: say where this one lives.
        path = quote(request.content_path, safe="/")
        headers.append(("Content-Location", f"{path}?format={request.format}"))
    return headers


def content_type_for(name: str | None) -> str:
    """A file's ``Content-Type`` from its name's extension (the path's last
    segment), else ``application/octet-stream``."""
    if name:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed:
            return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
    return "application/octet-stream"


def attachment(cid: CID, suffix: str) -> tuple[str, str]:
    return ("Content-Disposition", f'attachment; filename="{cid}.{suffix}"')


# -- pages --------------------------------------------------------------------------


class Listed(NamedTuple):
    """One row of a directory listing."""

    name: str
    kind: str  # file, dir, symlink
    size: int
    cid: CID | None


STYLE = ("body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}"
         "table{border-collapse:collapse}td,th{padding:2px 12px;text-align:left}"
         "tr:nth-child(even){background:#f4f4f4}code{font-size:12px;color:#555}"
         ".n{text-align:right}h1{font-size:18px}h2{font-size:16px;margin-top:1.5em}")
"""The one stylesheet, inline: no page loads anything from elsewhere."""


def page_start(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width"><style>{STYLE}</style></head><body>\n')


def listing_head(request: Content, cid: CID, view: CID | None) -> str:
    """The top of a directory listing: its path, CID, the UnixFS view's CID
    (a cas directory's, for IPFS tools), and the table's head."""
    path = request.content_path
    out = [page_start(f"Index of {path}"), f"<h1>Index of {html.escape(path)}</h1>\n",
           f"<p>CID <code>{cid}</code>"]
    if view is not None and view != cid:
        out.append(f' &middot; as UnixFS for IPFS tools <a href="/ipfs/{view}/"><code>{view}</code></a>')
    out.append("</p>\n<table><tr><th>name</th><th class=n>size</th><th>CID</th></tr>\n")
    if request.segments:
        parent = path.rsplit("/", 1)[0]
        out.append(f'<tr><td><a href="{html.escape(quote(parent, safe="/"))}/">..</a></td><td></td><td></td></tr>\n')
    return "".join(out)


def listing_row(request: Content, entry: Listed) -> str:
    href = quote(request.content_path + "/" + entry.name, safe="/") + ("/" if entry.kind == "dir" else "")
    shown = html.escape(entry.name) + ("/" if entry.kind == "dir" else "")
    size = "" if entry.kind == "dir" else human(entry.size)
    link = f'<a href="{html.escape(href)}">{shown}</a>'
    cid = f"<code>{entry.cid}</code>" if entry.cid is not None else ""
    return f"<tr><td>{link}</td><td class=n>{size}</td><td>{cid}</td></tr>\n"


LISTING_END = "</table></body></html>\n"


def error_page(status: int, message: str) -> bytes:
    """A short plain-text error body (never a traceback)."""
    return f"{status} {reason(status)}: {message}\n".encode()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 414: "URI Too Long",
            416: "Range Not Satisfiable", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def reason(status: int) -> str:
    return _REASONS.get(status, "")
