"""Shell completion: ``cas completion bash|zsh`` and the completers.

Completion is argcomplete's: the shell runs ``cas`` with ``_ARGCOMPLETE``
set, and :func:`complete` (called by ``main`` before anything else, only
then) answers with the words that fit and exits. Commands and options come
from the parser itself; an argument whose metavar names a ``PATH`` is
completed from the namespace (the entries of the directory being typed),
one that names a ``CID`` from the repository's pins. Completion never waits
for a repository another process is using, never creates one, and on any
error offers nothing rather than an error message in the user's prompt.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import Any

from cas.errors import CasError

SHELLS = ("bash", "zsh")


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion", parents=common, help="print the shell code that completes cas commands",
        description="Print the code that makes SHELL complete cas's commands, options, namespace "
        "paths and pinned CIDs. For bash: eval \"$(cas completion bash)\" in ~/.bashrc; for zsh: "
        "eval \"$(cas completion zsh)\" in ~/.zshrc (after compinit).")
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")
    p.set_defaults(run=cmd_completion)


def cmd_completion(args: argparse.Namespace, out: Any) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["cas"], shell=args.shell))
    return 0


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit (argcomplete)."""
    import argcomplete

    _attach(parser)
    argcomplete.autocomplete(parser, always_complete_options=False)


def _attach(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _attach(subparser)
            continue
        metavar = str(action.metavar or "")
        if "PATH" in metavar:
            action.completer = namespace_paths  # type: ignore[attr-defined]  # argcomplete's hook
        elif "CID" in metavar:
            action.completer = pinned_cids  # type: ignore[attr-defined]  # argcomplete's hook


def _repository(parsed_args: argparse.Namespace) -> Any:
    import cas

    from .repo_cmds import repo_path

    return cas.open_repository(repo_path(parsed_args), create=False, wait=0)


def namespace_paths(prefix: str, parsed_args: argparse.Namespace, **kwargs: Any) -> Iterable[str]:
    """The namespace entries that start with ``prefix`` (a path from /),
    directories with a trailing slash; pinned CIDs where a CID fits too."""
    if not prefix:
        return ["/", *pinned_cids(prefix, parsed_args)]
    if not prefix.startswith("/"):
        return pinned_cids(prefix, parsed_args)
    parent, _slash, typed = prefix.rpartition("/")
    try:
        with _repository(parsed_args) as repo:
            entries = list(repo.ls(parent or "/"))
    except (CasError, OSError):
        return []
    return [f"{parent}/{entry.name}" + ("/" if entry.kind == "dir" else "")
            for entry in entries if entry.name.startswith(typed)]


def pinned_cids(prefix: str, parsed_args: argparse.Namespace, **kwargs: Any) -> Iterable[str]:
    """The pinned CIDs that start with ``prefix``."""
    try:
        with _repository(parsed_args) as repo:
            pins = [str(cid) for cid in repo.pins()]
    except (CasError, OSError):
        return []
    return [cid for cid in pins if cid.startswith(prefix)]


def requested() -> bool:
    """Whether the shell is asking for completions (argcomplete's variable)."""
    return "_ARGCOMPLETE" in os.environ
