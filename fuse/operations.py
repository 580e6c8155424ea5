"""The request handlers: kernel requests mapped onto the mount's parts.

Thin by design: names and inodes come from :mod:`.inodes`, paths are
resolved and changed by :mod:`.tree` (always in the node's store thread),
open files are :mod:`.handles` objects. This module turns their results into
``EntryAttributes`` and their errors into errno values: a
:class:`cas.errors.NamespaceError` carries the errno to return, a bad name is
EINVAL (ENAMETOOLONG past 255 bytes), anything else is logged and EIO.

Must never: block the trio thread on the store (every store or namespace
call goes through ``node.in_store_thread``), or let an exception other than
FUSEError reach the session.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import trio

from ..blocks import Block
from ..cid import CID
from ..errors import CasError, InvalidInputError, NamespaceError, PathNotFoundError
from ..names.directory import MAX_NAME_BYTES, MAX_XATTR_NAME, NO_META, DirEntry, Meta
from ..names.namespace import ROOT_MODE, Node
from ..reader import FileWalk, NodeCache, PathCache, ReadAhead
from ..store import WriteSession
from ..store._disk import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from . import acl, wire
from .callers import in_group_or_capable
from .handles import (
    READ_AHEAD_PARALLEL,
    BlockCache,
    BlockFetcher,
    FileState,
    Handle,
    ReadState,
    Staging,
    read_walk,
)
from .inodes import ROOT_INODE, Inode, InodeTable
from .published import PublishedTree
from .session import HandlerLock, Operations, Session
from .streaming import Follower, Resume
from .tree import MountTree, StoredFile, TreeReader
from .view import MountView, ReadView

log = logging.getLogger("cas.fuse")

STORE_BATCH = 64
"""Closed files stored in one trip to the store thread."""

STORE_DELAY = 0.25
"""Seconds a closed file may wait to be stored, so that files closed one
after another are stored a batch at a time: one trip to the store thread
for each file made rsync 20% slower and git 25%, the store thread's work
competing with the handlers' (bench/mount.py). A full batch, or a file
staged on disk, is stored at once; fsync and the commit interval store
everything."""

MAX_QUEUED = 1024
"""Closed files waiting to be stored past which a close waits for them
(their staged bytes are bounded anyway: cas.fuse.handles.Staging)."""

MAX_FOLLOWING = 2
"""Large files stored while they are written (cas.fuse.streaming) at once:
one a core; any other is stored whole at its close."""

FOLLOW_STEP = 4 * 1024 * 1024
"""Content a follower's thread cuts and hashes between two puts into the
store (its blocks are held in memory until put)."""


ATTR_TIMEOUT = 30.0
"""Seconds the kernel may keep names (also a name's absence), attributes and
pages: changes made elsewhere (``cas add --to``, ``cas mv``, a published
namespace's new version) reach the mount by invalidation the moment they
are made (``changed_elsewhere``, ``root_replaced``), so this only bounds
how long a cache entry lives."""

T = TypeVar("T")


class RunsInThread(Protocol):
    """How the mount runs a call on its store (the node's ``in_store_thread``)."""

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T: ...

_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO,
              "socket": stat.S_IFSOCK, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}
_KINDS = {bits: kind for kind, bits in _KIND_BITS.items()}

MAX_SUBDIR_COUNTS = 100_000
"""Directories (by inode) whose link count the mount remembers (kept true by
its own changes, forgotten at another writer's), and files (by CID) the
bytes they keep in blocks."""

RELATIME_AGE = 24 * 3600 * 10**9
"""An atime older than this (ns) moves on the next read (relatime)."""

DIRECTORY_SIZE = 4096
"""What ``stat`` says of a directory's size."""

DENSE_BELOW = 1 << 20
"""Files smaller than this are taken to keep all their bytes (one or two
blocks): their ``st_blocks`` needs no look at the file's nodes."""


def _without_setid(mode: int, ctx: wire.RequestContext, gid: int) -> int:
    """``mode`` of a file of group ``gid`` as a write, truncate or chown by
    ``ctx`` leaves it when it must drop privileges: no setuid, and no
    setgid if the group may execute or the caller is neither in the group
    nor holds CAP_FSETID (setgid without group execute marks mandatory
    locking, and stays for the group), as on ext4."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_ISGID and (mode & stat.S_IXGRP or not in_group_or_capable(ctx, gid)):
        mode &= ~stat.S_ISGID
    return mode


class _Resumable(NamedTuple):
    """A file stored by its follower, open still: where a follower may go
    on from when it is written past its end (cas.fuse.streaming)."""

    resume: Resume
    size: int  # what was stored: the staged content has not changed since
    blocks: frozenset[CID]  # what the file's followers put so far, kept by the next one


@dataclass
class _Following:
    """A large file stored while it is written: its follower, and what
    the task driving it (``CasOperations._follow``) did."""

    follower: Follower
    keep: frozenset[CID] = frozenset()  # blocks an earlier follower of the file put, which this one refers to
    done: trio.Event = field(default_factory=trio.Event)  # set when its task (started with it) ends
    stored: StoredFile | None = None  # once the follower built the whole file
    blocks: frozenset[CID] = frozenset()  # then: every block its session put or kept
    session: WriteSession | None = None  # its own (MountTree.open_session)


@dataclass
class DirHandle:
    ino: int
    entries: list[DirEntry]
    fresh: bool = True


def fuse_errors(what: str) -> _FuseErrors:
    """Turn cas errors into the errno a file system returns: ``with
    fuse_errors("open"): ...`` (a class, not a generator: every request
    takes one)."""
    return _FuseErrors(what)


class _FuseErrors:
    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        # Never swallows: returns None (the exception goes on) or raises its errno.
        if exc is None or isinstance(exc, wire.FUSEError) or not isinstance(exc, Exception):
            return  # none, an answer already, or a cancellation: as it is
        if isinstance(exc, NamespaceError):
            raise wire.FUSEError(exc.errno) from None
        if isinstance(exc, InvalidInputError):
            raise wire.FUSEError(errno.EINVAL) from None
        if isinstance(exc, CasError):
            log.error("%s: %s", self._what, exc)
            raise wire.FUSEError(errno.EIO) from None
        if isinstance(exc, OSError):
            log.error("%s: %s", self._what, exc)
            raise wire.FUSEError(exc.errno or errno.EIO) from None
        log.error("%s failed", self._what, exc_info=exc)  # a bug here must fail one request, not the mount
        raise wire.FUSEError(errno.EIO) from None


class CasOperations(Operations):
    """The mount's request handlers; see the module docstring."""

    supports_dot_lookup = True
    enable_acl = True  # the kernel checks POSIX ACLs, kept as system.posix_acl_* xattrs
    handles_killpriv = True

    def __init__(
        self,
        *,
        run: RunsInThread,
        tree: MountTree | PublishedTree,
        staging_dir: Path,
        nursery: trio.Nursery,
        read_only: bool = False,
        cache_bytes: int | None = None,
        noatime: bool = False,
        parallel_get: Callable[[Any], bytes | None] | None = None,
    ) -> None:
        super().__init__()
        self._run = run  # node.in_store_thread
        self.tree: TreeReader = tree
        self.view: ReadView = (MountView(tree, run) if isinstance(tree, MountTree) and not read_only
                               else ReadView(tree, run))
        self.inodes = InodeTable()
        self.cache = BlockCache(cache_bytes) if cache_bytes else BlockCache()
        self.fetcher = BlockFetcher(self.cache, tree.blocks, run, parallel_get=parallel_get)
        self.nodes = NodeCache()  # decoded file-tree nodes, shared by every reader
        self._staging_dir = staging_dir
        self._nursery = nursery
        self.read_only = read_only
        # The kernel keeps what is written in its page cache and sends it in
        # large pieces (and at close, fsync and memory pressure), so a
        # program writing 10 KiB at a time costs one request per 128 KiB.
        self.enable_writeback_cache = not read_only
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._locks: dict[int, HandlerLock] = {}
        self._to_store: dict[int, Inode] = {}  # closed files staged, to be stored (in order)
        self._following: dict[int, _Following] = {}  # by inode: files being stored as written
        self._in_order: dict[int, int] = {}  # by inode: where a file written in order from empty ends, not followed yet
        self._resumable: dict[int, _Resumable] = {}  # by inode: where a file stored at an fsync may be followed on
        self._followers_running = 0
        self._store_wake = trio.Event()  # a closed file is queued
        self._store_now = trio.Event()  # a batch is full, or a large file queued
        self._storing = trio.Lock()
        if not read_only:
            nursery.start_soon(self._store_in_background)
        self._uid, self._gid = os.getuid(), os.getgid()
        self._subdirs: dict[int, int] = {}  # a directory inode -> its link count, once counted
        self._stored_bytes: dict[Any, int] = {}  # a large file's CID -> the bytes it keeps in blocks
        self._root_mode, self._root_meta = ROOT_MODE, NO_META  # the mount point's (docs/mount.md)
        self._noatime = noatime or read_only
        self.session: Session | None = None  # the FUSE session serving these handlers, once mounted

    # -- helpers ------------------------------------------------------------------

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(fn, *args)

    @property
    def _changing(self) -> MountView:
        """The view, for an operation that changes it: a read-only mount
        (another node's published tree among them) refuses those before."""
        assert isinstance(self.view, MountView), "a read-only mount never changes its tree"
        return self.view

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _name(self, raw: bytes) -> str:
        if len(raw) > MAX_NAME_BYTES:
            raise wire.FUSEError(errno.ENAMETOOLONG)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise wire.FUSEError(errno.EINVAL) from None

    def _writable(self) -> None:
        if self.read_only:
            raise wire.FUSEError(errno.EROFS)

    def _path(self, ino: int) -> str:
        path = self.inodes.path_of(ino)
        if path is None:
            raise wire.FUSEError(errno.ENOENT)
        return path

    def _child(self, parent: int, name: str) -> str:
        path = self.inodes.child_path(parent, name)
        if path is None:
            raise wire.FUSEError(errno.ENOENT)
        return path

    def _lock(self, ino: int) -> HandlerLock:
        lock = self._locks.get(ino)
        if lock is None:
            lock = self._locks[ino] = HandlerLock()
        return lock

    def _group_of(self, meta: Meta) -> int:
        """The group a file shows (the mount's own where none is recorded)."""
        return self._gid if meta.gid is None else meta.gid

    def _attr(self, inode: Inode, node: Node, links: int | None = None) -> wire.EntryAttributes:
        """The attributes of ``inode``; ``links``: a directory's link count
        (None: not counted, so the kernel is told to ask again)."""
        a = wire.EntryAttributes()
        size, mode, mtime, meta = node.size, node.mode, node.mtime, node.meta
        state: FileState | None = inode.state
        stored = (self._stored_bytes.get(node.cid) if node.kind == "file" and node.cid is not None
                  and size >= DENSE_BELOW else size)
        blocks = ((size if stored is None else stored) + 511) // 512
        if state is not None:
            size, mode, mtime, meta = state.current_size(), state.mode, state.mtime, state.meta
            blocks = state.staging.blocks() if state.staging is not None else (size + 511) // 512
        a.st_ino = inode.ino
        a.generation = 0
        a.entry_timeout = ATTR_TIMEOUT
        a.attr_timeout = ATTR_TIMEOUT if stored is not None or state is not None else 0  # 0: counted when asked
        a.st_mode = _KIND_BITS[node.kind] | (0o777 if node.kind == "symlink" else mode)
        if node.kind == "dir":
            # A directory's size is its own (as on ext4, a block), never the
            # bytes below it, which change when nothing in it did.
            size, blocks = DIRECTORY_SIZE, DIRECTORY_SIZE // 512
            if links is None:
                links = self._subdirs.get(inode.ino)
            a.st_nlink = 2 if links is None else links
            a.attr_timeout = ATTR_TIMEOUT if links is not None else 0  # 0: counted when asked for (getattr)
        else:
            a.st_nlink = 0 if inode.detached else meta.nlink
        a.st_uid = self._uid if meta.uid is None else meta.uid
        a.st_gid = self._group_of(meta)
        a.st_rdev = meta.rdev or 0
        a.st_size = size
        a.st_blksize = 128 * 1024
        a.st_blocks = blocks
        a.st_mtime_ns = mtime
        a.st_atime_ns = mtime if meta.atime is None else meta.atime
        a.st_ctime_ns = mtime if meta.ctime is None else meta.ctime
        return a

    async def _attributes(self, inode: Inode, node: Node) -> wire.EntryAttributes:
        """``_attr`` with a directory's link count (2 and one per
        subdirectory) and a large file's blocks (:meth:`TreeReader.stored_bytes`)."""
        if node.kind == "file" and node.cid is not None and node.size >= DENSE_BELOW and inode.state is None:
            if node.cid not in self._stored_bytes:
                stored = await self._store(self.tree.stored_bytes, node.cid)
                if len(self._stored_bytes) >= MAX_SUBDIR_COUNTS:
                    self._stored_bytes.clear()
                self._stored_bytes[node.cid] = stored
            return self._attr(inode, node)
        if node.kind != "dir":
            return self._attr(inode, node)
        links = self._subdirs.get(inode.ino)
        if links is None:
            path = self.inodes.path_of(inode.ino)
            if path is None:
                return self._attr(inode, node, 2)
            links = 2 + sum(1 for entry in await self.view.list(path) if entry.kind == "dir")
            if len(self._subdirs) >= MAX_SUBDIR_COUNTS:
                self._subdirs.clear()
            self._subdirs[inode.ino] = links
        return self._attr(inode, node, links)

    def _subdir_moved(self, parent: int, by: int) -> None:
        """Directory inode ``parent`` gained (or lost) ``by`` subdirectories
        through the mount: its link count, if counted, follows."""
        if parent in self._subdirs:
            self._subdirs[parent] += by

    def _entry(self, parent: int, node: Node) -> wire.EntryAttributes:
        inode = self.inodes.lookup(parent, node.name, node.kind, node.meta.ino)
        inode.last = node
        return self._attr(inode, node)

    def _relinked(self, found: Inode, meta: Meta | None) -> None:
        """``found``'s names changed: its link count and group are ``meta``'s."""
        if meta is None:
            return
        self.inodes.join(found, meta.ino)
        state: FileState | None = found.state
        if state is not None:
            state.meta = replace(state.meta, ino=meta.ino, nlink=meta.nlink, ctime=meta.ctime)
        if found.last is not None:
            found.last = replace(found.last, meta=replace(found.last.meta, ino=meta.ino, nlink=meta.nlink,
                                                          ctime=meta.ctime))

    async def _new_meta(self, parent_inode: int, ctx: Any, rdev: int | None = None) -> tuple[Meta, bool]:
        """The metadata of an inode the caller makes in ``parent_inode``: the
        caller's owner, the group of a setgid directory (and whether it is
        one: a new directory in it is setgid too)."""
        parent = await self._node_of(self.inodes.get(parent_inode))
        setgid = bool(parent.mode & stat.S_ISGID) and parent_inode != ROOT_INODE
        gid = (self._gid if parent.meta.gid is None else parent.meta.gid) if setgid else ctx.gid
        return Meta(uid=ctx.uid, gid=gid, rdev=rdev), setgid

    async def _node_of(self, inode: Inode) -> Node:
        """The current namespace node of ``inode`` (its last one if it has
        no path any more but is still in use)."""
        path = self.inodes.path_of(inode.ino)
        if path is None:
            if inode.last is None:
                raise wire.FUSEError(errno.ENOENT)
            return inode.last
        try:
            node = await self.view.resolve(path)
        except NamespaceError:
            if inode.last is not None and (inode.opens or inode.state is not None):
                return inode.last
            raise
        if node.kind != inode.kind and inode.ino != ROOT_INODE:
            raise wire.FUSEError(errno.ENOENT)  # replaced from outside: a new inode on lookup
        if inode.ino == ROOT_INODE:
            node = replace(node, mode=self._root_mode, meta=self._root_meta)
        inode.last = node
        return node

    # -- names ----------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> wire.EntryAttributes:
        with fuse_errors("lookup"):
            if name in (b".", b".."):
                target = self.inodes.get(parent_inode)
                if name == b".." and target.parent is not None:
                    target = self.inodes.get(target.parent)
                node = await self._node_of(target)
                target.lookups += 1
                return await self._attributes(target, node)
            path = self._child(parent_inode, self._name(name))
            try:
                node = await self.view.resolve(path)
            except PathNotFoundError:
                if isinstance(self.view, MountView):  # this node hears of every change to its namespace
                    return _absent()  # the kernel remembers the name is not there
                raise
            attr = self._entry(parent_inode, node)
            if node.kind == "dir":
                return await self._attributes(self.inodes.get(attr.st_ino), node)
            return attr

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.inodes.forget(ino, count)

    async def getattr(self, inode: int, ctx: Any = None) -> wire.EntryAttributes:
        with fuse_errors("getattr"):
            found = self.inodes.get(inode)
            return self._open_file_attr(found) or await self._attributes(found, await self._node_of(found))

    def _open_file_attr(self, found: Inode) -> wire.EntryAttributes | None:
        """The attributes of a file that is open or staged: all of them come
        from its state (``_attr``), so the tree is not asked (it is, on
        every getattr and setattr of a file being written, otherwise)."""
        if found.state is not None and found.last is not None and found.kind == "file":
            return self._attr(found, found.last)
        return None

    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        with fuse_errors("readlink"):
            node = await self._node_of(self.inodes.get(inode))
            if node.kind != "symlink" or node.target is None:
                raise wire.FUSEError(errno.EINVAL)
            return node.target.encode()

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> wire.EntryAttributes:
        with fuse_errors("mkdir"):
            self._writable()
            path = self._child(parent_inode, self._name(name))
            meta, setgid = await self._new_meta(parent_inode, ctx)
            node = await self._changing.mkdir(path, mode & 0o7777 | (stat.S_ISGID if setgid else 0), meta)
            self._subdir_moved(parent_inode, 1)
            made = self.inodes.lookup(parent_inode, node.name, node.kind)
            self._subdirs[made.ino] = 2
            return self._attr(made, node, 2)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> wire.EntryAttributes:
        with fuse_errors("symlink"):
            self._writable()
            path = self._child(parent_inode, self._name(name))
            meta, _ = await self._new_meta(parent_inode, ctx)
            node = await self._changing.symlink(path, os.fsdecode(target), meta)
            return self._entry(parent_inode, node)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> wire.EntryAttributes:
        with fuse_errors("link"):
            self._writable()
            found = self.inodes.get(inode)
            if found.kind == "dir":
                raise wire.FUSEError(errno.EPERM)
            dst = self._child(new_parent_inode, self._name(new_name))
            node = await self._changing.link(self._path(inode), dst, found.group or secrets.randbits(63) or 1)
            self._relinked(found, node.meta)
            return self._entry(new_parent_inode, node)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> wire.EntryAttributes:
        with fuse_errors("mknod"):
            self._writable()
            kind = _KINDS.get(stat.S_IFMT(mode))
            if kind is None or kind in ("dir", "symlink"):
                raise wire.FUSEError(errno.EINVAL)
            path = self._child(parent_inode, self._name(name))
            if kind == "file":
                meta, _ = await self._new_meta(parent_inode, ctx)
                node = await self._changing.create(path, mode & 0o7777, exclusive=True, meta=meta)
            else:  # the kernel let only a caller who may make it get here (CAP_MKNOD for devices)
                meta, _ = await self._new_meta(parent_inode, ctx, rdev if kind in ("chardev", "blockdev") else None)
                node = await self._changing.make(path, kind, mode & 0o7777, meta)
            return self._entry(parent_inode, node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("unlink"):
            self._writable()
            text = self._name(name)
            left = await self._changing.unlink(self._child(parent_inode, text))
            found = self.inodes.detach(parent_inode, text)
            if found is not None and not found.detached:
                self._relinked(found, left)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("rmdir"):
            self._writable()
            text = self._name(name)
            await self._changing.rmdir(self._child(parent_inode, text))
            self.inodes.detach(parent_inode, text)
            self._subdir_moved(parent_inode, -1)

    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: Any,
    ) -> None:
        with fuse_errors("rename"):
            self._writable()
            old, new = self._name(name_old), self._name(name_new)
            src, dst = self._child(parent_inode_old, old), self._child(parent_inode_new, new)
            if flags & wire.RENAME_EXCHANGE:
                first, second = await self.view.resolve(src), await self.view.resolve(dst)
                await self._changing.exchange(src, dst)
                self.inodes.exchange(parent_inode_old, old, parent_inode_new, new)
                moved = (first.kind == "dir") - (second.kind == "dir")
                self._subdir_moved(parent_inode_old, -moved)
                self._subdir_moved(parent_inode_new, moved)
                return
            replaced = self.inodes.find(parent_inode_new, new)
            renamed = await self._changing.rename(src, dst, no_replace=bool(flags & wire.RENAME_NOREPLACE))
            if renamed is None:
                return
            moving, there = renamed
            self.inodes.rename(parent_inode_old, old, parent_inode_new, new)
            if moving.kind == "dir":  # a directory it replaced was one too: its new parent's count is as it was
                self._subdir_moved(parent_inode_old, -1)
                if there is None or there.kind != "dir":
                    self._subdir_moved(parent_inode_new, 1)
            if replaced is not None and replaced.group is not None and not replaced.detached:
                self._relinked(replaced, (await self._node_of(replaced)).meta)

    async def setattr(
        self, inode: int, attr: wire.EntryAttributes, fields: wire.SetattrFields,
        fh: int | None, ctx: Any,
    ) -> wire.EntryAttributes:
        # The kernel checked who may change what (default_permissions). A
        # chown, or a truncate by a caller without CAP_FSETID, may ask for
        # setuid and setgid to be cleared (HANDLE_KILLPRIV_V2), unless it
        # gives the new mode itself.
        with fuse_errors("setattr"):
            found = self.inodes.get(inode)
            if (fields.update_size or fields.update_mode or fields.update_mtime or fields.update_atime
                    or fields.update_uid or fields.update_gid or fields.update_ctime):
                self._writable()
            if fields.update_size:
                if found.kind != "file":
                    raise wire.FUSEError(errno.EISDIR if found.kind == "dir" else errno.EINVAL)
                await self._truncate(found, attr.st_size)
            state: FileState | None = found.state
            if state is not None:
                meta, current = state.meta, state.mode
            else:
                node = await self._node_of(found)
                meta, current = node.meta, node.mode
            mode = attr.st_mode & 0o7777 if fields.update_mode else None
            if mode is None and fields.kill_suidgid:
                dropped = _without_setid(current, ctx, self._group_of(meta))
                mode = dropped if dropped != current else None
            mtime = attr.st_mtime_ns if fields.update_mtime else None
            changes: dict[str, Any] = {}
            if fields.update_uid:
                changes["uid"] = attr.st_uid
            if fields.update_gid:
                changes["gid"] = attr.st_gid
            if fields.update_atime:
                changes["atime"] = attr.st_atime_ns
            if changes or mode is not None or mtime is not None or fields.update_ctime:
                # A change of status: ctime moves (one new Meta for all of it).
                changes["ctime"] = attr.st_ctime_ns if fields.update_ctime else time.time_ns()
                await self._set_meta(found, mode, mtime, replace(meta, **changes))
            return self._open_file_attr(found) or await self._attributes(found, await self._node_of(found))

    async def _drop_setid(self, found: Inode, ctx: wire.RequestContext) -> None:
        """Clear an open file's setuid and setgid as a write or an O_TRUNC
        open by ``ctx``, a caller without CAP_FSETID, does
        (HANDLE_KILLPRIV_V2; see _without_setid); ctime moves if they were
        set."""
        state: FileState = found.state
        mode = _without_setid(state.mode, ctx, self._group_of(state.meta))
        if mode != state.mode:
            await self._set_meta(found, mode, None, replace(state.meta, ctime=time.time_ns()))

    async def _set_meta(self, found: Inode, mode: int | None, mtime: int | None, meta: Meta) -> None:
        """Give ``found`` this mode, mtime (None: as they are) and metadata:
        with its staged content while that waits to be stored (written, or
        queued), else in the tree at once."""
        state: FileState | None = found.state
        if state is not None and state.staging is not None:
            state.take_meta(mode, mtime, meta)
            state.meta_dirty = True
            if not state.dirty and found.ino not in self._to_store:
                await self._commit(found)  # its content is stored already: the change goes to the tree now
            return
        if found.ino == ROOT_INODE:  # the mount point's own: kept while mounted
            self._root_mode = self._root_mode if mode is None else mode
            self._root_meta = replace(meta, atime=None)
            return
        await self._meta_to_tree(found, mode, mtime, meta)
        if state is not None:
            state.take_meta(mode, mtime, meta)

    async def _meta_to_tree(self, found: Inode, mode: int | None, mtime: int | None, meta: Meta) -> None:
        """Set ``found``'s mode, mtime and metadata in the tree, at the path
        it has once the tree is free (nowhere if it was unlinked meanwhile)."""
        found.last = await self._changing.set_meta(partial(self.inodes.path_of, found.ino), mode=mode, mtime=mtime,
                                                   meta=meta) or found.last

    # -- extended attributes ---------------------------------------------------------
    #
    # The kernel checks who may read and change which namespace (trusted.*
    # needs CAP_SYS_ADMIN, user.* the file's permissions). An access ACL
    # sets the mode (fuse/acl.py); the kernel checks permissions with it.

    async def _meta_of(self, inode: int) -> tuple[Inode, Meta]:
        found = self.inodes.get(inode)
        state: FileState | None = found.state
        if state is not None:
            return found, state.meta
        return found, (await self._node_of(found)).meta

    def _xattr_name(self, raw: bytes) -> str:
        if not raw or len(raw) > MAX_XATTR_NAME:
            raise wire.FUSEError(errno.ERANGE)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise wire.FUSEError(errno.EINVAL) from None

    async def _xattrs_of(self, inode: int) -> Meta:
        """The metadata to read ``inode``'s extended attributes from: the
        kernel asks for one before every write to a file (security.capability,
        to know whether the write drops it) and ``ls -l`` for two per file,
        so this answers from what the mount last saw of the inode (changes
        elsewhere forget it), without a trip to the tree."""
        found = self.inodes.get(inode)
        if found.state is not None:
            state: FileState = found.state
            return state.meta
        if found.last is not None and found.ino != ROOT_INODE:
            return found.last.meta
        return (await self._node_of(found)).meta

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        with fuse_errors("getxattr"):
            meta = await self._xattrs_of(inode)
            value = meta.xattr(self._xattr_name(name))
            if value is None:
                raise wire.FUSEError(errno.ENODATA)
            return value

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        with fuse_errors("listxattr"):
            meta = await self._xattrs_of(inode)
            return [key.encode() for key, _ in meta.xattrs]

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        with fuse_errors("setxattr"):
            self._writable()
            key = self._xattr_name(name)
            found, meta = await self._meta_of(inode)
            mode = None
            if key == acl.ACCESS:
                try:
                    access = acl.parse_access(bytes(value))
                except InvalidInputError:
                    raise wire.FUSEError(errno.EINVAL) from None
                node = await self._node_of(found)
                current = found.state.mode if found.state is not None else node.mode
                mode = current & ~0o777 | access.bits
                if not access.extended:  # the mode says it all: no ACL kept, as ext4
                    await self._set_meta(found, mode, None, replace(meta.with_xattr(key, None), ctime=time.time_ns()))
                    return
            try:
                changed = meta.with_xattr(key, bytes(value))
            except InvalidInputError:
                raise wire.FUSEError(errno.ENOSPC) from None  # as ext4, past one block of them
            await self._set_meta(found, mode, None, replace(changed, ctime=time.time_ns()))

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("removexattr"):
            self._writable()
            key = self._xattr_name(name)
            found, meta = await self._meta_of(inode)
            if meta.xattr(key) is None:
                raise wire.FUSEError(errno.ENODATA)
            await self._set_meta(found, None, None, replace(meta.with_xattr(key, None), ctime=time.time_ns()))

    async def statfs(self, ctx: Any) -> wire.StatvfsData:
        with fuse_errors("statfs"):
            fs = await self._store(self.tree.statfs)
            s = wire.StatvfsData()
            s.f_bsize = s.f_frsize = fs.block_size
            s.f_blocks = fs.blocks
            s.f_bfree = s.f_bavail = fs.blocks_free
            s.f_files = fs.files
            s.f_ffree = s.f_favail = fs.files
            s.f_namemax = MAX_NAME_BYTES
            return s

    # -- directories ------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: Any) -> int:
        with fuse_errors("opendir"):
            path = self._path(inode)
            entries = await self.view.list(path)
            fh = self._fh()
            self._dirs[fh] = DirHandle(inode, entries)
            return fh

    async def readdir(self, fh: int, start_id: int, token: wire.ReaddirToken) -> None:
        # Offsets: 1 is ".", 2 is "..", 3 + i is entry i of the snapshot taken
        # at opendir (or at a rewind), so they stay stable while it changes.
        with fuse_errors("readdir"):
            handle = self._dirs[fh]
            if start_id == 0 and not handle.fresh:
                handle.entries = await self.view.list(self._path(handle.ino))
            handle.fresh = False
            here = self.inodes.get(handle.ino)
            if start_id < 1:
                node = await self._node_of(here)
                if not wire.readdir_reply(token, b".", self._attr(here, node), 1):
                    return
            if start_id < 2:
                up = self.inodes.get(here.parent) if here.parent is not None else here
                node = await self._node_of(up)
                if not wire.readdir_reply(token, b"..", self._attr(up, node), 2):
                    return
            base = self.inodes.path_of(handle.ino) or "/"
            for index in range(max(0, start_id - 2), len(handle.entries)):
                entry = handle.entries[index]
                node = Node.of(base.rstrip("/") + "/" + entry.name, entry)
                attr = self._entry(handle.ino, node)
                if not wire.readdir_reply(token, entry.name.encode(), attr, index + 3):
                    self.inodes.forget(attr.st_ino, 1)
                    return

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        with fuse_errors("fsyncdir"):
            await self.flush_changes()

    async def flush_changes(self) -> None:
        """Store the closed files still staged, then commit the tree's
        pending changes, as one durable version (fsync, fsyncdir, the
        commit interval, unmount)."""
        if self._to_store:
            await self.store_queued()
        if self.view.pending:
            await self.view.flush()

    # -- files ---------------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any, *, kill_suidgid: bool = False) -> wire.FileInfo:
        with fuse_errors("open"):
            found = self.inodes.get(inode)
            if found.kind == "dir":
                raise wire.FUSEError(errno.EISDIR)
            writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
            if writable:
                self._writable()
            info = await self._open(found, writable, bool(flags & os.O_APPEND))
            if writable and flags & os.O_TRUNC:  # libfuse asks for atomic O_TRUNC
                await self._truncate(found, 0)
                if kill_suidgid:
                    await self._drop_setid(found, ctx)
            if (flags & os.O_ACCMODE) != os.O_WRONLY and not flags & getattr(os, "O_NOATIME", 0) \
                    and not self._noatime:
                await self._read_now(found)  # at open: the kernel answers reads from its cache
            return info

    async def _open(self, found: Inode, writable: bool, append: bool, node: Node | None = None) -> wire.FileInfo:
        """A handle on ``found`` (``node``: what it names now, if the caller
        has just made it)."""
        node = node or await self._node_of(found)
        if found.state is None:
            found.state = FileState.of(node)
        elif found.state.staging is None and node.cid is not None:
            found.state.cid, found.state.size = node.cid, node.size  # changed from outside
        fh = self._fh()
        self._handles[fh] = Handle(fh, found.ino, writable, append)
        found.state.handles.add(fh)
        self.inodes.opened(found.ino)
        return wire.FileInfo(fh=fh)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[wire.FileInfo, wire.EntryAttributes]:
        with fuse_errors("create"):
            self._writable()
            path = self._child(parent_inode, self._name(name))
            exclusive = bool(flags & os.O_EXCL)
            meta, _ = await self._new_meta(parent_inode, ctx)
            node = await self._changing.create(path, mode & 0o7777, exclusive=exclusive, meta=meta)
            attr = self._entry(parent_inode, node)
            found = self.inodes.get(attr.st_ino)
            writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
            info = await self._open(found, writable, bool(flags & os.O_APPEND), node)
            return info, self._attr(found, node)

    async def _stage(self, found: Inode) -> Staging:
        """The inode's staged content, made on first need (old content
        copied in: a small file's through the block cache, read outside the
        store thread, which may be busy storing others)."""
        state: FileState = found.state
        async with self._lock(found.ino):
            if state.staging is None:
                staging = Staging(self._staging_dir)
                try:
                    cid = state.cid
                    if state.size and cid is not None:
                        if state.size <= Staging.MEMORY_FILE:
                            walk = FileWalk(cid, 0, state.size, path=PathCache(self.nodes))
                            staging.fill(await read_walk(walk, self.fetcher))
                        else:
                            await self._store(lambda: staging.fill(self.tree.read_all(cid)))
                except BaseException:
                    staging.close()
                    raise
                state.staging = staging
        assert state.staging is not None
        return state.staging

    async def write(self, fh: int, off: int, buf: bytes | memoryview, ctx: wire.RequestContext, *,
                    kill_suidgid: bool = False) -> int:
        with fuse_errors("write"):
            handle = self._handles[fh]
            found = self.inodes.get(handle.ino)
            staging = await self._stage(found)
            if handle.append and not self.enable_writeback_cache:  # with it, the kernel places appends
                off = staging.size
            fresh = staging.size == 0
            written = staging.write(off, buf)
            self._follow_write(found, staging, fresh, off, written)
            state: FileState = found.state
            state.written(time.time_ns())
            handle.wrote = True
            if kill_suidgid:
                await self._drop_setid(found, ctx)
            return written

    async def fallocate(self, fh: int, offset: int, length: int, mode: int) -> None:
        """fallocate(2): space is not reserved (blocks are shared by content),
        so allocating only extends the file (unless FALLOC_FL_KEEP_SIZE) and
        checks that the disk has room for the range; punching a hole or
        zeroing a range makes it read as zeros. Other modes: EOPNOTSUPP."""
        with fuse_errors("fallocate"):
            self._writable()
            if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
                raise wire.FUSEError(errno.EOPNOTSUPP)
            handle = self._handles[fh]
            found = self.inodes.get(handle.ino)
            staging = await self._stage(found)
            end = offset + length
            zeroing = bool(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
            if not zeroing and length > staging.disk_free():
                raise wire.FUSEError(errno.ENOSPC)
            zeroes = zeroing and offset < staging.size
            grows = not mode & FALLOC_FL_KEEP_SIZE and end > staging.size
            if not (zeroes or grows):
                return
            self._stop_following(found.ino)
            if zeroes:
                staging.zero(offset, length)
            if grows:
                staging.truncate(end)
            state: FileState = found.state
            state.written(time.time_ns())
            handle.wrote = True

    # -- storing a large file while it is written (cas.fuse.streaming) ------------------

    def _follow_write(self, found: Inode, staging: Staging, fresh: bool, offset: int, written: int) -> None:
        """Tell the file's follower of a write. A file written in order from
        empty gets one once its staged content is on disk (a small file,
        staged in memory, is stored whole at its close, with no follower);
        until then, only where its content written in order ends is kept.
        A file stored by its follower at an fsync gets a new one, which
        starts where the last left off (cas.fuse.streaming.Resume), when
        it is written on past its end."""
        ino = found.ino
        following = self._following.get(ino)
        if following is not None:
            if not following.follower.wrote(offset, offset + written):
                self._stop_following(ino)
            return
        resumable = self._resumable.pop(ino, None)
        if resumable is not None:
            if offset >= resumable.size and staging.fd >= 0:  # appended (a gap, if any, filled by later writes)
                follower = Follower(written=resumable.size, resume=resumable.resume)
                self._start_following(ino, staging, follower, offset, written, resumable.blocks)
            return
        end = self._in_order.pop(ino, None)
        if fresh and not self.read_only:
            end = 0
        if end is None or offset != end:
            return  # not written in order from empty: stored whole
        if staging.fd < 0:
            self._in_order[ino] = end + written
            return
        self._start_following(ino, staging, Follower(written=end), offset, written)

    def _start_following(self, ino: int, staging: Staging, follower: Follower, offset: int, written: int,
                         keep: frozenset[CID] = frozenset()) -> None:
        """Store the file with ``follower`` as it is written (unless as many
        run as may); the write at ``offset`` is its latest."""
        if self._followers_running >= MAX_FOLLOWING or not follower.wrote(offset, offset + written):
            follower.close()
            return
        following = self._following[ino] = _Following(follower, keep)
        follower.attach(staging.fd)
        staging.sequential = True
        self._followers_running += 1
        self._nursery.start_soon(self._follow, following)

    def _stop_following(self, ino: int) -> None:
        """The file is stored whole: its follower, if any, gives up."""
        self._in_order.pop(ino, None)
        self._resumable.pop(ino, None)
        following = self._following.pop(ino, None)
        if following is not None:
            following.follower.close()

    async def _follow(self, following: _Following) -> None:
        """Drive a follower: each step's blocks (cut and hashed on a worker
        thread) go into the store through the file's own session, until
        it has built the whole file or gave up. A session given up is
        dropped (gc may take its blocks)."""
        follower = following.follower
        new: list[CID] = []
        try:
            session = following.session = await self._store(self._changing.tree.open_session, following.keep)
            # Each step's blocks are put while the next step is cut and
            # hashed (one step waits at most: two in memory).
            async with trio.open_nursery() as nursery:
                send, receive = trio.open_memory_channel[list[Block]](0)
                nursery.start_soon(self._put_steps, receive, session, new)
                async with send:
                    while follower.result is None:
                        blocks = await trio.to_thread.run_sync(follower.step, FOLLOW_STEP, abandon_on_cancel=True)
                        if blocks is None:  # given up
                            break
                        await send.send(blocks)
            if follower.result is not None:
                root, size = follower.result
                following.stored = StoredFile(root, size, tuple(new))
                following.blocks = frozenset(session.touched)  # its puts are over; closed only after hand_over
        except* (CasError, OSError) as group:  # stored whole at its close instead
            log.warning("storing a file while it is written: %s", group.exceptions[0])
        finally:
            follower.close()
            self._followers_running -= 1
            if following.stored is None and following.session is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(10):  # never holds up an unmount
                    await self._store(self._changing.tree.drop_session, following.session)
            following.done.set()

    async def _put_steps(self, steps: trio.MemoryReceiveChannel[list[Block]], session: WriteSession,
                         new: list[CID]) -> None:
        """Put each step's blocks through the follower's session, in order;
        ``new``: the CIDs new to the store."""
        async with steps:
            async for blocks in steps:
                new.extend(await self._store(self._changing.tree.put_own, session, blocks))

    async def _truncate(self, found: Inode, size: int) -> None:
        self._stop_following(found.ino)
        state: FileState | None = found.state
        if state is not None and state.staging is not None:
            state.staging.truncate(size)
            state.written(time.time_ns())
            return
        # Not being written: stage, truncate and commit now (truncate(2),
        # or the kernel's O_TRUNC before an open).
        if state is None:
            node = await self._node_of(found)
            found.state = state = FileState.of(node)
        if size == 0:
            state.staging = Staging(self._staging_dir)
        staging = await self._stage(found)
        staging.truncate(size)
        state.written(time.time_ns())
        if any(self._handles[fh].writable for fh in state.handles):
            return  # committed with the writes, on flush or release
        try:
            await self._commit(found)
        finally:
            if not state.handles:
                self._drop_state(found)

    async def read(self, fh: int, off: int, size: int) -> bytes | list[memoryview]:
        with fuse_errors("read"):
            handle = self._handles[fh]
            found = self.inodes.get(handle.ino)
            state: FileState = found.state
            if state.staging is not None:
                return state.staging.read(off, size)
            if state.cid is None:
                return b""
            rs = handle.read
            if rs is None or rs.cid != state.cid:
                handle.read = rs = ReadState(state.cid, PathCache(self.nodes))
            reading = rs
            ahead = rs.note_read(off, size)

            def hint(event: ReadAhead) -> None:
                if reading.plan(event):
                    reading.ahead_running = True
                    self._nursery.start_soon(self._read_ahead, handle, reading)

            walk = FileWalk(rs.cid, off, size, path=rs.path, ahead=ahead)
            return await read_walk(walk, self.fetcher, hint)

    async def _read_now(self, found: Inode) -> None:
        """relatime: opening a file to read moves its atime if that is not
        after its mtime and ctime, or is a day old (Linux's default, on the
        first read; the kernel answers reads from its page cache, so the
        mount sees the open). ``--noatime`` turns it off; ctime stays."""
        state: FileState = found.state
        meta, mtime = state.meta, state.mtime
        atime = mtime if meta.atime is None else meta.atime
        ctime = mtime if meta.ctime is None else meta.ctime
        now = time.time_ns()
        if atime <= max(mtime, ctime) or now - atime >= RELATIME_AGE:
            await self._set_meta(found, None, None, replace(meta, atime=now))

    async def _read_ahead(self, handle: Handle, rs: ReadState) -> None:
        """Fetch the blocks of the walk's latest hint into the cache, in
        order, READ_AHEAD_PARALLEL at a time (each one in a fetcher thread),
        while the file stays open; a later read's hint replaces the plan."""
        slots = trio.Semaphore(READ_AHEAD_PARALLEL)

        async def fetch(cid: Any) -> None:
            try:
                await self.fetcher.get(cid)
            except (CasError, OSError) as exc:  # the reader meets it again, and reports it
                log.warning("read-ahead of %s stopped at %s: %s", rs.cid, cid, exc)
            finally:
                slots.release()

        try:
            async with trio.open_nursery() as nursery:
                while handle.read is rs and rs.ahead:
                    cid = rs.ahead.popleft()
                    if self.fetcher.wanted(cid):
                        await slots.acquire()
                        nursery.start_soon(fetch, cid)
        finally:
            rs.ahead_running = False

    async def _commit(self, found: Inode) -> None:
        """Store and link ``found``'s staged content now (fsync, unmount), or
        commit a change of its mode or time alone; an error is the
        caller's, and the file stays dirty for the next try."""
        state: FileState = found.state
        if state.staging is not None and state.dirty:
            for failed, exc in await self._store_and_link([found]):
                failed.dirty = True
                raise exc
            return
        async with self._lock(found.ino):
            if state.meta_dirty:
                state.meta_dirty = False
                await self._meta_to_tree(found, state.mode, state.mtime, state.meta)

    async def _store_and_link(self, batch: list[Inode]) -> list[tuple[FileState, Exception]]:
        """Store the staged content of the dirty files of ``batch`` in one
        trip to the store thread, then link each at the path it has then
        (unlinked while open: written nowhere). A failure to store leaves
        them all dirty and is raised; the files whose link failed (a
        directory took the name meanwhile) are returned with the error."""
        async with contextlib.AsyncExitStack() as locks:
            for found in sorted(batch, key=lambda inode: inode.ino):
                await locks.enter_async_context(self._lock(found.ino))
            taken: list[tuple[Inode, FileState, Staging, int, int, Meta]] = []
            followed: dict[int, _Following] = {}  # by index in taken: stored while written
            for found in batch:
                state: FileState | None = found.state
                if state is not None and state.staging is not None and state.dirty:
                    state.dirty = state.meta_dirty = False
                    state.staging.give_back_ahead()
                    following = self._following.pop(found.ino, None)
                    if following is not None and following.follower.finish(state.staging.size):
                        followed[len(taken)] = following
                    elif following is not None:
                        following.follower.close()
                    taken.append((found, state, state.staging, state.mode, state.mtime, state.meta))
            failures: list[tuple[FileState, Exception]] = []
            linked: list[tuple[Inode, FileState]] = []
            try:
                try:
                    stored = await self._store_taken([item[2] for item in taken], followed)
                except BaseException:
                    for _, state, *_ in taken:
                        state.dirty = True
                    raise
                for at, ((found, state, _, mode, mtime, meta), done) in enumerate(zip(taken, stored, strict=True)):
                    state.cid, state.size = done.cid, done.size
                    try:
                        node = await self._changing.link_file(partial(self.inodes.path_of, found.ino), done, mode,
                                                              mtime, meta)
                    except Exception as exc:  # this file's; the others are linked
                        failures.append((state, exc))
                        continue
                    except BaseException:  # cancelled: what is not linked yet stays dirty
                        for _, left, *_ in taken[at:]:
                            left.dirty = True
                        raise
                    found.last = node or found.last
                    linked.append((found, state))
            finally:
                for at, following in followed.items():
                    await self._settle(following)
                    self._keep_resume(following, taken[at][0], taken[at][2], linked)
            # A chmod, chown or utime of any of them while the batch was
            # stored or linked waited in its state (set_meta, above): applied
            # until none is left, with no checkpoint after the last look, so
            # none can arrive between it and the caller dropping the states.
            while changed := [(found, state) for found, state in linked if state.meta_dirty and not state.dirty]:
                for found, state in changed:
                    state.meta_dirty = False
                    await self._meta_to_tree(found, state.mode, state.mtime, state.meta)
            return failures

    def _keep_resume(self, following: _Following, found: Inode, staging: Staging,
                     linked: list[tuple[Inode, FileState]]) -> None:
        """After a followed store: if the file was linked and its staged
        content has not changed since, a write past its end may start a
        follower where this one left off (_follow_write)."""
        state: FileState | None = found.state
        resume = following.follower.resume
        if (following.stored is not None and resume is not None and state is not None
                and state.staging is staging and not state.dirty and staging.size == following.stored.size
                and any(linked_inode is found for linked_inode, _ in linked)):
            # Its session's blocks are the file's so far: closed at the next
            # commit, they are kept by the next follower's.
            self._resumable[found.ino] = _Resumable(resume, following.stored.size, following.blocks)

    async def _settle(self, following: _Following) -> None:
        """After its file was linked (or its store failed): a follower's
        session goes to the next commit, which holds the link and then
        closes it, once its task has ended (given up now if unfinished,
        which drops the session instead)."""
        with trio.CancelScope(shield=True), trio.move_on_after(10):  # never holds up an unmount
            following.follower.close()
            await following.done.wait()
            if following.stored is not None and following.session is not None:
                await self._store(self._changing.tree.hand_over, following.session)

    async def _store_taken(self, stagings: list[Staging], followed: dict[int, _Following]) -> list[StoredFile]:
        """Store each staged file: those ``followed`` (by index) as their
        followers finish them, the others whole in one trip to the store
        thread meanwhile; a follower that failed at the end is replaced
        by a whole store of its file."""
        streams = [staging.stream() for staging in stagings]  # now: the staged files may go meanwhile
        try:
            whole = [at for at in range(len(stagings)) if at not in followed]
            stored: dict[int, StoredFile] = dict(zip(
                whole, await self._store(self._changing.tree.store_files, [streams[at] for at in whole]),
                strict=True))
            for at, following in followed.items():
                await following.done.wait()
                if following.stored is not None:
                    stored[at] = following.stored
                else:
                    stored[at] = (await self._store(self._changing.tree.store_files, [streams[at]]))[0]
            return [stored[at] for at in range(len(stagings))]
        finally:
            for stream in streams:
                stream.close()

    # -- storing closed files in the background ----------------------------------------

    def _queue_store(self, found: Inode) -> None:
        """Have ``found``'s staged content stored soon, off the caller's
        path; its state (and the inode, pinned as if open) lives until then."""
        if found.ino not in self._to_store:
            self._to_store[found.ino] = found
            self.inodes.opened(found.ino)
        self._store_wake.set()
        staging = found.state.staging if found.state is not None else None
        if len(self._to_store) >= STORE_BATCH or (staging is not None and staging.fd >= 0):
            self._store_now.set()

    async def _store_in_background(self) -> None:
        while True:
            await self._store_wake.wait()
            with trio.move_on_after(STORE_DELAY):
                await self._store_now.wait()
            self._store_wake, self._store_now = trio.Event(), trio.Event()
            try:
                with fuse_errors("storing closed files"):
                    await self.store_queued()
            except wire.FUSEError:
                pass  # said in the log; the files stay dirty and are tried again at the next commit

    async def store_queued(self) -> None:
        """Store every closed file still staged, a batch (one trip to the
        store thread) at a time, and link each at its path."""
        async with self._storing:
            while self._to_store:
                batch = list(self._to_store.values())[:STORE_BATCH]
                try:
                    for _, exc in await self._store_and_link(batch):
                        log.error("storing a closed file: %s", exc)  # stored, linked nowhere
                finally:
                    for found in batch:
                        if found.state is not None and found.state.dirty:
                            continue  # written again meanwhile, or not stored: it stays queued
                        del self._to_store[found.ino]
                        if found.state is not None and not found.state.handles:
                            self._drop_state(found)
                        self.inodes.released(found.ino)

    async def flush(self, fh: int) -> None:
        with fuse_errors("flush"):
            handle = self._handles[fh]
            if not handle.writable:
                return
            found = self.inodes.get(handle.ino)
            state: FileState = found.state
            if state.staging is not None and state.dirty:
                self._queue_store(found)  # close returns now; stored within the commit interval
                if len(self._to_store) >= MAX_QUEUED:
                    await self.store_queued()  # the caller waits while the queue is full
            else:
                await self._commit(found)  # a change of mode or time alone: no store trip

    async def fsync(self, fh: int, datasync: bool) -> None:
        with fuse_errors("fsync"):
            await self._commit(self.inodes.get(self._handles[fh].ino))
            await self.flush_changes()  # durable when it returns: the file and every change before it

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        handle.read = None
        found = self.inodes.get(handle.ino)
        state: FileState = found.state
        try:
            with fuse_errors("release"):
                if handle.writable and state.staging is not None and state.dirty:
                    self._queue_store(found)
                elif handle.writable or (state.meta_dirty and not state.dirty and found.ino not in self._to_store):
                    # A chmod, chown or utime through any handle (a read-only
                    # one too: rsync's fchmod) may wait in the state while it
                    # is staged; it is committed before the state can go (a
                    # file still written, or queued to be stored, takes it
                    # with its content).
                    await self._commit(found)
        finally:
            state.handles.discard(fh)
            if not state.handles and found.ino not in self._to_store:
                self._drop_state(found)
            self.inodes.released(handle.ino)

    def _drop_state(self, found: Inode) -> None:
        self._stop_following(found.ino)
        state: FileState | None = found.state
        if state is None:
            return
        if state.dirty and state.staging is not None:
            log.error("dropping uncommitted writes of inode %d", found.ino)
        if state.staging is not None:
            state.staging.close()
        found.state = None
        self._locks.pop(found.ino, None)

    async def root_replaced(self) -> None:
        """The whole tree was replaced from outside at once (a published
        namespace's newer record). Open files keep reading the version they
        opened: each is given up by its name, as if renamed over, and lives
        on detached (a new lookup makes a new inode, so the kernel's page
        cache of the old version is never read for the new one). The kernel
        forgets every name and attribute it cached, so new lookups and
        listings see the new root now rather than after ATTR_TIMEOUT."""
        self._subdirs.clear()
        names: list[tuple[int, bytes]] = []
        for found in self.inodes:
            if found.parent is None or found.detached:
                continue
            names.append((found.parent, found.name.encode()))
            if found.kind == "file" and (found.opens or found.state is not None):
                self.inodes.detach(found.parent, found.name)
        attached = [found.ino for found in self.inodes if not found.detached]
        for found in self.inodes:
            if not found.detached and found.state is None:
                found.last = None  # of the old root
        await self._invalidate(names, attached)

    async def changed_elsewhere(self, paths: Iterable[str] | None) -> None:
        """Another writer changed ``paths`` (None: perhaps anything), through
        the node: the kernel forgets the names, attributes and pages it
        cached of them, so the mount shows the change now (with the
        writeback cache it would keep its own copy of a file otherwise)."""
        self._subdirs.clear()
        if isinstance(self.tree, MountTree):
            self.tree.forget_root()
        if isinstance(self.view, MountView):
            self.view.forget_known()
        if paths is None:
            names = [(found.parent, found.name.encode()) for found in self.inodes
                     if found.parent is not None and not found.detached]
            inodes = [found.ino for found in self.inodes if not found.detached]
        else:
            names, inodes = [], []
            for path in paths:
                parts = [part for part in path.split("/") if part]
                ino = ROOT_INODE
                for depth, name in enumerate(parts):
                    found = self.inodes.find(ino, name)
                    if depth == len(parts) - 1:
                        names.append((ino, name.encode()))  # also a name the kernel knows is absent
                        if found is not None:
                            inodes.append(found.ino)
                    if found is None:
                        break
                    ino = found.ino
        for ino in inodes:  # what the mount saw of them is not current any more
            found = self.inodes.get(ino)
            if not found.detached and found.state is None:
                found.last = None
        if names or inodes:
            await self._invalidate(names, inodes)

    async def _invalidate(self, names: list[tuple[int, bytes]], inodes: list[int]) -> None:
        """The kernel forgets ``names`` and ``inodes``' attributes and pages.
        In a worker thread: invalidating waits for the kernel's requests
        about them in flight, which this (trio) thread answers."""
        session = self.session
        if session is None:
            return

        def invalidate() -> None:
            for parent, name in names:
                with contextlib.suppress(OSError):  # the kernel had forgotten it already
                    session.invalidate_entry(parent, name)
            for ino in inodes:
                with contextlib.suppress(OSError):
                    session.invalidate_inode(ino)

        await trio.to_thread.run_sync(invalidate, abandon_on_cancel=True)

    async def commit_all(self) -> None:
        """Commit every staged file and then every pending change, durably
        (at a clean unmount)."""
        for found in self.inodes:
            if found.state is not None and (found.state.dirty or found.state.meta_dirty):
                try:
                    with fuse_errors("commit at unmount"):
                        await self._commit(found)
                except wire.FUSEError:
                    pass
        try:
            with fuse_errors("commit at unmount"):
                await self.flush_changes()
        except wire.FUSEError:
            pass


def _absent() -> wire.EntryAttributes:
    """A lookup's answer that the name is not there, cached as such."""
    a = wire.EntryAttributes()
    a.st_ino = 0
    a.entry_timeout = ATTR_TIMEOUT
    return a
