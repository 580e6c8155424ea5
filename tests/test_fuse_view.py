"""fuse/view.py over a real repository, without FUSE: what the mount's
handlers see of the namespace across commits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
from cas.fuse.tree import MountTree
from cas.fuse.view import MountView

from cas.store import LocalStore


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


@contextmanager
def _view(repo: Path) -> Iterator[MountView]:
    """A mount's view of the repository at ``repo``, as the mount makes it."""
    with LocalStore.open(repo) as store:
        tree = MountTree(store)
        try:
            yield MountView(tree, _run)
        finally:
            tree.close()


def test_a_file_made_in_a_directory_the_last_commit_listed_is_found_after_the_next(tmp_path: Path) -> None:
    # The first commit builds /big whole and the view keeps its listing; the
    # second adds one name to it, edited in place: the kept listing is stale
    # then, and must not answer "no such file" for the new name.
    async def main() -> None:
        with _view(tmp_path / "repo") as view:
            await view.mkdir("/big", 0o755)
            for i in range(200):
                await view.create(f"/big/f{i:03}", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/big/f007")).kind == "file"
            await view.create("/big/new", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/big/new")).kind == "file"
            assert "new" in [entry.name for entry in await view.list("/big")]

    trio.run(main)


def test_a_directorys_mode_set_in_one_commit_is_kept_when_a_later_one_writes_in_it(tmp_path: Path) -> None:
    # rsync's order: a directory made 0700 and filled, committed; chmod to
    # 0755 alone (an entry changed in its parent), committed; a file added
    # in it, committed. What the view knew of the directory from the first
    # commit is stale after the second and must not bring 0700 back.
    async def main() -> None:
        with _view(tmp_path / "repo") as view:
            await view.mkdir("/top", 0o755)
            await view.mkdir("/top/d", 0o700)
            await view.create("/top/d/a", 0o644, exclusive=True)
            await view.flush()
            await view.set_meta(lambda: "/top/d", mode=0o755)
            await view.flush()
            await view.create("/top/d/b", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/top/d")).mode == 0o755
        with _view(tmp_path / "repo") as view:
            assert (await view.resolve("/top/d")).mode == 0o755

    trio.run(main)


def test_a_directory_removed_in_one_commit_is_not_brought_back_by_a_later_one(tmp_path: Path) -> None:
    async def main() -> None:
        with _view(tmp_path / "repo") as view:
            await view.mkdir("/top", 0o755)
            await view.mkdir("/top/d", 0o700)
            await view.flush()
            await view.rename("/top/d", "/top/e", no_replace=False)
            await view.flush()
            await view.mkdir("/top/d", 0o750)
            await view.create("/top/d/new", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/top/d")).mode == 0o750
            assert [entry.name for entry in await view.list("/top/d")] == ["new"]
            assert (await view.resolve("/top/e")).mode == 0o700

    trio.run(main)
