"""``cas config``: the repository's settings, and ``cas daemon`` using them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import CAS, run_cas
from tests.nodeproc import Daemons, wait_until


def config(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    return run_cas("config", *args, repo=repo, check=check)


def test_a_setting_is_set_read_listed_and_unset(repo: Path) -> None:
    config(repo, "set", "quota", "20G")
    config(repo, "set", "peer-quota", "500M")  # the flag's spelling works too
    config(repo, "set", "bootstrap", "127.0.0.1:4711", "[::1]:4712")
    config(repo, "set", "history", "7")
    assert config(repo, "get", "quota").stdout == b"20G\n"  # as typed
    assert config(repo, "get", "bootstrap").stdout == b"127.0.0.1:4711 [::1]:4712\n"
    listed = json.loads(run_cas("--json", "config", "list", repo=repo).stdout)
    assert listed == {"quota": "20G", "peer_quota": "500M", "bootstrap": ["127.0.0.1:4711", "[::1]:4712"],
                      "history": 7}
    text = config(repo, "list").stdout.decode().splitlines()
    assert "quota                        20G" in text and "lease                        -" in text
    config(repo, "unset", "quota")
    missing = config(repo, "get", "quota", check=False)
    assert missing.returncode == 1 and b"quota is not set here" in missing.stderr
    # The repository still opens, and gc reads the history it was given.
    assert run_cas("repo", "stat", repo=repo).returncode == 0


def test_a_bad_value_or_name_is_refused_and_nothing_is_written(repo: Path) -> None:
    config(repo, "set", "quota", "1G")
    before = (repo / "config.json").read_bytes()
    bad = config(repo, "set", "quota", "lots", check=False)
    assert bad.returncode == 1
    assert bad.stderr.decode().strip() == "cas config: error: quota: 'lots' is not a size; write e.g. 500M or 20G"
    unknown = config(repo, "set", "quotas", "1G", check=False)
    assert unknown.returncode == 2 and b"no setting 'quotas'; the settings are: " in unknown.stderr
    two = config(repo, "set", "quota", "1G", "2G", check=False)
    assert two.returncode == 1 and b"quota takes one value" in two.stderr
    assert config(repo, "set", "format", "x", check=False).returncode == 2
    assert (repo / "config.json").read_bytes() == before


def test_settings_written_at_once_are_all_kept(repo: Path) -> None:
    names = ["quota", "peer_quota", "disk_reserve", "scrub_rate", "frame_memory", "idle_timeout",
             "frame_timeout", "handshake_timeout"]
    values = ["3G", "300M", "1G", "8M", "16M", "60", "9", "8"]
    run_cas("init", repo=repo)
    procs = [subprocess.Popen([CAS, "--repo", str(repo), "config", "set", name, value], stderr=subprocess.PIPE)
             for name, value in zip(names, values, strict=True)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    listed = json.loads(run_cas("--json", "config", "list", repo=repo).stdout)
    assert listed == dict(zip(names, values, strict=True))


def test_the_daemon_runs_with_the_repositorys_settings_and_a_flag_wins(tmp_path: Path) -> None:
    a_repo, b_repo = tmp_path / "a", tmp_path / "b"
    with Daemons() as daemons:
        run_cas("init", repo=a_repo)
        config(a_repo, "set", "listen", "127.0.0.1:0")
        a = daemons.start(a_repo, listen=None)
        assert a.host == "127.0.0.1" and a.port != 4710  # not the default 0.0.0.0:4710
        config(a_repo, "set", "quota", "2G")  # while the daemon owns the repository
        assert config(a_repo, "get", "quota").stdout == b"2G\n"
        run_cas("init", repo=b_repo)
        config(b_repo, "set", "listen", "127.0.0.2:0")
        config(b_repo, "set", "bootstrap", a.address)
        b = daemons.start(b_repo, listen="127.0.0.1:0")  # the flag wins over the setting
        assert b.host == "127.0.0.1"
        wait_until(lambda: a.node_id in run_cas("peers", repo=b_repo).stdout.decode(), 30,
                   "b to join a, its bootstrap setting")
    # A setting edited by hand into something the flag would refuse stops
    # the daemon before it starts, saying which setting and how to fix it.
    settings = json.loads((b_repo / "config.json").read_text())
    (b_repo / "config.json").write_text(json.dumps({**settings, "bootstrap": ["not-an-address"]}))
    refused = run_cas("daemon", repo=b_repo, check=False, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.decode().strip().startswith(
        "cas daemon: error: the repository's setting bootstrap = ['not-an-address'] is not valid")


def test_sighup_makes_a_running_daemon_take_its_new_limits(tmp_path: Path) -> None:
    import os
    import signal

    from tests.nodeproc import replication_stats

    repo = tmp_path / "a"
    run_cas("init", repo=repo)
    config(repo, "set", "quota", "3G")
    with Daemons() as daemons:
        a = daemons.start(repo)
        assert replication_stats(a)["quota"] == 3 << 30
        config(repo, "set", "quota", "5G")
        config(repo, "set", "idle-timeout", "77")
        config(repo, "set", "scrub-rate", "1M")
        config(repo, "set", "max-connections", "40")
        os.kill(a.pid, signal.SIGHUP)
        wait_until(lambda: replication_stats(a)["quota"] == 5 << 30, 30, "the new quota to apply")
        wait_until(lambda: "settings read again" in a.stderr(), 30, "the daemon to say what it did")
        said = [line for line in a.stderr().splitlines() if "settings read again" in line][-1]
        assert said == ("cas daemon: settings read again: applied max_connections, quota, scrub_rate; "
                        "idle_timeout change at the next start")
        # A setting gone bad is reported, and the daemon goes on as it was.
        settings = json.loads((repo / "config.json").read_text())
        (repo / "config.json").write_text(json.dumps({**settings, "quota": "lots"}))
        os.kill(a.pid, signal.SIGHUP)
        wait_until(lambda: "settings not read again" in a.stderr(), 30, "the daemon to refuse the bad setting")
        assert replication_stats(a)["quota"] == 5 << 30
        assert a.proc.poll() is None
        assert daemons.stop(a) == 0
