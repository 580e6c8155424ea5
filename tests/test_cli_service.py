"""``cas service install``: a systemd unit that runs the node."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CAS, run_cas, skip_unless_ci


def verify(unit: Path) -> None:
    """systemd's own check of a unit file (it needs no running systemd)."""
    if shutil.which("systemd-analyze") is None:
        skip_unless_ci("no systemd-analyze on this machine")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("scope", ["user", "system"])
def test_the_unit_runs_this_cas_on_this_repository_and_systemd_accepts_it(tmp_path: Path, repo: Path,
                                                                         scope: str) -> None:
    text = run_cas("service", "install", f"--{scope}", "--print", repo=repo).stdout.decode()
    lines = text.splitlines()
    assert f"ExecStart={CAS} --repo {repo} daemon" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines  # systemctl reload: the daemon reads its settings
    assert "Restart=on-failure" in lines and "SyslogIdentifier=cas" in lines
    assert ("WantedBy=multi-user.target" in lines) == (scope == "system")
    assert ("User=root" in lines) == (scope == "system")  # the repository's owner
    unit = tmp_path / "cas.service"
    unit.write_text(text)
    verify(unit)


def test_install_writes_the_users_unit_once(tmp_path: Path, repo: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = run_cas("service", "install", "--user", repo=repo, env=env)
    unit = tmp_path / "config" / "systemd" / "user" / "cas.service"
    assert unit.read_text() == run_cas("service", "install", "--user", "--print", repo=repo).stdout.decode()
    assert "systemctl --user daemon-reload && systemctl --user enable --now cas" in done.stderr.decode()
    again = run_cas("service", "install", "--user", repo=repo, env=env, check=False)
    assert again.returncode == 1 and b"exists; --force replaces it" in again.stderr
    run_cas("service", "install", "--user", "--force", repo=repo, env=env)
