"""``cas mount DIR`` and ``cas umount DIR``: the namespace as a directory.

Thin: the work is in :mod:`cas.fuse.mountd` and :mod:`cas.fuse.served`.
When a daemon owns the repository, ``cas mount`` asks it to serve the mount
(one node per machine: on the network and mounted) and ``cas umount`` asks
it to end it. Otherwise, without ``--foreground``, ``cas mount`` starts the
mount process and returns once the mount works (as sshfs does); its log goes
to ``<repo>/mount.log``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cas.errors import InvalidInputError, UsageError

from .output import Output
from .repo_cmds import repo_path, waiting_note


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount", parents=common, help="mount the namespace as a directory (FUSE)",
        description="Mount the repository's namespace at DIR, read-write. If a daemon owns the repository, it "
        "serves the mount, and what is written there goes onto the network as an add's blocks do; otherwise "
        "a mount process owns the repository, and the other cas commands keep working through it. With --name KEY, mount "
        "another node's published namespace instead, read-only, following its new versions (through this "
        "repository's daemon if one runs). 'cas umount DIR' ends it.")
    p.add_argument("mountpoint", metavar="DIR", help="an empty directory to mount at")
    p.add_argument("--ro", action="store_true", help="read-only: every change fails with EROFS")
    p.add_argument("--name", metavar="KEY", default=None,
                   help="mount the namespace published under this key (64 hex digits), read-only")
    p.add_argument("--refresh", type=float, default=None, metavar="SECONDS",
                   help="with --name: look for a newer version this often (default 30)")
    p.add_argument("--foreground", action="store_true", help="serve in this process until unmounted")
    p.add_argument("--nonempty", action="store_true",
                   help="mount over a directory that has files in it (hidden until unmounted)")
    p.add_argument("--cache", type=int, default=None, metavar="MIB",
                   help="block cache size in MiB (default 256)")
    p.add_argument("--commit-interval", type=float, default=None, metavar="SECONDS",
                   help="commit what was changed in the mount as one version this often (default 1); "
                   "a crash loses at most this much of what was not fsynced")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users use the mount (the kernel still checks each file's permissions); "
                   "a user other than root needs 'user_allow_other' in /etc/fuse.conf")
    p.add_argument("--noatime", action="store_true",
                   help="never record reads as access times (default: relatime, as Linux: the first read "
                   "after a change, or a day after the last, sets the atime); the same as -o noatime")
    p.add_argument("-o", dest="options", metavar="OPTION[,OPTION...]", action="append", default=[],
                   help="more FUSE mount options, e.g. -o allow_other (more than once, or comma-separated)")
    p.set_defaults(run=cmd_mount)

    p = sub.add_parser("umount", parents=common, help="unmount a cas mount (also a dead one)",
                       description="Unmount a cas mount and end its process. A mount whose process "
                       "died is cleaned up too.")
    p.add_argument("mountpoint", metavar="DIR", help="where it is mounted")
    p.set_defaults(run=cmd_umount)


def cmd_mount(args: argparse.Namespace, out: Output) -> int:
    # Imported here, not at the top: every cas command loads this module,
    # and the mount's machinery costs a short command much of its start-up.
    from cas.fuse import require_fuse
    from cas.fuse.mountd import (
        DEFAULT_COMMIT_INTERVAL,
        DEFAULT_REFRESH,
        MAX_COMMIT_INTERVAL,
        MIN_COMMIT_INTERVAL,
        MIN_REFRESH,
        MountConfig,
        check_mountpoint,
        fuse_options,
        run_mount,
        start_background,
    )

    from cas.names.record import parse_public_key

    if args.name is not None:
        args.ro = True  # another node's namespace is read-only here
    if args.refresh is not None and args.name is None:
        raise UsageError("--refresh applies to --name (a published namespace) only")
    refresh = DEFAULT_REFRESH if args.refresh is None else args.refresh
    if not refresh >= MIN_REFRESH:
        raise UsageError(f"--refresh must be at least {MIN_REFRESH:g} seconds")
    require_fuse()
    if args.commit_interval is not None and not MIN_COMMIT_INTERVAL <= args.commit_interval <= MAX_COMMIT_INTERVAL:
        raise UsageError(f"--commit-interval must be {MIN_COMMIT_INTERVAL:g} to {MAX_COMMIT_INTERVAL:g} seconds")
    if args.commit_interval is not None and args.ro:
        raise UsageError("--commit-interval applies to a read-write mount only")
    commit_interval = DEFAULT_COMMIT_INTERVAL if args.commit_interval is None else args.commit_interval
    if args.cache is not None and args.cache <= 0:
        raise InvalidInputError("--cache must be a positive number of MiB")
    name = parse_public_key(args.name) if args.name is not None else None
    mountpoint = check_mountpoint(Path(args.mountpoint), nonempty=args.nonempty)
    repo = repo_path(args).expanduser().absolute()
    options = tuple(option.strip() for given in args.options for option in given.split(","))
    if args.noatime and "noatime" not in options:
        options += ("noatime",)
    if name is None and _mount_by_daemon(args, out, repo, mountpoint, options):
        return 0
    config = MountConfig(repo, mountpoint, args.ro, args.cache * 1024 * 1024 if args.cache else None,
                         name, refresh, args.wait, args.allow_other, options, commit_interval)
    fuse_options(config, args.ro)  # a refused option or allow_other is said here, before anything starts

    def ready() -> None:
        doc = {"repo": str(repo), "mountpoint": str(mountpoint), "read_only": args.ro, "daemon": False}
        if name is not None:
            doc["name"] = name.hex()
            out.document(doc)
            out.note(f"mounted namespace {name.hex()} at {mountpoint} (read-only; "
                     f"looking for new versions every {refresh:g} s)")
            return
        out.document(doc)
        out.note(f"mounted {repo} at {mountpoint}{' (read-only)' if args.ro else ''}")

    if args.foreground:
        run_mount(config, ready)
        out.note(f"unmounted {mountpoint}")
    else:
        start_background(config, on_wait=waiting_note(args))
        ready()
    return 0




def _mount_by_daemon(args: argparse.Namespace, out: Output, repo: Path, mountpoint: Path,
                     options: tuple[str, ...]) -> bool:
    """Ask the daemon owning ``repo`` to serve the mount; False if none runs."""
    from cas.control import connect
    from cas.control import schema as ops

    daemon = connect(repo)
    if daemon is None:
        return False
    with daemon:
        if args.foreground:
            raise UsageError(f"a daemon owns {repo} and serves its mounts: run 'cas mount {mountpoint}' "
                             "without --foreground (the daemon's log, not this terminal, has its messages)")
        daemon.call(ops.Mount(str(mountpoint), read_only=args.ro, nonempty=args.nonempty,
                              cache_bytes=args.cache * 1024 * 1024 if args.cache else None,
                              allow_other=args.allow_other, options=options,
                              commit_interval_ms=None if args.commit_interval is None
                              else round(args.commit_interval * 1000)))
    out.document({"repo": str(repo), "mountpoint": str(mountpoint), "read_only": args.ro, "daemon": True})
    out.note(f"mounted {repo} at {mountpoint}{' (read-only)' if args.ro else ''}, served by its daemon")
    return True


def cmd_umount(args: argparse.Namespace, out: Output) -> int:
    from cas.fuse.mountd import is_mounted, mount_processes, unmount

    path = Path(args.mountpoint).expanduser().absolute()
    if is_mounted(path) and not mount_processes(path) and _unmount_by_daemon(args, path):
        out.note(f"unmounted {args.mountpoint}")
        return 0
    unmount(path)
    out.note(f"unmounted {args.mountpoint}")
    return 0


def _unmount_by_daemon(args: argparse.Namespace, path: Path) -> bool:
    """Ask the daemon of the repository to end its mount at ``path``;
    False if no daemon runs or it serves no mount there."""
    from cas.control import connect
    from cas.control import schema as ops

    daemon = connect(repo_path(args).expanduser().absolute())
    if daemon is None:
        return False
    with daemon:
        return daemon.call(ops.Unmount(str(path)))
