"""IPFS readability: the IPFS JavaScript stack decodes and reassembles our files.

tests/js/read_dag.mjs runs ``@ipld/dag-pb`` (a strict dag-pb decoder) and
``ipfs-unixfs`` over the blocks of a file cas built, and reports what they
see. These are independent implementations of the specs cas follows, so
agreement here is evidence that kubo and helia read cas files, not just that
cas agrees with itself.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import blake3
import pytest

from cas import files
from cas.blocks import MemoryBlockStore
from cas.cid import CID, DAG_PB
from cas.dagpb import decode_node, decode_unixfs
from cas.files import FileBuilder

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "read_dag.mjs"



def read_with_js(node_js: str, store: MemoryBlockStore, root: CID) -> dict:
    payload = {
        "root": str(root),
        "blocks": {str(cid): base64.b64encode(store.get(cid)).decode() for cid in store.iterate()},
    }
    run = subprocess.run(
        [node_js, str(SCRIPT)], input=json.dumps(payload), capture_output=True, text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def our_view(store: MemoryBlockStore, cid: CID) -> dict:
    """What cas decodes from a node, in the shape the script reports."""
    node = decode_node(store.get(cid))
    unixfs = decode_unixfs(node.data)
    return {
        "type": "file",
        "links": [{"hash": str(link.hash), "name": link.name, "tsize": link.tsize} for link in node.links],
        "blockSizes": list(unixfs.blocksizes),
        "fileSize": unixfs.filesize,
        "reencodes": True,
        "remarshals": True,
    }


def xof(seed: str, length: int) -> bytes:
    return blake3.blake3(seed.encode()).digest(length=length)


@pytest.mark.parametrize("length, fanout, depth", [(4 << 20, 1024, 1), (3_000_000, 2, 4)])
def test_ipfs_decoders_see_the_same_nodes_and_reassemble_the_file(
    node_js: str, length: int, fanout: int, depth: int
) -> None:
    store = MemoryBlockStore()
    data = xof(f"ipfs compat {length}", length)
    root = files.add_bytes(store, data, fanout=fanout).cid
    seen = read_with_js(node_js, store, root)

    interior = {cid for cid in store.iterate() if cid.codec == DAG_PB}
    assert set(seen["nodes"]) == {str(cid) for cid in interior}
    for cid in interior:
        # Same links, names, Tsizes, blocksizes and filesize; and both
        # libraries write back exactly our bytes (our encoding is canonical).
        assert seen["nodes"][str(cid)] == our_view(store, cid)
    assert base64.b64decode(seen["content"]) == data
    assert seen["nodes"][str(root)]["fileSize"] == length

    # the tree really is as deep as the case claims
    levels, cid = 0, root
    while cid.codec == DAG_PB:
        cid = decode_node(store.get(cid)).links[0].hash
        levels += 1
    assert levels == depth


def test_ipfs_decoders_read_a_node_of_many_links(node_js: str) -> None:
    # A full-width node (1024 links) stays canonical for the independent
    # decoder too: exercises two-byte lengths and large blocksizes lists.
    store = MemoryBlockStore()
    builder = FileBuilder()
    chunks = [xof(f"wide {i}", 1 + i % 7) for i in range(1024)]
    for chunk in chunks:
        for block in builder.push(chunk):
            store.put(block)
    blocks, root, _ = builder.finish()
    for block in blocks:
        store.put(block)
    seen = read_with_js(node_js, store, root)
    assert seen["nodes"][str(root)] == our_view(store, root)
    assert len(seen["nodes"][str(root)]["links"]) == 1024
    assert base64.b64decode(seen["content"]) == b"".join(chunks)
