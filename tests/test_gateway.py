"""The HTTP gateway of a real ``cas daemon --gateway``, asked over plain
HTTP as a browser, curl or an IPFS client would: raw blocks and CARs
(parsed and every block re-hashed), file bytes with Range, listings,
/ns paths, errors, caching, the status page and /metrics."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cas.blocks import verified
from cas.car import END, NEED_DATA, CarBlock, CarHeader, CarReader
from cas.cid import CID, RAW, parse_cid
from cas.store._links import links_of

from .conftest import JS_DIR, run_cas, skip_unless_ci
from .nodeproc import Daemon, Daemons, wait_until

FILE_SIZE = 3_000_000


class Site(NamedTuple):
    daemon: Daemon
    data: bytes
    file: CID
    docs: CID
    key: str


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("gateway")
    repo = base / "repo"
    data = os.urandom(FILE_SIZE)
    (base / "big.bin").write_bytes(data)
    docs = base / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("hello\n")
    (docs / '<b>&"x".html').write_text("<b>bold</b>\n")
    (docs / "sub" / "c.txt").write_text("deep\n")
    file = parse_cid(run_cas("add", str(base / "big.bin"), repo=repo).stdout.decode().split()[-1])
    tree = parse_cid(run_cas("add", "-r", str(docs), "--to", "/docs", repo=repo).stdout.decode().split()[-1])
    with Daemons() as daemons:
        daemon = daemons.start(repo, extra=["--gateway", "127.0.0.1:0"])
        assert daemon.gateway.startswith("http://127.0.0.1:")
        key = json.loads(run_cas("--json", "name", "publish", repo=repo).stdout)["key"]
        yield Site(daemon, data, file, tree, key)


def get(site: Site, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Answer:
    url = urlsplit(site.daemon.gateway)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def car_blocks(body: bytes) -> tuple[CarHeader, list[CarBlock]]:
    """The CAR's header and blocks, each block re-hashed against its CID."""
    reader = CarReader()
    reader.receive_data(body)
    reader.receive_data(b"")
    header, blocks = None, []
    while (event := reader.next_event()) is not END:
        assert event is not NEED_DATA
        if isinstance(event, CarHeader):
            header = event
        else:
            assert isinstance(event, CarBlock)
            verified(event.cid, event.data)
            blocks.append(event)
    assert header is not None
    return header, blocks


def test_a_raw_block_is_the_block_its_cid_names(site: Site) -> None:
    answer = get(site, f"/ipfs/{site.file}?format=raw")
    assert answer.status == 200
    verified(site.file, answer.body)
    assert answer.headers["content-type"] == "application/vnd.ipld.raw"
    assert answer.headers["etag"] == f'"{site.file}.raw"'
    assert answer.headers["cache-control"] == "public, max-age=29030400, immutable"
    assert answer.headers["content-disposition"] == f'attachment; filename="{site.file}.bin"'
    by_accept = get(site, f"/ipfs/{site.file}", {"Accept": "application/vnd.ipld.raw"})
    assert by_accept.body == answer.body


def test_a_car_of_a_file_holds_its_whole_dag_every_block_verified(site: Site) -> None:
    answer = get(site, f"/ipfs/{site.file}?format=car")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/vnd.ipld.car; version=1")
    header, blocks = car_blocks(answer.body)
    assert header.roots == (site.file,) and blocks[0].cid == site.file
    present = {b.cid for b in blocks}
    for block in blocks:  # complete: every link is in the CAR
        assert set(links_of(block.cid, block.data)) <= present
    leaves = b"".join(b.data for b in blocks if b.cid.codec == RAW)
    assert leaves == site.data  # depth first: the leaves in file order


def test_car_scopes_give_the_path_then_the_block_the_entity_or_a_range(site: Site) -> None:
    _, block = car_blocks(get(site, f"/ipfs/{site.docs}/sub/c.txt?format=car&dag-scope=block").body)
    assert block[0].cid == site.docs and block[-1].data == b"deep\n"  # the path's blocks, then the file
    _, whole = car_blocks(get(site, f"/ipfs/{site.file}?format=car&dag-scope=entity").body)
    _, part = car_blocks(get(site, f"/ipfs/{site.file}?format=car&entity-bytes=0:1000").body)
    assert part[0].cid == site.file and 1 < len(part) < len(whole)
    assert part[-1].data[:1000] == site.data[:1000]
    tail = get(site, f"/ipfs/{site.file}?format=car&entity-bytes=-10:*")
    _, tail_blocks = car_blocks(tail.body)
    assert tail_blocks[-1].data.endswith(site.data[-10:])
    assert tail.headers["etag"] != get(site, f"/ipfs/{site.file}?format=car", method="HEAD").headers["etag"]


