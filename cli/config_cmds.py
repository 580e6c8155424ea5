"""``cas config``: the repository's settings, kept in its config.json.

The settings are ``history.keep`` (which namespace versions are kept, by
age: cas.names.history), ``history`` (at most how many) and every
``cas daemon`` flag but ``--help``: a flag given on the command line wins,
else the repository's setting, else the default (``cas daemon --help`` says
each). A value is checked when it is set, by the very function that checks
the flag, and kept as it was typed ("20G", "7d"); ``cas daemon`` reads it
through that function again. A running daemon takes some of them on SIGHUP
(``systemctl reload cas``, or ``kill -HUP PID``: ``cas.node.RELOADABLE``, the
room it gives others and its bootstrap peers); the rest at its next start.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from cas.errors import InvalidInputError, UsageError

from .output import Output
from .repo_cmds import repo_path

REPOSITORY_SETTINGS = {
    "history": "at most this many past namespace versions are kept (default: no limit by count)",
    "history.keep": "which namespace versions are kept, by age (default: 1h:all 1d:1h 30d:1d forever:30d)",
}


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config", parents=common, help="show or change the repository's settings",
        description="Show or change the settings kept in the repository's config.json: 'history' "
        "and every 'cas daemon' flag, by its name without the dashes (e.g. quota, bootstrap). "
        "A flag given to 'cas daemon' wins over its setting. A running daemon takes quota, "
        "peer_quota, disk_reserve and bootstrap on SIGHUP, the rest at its next start.")
    config_sub = p.add_subparsers(dest="config_command", metavar="list|get|set|unset", required=True)
    s = config_sub.add_parser("list", parents=common, help="every setting, with its value if set",
                              description="Every setting, with its value where the repository sets one.")
    s.set_defaults(run=cmd_list)
    s = config_sub.add_parser("get", parents=common, help="one setting's value",
                              description="One setting's value; exit status 1 if it is not set.")
    s.add_argument("name", metavar="NAME", help="the setting, e.g. quota")
    s.set_defaults(run=cmd_get)
    s = config_sub.add_parser("set", parents=common, help="set a setting",
                              description="Set a setting, checked as the daemon's flag is. "
                              "'bootstrap' takes one or more HOST:PORT.")
    s.add_argument("name", metavar="NAME", help="the setting, e.g. quota")
    s.add_argument("values", nargs="+", metavar="VALUE", help="its value, as the flag takes it, e.g. 20G")
    s.set_defaults(run=cmd_set)
    s = config_sub.add_parser("unset", parents=common, help="remove a setting (back to the default)",
                              description="Remove a setting: the default applies again.")
    s.add_argument("name", metavar="NAME", help="the setting")
    s.set_defaults(run=cmd_unset)


@functools.cache
def daemon_actions() -> dict[str, argparse.Action]:
    """``cas daemon``'s flags by setting name (the flag without dashes)."""
    from .main import build_parser

    parser = build_parser("daemon")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            daemon = action.choices["daemon"]
            return {a.dest: a for a in daemon._actions
                    if a.option_strings and a.dest not in ("help", "repo", "wait", "json", "quiet")}
    raise AssertionError("the parser has no daemon command")


def _name(text: str) -> str:
    name = text.strip().lstrip("-")
    if name not in REPOSITORY_SETTINGS:
        name = name.replace("-", "_")
    if name not in REPOSITORY_SETTINGS and name not in daemon_actions():
        known = ", ".join(sorted({*REPOSITORY_SETTINGS, *daemon_actions()}))
        raise UsageError(f"no setting {text!r}; the settings are: {known}")
    return name


def checked(name: str, values: list[str]) -> Any:
    """The value to keep for ``name``, checked; InvalidInputError if bad."""
    if name == "history":
        if len(values) != 1 or not values[0].isdigit():
            raise InvalidInputError("history is a whole number of versions, 0 or more")
        return int(values[0])
    if name == "history.keep":
        from cas.names.history import parse_policy

        return str(parse_policy(values))  # as the policy reads back
    action = daemon_actions()[name]
    convert = action.type if callable(action.type) else str
    if not isinstance(action, argparse._AppendAction) and len(values) != 1:
        raise InvalidInputError(f"{name} takes one value")
    for value in values:
        try:
            convert(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise InvalidInputError(f"{name}: {exc}") from None
    if name == "id_difficulty":
        return int(values[0])  # read as a number by the node (cas.node.config)
    return list(values) if isinstance(action, argparse._AppendAction) else values[0]


def settings_for_daemon(config: dict[str, Any]) -> dict[str, Any]:
    """The repository's daemon settings, each converted as its flag is."""
    found: dict[str, Any] = {}
    for name, action in daemon_actions().items():
        if name not in config or name == "id_difficulty":  # read by the node itself, after the network key's
            continue
        convert = action.type if callable(action.type) else str
        value = config[name]
        try:
            if isinstance(action, argparse._AppendAction):
                found[name] = [convert(str(item)) for item in value]
            else:
                found[name] = convert(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise InvalidInputError(f"the repository's setting {name} = {value!r} is not valid ({exc}); "
                                    f"change it with 'cas config set {name} VALUE'") from None
    return found


def _repository(args: argparse.Namespace) -> Path:
    """The repository's path, created first if it is new (as by any command)."""
    from cas.store import LocalStore

    path = repo_path(args)
    if not (path / "config.json").exists():
        LocalStore.open(path, create=True, wait=args.wait).close()
    return path


def _read(args: argparse.Namespace) -> dict[str, Any]:
    from cas.store import LocalStore

    return LocalStore.check_config(_repository(args))


def _shown(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    config = _read(args)
    names = sorted({*REPOSITORY_SETTINGS, *daemon_actions()})
    out.document({name: config[name] for name in names if name in config})
    for name in names:
        out.result(f"{name:<28} {_shown(config[name]) if name in config else '-'}")
    return 0


def cmd_get(args: argparse.Namespace, out: Output) -> int:
    name = _name(args.name)
    config = _read(args)
    if name not in config:
        raise InvalidInputError(f"{name} is not set here; 'cas daemon --help' says its default")
    out.document({name: config[name]})
    out.result(_shown(config[name]))
    return 0


def cmd_set(args: argparse.Namespace, out: Output) -> int:
    from cas.store import LocalStore

    name = _name(args.name)
    value = checked(name, args.values)

    def change(config: dict[str, Any]) -> None:
        config[name] = value

    LocalStore.update_config(_repository(args), change)
    out.document({name: value})
    from cas.node.config import RELOADABLE

    out.note(f"{name} = {_shown(value)}" + (
        "" if name in REPOSITORY_SETTINGS else
        "; a running daemon takes it on SIGHUP (systemctl reload cas, or kill -HUP)" if name in RELOADABLE else
        "; a running daemon takes it at its next start"))
    return 0


def cmd_unset(args: argparse.Namespace, out: Output) -> int:
    from cas.store import LocalStore

    name = _name(args.name)

    def change(config: dict[str, Any]) -> None:
        config.pop(name, None)

    LocalStore.update_config(_repository(args), change)
    out.document({name: None})
    return 0
