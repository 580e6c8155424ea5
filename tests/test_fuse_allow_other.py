"""``cas mount --allow-other`` and ``-o``: other users may use the mount,
the kernel still checks each file's permissions, and what cannot work is
said before anything starts (fuse/mountd.py, ``fuse_options``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cas.fuse.mountd import MountConfig, fuse_options

from cas.errors import MountError
from tests.conftest import run_cas
from tests.fusemount import mounted
from tests.test_cli_modes import as_nobody, shared_tmp  # noqa: F401 (a fixture, used by name)


def config(**kwargs: object) -> MountConfig:
    return MountConfig(Path("/repo"), Path("/mnt"), **kwargs)  # type: ignore[arg-type]


def test_the_kernel_always_checks_permissions_and_other_users_are_let_in_only_when_asked() -> None:
    assert fuse_options(config(), read_only=False, uid=0) == {
        "default_permissions", "fsname=cas", "subtype=cas"}
    assert {"allow_other", "ro"} <= fuse_options(config(allow_other=True), read_only=True, uid=0)
    assert "noatime" in fuse_options(config(options=("noatime",)), read_only=False, uid=0)


def test_allow_other_for_a_user_needs_user_allow_other_in_fuse_conf(tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    with pytest.raises(MountError, match=f"needs 'user_allow_other' in {conf}"):
        fuse_options(config(allow_other=True), read_only=False, uid=1000, fuse_conf=conf)
    with pytest.raises(MountError, match="user_allow_other"):  # the same asked through -o
        fuse_options(config(options=("allow_other",)), read_only=False, uid=1000, fuse_conf=conf)
    conf.write_text("user_allow_other  # for cas\n")
    assert "allow_other" in fuse_options(config(allow_other=True), read_only=False, uid=1000, fuse_conf=conf)
    with pytest.raises(MountError):
        fuse_options(config(allow_other=True), read_only=False, uid=1000, fuse_conf=tmp_path / "missing")


@pytest.mark.parametrize("option", ["allow_root", "", "a,b"])
def test_an_option_cas_does_not_pass_on_is_refused(option: str) -> None:
    with pytest.raises(MountError, match="not an option cas mount passes on"):
        fuse_options(config(options=(option,)), read_only=False, uid=0)


def test_a_refused_option_is_one_error_line_and_nothing_is_mounted(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cas("mount", str(mnt), "-o", "allow_root", repo=tmp_path / "repo", check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        "cas mount: error: -o 'allow_root': not an option cas mount passes on (one option each, not allow_root)"]
    assert not any(mnt.iterdir())


def test_other_users_use_the_mount_only_with_allow_other_and_within_each_files_permissions(
        shared_tmp: Path) -> None:  # noqa: F811 (the fixture)
    repo = shared_tmp / "repo"
    run_cas("init", repo=repo)
    run_cas("add", "--to", "/shared.txt", "-", input=b"for everyone\n", repo=repo)
    with mounted(repo, shared_tmp / "mnt") as mnt:
        refused = as_nobody("ls", str(mnt))
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
    with mounted(repo, shared_tmp / "mnt", "--allow-other") as mnt:
        assert as_nobody("ls", str(mnt)).stdout.split() == ["shared.txt"]
        assert as_nobody("cat", str(mnt / "shared.txt")).stdout == "for everyone\n"
        # The kernel checks each file's permissions: the root-owned tree is not nobody's to change.
        written = as_nobody("touch", str(mnt / "mine.txt"))
        assert written.returncode != 0 and "Permission denied" in written.stderr
        assert not (mnt / "mine.txt").exists()
