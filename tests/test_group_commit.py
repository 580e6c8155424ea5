"""cas.group_commit: blocks arriving together are made durable together,
each caller told only after its group's commit, a refusal only to its own
block."""

from __future__ import annotations

import trio
import trio.testing

from cas.blocks import Block
from cas.cid import RAW
from cas.errors import StorageQuotaError
from cas.group_commit import GroupCommitter


def test_blocks_arriving_together_share_one_commit_and_each_gets_its_outcome() -> None:
    commits: list[list[Block]] = []
    release = trio.Event()

    async def commit(blocks: list[Block]) -> list[object]:
        commits.append(blocks)
        await release.wait()  # the first group is slow: the rest pile up behind it
        return [StorageQuotaError("full") if b.data == b"too big" else True for b in blocks]

    blocks = [Block.of(RAW, bytes([i])) for i in range(5)] + [Block.of(RAW, b"too big")]
    outcomes: dict[int, object] = {}

    async def main() -> None:
        committer = GroupCommitter(commit)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)

            async def keep(i: int) -> None:
                try:
                    outcomes[i] = await committer.keep(blocks[i])
                except StorageQuotaError as exc:
                    outcomes[i] = exc

            nursery.start_soon(keep, 0)
            await trio.testing.wait_all_tasks_blocked()  # the first group is being committed
            assert outcomes == {}  # nobody is told before the commit returns
            for i in range(1, len(blocks)):
                nursery.start_soon(keep, i)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert [len(group) for group in commits] == [1, 5]  # one commit for all that waited
    assert all(outcomes[i] is True for i in range(5))
    assert isinstance(outcomes[5], StorageQuotaError)


def test_a_failed_commit_is_reported_to_every_block_of_its_group() -> None:
    async def commit(blocks: list[Block]) -> list[object]:
        raise OSError("disk on fire")

    async def main() -> None:
        committer = GroupCommitter(commit)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            try:
                await committer.keep(Block.of(RAW, b"x"))
            except OSError as exc:
                assert "disk on fire" in str(exc)
            else:
                raise AssertionError("the failure was not reported")
            nursery.cancel_scope.cancel()

    trio.run(main)
