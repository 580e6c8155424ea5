"""Every example in README.md, run as written (tests/readme.py says how),
with what its comments promise checked. A README that drifts from the code
fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cas.blocks import verified
from cas.cid import parse_cid
from tests import nodeproc
from tests.conftest import JS_DIR, pseudo_random
from tests.fusemount import require_fuse, wait_for
from tests.readme import CID_PATTERN, Line, Result, Shell, block, lines_of


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    s = Shell(tmp_path)
    try:
        yield s
    finally:
        s.close()


def run_all(shell: Shell, text: str) -> dict[str, Result]:
    """Run every line; each must succeed. Results by the README's command."""
    results = {}
    for line in lines_of(text):
        result = shell.run(line)
        assert result.returncode == 0, f"README line {line.command!r} failed: {result.stderr}"
        results[line.command] = result
    return results


def test_using_it(shell: Shell) -> None:
    photo = pseudo_random(300_000, "readme photo")
    (shell.work / "photo.jpg").write_bytes(photo)
    thesis = shell.home / "projects" / "thesis"
    thesis.mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{article}\n")
    results = run_all(shell, block("Using it"))

    cid = shell.values["CID"]
    assert results["cas add photo.jpg"].text.strip() == cid  # prints the file's CID
    assert CID_PATTERN.fullmatch(results["cas add -r ~/projects/thesis"].text.strip())
    assert (shell.work / "copy.jpg").read_bytes() == photo
    assert results["cas cat CID --offset 1000 --length 100"].stdout == photo[1000:1100]
    assert (shell.work / "restored" / cid).read_bytes() == photo  # into restored/, under its CID
    stat = results["cas repo stat"].text
    assert all(word in stat for word in ("blocks", "size", "pinned", "packs"))


def test_the_namespace(shell: Shell) -> None:
    photos = shell.home / "photos"
    photos.mkdir()
    cat = pseudo_random(50_000, "readme cat")
    (photos / "cat.jpg").write_bytes(cat)
    results = run_all(shell, block("The namespace: paths, renames, history"))

    assert "cat.jpg" in results["cas ls -l /backup/2026/photos"].text
    assert results["cas cat /archive/cat.jpg"].stdout == cat
    deleted = [command for command in results if "--at" in command][0]
    assert results[deleted].stdout == cat  # read a deleted file from history
    versions = results["cas log"].text.strip().splitlines()
    assert len(versions) >= 5
    newest = versions[0].split()
    assert CID_PATTERN.fullmatch(newest[-1])
    assert newest[-1] in results["cas root"].text  # root CID, sequence number, public key


def test_history(shell: Shell) -> None:
    results = run_all(shell, block("History"))

    newest = results["cas log -n 2"].text.strip().splitlines()
    assert [line.split()[0] for line in newest] == ["3", "2"]
    assert [line.split()[0] for line in results["cas log -n 2 --before 2"].text.strip().splitlines()] == ["1"]
    assert "would drop 0 of 3 versions" in results["cas prune --dry-run"].text
    assert "history.keep = 2h:all 7d:1d forever:30d" in results["cas prune --dry-run"].stderr


@pytest.mark.slow
def test_the_mount(shell: Shell) -> None:
    require_fuse()
    site = shell.home / "projects" / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<h1>hello</h1>\n")
    for argv in (["init", "-q"], ["add", "index.html"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *argv], cwd=site, env=shell.env, check=True, capture_output=True)
    try:
        results = run_all(shell, block("The mount"))
    finally:
        if os.path.ismount(shell.home / "cas"):
            subprocess.run(["fusermount3", "-u", "-z", str(shell.home / "cas")], capture_output=True)
    assert "first" in results["git -C ~/cas/site log"].text
    assert "index.html" in results["cas ls /site"].text
    assert not os.path.ismount(shell.home / "cas")


@pytest.mark.slow
def test_two_daemons_that_find_each_other(shell: Shell) -> None:
    results = run_all(shell, block("The network: two daemons that find each other"))
    a_id, where = results["cas --repo /tmp/a id"].text.split()
    assert re.fullmatch(r"[0-9a-f]{64}", a_id) and where == f"127.0.0.1:{shell.ports['4711']}"
    assert a_id[:16] in results["cas --repo /tmp/b peers"].text  # b knows a
    find = [command for command in results if command.startswith("cas --repo /tmp/a dht find")][0]
    assert "1 closest" in results[find].text or "closest" in results[find].text
    assert all(job.returncode == 0 for job in shell.jobs)  # SIGTERM: a clean shutdown


