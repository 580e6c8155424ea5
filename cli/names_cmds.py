"""The namespace commands: ls, stat, mkdir, mv, cp, rm, root, log; and the
storage commands that follow from it: pin, unpin, prune, gc."""

from __future__ import annotations

import argparse
import functools
import grp
import os
import pwd
import stat as statmod
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cas.cid import parse_cid
from cas.errors import UsageError

if TYPE_CHECKING:  # annotations only: the namespace loads when a command uses it
    from cas.names.directory import DirEntry
    from cas.names.namespace import Node, RootState

from .output import Output, human_size
from .repo_cmds import NAMESPACE_CODE, open_repo, waiting_note


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ls", parents=common, help="list a namespace directory",
                       description="List a directory of the namespace (or, with --at, of an earlier version), "
                                   "or a directory by CID (cas's own or an IPFS UnixFS one, CID/path inside it).")
    p.add_argument("path", nargs="?", default="/", metavar="PATH",
                   help="the directory: a namespace path (default /) or CID[/path]")
    p.add_argument("-l", "--long", action="store_true",
                   help="mode ('+' after it: an ACL), links, owner, group, size (major, minor for a device), "
                   "time and CID too")
    p.add_argument("--at", type=int, metavar="SEQ", help="as it was in root SEQ (see cas log)")
    p.set_defaults(run=cmd_ls)

    p = sub.add_parser("stat", parents=common, help="what a namespace path names",
                       description="What a namespace path names: its kind, CID, size, mode, link count, "
                       "owner, group, times, device number and extended attribute names ('-' for what was "
                       "not recorded).")
    p.add_argument("path", metavar="PATH", help="a path in the namespace (/...)")
    p.add_argument("--at", type=int, metavar="SEQ", help="as it was in root SEQ")
    p.set_defaults(run=cmd_stat)

    p = sub.add_parser("mkdir", parents=common, help="create a namespace directory",
                       description="Create directories in the namespace, each a new version of it.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="the directories to create")
    p.add_argument("-p", "--parents", action="store_true", help="create parents; no error if it exists")
    p.set_defaults(run=cmd_mkdir)

    p = sub.add_parser("mv", parents=common, help="rename or move (no data is copied)",
                       description="Rename or move a namespace entry, as mv does: into DST if it is a "
                       "directory, else to DST (replacing a file there). Only names change; no data moves.")
    p.add_argument("src", metavar="SRC", help="the path to move")
    p.add_argument("dst", metavar="DST", help="the new path, or a directory to move it into")
    p.set_defaults(run=cmd_mv)

    p = sub.add_parser("cp", parents=common, help="link a CID or a path at another path (no data is copied)",
                       description="Put what a CID or a path names at another path too, as cp does "
                       "(into PATH if it is a directory). Content is shared, never copied.")
    p.add_argument("src", metavar="CID|PATH", help="what to link: a CID, or a path in the namespace")
    p.add_argument("dst", metavar="PATH", help="where: a new path, or a directory to put it into")
    p.set_defaults(run=cmd_cp)

    p = sub.add_parser("rm", parents=common, help="remove a namespace entry",
                       description="Remove entries from the namespace. Their blocks stay until 'cas gc' "
                       "finds that no kept version, pin or other name needs them.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="the entries to remove")
    p.add_argument("-r", "--recursive", action="store_true", help="remove non-empty directories")
    p.set_defaults(run=cmd_rm)

    p = sub.add_parser("root", parents=common, help="the namespace root: CID, sequence number, key",
                       description="The namespace's current root: its CID, its sequence number (one "
                       "more with every change) and the key that signs it.")
    p.set_defaults(run=cmd_root)

    p = sub.add_parser("log", parents=common, help="the kept namespace roots, newest first",
                       description="The namespace's kept versions, newest first: sequence number, time "
                       "and root CID. Any of them can be read with --at SEQ. Streamed: a history of "
                       "10^6 versions prints as it is read, and -n N reads only N.")
    p.add_argument("-n", "--max-count", type=int, metavar="N", help="only the newest N versions")
    p.add_argument("--before", type=int, metavar="SEQ", help="only versions numbered below SEQ (the next page)")
    p.set_defaults(run=cmd_log)

    p = sub.add_parser("pin", parents=common, help="keep content outside the namespace (or list pins)",
                       description="Keep content that no namespace path names, so that gc leaves it; "
                       "'cas pin ls' lists the pins. 'cas pin / --at SEQ' keeps version SEQ of the "
                       "namespace whatever its age (the history's thinning keeps versions whose root is pinned).")
    p.add_argument("refs", nargs="+", metavar="CID|PATH|ls", help="what to pin, or 'ls' to list the pins")
    p.add_argument("--at", type=int, metavar="SEQ", help="paths as they were in version SEQ (see cas log)")
    p.set_defaults(run=cmd_pin)

    p = sub.add_parser("unpin", parents=common, help="stop keeping pinned content",
                       description="Remove pins. The content stays until 'cas gc', and for good if "
                       "the namespace still names it.")
    p.add_argument("refs", nargs="+", metavar="CID", help="the pinned CIDs")
    p.set_defaults(run=cmd_unpin)

    p = sub.add_parser("prune", parents=common, help="drop the versions the history policy no longer keeps",
                       description="Drop the namespace versions that the history policy no longer keeps "
                       "(history.keep, by age: every version of the last hour, one per hour for a day, one "
                       "per day for 30 days, then one per 30 days; 'cas config set history.keep' changes it). "
                       "Never the newest, one whose root is pinned ('cas pin / --at SEQ' keeps version SEQ) "
                       "or the one published. A daemon does this every 10 minutes, and 'cas gc' first; "
                       "'cas gc' then frees the blocks only dropped versions needed.")
    p.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    p.set_defaults(run=cmd_prune)

    p = sub.add_parser("gc", parents=common, help="delete what no pin and no kept root needs",
                       description="Delete the blocks that no pin and no kept namespace version needs, "
                       "dropping first the versions the history policy no longer keeps (see 'cas prune') "
                       "and any beyond --history, and the blocks held for other nodes "
                       "whose lease ran out; packs are compacted.")
    p.add_argument("--history", type=int, metavar="N",
                   help="keep at most N past versions too (default: the 'history' setting, else no limit by count)")
    p.set_defaults(run=cmd_gc)


_TYPE_BITS = {"dir": statmod.S_IFDIR, "file": statmod.S_IFREG, "symlink": statmod.S_IFLNK, "fifo": statmod.S_IFIFO,
              "socket": statmod.S_IFSOCK, "chardev": statmod.S_IFCHR, "blockdev": statmod.S_IFBLK}


def _mode_string(kind: str, mode: int) -> str:
    """As ls shows it: the kind's letter (- d l p s c b), then rwx with
    s/S, t/T for setuid, setgid and sticky."""
    return statmod.filemode(_TYPE_BITS[kind] | mode)


def _time_string(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9))


def _precise_time(ns: int | None) -> str:
    """As stat(1) shows a time: to the nanosecond, with the zone; '-' if
    not recorded."""
    if ns is None:
        return "-"
    seconds, fraction = divmod(ns, 10**9)
    local = time.localtime(seconds)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', local)}.{fraction:09d} {time.strftime('%z', local)}"


@functools.lru_cache(maxsize=256)
def _user_name(uid: int | None) -> str:
    """An owner as ls shows it: the name if this system has one, else the
    number; '-' if not recorded."""
    if uid is None:
        return "-"
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


@functools.lru_cache(maxsize=256)
def _group_name(gid: int | None) -> str:
    if gid is None:
        return "-"
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


def _size_column(entry: DirEntry | Node) -> str:
    """The size, or for a device its major, minor as ls shows them."""
    if entry.kind in ("chardev", "blockdev") and entry.meta.rdev is not None:
        return f"{os.major(entry.meta.rdev)}, {os.minor(entry.meta.rdev)}"
    return str(entry.size)


def _links(entry: DirEntry | Node) -> str:
    """The link count: a hard-link group's names; '-' for a directory (its
    count is 2 + its subdirectories, not known without listing it)."""
    return "-" if entry.kind == "dir" else str(entry.meta.nlink)


def _entry_json(entry: DirEntry | Node) -> dict[str, Any]:
    meta = entry.meta
    value = {
        "name": entry.name,
        "kind": entry.kind,
        "size": entry.size,
        "mode": entry.mode,
        "mtime_ns": entry.mtime,
        "cid": str(entry.cid) if entry.cid else None,
        # The rest of the inode, null (or empty) where not recorded; xattr
        # values in hex, as docs/formats.md writes them.
        "uid": meta.uid,
        "gid": meta.gid,
        "atime_ns": meta.atime,
        "ctime_ns": meta.ctime,
        "rdev": meta.rdev,
        "nlink": meta.nlink,
        "ino": meta.ino,
        "xattrs": {name: data.hex() for name, data in meta.xattrs},
    }
    if entry.target is not None:
        value["target"] = entry.target
    return value


def _root_json(state: RootState) -> dict[str, Any]:
    return {"seq": state.seq, "root": str(state.root), "time_ns": state.time_ns, "public_key": state.public_key.hex()}


def _warn(repo: Any, out: Output) -> None:
    for warning in repo.namespace.warnings:
        out.note(f"warning: {warning}")


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE, read_only=True) as repo:
        if args.path.startswith("/"):
            entries = repo.ls(args.path, at=args.at)
        else:  # a CID, or CID/path: a directory by content (cas's or IPFS's)
            entries = repo.list_dir(args.path, at=args.at)
        _warn(repo, out)
        if out.json_mode:
            out.documents(_entry_json(entry) for entry in entries)
            return 0
        for entry in entries:
            name = entry.name + ("/" if entry.kind == "dir" else "")
            if entry.kind == "symlink":
                name += f" -> {entry.target}"
            if args.long:
                cid = str(entry.cid) if entry.cid else "-"
                meta = entry.meta
                acl = "+" if any(name.startswith("system.posix_acl_") for name, _ in meta.xattrs) else " "
                line = (f"{_mode_string(entry.kind, entry.mode)}{acl}{_links(entry):>2} {_user_name(meta.uid):<8} "
                        f"{_group_name(meta.gid):<8} {_size_column(entry):>12} {_time_string(entry.mtime)} {cid} {name}")
            else:
                line = name
            sys.stdout.write(line + "\n")
    return 0


