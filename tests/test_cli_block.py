"""``cas block get|put|stat``: single blocks by CID, as ``ipfs block`` has them."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_cas

HELLO_SHA256_RAW = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
"""What kubo and helia name the raw block b"hello\\n" (sha2-256, CIDv1)."""


def test_put_prints_the_cid_ipfs_tools_give_and_get_returns_the_bytes(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    cid = run_cas("block", "put", "--hash", "sha2-256", repo=repo, input=b"hello\n").stdout.decode().strip()
    assert cid == HELLO_SHA256_RAW
    assert run_cas("block", "get", cid, repo=repo).stdout == b"hello\n"
    own = run_cas("block", "put", repo=repo, input=b"hello\n").stdout.decode().strip()
    assert own != cid and run_cas("block", "get", own, repo=repo).stdout == b"hello\n"  # BLAKE3 by default
    stat = json.loads(run_cas("--json", "block", "stat", cid, repo=repo).stdout)
    assert stat == {"cid": cid, "size": 6, "codec": "raw", "hash": "sha2-256", "version": 1}


def test_put_refuses_a_malformed_node_and_an_oversized_block_and_stores_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    bad = run_cas("block", "put", "--codec", "dag-pb", repo=repo, input=b"not dag-pb", check=False)
    assert bad.returncode == 1 and b"malformed dag-pb" in bad.stderr
    big = run_cas("block", "put", repo=repo, input=bytes(2 << 20), check=False)
    assert big.returncode == 1 and b"over the 1048576-byte limit" in big.stderr
    missing = run_cas("block", "get", HELLO_SHA256_RAW, repo=repo, check=False)
    assert missing.returncode == 1 and missing.stdout == b""
