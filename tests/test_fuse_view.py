"""fuse/view.py over a real repository, without FUSE: what the mount's
handlers see of the namespace across commits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from cas.fuse.tree import MountTree
from cas.fuse.view import MountView

from cas.store import LocalStore


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def test_a_file_made_in_a_directory_the_last_commit_listed_is_found_after_the_next(tmp_path: Path) -> None:
    # The first commit builds /big whole and the view keeps its listing; the
    # second adds one name to it, edited in place: the kept listing is stale
    # then, and must not answer "no such file" for the new name.
    async def main() -> None:
        with LocalStore.open(tmp_path / "repo") as store:
            tree = MountTree(store)
            view = MountView(tree, _run)
            await view.mkdir("/big", 0o755)
            for i in range(200):
                await view.create(f"/big/f{i:03}", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/big/f007")).kind == "file"
            await view.create("/big/new", 0o644, exclusive=True)
            await view.flush()
            assert (await view.resolve("/big/new")).kind == "file"
            assert "new" in [entry.name for entry in await view.list("/big")]
            tree.close()

    trio.run(main)