def cmd_stat(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE, read_only=True) as repo:
        node = repo.stat(args.path, at=args.at)
        _warn(repo, out)
        entries = None
        if node.kind == "dir":
            assert node.cid is not None
            from cas.names import dirtree

            entries = dirtree.summary(repo.blocks, node.cid).count
    doc = {**_entry_json(node), "path": node.path}
    if entries is not None:
        doc["entries"] = entries
    out.document(doc)
    out.result(f"path     {node.path}")
    out.result(f"kind     {node.kind}")
    out.result(f"size     {human_size(node.size)} ({node.size} bytes)")
    if entries is not None:
        out.result(f"entries  {entries}")
    meta = node.meta
    out.result(f"mode     {_mode_string(node.kind, node.mode)} ({node.mode:04o})")
    out.result(f"links    {_links(node)}" + (f" (hard-link group {meta.ino})" if meta.ino is not None else ""))
    out.result(f"owner    {_id_string(meta.uid, _user_name)}")
    out.result(f"group    {_id_string(meta.gid, _group_name)}")
    if meta.rdev is not None:
        out.result(f"device   {os.major(meta.rdev)}, {os.minor(meta.rdev)}")
    out.result(f"modified {_precise_time(node.mtime)}")
    out.result(f"accessed {_precise_time(meta.atime)}")
    out.result(f"changed  {_precise_time(meta.ctime)}")
    if meta.xattrs:
        out.result(f"xattrs   {', '.join(name for name, _ in meta.xattrs)}")
    out.result(f"cid      {node.cid if node.cid else '-'}")
    if node.target is not None:
        out.result(f"target   {node.target}")
    return 0


