"""``cas car export`` and ``cas car import``: CAR files, IPFS's archives.

A CAR carries blocks with their CIDs; kubo (``ipfs dag import/export``),
helia and ipfs-car read and write them. ``export`` writes a CARv1 of a
whole DAG; ``import`` reads CARv1 or CARv2, verifies every block, and
stores all of it or nothing (:meth:`cas.Repository.import_car`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .output import Output, human_size
from .repo_cmds import NAMESPACE_CODE, open_repo


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("car", parents=common, help="CAR files: export a DAG, import IPFS's blocks",
                       description="CAR files (Content Addressable aRchives), as kubo, helia and "
                       "ipfs-car read and write them.")
    car_sub = p.add_subparsers(dest="car_command", metavar="{export,import}", required=True)
    e = car_sub.add_parser(
        "export", parents=common, help="write a CARv1 of a whole DAG",
        description="Write a CARv1 holding every block of the file or directory REF names (a CID, "
        "CID/path, or a namespace path), root first, to FILE or standard output. Streamed, in "
        "bounded memory. A cas directory is written as its UnixFS view (dag-pb directories, HAMT-sharded "
        "past 256 KiB, over the same file DAGs), which kubo, helia and ipfs-car list; the CAR's root is "
        "the view's CID.")
    e.add_argument("ref", metavar="CID|PATH", help="what to export: a CID, CID/path or a namespace path (/...)")
    e.add_argument("-o", "--output", metavar="FILE", help="the CAR file to write (default: standard output)")
    e.add_argument("--at", type=int, metavar="SEQ", help="a namespace path as it was in root SEQ (see cas log)")
    e.add_argument("--native", action="store_true",
                   help="a cas directory as its own DAG-CBOR tree (for another cas), not the UnixFS view "
                        "IPFS tools read")
    e.set_defaults(run=cmd_export)
    i = car_sub.add_parser(
        "import", parents=common, help="store the blocks of a CAR (v1 or v2) and pin its roots",
        description="Read a CARv1 or CARv2 (FILE, or '-' for standard input), verify every block with "
        "its own hash (BLAKE3 or sha2-256), check that its roots' DAGs are whole, then store its blocks "
        "and pin its roots. A bad, truncated or incomplete CAR is refused and nothing is stored.")
    i.add_argument("file", metavar="FILE", help="the CAR file, or '-' for standard input")
    i.add_argument("--no-pin", action="store_true", help="store the blocks without pinning the roots")
    i.set_defaults(run=cmd_import)


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    load = NAMESPACE_CODE if args.ref.startswith("/") else ()
    to_stdout = args.output is None or args.output == "-"
    with open_repo(args, load=load, read_only=True) as repo:
        if to_stdout:
            sink = sys.stdout.buffer
            sink.flush()
            done = repo.export_car(args.ref, sink, at=args.at, native=args.native)
            sink.flush()
        else:
            done = repo.export_car(args.ref, args.output, at=args.at, native=args.native)
    if not to_stdout:  # standard output holds the CAR: no JSON after it
        out.document({"roots": [str(root) for root in done.roots], "blocks": done.blocks, "bytes": done.bytes})
    out.note(f"exported {done.blocks} blocks ({human_size(done.bytes)}) under {done.roots[0]}")
    return 0


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        source = sys.stdin.buffer if args.file == "-" else args.file
        done = repo.import_car(source, pin=not args.no_pin)
    out.document({"roots": [str(root) for root in done.roots], "version": done.version, "blocks": done.blocks,
                  "new_blocks": done.new_blocks, "bytes": done.bytes})
    for root in done.roots:
        out.result(str(root))
    out.note(f"imported {done.blocks} blocks ({human_size(done.bytes)}, {done.new_blocks} new) from a "
             f"CARv{done.version}" + ("; its roots are pinned" if done.roots and not args.no_pin else ""))
    return 0
