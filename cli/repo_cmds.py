"""``cas init`` and ``cas repo stat|verify``: the repository itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from importlib import import_module
from pathlib import Path
from typing import Any

import cas
from cas.store import LocalStore

from .output import Output, human_size


def repo_path(args: argparse.Namespace) -> Path:
    return Path(args.repo).expanduser() if args.repo else cas.default_repository_path()


def open_repo(args: argparse.Namespace, *, create: bool = True, load: Iterable[str] = (),
              read_only: bool = False) -> cas.Repository:
    """The repository of ``--repo``, waiting ``--wait`` seconds for another
    process using it (and saying so on stderr after a second); a command
    that only reads (``read_only``) does not wait for a writer. ``load``
    names the modules the command will use (``NAMESPACE_CODE``,
    ``TREE_CODE``): they are imported before the repository is locked."""
    for name in load:
        import_module(name)
    return cas.open_repository(repo_path(args), create=create, wait=args.wait, on_wait=waiting_note(args),
                               read_only=read_only)


NAMESPACE_CODE = ("cas.names.namespace", "cas.names.remote", "nacl.signing")
"""What the namespace runs on (nacl: libsodium, which cas.keys loads to
check and sign root records). Loaded on first use, inside the command's
hold on the repository, it was ~30 ms of the ~40 ms a ``cas mkdir`` held
it (~7 ms loaded first), and every other command waiting for the
repository waited that long again: a command loads the code it will use
before it opens the repository."""

TREE_CODE = ("cas.trees",)
"""What adding a file or directory runs on: ~25 ms of imports, which were
most of the time a ``cas add`` of a small file held the repository."""


def waiting_note(args: argparse.Namespace) -> Callable[[str], None] | None:
    """What a command says while it waits for the repository: one line on
    stderr, naming who holds it (nothing with ``--quiet``)."""
    if args.quiet:
        return None

    def note(text: str) -> None:
        print(f"cas {args.command}: waiting for the repository: {text}", file=sys.stderr, flush=True)

    return note


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init", parents=common, help="create a repository",
        description="Create the repository (--repo DIR, else $CAS_HOME, else the user data directory) "
        "with its namespace key, owner-only. Any other command creates it on first use too; an existing "
        "repository is left as it is.")
    p.set_defaults(run=cmd_init)

    p = sub.add_parser("repo", parents=common, help="inspect the local repository",
                       description="Inspect the local repository: what it stores (stat), and whether "
                       "every block is intact (verify).")
    repo_sub = p.add_subparsers(dest="repo_command", metavar="stat|verify", required=True)
    s = repo_sub.add_parser("stat", parents=common, help="blocks, bytes and pins stored",
                            description="Blocks, bytes and pins stored in the repository, and the "
                            "space its packs take on disk.")
    s.set_defaults(run=cmd_repo_stat)
    v = repo_sub.add_parser(
        "verify", parents=common, help="re-hash every block and check every reference",
        description="Re-hash every stored block and check that every link, pin and kept namespace "
        "root resolves. With --repair, blocks that fail are quarantined and, when a daemon runs, "
        "good copies of everything damaged or missing are fetched from the network.")
    v.add_argument("--repair", action="store_true",
                   help="quarantine damaged blocks and fetch good copies from the network (needs a daemon)")
    v.set_defaults(run=cmd_repo_verify)


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    path = repo_path(args)
    existed = (path / "config.json").exists()
    if existed:
        # Checked, not opened: a running daemon owns it, and that is fine.
        resolved = str(path.expanduser().absolute())
        LocalStore.check_config(path)
    else:
        with LocalStore.open(path, create=True, wait=args.wait, on_wait=waiting_note(args)) as store:
            resolved = str(store.path)
    out.document({"repo": resolved, "created": not existed})
    if existed:
        out.result(f"cas repository already at {resolved}")
    else:
        out.result(f"initialised cas repository at {resolved}")
    return 0


def cmd_repo_stat(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, create=False, read_only=True) as repo:
        st = repo.repo_stat()
    health = replication_health(args)
    out.document({"repo": st.path, "blocks": st.blocks, "bytes": st.bytes, "pinned": st.pinned,
                  "pack_bytes": st.pack_bytes, "dead_bytes": st.dead_bytes, "replication": health})
    out.result(f"repository  {st.path}")
    out.result(f"blocks      {st.blocks}")
    out.result(f"size        {human_size(st.bytes)} ({st.bytes} bytes)")
    out.result(f"pinned      {st.pinned}")
    out.result(f"packs       {human_size(st.pack_bytes)} on disk, {human_size(st.dead_bytes)} of it "
               "deleted blocks (freed by 'cas gc' once a pack is under half live)")
    if health is not None:
        out.result(f"replicas    {health['replicas']} wanted, {health['peers']} peer(s) known")
        out.result(f"below R     {health['short']} block(s) of {health.get('tracked', '?')} tracked, counted live: "
                   "the copies their last placement or repair confirmed, less those on peers found dead "
                   f"since ({health.get('copies_lost', 0)} copies so far)")
        out.result(f"placed      {health['placed']} block(s), {human_size(health['placed_bytes'])} "
                   f"acknowledged by other nodes")
        out.result(f"repair      {health['repair_rounds']} round(s), {health['repair_stores']} copies made "
                   f"({human_size(health['repair_bytes'])}), {health['repair_dropped']} dropped")
        out.result(f"held        {health['held_blocks']} block(s), {human_size(health['held_bytes'])} "
                   f"of {human_size(health['quota'])} for other nodes")
        if "quarantined" in health:
            out.result(f"integrity   {health['quarantined']} damaged block(s) found, {health['restored']} "
                       f"restored from the network, {health['in_quarantine']} still quarantined "
                       f"({health.get('unrecoverable', 0)} heal(s) found no good copy); "
                       f"scrub: {health['scrub_passes']} pass(es), {human_size(health['scrubbed_bytes'])} re-verified")
    return 0


def replication_health(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running daemon's replication counters (``replication_stats``), or
    None when no daemon runs for the repository."""
    from cas import control
    from cas.control.schema import ReplicationStats

    client = control.connect(repo_path(args))
    if client is None:
        return None
    with client:
        try:
            stats: dict[str, Any] = client.call(ReplicationStats())
            return stats
        except control.ControlProtocolError:
            return None  # an older daemon without the op


def cmd_repo_verify(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args, create=False) as repo:
        total = repo.repo_stat().bytes
        with out.progress(total, "verifying") as progress:
            report = repo.verify(progress, repair=args.repair)
        through_daemon = repo.through_daemon
    out.document(
        {
            "ok": report.ok,
            "blocks_checked": report.blocks_checked,
            "bytes_checked": report.bytes_checked,
            "repaired": report.repaired,
            "problems": [{"cid": p.cid, "problem": p.what} for p in report.problems],
        }
    )
    for problem in report.problems:
        out.result(f"{problem.cid}: {problem.what}")
    if args.repair and report.repaired:
        out.note(f"repaired: {report.repaired} block(s) fetched from the network")
    if report.ok:
        out.note(f"ok: {report.blocks_checked} blocks, {human_size(report.bytes_checked)} verified")
        return 0
    out.note(f"{len(report.problems)} problem(s) found; {report.blocks_checked} blocks verified")
    if args.repair and not through_daemon:
        out.note("damaged blocks are quarantined; start 'cas daemon' (with peers) and run "
                 "'cas repo verify --repair' again to fetch good copies")
    elif not args.repair:
        out.note("'cas repo verify --repair' quarantines damaged blocks and fetches good copies through a daemon")
    return 1