def _id_string(number: int | None, name_of: Callable[[int | None], str]) -> str:
    """'1000 (alice)', the number alone if it has no name here, '-' if not
    recorded."""
    if number is None:
        return "- (not recorded)"
    name = name_of(number)
    return str(number) if name == str(number) else f"{number} ({name})"


def _report_root(out: Output, state: RootState) -> None:
    out.document(_root_json(state))
    out.note(f"namespace root {state.seq}: {state.root}")


def cmd_mkdir(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE) as repo:
        for path in args.paths:
            state = repo.mkdir(path, parents=args.parents)
    _report_root(out, state)
    return 0


def cmd_mv(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE) as repo:
        state = repo.mv(args.src, args.dst)
    _report_root(out, state)
    return 0


def cmd_cp(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE) as repo:
        state = repo.cp(args.src, args.dst)
    _report_root(out, state)
    return 0


def cmd_rm(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE) as repo:
        for path in args.paths:
            state = repo.rm(path, recursive=args.recursive)
    _report_root(out, state)
    return 0


def cmd_root(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE, read_only=True) as repo:
        state = repo.root()
        _warn(repo, out)
    out.document(_root_json(state))
    out.result(f"root  {state.root}")
    out.result(f"seq   {state.seq}")
    out.result(f"key   {state.public_key.hex()}")
    if state.time_ns:
        out.result(f"time  {_time_string(state.time_ns)}")
    return 0