def test_a_file_is_served_whole_or_by_range(site: Site) -> None:
    whole = get(site, f"/ipfs/{site.file}")
    assert whole.status == 200 and whole.body == site.data
    assert whole.headers["content-length"] == str(FILE_SIZE) and whole.headers["accept-ranges"] == "bytes"
    part = get(site, f"/ipfs/{site.file}", {"Range": "bytes=1000000-1000099"})
    assert part.status == 206 and part.body == site.data[1000000:1000100]
    assert part.headers["content-range"] == f"bytes 1000000-1000099/{FILE_SIZE}"
    assert get(site, f"/ipfs/{site.file}", {"Range": "bytes=-5"}).body == site.data[-5:]
    beyond = get(site, f"/ipfs/{site.file}", {"Range": f"bytes={FILE_SIZE}-"})
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{FILE_SIZE}"
    head = get(site, f"/ipfs/{site.file}", method="HEAD")
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(FILE_SIZE)


def test_a_directory_is_listed_as_html_with_names_escaped_and_files_typed(site: Site) -> None:
    answer = get(site, f"/ipfs/{site.docs}/")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.body.decode()
    assert "&lt;b&gt;&amp;&quot;x&quot;.html" in page and "<b>&" not in page
    assert f'href="/ipfs/{site.docs}/a.txt"' in page and f'href="/ipfs/{site.docs}/sub/"' in page
    text = get(site, f"/ipfs/{site.docs}/a.txt")
    assert text.body == b"hello\n" and text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.headers["x-ipfs-path"] == f"/ipfs/{site.docs}/a.txt"
    assert text.headers["x-content-type-options"] == "nosniff"


def test_the_unixfs_view_named_in_a_listing_is_served_by_its_cid(site: Site) -> None:
    page = get(site, f"/ipfs/{site.docs}/").body.decode()
    view = parse_cid(page.split("as UnixFS for IPFS tools")[1].split("<code>")[1].split("</code>")[0])
    assert view.codec != site.docs.codec
    assert get(site, f"/ipfs/{view}/sub/c.txt").body == b"deep\n"
    _, blocks = car_blocks(get(site, f"/ipfs/{view}?format=car").body)
    assert blocks[0].cid == view and any(b.data == b"deep\n" for b in blocks)


