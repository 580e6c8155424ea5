"""The mount's control ops: ``cas mount`` and ``cas umount`` asking the
running node to serve a read-write mount of its namespace, so a machine
runs one node that is on the network and mounted at once.

Owns one handler per op, ``handler(request, ctx)`` (requests declared in
:mod:`cas.control.schema`), listed in :data:`cas.node.ops.HANDLERS`. The
mount itself is :class:`cas.fuse.served.ServedMount`, loaded only when a
mount is asked for (a node on a machine without fusermount3 serves
everything else).

Must never: serve two mounts at once (a node serves one: its
``ServedMount``), or hold state (the node keeps its mount).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ..control import schema as ops
from ..errors import InvalidInputError, MountError
from .ops_context import OpContext


async def mount(request: ops.Mount, ctx: OpContext) -> dict[str, Any]:
    from ..fuse.mountd import (
        DEFAULT_COMMIT_INTERVAL,
        MAX_COMMIT_INTERVAL,
        MIN_COMMIT_INTERVAL,
        MountConfig,
        check_mountpoint,
        fuse_options,
    )
    from ..fuse.served import ServedMount

    node = ctx.node
    if not request.mountpoint.startswith("/"):
        raise InvalidInputError(f"the mount point must be an absolute path, not {request.mountpoint!r}")
    if node.mount is not None:
        raise MountError(f"this node already serves a mount at {node.mount.mountpoint} (one at a time); "
                         f"'cas umount {node.mount.mountpoint}' first, or use that one")
    mountpoint = await trio.to_thread.run_sync(
        lambda: check_mountpoint(Path(request.mountpoint), nonempty=request.nonempty))
    every = request.commit_interval_ms
    if every is not None and not MIN_COMMIT_INTERVAL <= every / 1000 <= MAX_COMMIT_INTERVAL:
        raise InvalidInputError(f"the commit interval must be {MIN_COMMIT_INTERVAL:g} s to {MAX_COMMIT_INTERVAL:g} s")
    config = MountConfig(ctx.store.path, mountpoint, request.read_only, request.cache_bytes,
                         allow_other=request.allow_other, options=tuple(request.options),
                         commit_interval=DEFAULT_COMMIT_INTERVAL if every is None else every / 1000)
    fuse_options(config, config.read_only)  # a refused option is said before anything starts
    served = node.mount = ServedMount(node, config)
    assert node.nursery is not None

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await served.run(task_status=task_status)
        finally:
            if node.mount is served:
                node.mount = None
            node.log(f"unmounted {mountpoint}")

    await node.nursery.start(serve)
    node.log(f"mounted the namespace at {mountpoint}{' (read-only)' if config.read_only else ''}")
    return served.describe()


async def unmount(request: ops.Unmount, ctx: OpContext) -> bool:
    served = ctx.node.mount
    if served is None or str(served.mountpoint) != request.mountpoint:
        return False
    await served.unmount()
    return True
