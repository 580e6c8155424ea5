"""The ``cas`` command: argument parsing, dispatch, and the error contract.

Exit status: 0 on success, 1 when the work failed (one line on stderr saying
why), 2 on bad usage (argparse's message). Every command takes ``--repo``,
``--json`` and ``--quiet`` before or after its name. This is the only place
that catches :class:`cas.CasError` broadly.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from cas.allocator import keep_freed_buffers
from cas.errors import CasError

from . import files_cmds, names_cmds, repo_cmds
from . import node_cmds
from . import mount_cmds
from . import name_cmds
from .output import Output


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    # The same options on the main parser and on every subcommand; on the
    # subcommands their defaults are suppressed so that a value given before
    # the command name is not overwritten by the subcommand's default.
    default = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--repo",
        metavar="DIR",
        default=default,
        help="repository directory (default: $CAS_HOME, else the user data directory)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print results as JSON",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print only results: no progress, no notes",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas",
        description="Content-addressed storage: add files, read them back by CID.",
        parents=[_common_options(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common_options(suppress=True)]
    repo_cmds.register(sub, common)
    files_cmds.register(sub, common)
    names_cmds.register(sub, common)
    node_cmds.register(sub, common)
    mount_cmds.register(sub, common)
    name_cmds.register(sub, common)
    return parser


SERVERS = {"daemon", "mount"}
"""Commands that serve peers or the kernel for a long time: a peer that
hangs up mid-write must cost them one connection (EPIPE), never the process."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_buffers()
    if args.command not in SERVERS:
        # Die quietly on a closed pipe (`cas cat X | head`), as cat does.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    out = Output(json_mode=args.json, quiet=args.quiet)
    try:
        status = args.run(args, out)
    except CasError as exc:
        print(f"cas {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cas {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
