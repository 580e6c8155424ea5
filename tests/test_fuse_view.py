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
def _view(repo: Path, run: Callable[..., Any] = _run) -> Iterator[MountView]:
    """A mount's view of the repository at ``repo``, as the mount makes it
    (``run``: how it calls the tree)."""
    with LocalStore.open(repo) as store:
        tree = MountTree(store)
        try:
            yield MountView(tree, run)
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


def _counting_run(asked: list[str]) -> Callable[..., Any]:
    """A ``run`` that notes the name of every call it makes on the tree."""
    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        asked.append(fn.__name__)
        return fn(*args)
    return run


def test_a_directory_changed_again_after_a_commit_is_answered_from_what_commits_taught(tmp_path: Path) -> None:
    # rsync's pattern: a directory filled across several commits, each
    # adding a few names (edited in place, not rebuilt), looked up and
    # listed between them. The listings the commits taught the view answer
    # every lookup and listing: no trip to the store, and the same answers
    # as a fresh view reading the repository.
    async def main() -> None:
        asked: list[str] = []
        with _view(tmp_path / "repo", _counting_run(asked)) as view:
            await view.mkdir("/big", 0o755)
            for i in range(300):
                await view.create(f"/big/f{i:03}", 0o644, exclusive=True)
            await view.flush()
            for round_ in range(3):
                asked.clear()
                await view.create(f"/big/new{round_}", 0o644, exclusive=True)  # /big pending over its commit
                assert (await view.resolve("/big/f007")).kind == "file"
                assert await view._existing("/big/absent") is None
                names = [entry.name for entry in await view.list("/big")]
                assert len(names) == 301 + round_ and f"new{round_}" in names
                assert [name for name in asked if name in ("resolve_from", "listing", "supply")] == []
                await view.flush()
            asked.clear()
            assert [entry.name for entry in await view.list("/big")] == names
            assert asked == []
        with _view(tmp_path / "repo") as fresh:
            assert [entry.name for entry in await fresh.list("/big")] == names

    trio.run(main)


def test_the_listings_kept_are_bounded_and_what_was_dropped_is_read_again(tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    monkeypatch.setattr("cas.fuse.view.MAX_KNOWN_ENTRIES", 50)

    async def main() -> None:
        asked: list[str] = []
        with _view(tmp_path / "repo", _counting_run(asked)) as view:
            for d in range(4):
                await view.mkdir(f"/d{d}", 0o755)
                for i in range(20):
                    await view.create(f"/d{d}/f{i}", 0o644, exclusive=True)
                await view.flush()
            assert view._listing_entries <= 50
            asked.clear()
            assert len(await view.list("/d0")) == 20  # dropped: read from the store
            assert asked == ["list"]
            asked.clear()
            assert len(await view.list("/d3")) == 20  # the newest: kept
            assert asked == []

    trio.run(main)