def cmd_log(args: argparse.Namespace, out: Output) -> int:
    if args.max_count is not None and args.max_count < 0:
        raise UsageError("-n takes a number of versions, 0 or more")
    with open_repo(args, load=NAMESPACE_CODE, read_only=True) as repo:
        states = repo.log(args.max_count, before=args.before)
        if out.json_mode:
            out.documents(_root_json(s) for s in states)
        else:
            write = sys.stdout.write
            for state in states:
                write(f"{state.seq:>6}  {_time_string(state.time_ns)}  {state.root}\n")
            sys.stdout.flush()
        _warn(repo, out)
    return 0


def cmd_pin(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE if any(ref.startswith("/") for ref in args.refs) else ()) as repo:
        if args.refs == ["ls"]:
            pins = repo.pins()
            out.document([str(c) for c in pins])
            for cid in pins:
                out.result(str(cid))
            return 0
        pinned = [repo.resolve(ref, args.at) for ref in args.refs]
        for cid in pinned:
            repo.pin(cid)
    out.document({"pinned": [str(c) for c in pinned]})
    for cid in pinned:
        out.result(str(cid))
    return 0


def cmd_unpin(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        results = [(parse_cid(ref), repo.unpin(parse_cid(ref))) for ref in args.refs]
    out.document({"unpinned": [str(c) for c, was in results if was]})
    for cid, was in results:
        if not was:
            out.note(f"{cid} was not pinned")
    return 0


def cmd_prune(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, load=NAMESPACE_CODE) as repo:
        report = repo.prune(dry_run=args.dry_run)
    out.document({**report._asdict(), "dry_run": args.dry_run})
    verb = "would drop" if args.dry_run else "dropped"
    span = "" if not report.dropped else f" (numbered {report.oldest_dropped} to {report.newest_dropped})"
    out.result(f"{verb} {report.dropped} of {report.versions} versions{span}; {report.kept} kept")
    out.note(f"history.keep = {report.policy}")
    return 0


def cmd_gc(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        report = repo.gc(history=args.history, on_wait=waiting_note(args))
    out.document(
        {"blocks_freed": report.blocks_freed, "bytes_freed": report.bytes_freed, "roots_dropped": report.roots_dropped,
         "expired_freed": report.expired_freed}
    )
    out.result(f"freed {human_size(report.bytes_freed)} in {report.blocks_freed} blocks")
    if report.expired_freed:
        out.note(f"{report.expired_freed} of them were held for other nodes, whose lease nobody renewed")
    if report.roots_dropped:
        out.note(f"dropped {report.roots_dropped} namespace version(s) the history no longer keeps")
    return 0