@pytest.mark.slow
def mount_logs(shell: Shell) -> str:
    """The end of every mount process's log under the shell's root (where a
    mount process that did not end after its unmount left its stacks)."""
    return "".join(f"\n--- {log}:\n{log.read_text(errors='replace')[-6000:]}"
                   for log in sorted(shell.root.glob("tmp/*/mount.log")))


def test_three_nodes_sharing_files_and_a_published_namespace(shell: Shell) -> None:
    require_fuse()
    photo = pseudo_random(2_000_000, "readme shared photo")
    (shell.work / "photo.jpg").write_bytes(photo)
    (shell.work / "site").mkdir()
    (shell.work / "site" / "index.html").write_text("<h1>site</h1>\n")
    (shell.work / "news.txt").write_text("news\n")
    notes = pseudo_random(1_500_000, "readme notes")
    (shell.work / "notes.txt").write_bytes(notes)
    mount = shell.root / "tmp" / "a-site"
    files = shell.root / "tmp" / "a-files"
    try:
        results = {}
        for line in lines_of(block("Three nodes sharing files") + "\n" + block("Three nodes sharing files", 1)):
            if "news.txt" in line.command:
                results[line.command] = shell.run(line)
                # shows in c's mount within --refresh (30 s)
                wait_for(lambda: (mount / "site" / "news.txt").exists(), timeout=60,
                         what="the new file in the published mount")
                continue
            result = shell.run(line)
            if line.comment.startswith("Read-only file system"):
                assert result.returncode != 0 and "Read-only file system" in result.stderr
                continue
            assert result.returncode == 0, f"README line {line.command!r} failed: {result.stderr}{mount_logs(shell)}"
            results[line.command] = result
            if line.command.startswith("cas --repo /tmp/a name publish"):
                key = re.search(r"key\s+([0-9a-f]{64})", result.text)
                assert key is not None, result.text  # prints key <64 hex digits>, seq, root
                shell.values["KEY"] = key.group(1)
            if line.command.startswith("cas --repo /tmp/a umount"):
                # its blocks go to the 3 nodes too, as an add's do
                assert not os.path.ismount(files)
                stat = json.loads(shell.run(Line("cas --repo /tmp/a --json stat /notes.txt", "")).text)
                blocks = nodeproc.dag_of(shell.root / "tmp" / "a", parse_cid(stat["cid"]))
                for node in "bc":
                    wait_for(lambda node=node, blocks=blocks: all(nodeproc.has(shell.root / "tmp" / node, b) for b in blocks),
                             timeout=60, what=f"the mount's blocks on node {node}")
    finally:
        for path in (mount, files):
            if os.path.ismount(path):
                subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)
    added = results["cas --repo /tmp/a add photo.jpg"]
    assert "photo.jpg: stored on 3 of 3 nodes" in added.stderr
    assert (shell.work / "copy.jpg").read_bytes() == photo
    assert "index.html" in results["cas --repo /tmp/c ls /ns/KEY/site"].text
    assert all(job.returncode == 0 for job in shell.jobs)


@pytest.mark.slow
def test_private_networks(shell: Shell) -> None:
    lines = list(lines_of(block("Private networks")))
    for line in lines[:-1]:
        result = shell.run(line)
        assert result.returncode == 0, f"README line {line.command!r} failed: {result.stderr}"
    stranger = lines[-1]
    result = shell.run(stranger, timeout=60)
    assert result.returncode == 1  # refused at once, saying so as the README shows
    assert result.stderr.strip().splitlines()[-1] == shell.text(stranger.comment)
    fingerprint = [line for line in lines if "stderr: private network" in line.comment][0]
    assert "private network, key fingerprint" in shell.stderr_of(1), fingerprint.comment
    for job in shell.jobs:
        shell.stop(job)
        assert job.returncode == 0


