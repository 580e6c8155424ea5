"""The gateway's request routing and answer headers (cas.gateway.router),
sans-IO: plain values in, records or HTTP errors out."""

from __future__ import annotations

import pytest

from cas.cid import CID, RAW
from cas.errors import HttpError
from cas.gateway.router import (
    CAR,
    Content,
    EntityBytes,
    Listed,
    Page,
    byte_range,
    common_headers,
    content_type_for,
    etag,
    listing_row,
    not_modified,
    parse_entity_bytes,
    route,
)

CID_TEXT = str(CID.for_data(RAW, b"hello"))


def _status(method: str, target: str, headers: list[tuple[str, str]] | None = None) -> int:
    with pytest.raises(HttpError) as caught:
        route(method, target, headers or [])
    return caught.value.status


def test_ipfs_paths_route_to_content_with_their_segments_unquoted() -> None:
    found = route("GET", f"/ipfs/{CID_TEXT}/a%20b/c.txt", [])
    assert isinstance(found, Content)
    assert str(found.cid) == CID_TEXT and found.segments == ("a b", "c.txt") and found.format == "plain"
    assert found.content_path == f"/ipfs/{CID_TEXT}/a b/c.txt"


def test_status_metrics_and_ns_paths_route_to_their_pages() -> None:
    assert route("GET", "/", []) == Page("GET", "status")
    assert route("HEAD", "/status", []) == Page("HEAD", "status")
    assert route("GET", "/metrics", []) == Page("GET", "metrics")
    key = "ab" * 32
    found = route("GET", f"/ns/{key.upper()}/docs/x", [])
    assert isinstance(found, Content) and found.key == key and found.segments == ("docs", "x")


@pytest.mark.parametrize("target", ["/ipfs/notacid", "/ipfs/bafy!!", "/ns/12345", f"/ipfs/{CID_TEXT}/..",
                                    f"/ipfs/{CID_TEXT}/a%00b", f"/ipfs/{CID_TEXT}?format=zip",
                                    f"/ipfs/{CID_TEXT}?format=car&dag-scope=most",
                                    f"/ipfs/{CID_TEXT}?format=car&entity-bytes=9",
                                    f"/ipfs/{CID_TEXT}?dag-scope=block"])
def test_what_does_not_parse_is_400(target: str) -> None:
    assert _status("GET", target) == 400


def test_other_paths_are_404_other_methods_405_with_allow() -> None:
    assert _status("GET", "/favicon.ico") == 404
    assert _status("GET", "/ipfs/") == 404
    with pytest.raises(HttpError) as caught:
        route("PUT", f"/ipfs/{CID_TEXT}", [])
    assert caught.value.status == 405 and ("Allow", "GET, HEAD") in caught.value.headers
    assert _status("GET", "/ipfs/" + "a" * 9000) == 414


def test_format_parameter_wins_over_accept_and_accept_negotiates() -> None:
    def fmt(target: str, accept: str | None = None) -> str:
        found = route("GET", target, [("Accept", accept)] if accept else [])
        assert isinstance(found, Content)
        return found.format

    base = f"/ipfs/{CID_TEXT}"
    assert fmt(base + "?format=raw", CAR) == "raw"
    assert fmt(base, "application/vnd.ipld.raw") == "raw"
    assert fmt(base, f"{CAR}; version=1; order=dfs, */*;q=0.1") == "car"
    assert fmt(base, "text/html,application/xhtml+xml,*/*;q=0.8") == "plain"
    assert fmt(base) == "plain"
    assert _status("GET", base, [("Accept", "application/json")]) == 406


def test_entity_bytes_implies_entity_scope_and_resolves_against_the_size() -> None:
    found = route("GET", f"/ipfs/{CID_TEXT}?format=car&entity-bytes=10:-5", [])
    assert isinstance(found, Content) and found.scope == "entity"
    assert found.entity_bytes == EntityBytes(10, -5)
    assert EntityBytes(10, -5).resolve(100) == (10, 96)
    assert parse_entity_bytes("0:*").resolve(7) == (0, 7)
    assert parse_entity_bytes("-3:*").resolve(7) == (4, 7)
    assert parse_entity_bytes("5:1000").resolve(7) == (5, 7)
    assert parse_entity_bytes("9:*").resolve(7) is None
    with pytest.raises(HttpError):
        parse_entity_bytes("5:2")


def test_range_header_gives_a_span_or_the_whole_or_416() -> None:
    assert byte_range(None, 100) is None
    assert byte_range("bytes=0-9", 100) == (0, 10)
    assert byte_range("bytes=90-", 100) == (90, 100)
    assert byte_range("bytes=-10", 100) == (90, 100)
    assert byte_range("bytes=50-500", 100) == (50, 100)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole, as RFC 9110 allows
    assert byte_range("items=0-1", 100) is None
    with pytest.raises(HttpError) as caught:
        byte_range("bytes=100-", 100)
    assert caught.value.status == 416 and ("Content-Range", "bytes */100") in caught.value.headers


def test_etags_carry_the_format_and_if_none_match_matches_them() -> None:
    cid = CID.for_data(RAW, b"hello")
    plain = route("GET", f"/ipfs/{cid}", [("If-None-Match", f'W/"{cid}", "other"')])
    raw = route("GET", f"/ipfs/{cid}?format=raw", [])
    car = route("GET", f"/ipfs/{cid}?format=car", [])
    block = route("GET", f"/ipfs/{cid}?format=car&dag-scope=block", [])
    assert isinstance(plain, Content) and isinstance(raw, Content)
    assert isinstance(car, Content) and isinstance(block, Content)
    assert etag(cid, plain) == f'"{cid}"' and etag(cid, raw) == f'"{cid}.raw"'
    assert etag(cid, car).startswith(f'"{cid}.car.') and etag(cid, car) != etag(cid, block)
    assert not_modified(plain, etag(cid, plain)) and not not_modified(plain, etag(cid, raw))


def test_ipfs_answers_are_immutable_and_say_their_path() -> None:
    cid = CID.for_data(RAW, b"hello")
    found = route("GET", f"/ipfs/{cid}/a", [("Accept", "application/vnd.ipld.raw")])
    assert isinstance(found, Content)
    headers = dict(common_headers(cid, found, etag(cid, found)))
    assert headers["Cache-Control"] == "public, max-age=29030400, immutable"
    assert headers["X-Ipfs-Path"] == f"/ipfs/{cid}/a" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Location"] == f"/ipfs/{cid}/a?format=raw"


def test_listing_rows_escape_names_and_content_types_follow_extensions() -> None:
    found = route("GET", f"/ipfs/{CID_TEXT}", [])
    assert isinstance(found, Content)
    row = listing_row(found, Listed('<script>"x"&.html', "file", 3, None))
    assert "<script>" not in row and "&lt;script&gt;" in row and "%3Cscript%3E" in row
    assert content_type_for("a.html") == "text/html; charset=utf-8"
    assert content_type_for("a.png") == "image/png"
    assert content_type_for(None) == "application/octet-stream"
