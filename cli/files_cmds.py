"""``cas add``, ``cas cat`` and ``cas get``: content in and out by CID."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path, PurePosixPath
from typing import Any

from cas.errors import InvalidInputError, NotAFileError

from .output import Output, human_size
from .repo_cmds import NAMESPACE_CODE, TREE_CODE, open_repo


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "add",
        parents=common,
        help="store files or directories and print their CIDs",
        description="Store each PATH (or standard input for '-') and print one CID per "
        "input, in order. What is added is pinned. A tree keeps what tar and rsync -aHX keep: "
        "modes (setuid, setgid, sticky), mtimes, owners, extended attributes (user.*, trusted.*, "
        "security.*), POSIX ACLs, hard links, symlinks, fifos, sockets and device nodes.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory (with -r) or '-'")
    p.add_argument("-r", "--recursive", action="store_true", help="add directories with their contents")
    p.add_argument("--no-xattrs", dest="xattrs", action="store_false",
                   help="leave extended attributes and ACLs out (an entry keeps at most 4064 bytes of them)")
    p.add_argument(
        "--to",
        metavar="PATH",
        help="link what is added into the namespace: into PATH if it is a directory or "
        "ends with '/', else at PATH (parents are created); it is then kept by the "
        "namespace instead of a pin",
    )
    p.set_defaults(run=cmd_add)

    p = sub.add_parser("cat", parents=common, help="write a file's content to standard output",
                       description="Write the content of a file, named by its CID or by its namespace "
                       "path, to standard output; with a daemon, blocks this node lacks come from the network.")
    p.add_argument("cid", metavar="CID|PATH", help="the file's CID, or its path in the namespace (/...)")
    p.add_argument("--at", type=int, metavar="SEQ", help="a path as it was in root SEQ (see cas log)")
    p.add_argument("--offset", type=_non_negative, default=0, help="first byte to write")
    p.add_argument("--length", type=_non_negative, default=None, help="number of bytes to write")
    p.set_defaults(run=cmd_cat)

    p = sub.add_parser("get", parents=common, help="write a file or directory tree to disk",
                       description="Write a file or a whole directory tree, named by CID or namespace "
                       "path, to the local disk, as tar -xp does: modes, times, symbolic and hard links, "
                       "fifos, sockets, extended attributes, and as root owners and device nodes. What the "
                       "target refuses (an attribute namespace, a device node) is skipped with a warning.")
    p.add_argument("cid", metavar="CID|PATH", help="a CID, or a path in the namespace (/...)")
    p.add_argument("--at", type=int, metavar="SEQ", help="a path as it was in root SEQ (see cas log)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="path to create; a directory (an existing one, or any ending in '/') gets it "
                   "inside, under its own name, as cp and rsync do")
    p.add_argument("-f", "--force", action="store_true", help="replace OUT if it is a file")
    p.set_defaults(run=cmd_get)


def _make_directory(path: Path) -> Path:
    try:
        path.mkdir()
    except FileNotFoundError:
        raise InvalidInputError(f"{path.parent} does not exist; create it first") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _input_bytes(paths: list[str], recursive: bool) -> int | None:
    """Total size of the inputs, for the progress bar (None if unknown)."""
    total = 0
    inodes: set[tuple[int, int]] = set()  # a hard link's content is read once
    for path in paths:
        if path == "-":
            return None
        if recursive and os.path.isdir(path):
            for root, _dirs, names in os.walk(path):
                for name in names:
                    try:
                        st = os.lstat(os.path.join(root, name))
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in inodes:
                            continue
                        inodes.add((st.st_dev, st.st_ino))
                    total += st.st_size
        else:
            try:
                total += os.stat(path).st_size
            except OSError:
                pass
    return total


def cmd_add(args: argparse.Namespace, out: Output) -> int:
    if args.paths.count("-") > 1:
        raise InvalidInputError("standard input ('-') can be added only once")
    if args.to is not None and len(args.paths) > 1 and not args.to.endswith("/"):
        raise InvalidInputError("with several inputs, --to must name a directory (end it with '/')")
    for path in args.paths:
        # Check every input before storing any, so a typo fails fast.
        if path != "-" and not os.path.lexists(path):
            raise InvalidInputError(f"{path}: no such file or directory")
    added = []
    load = (TREE_CODE if any(path != "-" for path in args.paths) else ()) + (NAMESPACE_CODE if args.to else ())
    with open_repo(args, load=load) as repo:
        with out.progress(_input_bytes(args.paths, args.recursive), "adding") as progress:
            for path in args.paths:
                if path == "-":
                    item = repo.add_stream(sys.stdin.buffer, to=args.to, progress=progress)
                else:
                    item = repo.add_path(path, recursive=args.recursive, to=args.to, progress=progress,
                                         xattrs=args.xattrs)
                added.append(item)
                out.result(str(item.cid))
    from .node_cmds import replication_line, replication_report

    copies = replication_report(args, [a.cid for a in added]) or []
    for a, report in zip(added, copies):
        out.note(replication_line(a.source, report))
    doc = [
        {"path": a.source, "cid": str(a.cid), "kind": a.kind, "size": a.size, "linked_at": a.linked_at}
        for a in added
    ]
    for entry, report in zip(doc, copies):
        entry["copies"] = report["copies"]
    out.document({"added": doc})
    if len(added) > 1 or added[0].kind == "dir":
        total = sum(a.size for a in added)
        out.note(f"added {len(added)} item(s), {human_size(total)}")
    return 0


def cmd_cat(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE if args.cid.startswith("/") else (), read_only=True) as repo:
        cid = repo.resolve(args.cid, at=args.at)
        sink = sys.stdout.buffer
        sink.flush()
        try:
            fd = sink.fileno()
        except (AttributeError, OSError, ValueError):  # a stand-in stdout (tests, embedders)
            for piece in repo.iter_read(cid, args.offset, args.length):
                sink.write(piece)
            sink.flush()
            return 0
        try:
            # With a daemon, the daemon writes to our standard output itself.
            repo.write_to(cid, fd, args.offset, args.length)
        except NotAFileError:  # said in the user's terms: what they named, and what to do
            if repo.info(cid).kind == "dir":
                raise NotAFileError(f"{args.cid} is a directory, not a file; list it with 'cas ls {args.cid}'") from None
            raise
        except BrokenPipeError:
            # The reader went away (`cas cat X | head`): end as cat does.
            signal.raise_signal(signal.SIGPIPE)
            return 141
        except OSError as exc:
            raise InvalidInputError(f"cannot write to standard output: {exc.strerror or exc}") from None
    return 0


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    dest = Path(args.output)
    with open_repo(args, load=NAMESPACE_CODE if args.cid.startswith("/") else (), read_only=True) as repo:
        if args.cid.startswith("/"):  # resolved once: its own metadata goes on the output too
            source: Any = repo.stat(args.cid, at=args.at)
            # (without content, resolve says why: a symlink, a fifo...)
            cid = source.cid if source.cid is not None else repo.resolve(args.cid, at=args.at)
        else:
            source = cid = repo.resolve(args.cid, at=args.at)
        info = repo.info(cid)
        made = None
        if dest.is_dir() or args.output.endswith("/"):
            # As cp and rsync do: into a directory (made if it is new and
            # named with a trailing '/'), under the name the thing has: the
            # last part of its path, or its CID.
            if not dest.is_dir():
                made = _make_directory(dest)
            dest = dest / (PurePosixPath(args.cid).name or str(cid))
        try:
            if info.kind == "dir" and os.path.lexists(dest):
                raise InvalidInputError(f"{dest} already exists; cas get writes a new directory")
            if dest.is_dir() and info.kind == "file":
                raise InvalidInputError(f"{dest} is a directory; give the file's own path with -o")
            with out.progress(info.size, "writing") as progress:
                kind = repo.get(source, dest, overwrite=args.force, progress=progress,
                                warn=lambda line: out.note(f"warning: {line}"))
        except BaseException:
            if made is not None:
                import shutil  # here: with bz2 and lzma, it would slow every command's start

                shutil.rmtree(made, ignore_errors=True)  # a failed get leaves nothing behind
            raise
    out.document({"cid": str(cid), "kind": kind, "size": info.size, "output": str(dest)})
    out.note(f"wrote {kind} {dest} ({human_size(info.size)})")
    return 0
