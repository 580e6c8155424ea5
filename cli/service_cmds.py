"""``cas service install``: run the node as a systemd service.

Writes a unit that runs ``cas --repo REPO daemon`` (with the absolute paths
of this cas and this repository), restarts it if it fails, and sends its
output to the journal under the name ``cas``. The daemon's settings come
from the repository (``cas config``), so the unit never needs editing;
``systemctl reload`` sends SIGHUP, which the daemon answers by reading them
again. ``--user`` (the default for a user other than root) installs a unit
of the user's own systemd (``systemctl --user``), started at login or, with
lingering, at boot; as root, a system unit started at boot.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from cas.errors import InvalidInputError

from .output import Output
from .repo_cmds import repo_path

UNIT_NAME = "cas.service"


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("service", parents=common, help="run the node as a systemd service",
                       description="Run this repository's node as a systemd service.")
    service_sub = p.add_subparsers(dest="service_command", metavar="install", required=True)
    i = service_sub.add_parser(
        "install", parents=common, help="write a systemd unit that runs 'cas daemon' for this repository",
        description="Write a systemd unit that runs 'cas daemon' for this repository, restarted if it "
        "fails, logging to the journal ('journalctl -u cas' or 'journalctl --user -u cas'), and print "
        "the commands that enable and start it. The daemon takes its settings from the repository "
        "('cas config set'); 'systemctl reload' makes it read them again.")
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", dest="scope", action="store_const", const="user",
                       help="a unit of your own systemd, ~/.config/systemd/user (the default unless root)")
    where.add_argument("--system", dest="scope", action="store_const", const="system",
                       help="a system unit, /etc/systemd/system (the default as root)")
    i.add_argument("--print", dest="print_only", action="store_true",
                   help="print the unit instead of writing it")
    i.add_argument("--force", action="store_true", help="replace an existing unit file")
    i.set_defaults(run=cmd_install)


def unit_text(cas: Path, repo: Path, scope: str) -> str:
    """The unit that runs ``cas --repo REPO daemon``."""
    start = " ".join(shlex.quote(str(part)) for part in (cas, "--repo", repo, "daemon"))
    lines = ["[Unit]", f"Description=cas node for {repo}"]
    if scope == "system":  # a user's systemd has no network targets
        lines += ["After=network-online.target", "Wants=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        "SyslogIdentifier=cas",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if scope == "system":
        owner = repo.stat().st_uid if repo.exists() else os.getuid()
        import pwd

        lines.append(f"User={pwd.getpwuid(owner).pw_name}")
    lines += ["", "[Install]", f"WantedBy={'multi-user.target' if scope == 'system' else 'default.target'}", ""]
    return "\n".join(lines)


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    from cas.store import LocalStore

    scope = args.scope or ("system" if os.geteuid() == 0 else "user")
    if scope == "system" and os.geteuid() != 0 and not args.print_only:
        raise InvalidInputError("a system unit is written by root; use sudo, or --user for your own")
    repo = repo_path(args).absolute()
    if not (repo / "config.json").exists():
        LocalStore.open(repo, create=True, wait=args.wait).close()
    cas = Path(sys.argv[0]).absolute() if Path(sys.argv[0]).name == "cas" else Path(sys.executable).parent / "cas"
    text = unit_text(cas, repo, scope)
    if args.print_only:
        sys.stdout.write(text)
        return 0
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    unit = (Path("/etc/systemd/system") if scope == "system" else home / "systemd" / "user") / UNIT_NAME
    if unit.exists() and not args.force:
        raise InvalidInputError(f"{unit} exists; --force replaces it")
    try:
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(text)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {unit}: {exc.strerror or exc}") from None
    systemctl = "systemctl" if scope == "system" else "systemctl --user"
    out.document({"unit": str(unit), "scope": scope, "repo": str(repo)})
    out.note(f"wrote {unit}")
    out.note(f"start it now and at every {'boot' if scope == 'system' else 'login'}: "
             f"{systemctl} daemon-reload && {systemctl} enable --now cas")
    if scope == "user":
        out.note("to run it from boot without a login: loginctl enable-linger")
    return 0
