"""``cas block get|put|stat``: single blocks, as ``ipfs block`` has them.

A block is at most 1 MiB of bytes named by its CID. ``get`` writes one
block's verified bytes to standard output, ``put`` stores bytes as one
block (raw by default; hashed with BLAKE3, or sha2-256 as IPFS tools hash)
and prints its CID, ``stat`` says what a block is. They work through the
daemon when one runs (a block this node lacks is fetched from the network)
and on the repository otherwise (:meth:`cas.Repository.get_block`,
:meth:`~cas.Repository.put_block`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .output import Output, human_size
from .repo_cmds import open_repo

_CODECS = {"raw": 0x55, "dag-pb": 0x70, "dag-cbor": 0x71}
_HASHES = {"blake3": 0x1E, "sha2-256": 0x12}


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("block", parents=common, help="single blocks: get, put, stat",
                       description="Single blocks (at most 1 MiB each), by CID, as 'ipfs block' has them.")
    block_sub = p.add_subparsers(dest="block_command", metavar="{get,put,stat}", required=True)
    g = block_sub.add_parser("get", parents=common, help="write a block's bytes to standard output",
                             description="Write the verified bytes of the block CID names to standard "
                             "output (through a running daemon, fetched from the network if this node "
                             "lacks it).")
    g.add_argument("cid", metavar="CID", help="the block's CID")
    g.set_defaults(run=cmd_get)
    u = block_sub.add_parser("put", parents=common, help="store bytes as one block and print its CID",
                             description="Store the bytes of FILE (or standard input) as one block and "
                             "print its CID. A dag-pb or dag-cbor block must decode; nothing over 1 MiB. "
                             "The block is not pinned unless --pin is given.")
    u.add_argument("file", nargs="?", default="-", metavar="FILE", help="the bytes (default: standard input)")
    u.add_argument("--codec", choices=sorted(_CODECS), default="raw", help="the block's codec (default raw)")
    u.add_argument("--hash", choices=sorted(_HASHES), default="blake3", dest="hash_name",
                   help="the hash its CID uses (default blake3; sha2-256 is what kubo and helia use)")
    u.add_argument("--pin", action="store_true", help="pin the block")
    u.set_defaults(run=cmd_put)
    s = block_sub.add_parser("stat", parents=common, help="a block's size, codec and hash",
                             description="The block CID names: its size, codec and hash function, read "
                             "and verified.")
    s.add_argument("cid", metavar="CID", help="the block's CID")
    s.set_defaults(run=cmd_stat)


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, read_only=True) as repo:
        data = repo.get_block(args.cid)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def cmd_put(args: argparse.Namespace, out: Output) -> int:
    from cas.blocks import Block
    from cas.errors import InvalidInputError
    from cas.store import links_of

    limit = 1 << 20
    if args.file == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(args.file, "rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    block = Block.of(_CODECS[args.codec], data, _HASHES[args.hash_name])  # refuses over 1 MiB
    links_of(block.cid, block.data)  # a dag-pb or dag-cbor block that does not decode is refused here
    with open_repo(args) as repo:
        cid = repo.put_block(data, _CODECS[args.codec], hash_code=_HASHES[args.hash_name])
        if args.pin:
            repo.pin(cid)
    out.document({"cid": str(cid), "size": len(data)})
    out.result(str(cid))
    return 0


def cmd_stat(args: argparse.Namespace, out: Output) -> int:
    from cas.cid import CODEC_NAMES, HASH_NAMES, parse_cid

    cid = parse_cid(args.cid)
    with open_repo(args, read_only=True) as repo:
        data = repo.get_block(cid)
    doc = {"cid": str(cid), "size": len(data), "codec": CODEC_NAMES[cid.codec], "hash": HASH_NAMES[cid.hash_code],
           "version": 0 if cid.is_v0 else 1}
    out.document(doc)
    out.result(f"{cid}  {len(data)} bytes ({human_size(len(data))}), {doc['codec']}, {doc['hash']}, "
               f"CIDv{doc['version']}")
    return 0