def test_ipfs_car_files_both_ways(shell: Shell, node_js: str) -> None:
    site = shell.home / "site"
    (site / "img").mkdir(parents=True)
    (site / "index.html").write_bytes(b"<h1>hello from IPFS</h1>\n")
    (site / "img" / "big.bin").write_bytes(pseudo_random(1_500_000, "readme site"))
    (shell.work / "report.pdf").write_bytes(pseudo_random(700_000, "readme report"))
    shell.env["PATH"] = f"{JS_DIR / 'node_modules' / '.bin'}{os.pathsep}{shell.env['PATH']}"  # ipfs-car
    results = run_all(shell, block("IPFS: CAR files, IPFS hashes, UnixFS directories"))

    root = shell.values["ROOT"]
    assert root.startswith("bafybei")  # CIDv1, dag-pb, sha2-256: ipfs-car's own root
    assert results["cas car import site.car"].text.split() == [root]  # prints the root
    assert results["cas ls ROOT"].text.split() == ["img/", "index.html"]
    assert results["cas cat ROOT/index.html"].stdout == b"<h1>hello from IPFS</h1>\n"
    assert (shell.work / "site-copy" / "img" / "big.bin").read_bytes() == (site / "img" / "big.bin").read_bytes()
    assert run_all(shell, "cas ls /site")["cas ls /site"].text.split() == ["img/", "index.html"]
    assert (shell.work / "report.car").stat().st_size > 700_000
    assert (shell.work / "site-again.car").read_bytes()[:1] == b"\x3a"  # a CARv1 header: varint 58

    views = run_all(shell, block("IPFS: CAR files, IPFS hashes, UnixFS directories", 1))
    view = CID_PATTERN.search(views["cas car export /www -o www.car"].stderr)  # prints the view's root
    assert view is not None and view.group(0).startswith("bafyb4i")  # dag-pb (UnixFS), BLAKE3
    seen = subprocess.run([node_js, str(JS_DIR / "car_tools.mjs"), "read", str(shell.work / "www.car"),
                           "index.html"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert view.group(0) in seen and "index.html" in seen  # read by the IPFS tools
    assert (shell.work / "www-cas.car").stat().st_size > 0


def test_the_http_gateway(shell: Shell) -> None:
    site = shell.home / "site"
    (site / "img").mkdir(parents=True)
    (site / "index.html").write_bytes(b"<h1>hello over HTTP</h1>\n")
    big = pseudo_random(600_000, "readme gateway")
    (site / "img" / "big.bin").write_bytes(big)
    results = run_all(shell, block("The HTTP gateway, status page and metrics"))

    cid = shell.values["CID"]
    assert results["curl -s http://127.0.0.1:4712/ipfs/CID/index.html"].stdout == b"<h1>hello over HTTP</h1>\n"
    assert results["curl -s -r 0-99 http://127.0.0.1:4712/ipfs/CID/img/big.bin"].stdout == big[:100]
    car = (shell.work / "www.car").read_bytes()
    assert car[:1] == b"\x3a" and len(car) > 600_000  # a CARv1 of the whole DAG
    block_bytes = (shell.work / "root.block").read_bytes()
    assert verified(parse_cid(cid), block_bytes) == block_bytes  # the block its CID names
    listing = results["curl -s http://127.0.0.1:4712/ipfs/CID/img/"].text
    assert "big.bin" in listing and "as UnixFS for IPFS tools" in listing
    assert "cas_blocks_stored" in results["curl -s http://127.0.0.1:4712/metrics"].text
    assert all(job.returncode == 0 for job in shell.jobs)  # SIGTERM: a clean shutdown


def test_the_python_library(shell: Shell) -> None:
    (shell.work / "video.mkv").write_bytes(pseudo_random(3_000_000, "readme video"))
    photos = shell.work / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"a cat")
    code = block("The Python library", language="python")
    result = subprocess.run([sys.executable, "-c", code], cwd=shell.work,
                            env={**shell.env, "CAS_HOME": str(shell.home / "repo")},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert CID_PATTERN.fullmatch(printed[0])  # bafyb4i...
    assert printed[1:] == ["cat.jpg file 5"]


def test_running_a_node_as_a_service(shell: Shell) -> None:
    results = run_all(shell, block("Running a node as a service"))
    listed = results["cas config list"].text.splitlines()
    assert "quota                        50G" in listed and "lease                        -" in listed
    unit = shell.home / ".config" / "systemd" / "user" / "cas.service"
    assert f"--repo {shell.home}/.local/share/cas daemon" in unit.read_text()
    assert "systemctl --user" in results["cas service install --user"].stderr


def test_the_trio_library_paragraph(shell: Shell) -> None:
    """The README's trio paragraph, as a program would use it."""
    code = """
import trio, cas

async def main():
    async with await cas.AsyncRepository.open() as repo:
        await repo.add_bytes(b"hello", to="/backup/hello.txt")
        print([entry.name for entry in await repo.ls("/backup")])
        await repo.mv("/backup/hello.txt", "/backup/hi.txt")
        async with await repo.open_file("/backup/hi.txt") as f:
            print((await f.read()).decode())

trio.run(main)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=shell.work,
                            env={**shell.env, "CAS_HOME": str(shell.home / "repo")},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['hello.txt']", "hello"]
