"""cas/durable.py: a small file replaced whole, atomically, durably, 0600."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cas.durable import write_atomically


def test_a_file_is_written_private_whatever_the_umask_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    old = os.umask(0)
    try:
        write_atomically(path, b"first")
        write_atomically(path, b"second, longer")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"second, longer"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


def test_without_replace_an_existing_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "network.key"
    write_atomically(path, b"the key", replace=False)
    with pytest.raises(FileExistsError):
        write_atomically(path, b"another key", replace=False)
    assert path.read_bytes() == b"the key"
    assert os.listdir(tmp_path) == ["network.key"]


def test_a_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomically(tmp_path / "dir", b"x")  # the name is taken by a directory
    assert sorted(os.listdir(tmp_path)) == ["dir"] and os.listdir(tmp_path / "dir") == []
