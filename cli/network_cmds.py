"""``cas network init``: make the key of a private network.

The key goes to the repository (``<repo>/keys/network.key``), where its
daemon finds it by itself, or to ``--out FILE`` for copying to the other
machines (``cas daemon --network-key FILE`` there, or the same place in
their repositories). An existing key file is never overwritten: the
machines holding it would lose each other. docs/network.md says what the
key does on the wire.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .node_cmds import _bits, _replicas, _seconds
from .output import Output
from .repo_cmds import repo_path, waiting_note


def register(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("network", parents=common, help="private networks: their shared key",
                       description="Private networks: a key every member holds, without which no "
                       "handshake completes.")
    network_sub = p.add_subparsers(dest="network_command", metavar="init", required=True)
    i = network_sub.add_parser(
        "init", parents=common, help="write a new network key (a private network's secret)",
        description="Write a new random network key (mode 0600). A daemon with a network key "
        "completes handshakes only with nodes holding the same key. Without --out, the key goes "
        "to the repository (keys/network.key), which its daemon then uses by itself; copy it to "
        "the other machines of the network. An existing key file is never overwritten. "
        "Settings every node of the network must share can be written with the key: they go "
        "wherever the key goes, and a node whose key file has other settings cannot connect.")
    i.add_argument("--out", metavar="FILE", type=Path, default=None,
                   help="where to write the key (default: <repo>/keys/network.key)")
    i.add_argument("--replicas", type=_replicas, default=None, metavar="R",
                   help="copies of every block the network keeps (default 3)")
    i.add_argument("--repair-interval", type=_setting_seconds("repair_interval"), default=None, metavar="DURATION",
                   help="how often every node checks and repairs its blocks' copies, e.g. 10m (default 600 s)")
    i.add_argument("--lease", type=_setting_seconds("lease"), default=None, metavar="DURATION",
                   help="how long blocks held for others are kept unless renewed, e.g. 7d (default 30d)")
    i.add_argument("--id-difficulty", type=_bits, default=None, metavar="BITS",
                   help="work a node ID must show to be let in (default 12)")
    i.set_defaults(run=cmd_network_init)


def cmd_network_init(args: argparse.Namespace, out: Output) -> int:
    from cas.net.network_key import NetworkKey, NetworkKeyError, NetworkSettings, repository_key_path

    if args.out is not None:
        path = args.out.expanduser()
    else:
        path = repository_key_path(_repository(args))
    if path.exists() or path.is_symlink():  # said before any work, and save() checks again
        raise NetworkKeyError(f"the network key {path} already exists; it was left as it is")
    settings = NetworkSettings(replicas=args.replicas, repair_interval=args.repair_interval, lease=args.lease,
                               id_difficulty=args.id_difficulty)
    key = NetworkKey.generate(settings)
    key.save(path)
    out.document({"path": str(path.absolute()), "fingerprint": key.fingerprint,
                  "settings": dict(line.split(" ") for line in settings.lines())})
    out.result(f"wrote network key {path.absolute()} (fingerprint {key.fingerprint}, "
               f"settings: {settings.describe()})")
    out.note("copy it (mode 0600) to every machine of the network; a daemon uses "
             "<repo>/keys/network.key by itself, or any file given with --network-key")
    return 0


def _setting_seconds(name: str) -> Callable[[str], int]:
    """A parser of the network setting ``name``, a duration (``90``, ``15m``,
    ``7d``) as the whole seconds key files keep, within its limits."""
    def parse(text: str) -> int:
        from cas.net.network_key import NetworkSettings

        value = math.ceil(_seconds(text))
        _, low, high = NetworkSettings.LIMITS[name]
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} s to {high // 86400}d")
        return value

    return parse


def _repository(args: argparse.Namespace) -> Path:
    """The repository of ``--repo``, created if there is none (as every
    command does), with its ``keys`` directory."""
    from cas.store import LocalStore

    path = repo_path(args)
    if (path / "config.json").exists():
        LocalStore.check_config(path)  # checked, not opened: its daemon may be running
    else:
        LocalStore.open(path, create=True, wait=args.wait, on_wait=waiting_note(args)).close()
    (path / "keys").mkdir(mode=0o700, exist_ok=True)
    return path