def test_helias_trustless_gateway_broker_fetches_a_cas_file_and_directory(site: Site, node_js: str) -> None:
    """@helia/block-brokers' trustless-gateway broker (routed to the gateway by
    @helia/routers' httpGatewayRouting), under ipfs-unixfs-exporter: every
    block asked with ?format=raw and checked against its CID by the script."""
    page = get(site, f"/ipfs/{site.docs}/").body.decode()
    view = page.split("as UnixFS for IPFS tools")[1].split("<code>")[1].split("</code>")[0]
    done = subprocess.run([node_js, str(JS_DIR / "gateway_fetch.mjs"), site.daemon.gateway, str(site.file), view],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    [file] = found[str(site.file)]
    assert file["sha256"] == hashlib.sha256(site.data).hexdigest() and file["size"] == FILE_SIZE
    files = {e["path"].split("/", 1)[1]: e.get("sha256") for e in found[view] if "/" in e["path"]}
    assert files["a.txt"] == hashlib.sha256(b"hello\n").hexdigest()
    assert files["sub/c.txt"] == hashlib.sha256(b"deep\n").hexdigest()
    assert '<b>&"x".html' in files and files["sub"] is None


def test_a_published_namespace_is_served_under_ns(site: Site) -> None:
    answer = get(site, f"/ns/{site.key}/docs/sub/c.txt")
    assert answer.status == 200 and answer.body == b"deep\n"
    assert answer.headers["cache-control"] == "public, max-age=60"
    assert get(site, f"/ns/{site.key}/docs/nothing").status == 404
    assert get(site, f"/ns/{'0' * 64}/docs").status == 404


def test_errors_are_statuses_with_a_line_never_a_traceback(site: Site) -> None:
    missing = CID.for_data(RAW, b"nobody has this")
    cases = {
        "/ipfs/not-a-cid": 400, f"/ipfs/{site.docs}/..": 400, f"/ipfs/{site.docs}/nothing": 404,
        f"/ipfs/{missing}": 404, f"/ipfs/{missing}?format=raw": 404, "/elsewhere": 404,
        f"/ipfs/{site.file}?format=tar": 400,
    }
    for path, status in cases.items():
        answer = get(site, path)
        assert answer.status == status, path
        assert b"Traceback" not in answer.body and answer.body.startswith(str(status).encode())
    assert get(site, f"/ipfs/{site.file}", {"Accept": "application/json"}).status == 406
    assert get(site, f"/ipfs/{site.file}", method="DELETE").status == 405


def test_an_etag_asked_again_is_304(site: Site) -> None:
    first = get(site, f"/ipfs/{site.docs}/a.txt")
    again = get(site, f"/ipfs/{site.docs}/a.txt", {"If-None-Match": first.headers["etag"]})
    assert again.status == 304 and again.body == b""
    raw = get(site, f"/ipfs/{site.file}?format=raw", {"If-None-Match": f'"{site.file}.raw"'})
    assert raw.status == 304


def test_one_connection_serves_several_requests(site: Site) -> None:
    url = urlsplit(site.daemon.gateway)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        for _ in range(3):
            conn.request("GET", f"/ipfs/{site.docs}/a.txt")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"hello\n"
    finally:
        conn.close()


def test_the_status_page_and_metrics_show_the_node(site: Site) -> None:
    page = get(site, "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    text = page.body.decode()
    assert site.daemon.node_id in text and "blocks below R" in text and "<script" not in text
    assert "http" not in text.split("<body>")[0].replace('content="width=device-width"', "")  # nothing fetched
    metrics = {s.name: s for family in text_string_to_metric_families(get(site, "/metrics").body.decode())
               for s in family.samples}
    assert metrics["cas_blocks_stored"].value > 0 and metrics["cas_peers"].value == 0
    assert metrics["cas_node_info"].labels["node_id"] == site.daemon.node_id
    answered = {s.labels["status"]: s.value for family in text_string_to_metric_families(
        get(site, "/metrics").body.decode()) for s in family.samples if s.name == "cas_gateway_responses_total"}
    assert answered["200"] >= 1


def test_the_gateway_is_a_setting_and_a_bare_port_is_loopback(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    run_cas("config", "set", "gateway", "0", repo=repo)
    assert run_cas("config", "get", "gateway", repo=repo).stdout.decode().strip() == "0"
    with Daemons() as daemons:
        daemon = daemons.start(repo)
        assert daemon.gateway.startswith("http://127.0.0.1:")
        answer = get(Site(daemon, b"", CID.for_data(RAW, b""), CID.for_data(RAW, b""), ""), "/status")
        assert answer.status == 200
    assert run_cas("config", "set", "gateway", "nowhere:x", repo=repo, check=False).returncode != 0


@pytest.mark.slow
def test_the_status_page_in_headless_chromium_shows_the_nodes_peers(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        skip_unless_ci("Debian's chromium is needed to open the status page as a browser does")
        return
    with Daemons() as daemons:
        a = daemons.start(tmp_path / "a", extra=["--gateway", "127.0.0.1:0"])
        b = daemons.start(tmp_path / "b", bootstrap=[a.address])
        wait_until(lambda: b.node_id in run_cas("peers", repo=a.repo).stdout.decode(), 30, "a to know b")
        shown = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={tmp_path / 'browser'}", "--dump-dom", a.gateway],
            capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr[-2000:]
        dom = shown.stdout
        assert a.node_id in dom and "Peers (1)" in dom
        peers = dom.split('id="peers"')[1].split("</table>")[0]
        assert b.node_id in peers and f"127.0.0.1:{b.port}" in peers
