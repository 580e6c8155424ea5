"""A read-write mount of a node's own namespace, served inside the node's
process: the daemon's (``cas mount`` asks a running daemon, over its
control socket, to serve it) or the mount process's own node (no daemon).

Owns the FUSE session of this process's mount and its life: mount, serve,
and at the end, whichever way it comes (``cas umount``, fusermount3 -u,
SIGTERM, the node stopping), commit what is staged and unmount. A node
serves one such mount at a time. Owns also what the
node does after each change made through the mount: the blocks a write
stored are queued for placement on the network, as an add's are, and the
publisher is told the root changed (a published namespace goes out again
now).

Must never: let the mount's failure take the node down (once mounted, an
error is logged and ends the mount), or end without unmounting.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..cid import CID
from ..errors import CasError, MountError
from .mountd import MountConfig, fuse_options, tune_read_ahead

if TYPE_CHECKING:
    from ..node import Node
    from .operations import CasOperations
    from .session import Session

log = logging.getLogger("cas.fuse")

WRITE_BACK_TIMEOUT = 60.0
"""Seconds a stopping mount waits for the kernel to write back what
programs wrote into its page cache (the writeback cache)."""


def write_back(mountpoint: Path) -> None:
    """Have the kernel write back its dirty pages of the mount at
    ``mountpoint`` (syncfs(2)); from a worker thread of the process that
    serves it, which answers the writes meanwhile."""
    import ctypes
    import os

    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


class ServedMount:
    """The mount of ``node``'s namespace that ``config`` describes. Run
    :meth:`run` in a nursery (``await nursery.start(mount.run)`` returns
    once it is mounted); :meth:`unmount` or :meth:`end` end it."""

    def __init__(self, node: Node, config: MountConfig) -> None:
        self.node = node
        self.config = config
        self.ended = trio.Event()
        self._mounted = False
        self._ops: CasOperations | None = None
        self._session: Session | None = None
        self._changes_in, self._changes = trio.open_memory_channel[list[CID]](math.inf)

    @property
    def mountpoint(self) -> Path:
        return self.config.mountpoint

    @property
    def read_only(self) -> bool:
        return self.config.read_only

    def describe(self) -> dict[str, Any]:
        return {"mountpoint": str(self.mountpoint), "read_only": self.read_only}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Mount, report started, serve until unmounted or cancelled, then
        commit every staged file and unmount. Raises :class:`MountError`
        (nothing mounted) if the mount cannot be made."""
        try:
            await self._run(task_status)
        finally:
            self.ended.set()

    async def _run(self, task_status: Any) -> None:
        from .operations import CasOperations
        from .session import Session
        from .tree import MountTree

        store = self.node.store
        assert store is not None, "the node runs"
        async with trio.open_nursery() as nursery:
            tree = MountTree(store, on_commit=self._committed)
            ops = self._ops = CasOperations(
                run=self.node.in_store_thread, tree=tree,
                staging_dir=store.path / "tmp", nursery=nursery, read_only=self.config.read_only,
                noatime="noatime" in self.config.options,
                cache_bytes=self.config.cache_bytes,
            )
            options = fuse_options(self.config, ops.read_only)
            try:
                session = ops.session = self._session = Session(ops, self.mountpoint, options)
            except MountError as exc:
                raise MountError(f"cannot mount at {self.mountpoint}: {exc}") from None
            self._mounted = True
            try:
                nursery.start_soon(tune_read_ahead, self.mountpoint)
                nursery.start_soon(self._follow_changes)
                nursery.start_soon(self._commit_every_interval, ops)
                task_status.started()
                try:
                    await session.serve()
                except Exception:  # the mount's edge: it ends, the node goes on
                    log.exception("the mount at %s failed", self.mountpoint)
            finally:
                # Shielded: a node stopping (SIGTERM) still commits what was
                # written through the mount before it unmounts.
                with trio.CancelScope(shield=True):
                    await ops.commit_all()
                    await self.node.in_store_thread(tree.close)
                session.close()  # synchronous: no checkpoint a cancel could interrupt
                self._session = None
                self._mounted = False
                self._ops = None
                nursery.cancel_scope.cancel()

    async def end(self) -> None:
        """End the mount now (SIGTERM, the node stopping): what programs
        wrote that the kernel still holds is written back to the mount
        first, then staged files are committed and it is unmounted even if
        files in it are open (lazily, as umount -l). Returns once it has."""
        if not self._mounted:
            return
        with trio.move_on_after(WRITE_BACK_TIMEOUT):  # a kernel that does not answer never keeps a stop waiting
            await trio.to_thread.run_sync(write_back, self.mountpoint, abandon_on_cancel=True)
        if self._session is not None:
            self._session.terminate()
        await self.ended.wait()

    async def unmount(self) -> None:
        """End the mount as ``umount`` does: refused (MountError, nothing
        changed) while a file in it is open or a process works in it;
        returns once staged files are committed and the mount is gone."""
        from .mountd import unmount_command

        if self._mounted:
            result = await trio.run_process(unmount_command(self.mountpoint), capture_stdout=True,
                                            capture_stderr=True, check=False)
            if result.returncode != 0 and not self.ended.is_set():
                lines = result.stderr.decode(errors="replace").strip().splitlines()
                raise MountError(f"cannot unmount {self.mountpoint}: {lines[-1] if lines else 'unmount failed'}")
        await self.ended.wait()

    # -- committing ---------------------------------------------------------------

    async def _commit_every_interval(self, ops: CasOperations) -> None:
        """Commit what the mount changed, one version per interval at most.
        A commit that fails (a full disk) is said once and tried again each
        interval: the changes stay pending, the mount goes on, and an fsync
        meanwhile reports the error to its caller."""
        failing = False
        while True:
            await trio.sleep(self.config.commit_interval)
            try:
                await ops.flush_changes()
            except (CasError, OSError) as exc:
                if not failing:
                    log.error("cannot commit the mount's changes, trying again every %.3g s: %s",
                              self.config.commit_interval, exc)
                failing = True
            else:
                if failing:
                    log.warning("the mount's changes are committed again")
                failing = False

    async def flush(self) -> None:
        """Commit the mount's pending changes now: before another writer's
        change, so of two changes to one path the later wins, as everywhere
        (docs/architecture.md, "Concurrent changes"), and before a command
        reads the namespace through the node, so it sees them."""
        if self._ops is not None:
            await self._ops.flush_changes()

    async def changed_elsewhere(self, paths: list[str] | None) -> None:
        """Another writer's change to ``paths`` (None: perhaps anything) was
        committed through the node: the mount shows it now."""
        if self._ops is not None:
            await self._ops.changed_elsewhere(paths)

    def _committed(self, stored: list[CID]) -> None:
        """The mount's changes were committed (store thread)."""
        trio.from_thread.run_sync(self._changes_in.send_nowait, stored)

    async def _follow_changes(self) -> None:
        """Tell the publisher of each commit, and queue the blocks each
        stored for placement (an add's blocks are placed the same way).
        Blocks still queued here when the mount ends are placed by the
        repair round, which looks at every block the node holds."""
        async for stored in self._changes:
            if self.node.publisher is not None:
                self.node.publisher.root_changed()
            if self.node.replicator is not None:
                for cid in stored:
                    await self.node.replicator.place(cid)
