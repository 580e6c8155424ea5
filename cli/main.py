"""The ``cas`` command: argument parsing, dispatch, and the error contract.

Exit status: 0 on success, 1 when the work failed (one line on stderr saying
why), 2 on bad usage (argparse's message). Every command takes ``--repo``,
``--wait``, ``--json`` and ``--quiet`` before or after its name. This is the only place
that catches :class:`cas.CasError` broadly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import Any, NoReturn

import cas
from cas.allocator import keep_freed_buffers
from cas.errors import CasError, UsageError

from .output import Output

COMMANDS = {
    "init": "repo_cmds", "repo": "repo_cmds",
    "add": "files_cmds", "cat": "files_cmds", "get": "files_cmds", "car": "car_cmds",
    "block": "block_cmds",
    "ls": "names_cmds", "stat": "names_cmds", "mkdir": "names_cmds", "mv": "names_cmds",
    "cp": "names_cmds", "rm": "names_cmds", "root": "names_cmds", "log": "names_cmds",
    "pin": "names_cmds", "unpin": "names_cmds", "gc": "names_cmds", "prune": "names_cmds",
    "daemon": "node_cmds", "id": "node_cmds", "peers": "node_cmds", "dht": "node_cmds",
    "mount": "mount_cmds", "umount": "mount_cmds",
    "name": "name_cmds",
    "network": "network_cmds",
    "completion": "completion",
    "config": "config_cmds",
    "service": "service_cmds",
}
"""Each command and the module of this package that registers and runs it.
A command line naming one of them builds (and imports) only that module's
part of the parser: building all of it, with every command module and what
they import, took ~20 ms of the ~90 ms start-up of a short command such as
``cas cat CID``. ``cas --help`` and anything unrecognised get the whole
parser."""

MODULES = ("repo_cmds", "files_cmds", "car_cmds", "block_cmds", "names_cmds", "node_cmds", "network_cmds", "mount_cmds",
           "name_cmds", "config_cmds", "service_cmds", "completion")
"""The command modules, in the order ``cas --help`` lists their commands."""


DEFAULT_WAIT = 5.0
"""Seconds a command waits for a repository another process is using
(``--wait``): long enough for other commands to finish one after another
(16 writers at once all get through), short enough that a command stuck
behind a long ``cas add`` or a mount says so and gives up soon."""


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    # The same options on the main parser and on every subcommand; on the
    # subcommands their defaults are suppressed so that a value given before
    # the command name is not overwritten by the subcommand's default.
    default = argparse.SUPPRESS if suppress else None
    p = _Parser(add_help=False)
    p.add_argument(
        "--repo",
        metavar="DIR",
        default=default,
        help="repository directory (default: $CAS_HOME, else the user data directory)",
    )
    p.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=argparse.SUPPRESS if suppress else DEFAULT_WAIT,
        help=f"if another cas process is using the repository, wait this long for it "
             f"(default: {DEFAULT_WAIT:g}; 0: fail at once)",
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the ``cas`` command line; given the name of a command,
    one that knows only that command and those of its module."""
    parser = _Parser(
        prog="cas",
        description="Content-addressed storage: add files, read them back by CID.",
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"cas {cas.__version__}",
                        help="print the version of cas and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common_options(suppress=True)]
    for name in (COMMANDS[command],) if command in COMMANDS else MODULES:
        import_module(f".{name}", __package__).register(sub, common)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command word of ``argv``: its first argument that is not one of
    the main parser's options (``--repo DIR``, ``--repo=DIR``, flags) or
    their abbreviations, as argparse reads them. None if there is none."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
        if len(arg) > 2 and ("--repo".startswith(arg) or "--wait".startswith(arg)):  # options taking a value
            next(args, None)
    return None


SERVERS = {"daemon", "mount"}
"""Commands that serve peers or the kernel for a long time: a peer that
hangs up mid-write must cost them one connection (EPIPE), never the process."""

BUFFER_HEAVY = SERVERS | {"add"}
"""Commands that pass megabyte buffers through sockets and ciphers, for
which glibc's malloc is tuned first (cas/allocator.py). Reading commands
are not: a warm ``cas cat`` of 256 MiB takes the same time either way
(87-89 ms), and loading ctypes for it costs a cold start ~10 ms."""


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil (which brings
    zlib, bz2 and lzma along: ~12 ms of a cold ``cas cat``). argparse makes
    one for every ``add_argument``, to check the metavar."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    # What shutil.get_terminal_size does: $COLUMNS if positive, else the
    # terminal's, else 80.
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        stdout = sys.__stdout__
        if stdout is None:
            return 80
        return os.get_terminal_size(stdout.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Parser(argparse.ArgumentParser):
    """ArgumentParser with :class:`_HelpFormatter`; subcommands' parsers
    are made of the same class (argparse's default ``parser_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Bad usage: argparse's usage and message on stderr, exit 2; with
        ``--json`` anywhere on the line, also the error as JSON on stdout
        (the options are not parsed yet, so the flag is looked for)."""
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("cas").strip() or None
        Output(json_mode="--json" in sys.argv[1:]).error(command, "usage", message)
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (cli/completion.py)
        from .completion import complete

        complete(build_parser())
    args = build_parser(command_named(argv)).parse_args(argv)
    if args.command in BUFFER_HEAVY:
        keep_freed_buffers()
    if args.command not in SERVERS:
        # Die quietly on a closed pipe (`cas cat X | head`), as cat does.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    out = Output(json_mode=args.json, quiet=args.quiet)
    try:
        status = args.run(args, out)
    except UsageError as exc:
        out.error(args.command, "usage", str(exc))
        return 2
    except CasError as exc:
        out.error(args.command, type(exc).__name__, str(exc))
        return 1
    except KeyboardInterrupt:
        print(f"cas {args.command}: interrupted", file=sys.stderr)
        out.document({"error": {"command": args.command, "type": "interrupted", "message": "interrupted"}})
        return 130
    return int(status or 0)


def run() -> None:
    """The ``cas`` console script: :func:`main`, then out without tearing
    the interpreter down when nothing else is running.

    Freeing every module and object at exit costs a short command ~7 ms, a
    tenth of its start (a warm ``cas cat`` of a 1-byte file: 61-62 against
    69-70 ms). By the time main returns it has closed the repository and
    every file it opened, so only the standard streams need flushing. A
    command that leaves another thread alive (a server, trio's worker
    threads) exits the usual way, which waits for them."""
    status = main()
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() == 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
