"""The namespace: a path tree of names over CIDs, under one signed root.

Every change (mkdir, link, mv, rm) is copy-on-write: the directories on the
path from the changed entry up to the root are rewritten as new nodes (each
O(log n) small nodes, cas.names.dirtree), a new root record with the next
sequence number is signed, and the repository commits it in one durable step
(``commit_root``, after the new nodes). Nothing else is written: moving a
10 GiB file rewrites a few small directory nodes and no data. Old roots stay
until garbage collection drops them past the history limit, so
``resolve(path, at=SEQ)`` reads the namespace as it was.

A namespace works over a *repository*: anything with ``blocks`` (a
BlockStore), ``roots()``, ``commit_root(...)`` and ``namespace_key()`` — the
local store, or a client of the node that owns it.

Concurrent writers (docs/architecture.md, "Concurrent changes"). Every
change is a record of paths (cas.names.changes), applied by :meth:`apply`
to the newest root and committed as the next sequence number, compare-and-
swap: the commit is refused if any root was committed after the one the
change was applied to, and then the change is applied again to the newer
root (a rebase at the level of paths: changes to different paths both
survive; of two changes to one path the later commit wins, and both are in
the history). A change that no longer fits the newer root (its source was
moved away) fails with the error it meets there. A daemon's clients hand
their changes to the daemon (:class:`AppliesChanges`), which applies them
one at a time, so through a daemon they never even conflict.

Root records that fail verification are skipped with a warning (kept in
``warnings``) and the last good root is used. This module never touches the
disk or the network by itself.
"""

from __future__ import annotations

import builtins
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from ..blocks import BlockStore
from ..cid import CID, DAG_CBOR
from ..errors import (
    BlockNotFoundError,
    ConcurrentUpdateError,
    DirectoryNotEmptyError,
    InvalidInputError,
    InvalidMoveError,
    InvalidRecordError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
)
from ..keys import Ed25519Key
from . import dirtree
from .changes import Change, Link, Mkdir, Move, Remove, SetAttributes, check_change
from .directory import NO_META, DirEntry, Meta, check_name
from .record import RootRecord, check_successor

ROOT_MODE = 0o755
MAX_RETRIES = 20


class RootRowLike(Protocol):
    seq: int
    root: CID
    time_ns: int
    record: bytes


class Repo(Protocol):
    """What a namespace needs from a repository."""

    @property
    def blocks(self) -> BlockStore: ...

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[Any]:
        """Stored root rows (see :meth:`cas.store.LocalStore.roots`): the
        first ``limit``, those past ``after`` in the order asked."""

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None: ...

    def namespace_key(self) -> Ed25519Key: ...


@dataclass(frozen=True)
class RootState:
    """A verified root: what ``cas root`` and ``cas log`` show."""

    seq: int
    root: CID
    time_ns: int
    public_key: bytes


@runtime_checkable
class AppliesChanges(Protocol):
    """A repository that applies namespace changes itself: a daemon's
    client (:class:`cas.control.RemoteStore`) sends each change to the
    daemon, which applies them one at a time to the repository it owns."""

    def apply_change(self, change: Change) -> RootState | None:
        """The root committed with ``change`` applied; None if this
        repository cannot after all (an older daemon: the caller then
        commits the change itself)."""


@runtime_checkable
class ResolvesPaths(Protocol):
    """A repository that resolves namespace paths itself: a daemon's client
    asks the daemon, in one round trip instead of one block per level."""

    def resolve_path(self, path: str, at: int | None) -> Node | None:
        """What ``path`` names in root ``at`` (the current one for None);
        None if this repository cannot after all (an older daemon)."""


@dataclass(frozen=True)
class Node:
    """What a path names: an entry, or the root directory (name "")."""

    path: str
    name: str
    kind: str
    size: int
    mode: int
    mtime: int
    cid: CID | None
    target: str | None = None
    meta: Meta = NO_META

    @classmethod
    def of(cls, path: str, entry: DirEntry) -> Node:
        return cls(path, entry.name, entry.kind, entry.size, entry.mode, entry.mtime, entry.cid, entry.target,
                   entry.meta)

    def to_value(self) -> dict[str, Any]:
        """The node as a DAG-CBOR-ready map (the control socket's form);
        ``meta`` only when something of it is recorded."""
        value = {"path": self.path, "name": self.name, "kind": self.kind, "size": self.size, "mode": self.mode,
                 "mtime": self.mtime, "cid": self.cid, "target": self.target}
        if self.meta != NO_META:
            value["meta"] = self.meta.to_value()
        return value

    @classmethod
    def from_value(cls, value: Any) -> Node:
        """The node a map describes; InvalidInputError if it is malformed."""
        types: dict[str, tuple[type, ...]] = {
            "path": (str,), "name": (str,), "kind": (str,), "size": (int,), "mode": (int,), "mtime": (int,),
            "cid": (CID, type(None)), "target": (str, type(None))}
        if not isinstance(value, dict) or set(value) - {"meta"} != set(types) or any(
                not isinstance(value[k], t) or isinstance(value[k], bool) for k, t in types.items()):
            raise InvalidInputError("a namespace node is a map of path, name, kind, size, mode, mtime, cid, target")
        fields = dict(value)
        meta = fields.pop("meta", None)
        if meta is None:
            return cls(**fields)
        return cls(**fields, meta=Meta.from_value(meta))

    def to_entry(self, name: str) -> DirEntry:
        return DirEntry(name, self.kind, self.size, self.mode, self.mtime, cid=self.cid, target=self.target,
                        meta=self.meta)



ROOTS_PAGE = 1024
"""Root rows read from the repository at a time (a daemon answers at most
this many: cas.control.schema.MAX_ROOTS_PAGE)."""


def root_rows(repo: Repo, *, newest_first: bool = True, after: int | None = None,
              page: int = ROOTS_PAGE) -> Iterator[RootRowLike]:
    """Every stored root row past ``after`` (all, for None), newest first
    (or oldest first), read ``page`` rows at a time as the caller goes:
    memory and messages stay bounded however long the history."""
    while True:
        rows = repo.roots(newest_first=newest_first, limit=page, after=after)
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].seq


def split_path(path: str) -> list[str]:
    """``"/a/b"`` -> ``["a", "b"]``; every component validated."""
    if not isinstance(path, str):
        raise InvalidInputError("a path must be text")
    parts = [p for p in path.split("/") if p != ""]
    for part in parts:
        if part in (".", ".."):
            raise InvalidInputError(f"path {path!r}: '.' and '..' are not supported; give the full path")
        try:
            check_name(part)
        except InvalidInputError as exc:
            raise InvalidInputError(f"path {path!r}: {exc}") from None
    return parts


def join_path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


class Namespace:
    """The path tree of one repository."""

    def __init__(self, repo: Repo, clock: Callable[[], int] = time.time_ns) -> None:
        self.repo = repo
        self.blocks = repo.blocks
        self._clock = clock
        self.warnings: builtins.list[str] = []
        # The newest row as last verified: (seq, record bytes, state). A
        # signature check per read would cost more than the read.
        self._verified: tuple[int, bytes, RootState] | None = None

    # -- roots ----------------------------------------------------------------

    def _verified_rows(self, rows: Iterable[RootRowLike] | None = None) -> Iterator[tuple[RootRowLike, RootRecord]]:
        """The stored rows (or ``rows``), newest first, each with its record,
        those that fail verification left out (with a warning); read a page
        at a time as the caller goes."""
        key = self.repo.namespace_key().public_key
        for row in root_rows(self.repo) if rows is None else rows:
            try:
                record = RootRecord.decode(row.record)
                check_successor(None, record, key)
                if record.seq != row.seq or record.root != row.root:
                    raise InvalidRecordError("it does not match its stored sequence number and root")
            except InvalidRecordError as exc:
                warning = f"root record {row.seq} failed verification ({exc}); it is ignored"
                if warning not in self.warnings:
                    self.warnings.append(warning)
                continue
            yield row, record

    def current(self) -> RootState:
        """The newest root that verifies (an empty directory before the first)."""
        newest = self.repo.roots(newest_first=True, limit=1)
        if newest and self._verified is not None:
            seq, record_bytes, state = self._verified
            if newest[0].seq == seq and newest[0].record == record_bytes:
                return state
        # The newest row first (nearly always good: one signature checked,
        # one row read, through a daemon too), every row only if it is bad.
        for row, record in itertools.chain(self._verified_rows(newest), self._verified_rows()):
            state = RootState(record.seq, record.root, record.time_ns, record.public_key)
            self._verified = (row.seq, row.record, state)
            return state
        # Nothing stored: a namespace with no root reads the same in a repository only read.
        return RootState(0, dirtree.EMPTY_DIRECTORY, 0, self.repo.namespace_key().public_key)

    def at(self, seq: int | None) -> RootState:
        """Root ``seq``, or the current one for None."""
        if seq is None:
            return self.current()
        # The one row numbered seq (the first below seq + 1), read alone.
        for _row, record in self._verified_rows(self.repo.roots(newest_first=True, limit=1, after=seq + 1)):
            if record.seq == seq:
                return RootState(record.seq, record.root, record.time_ns, record.public_key)
        raise PathNotFoundError(f"there is no kept namespace root {seq}; 'cas log' lists them")

    def log(self, limit: int | None = None, *, before: int | None = None) -> Iterator[RootState]:
        """The kept roots that verify, newest first (those numbered below
        ``before``, if given), streamed: at most ``limit`` of them, and only
        as many rows are read as are shown (``cas log -n 20`` reads 20)."""
        if limit is not None and limit <= 0:
            return
        rows = root_rows(self.repo, after=before, page=ROOTS_PAGE if limit is None else min(limit, ROOTS_PAGE))
        for count, (_row, record) in enumerate(self._verified_rows(rows), 1):
            yield RootState(record.seq, record.root, record.time_ns, record.public_key)
            if count == limit:
                return

    def import_record(self, data: bytes) -> RootState:
        """Adopt a root record from outside (e.g. from the network) if it is
        valid, signed by this namespace's key and newer than the current one."""
        record = RootRecord.decode(data)
        current = None
        for _row, rec in self._verified_rows():
            current = rec
            break
        check_successor(current, record, self.repo.namespace_key().public_key)
        if not self.blocks.has(record.root):
            raise InvalidRecordError(f"root record {record.seq} names {record.root}, which is not stored here")
        self.repo.commit_root(record.seq, record.root, record.time_ns, data)
        return RootState(record.seq, record.root, record.time_ns, record.public_key)

    # -- reading --------------------------------------------------------------

    def _root_node(self, state: RootState) -> Node:
        summary = dirtree.summary(self.blocks, state.root)
        return Node("/", "", "dir", summary.size, ROOT_MODE, state.time_ns, state.root)

    def _resolve_in(self, state: RootState, parts: builtins.list[str]) -> Node:
        node = self._root_node(state)
        for depth, name in enumerate(parts):
            if node.kind != "dir":
                raise NotADirectoryPathError(f"{join_path(parts[:depth])} is not a directory")
            assert node.cid is not None
            entry = dirtree.lookup(self.blocks, node.cid, name)
            if entry is None:
                raise PathNotFoundError(f"{join_path(parts[: depth + 1])}: no such file or directory")
            node = Node.of(join_path(parts[: depth + 1]), entry)
        return node

    def resolve(self, path: str, at: int | None = None) -> Node:
        """What ``path`` names (in root ``at``, default the current one)."""
        parts = split_path(path)
        if isinstance(self.repo, ResolvesPaths):
            found = self.repo.resolve_path(join_path(parts), at)
            if found is not None:
                return found
        for _attempt in range(MAX_RETRIES):
            state = self.at(at)
            try:
                return self._resolve_in(state, parts)
            except BlockNotFoundError:
                # Another process (a daemon's gc past the history limit)
                # may drop a root's nodes once newer roots replaced it, even
                # while this read walks it: then read the newest root.
                if at is not None or self.current().seq == state.seq:
                    raise
        raise ConcurrentUpdateError("the namespace kept changing under this read; try again")

    def list(self, path: str = "/", at: int | None = None) -> Iterator[DirEntry]:
        """The entries of directory ``path``, in name order, streamed."""
        node = self.resolve(path, at)
        if node.kind != "dir":
            raise NotADirectoryPathError(f"{node.path} is not a directory")
        assert node.cid is not None
        return dirtree.iterate(self.blocks, node.cid)

    # -- writing --------------------------------------------------------------

    def apply(self, change: Change) -> RootState:
        """Apply ``change`` to the newest root and commit it as the next one
        (the rule: docs/architecture.md, "Concurrent changes").

        A repository that :class:`AppliesChanges` (a daemon's client) is
        handed the change whole and applies it itself; otherwise it is
        applied here and committed compare-and-swap, and applied again to
        the newer root whenever another writer committed first. Either way
        the change lands on the root that is newest when it commits, or
        fails with the error it meets there: never on a root that another
        commit has replaced."""
        check_change(change)
        if isinstance(self.repo, AppliesChanges):
            done = self.repo.apply_change(change)
            if done is not None:
                return done
        return self._commit(lambda state: self._changed_root(state, change))

    def _commit(self, change: Callable[[RootState], CID]) -> RootState:
        """Apply ``change`` to the newest root and commit the result as the
        next root, compare-and-swap; if another writer commits first, apply
        it again to the root that writer made."""
        for _attempt in range(MAX_RETRIES):
            # The newest stored sequence number is read *before* the change
            # is made, and the new root is numbered right after it (or after
            # the state, if a commit landed between the two reads): the
            # commit then succeeds only if nothing was committed since, so a
            # change is never committed on top of a root it was not made
            # against. A stored record that fails verification still holds
            # its number, so the next is above it.
            rows = self.repo.roots(newest_first=True, limit=1)
            state = self.current()
            seq = max(state.seq, rows[0].seq if rows else 0) + 1
            new_root = change(state)
            if new_root == state.root:
                return state
            now = max(self._clock(), state.time_ns + 1)
            record = RootRecord.sign(self.repo.namespace_key(), seq, new_root, now)
            try:
                self.repo.commit_root(record.seq, new_root, now, record.encode())
            except ConcurrentUpdateError:
                continue  # another writer was first: apply the change to its root
            state = RootState(record.seq, new_root, now, record.public_key)
            self._verified = (record.seq, record.encode(), state)
            return state
        raise ConcurrentUpdateError("the namespace kept changing under this operation; try again")

    def commit_made(self, make: Callable[[RootState], CID]) -> RootState:
        """Commit ``make(newest root)`` as the next version, compare-and-swap
        (``make`` runs again on the newer root if another writer was
        first): for a writer that builds a root itself, as the mount's
        write-back does (its new nodes stored by ``make``)."""
        return self._commit(make)

    def _changed_root(self, state: RootState, change: Change) -> CID:
        """The root ``state`` becomes with ``change`` applied (its new nodes
        stored); ``state.root`` itself if the change changes nothing. Raises
        the NamespaceError the change meets on this root."""
        if isinstance(change, Mkdir):
            return self._mkdir(state.root, change)
        if isinstance(change, Link):
            return self._link(state.root, change)
        if isinstance(change, Move):
            return self._move(state.root, change)
        if isinstance(change, Remove):
            return self._remove(state.root, change)
        return self._set_attributes(state.root, change)

    def _update_dir(
        self, root: CID, dir_parts: builtins.list[str], changes: dict[str, DirEntry | None], now: int | None
    ) -> CID:
        """The new root after applying ``changes`` to directory ``dir_parts``
        (which must exist); rewrites only the path from it to the root. The
        changed directory's mtime becomes ``now`` (unchanged if None)."""
        chain = [root]
        entries: builtins.list[DirEntry] = []
        for depth, name in enumerate(dir_parts):
            entry = dirtree.lookup(self.blocks, chain[-1], name)
            if entry is None:
                raise PathNotFoundError(f"{join_path(dir_parts[: depth + 1])}: no such directory")
            if entry.kind != "dir":
                raise NotADirectoryPathError(f"{join_path(dir_parts[: depth + 1])} is not a directory")
            assert entry.cid is not None
            entries.append(entry)
            chain.append(entry.cid)
        new = dirtree.update(self.blocks, chain[-1], changes)
        for depth in reversed(range(len(dir_parts))):
            old = entries[depth]
            # The changed directory's own mtime moves, as on a local disk;
            # its ancestors only get the new CID and size.
            mtime = now if depth == len(dir_parts) - 1 and now is not None else old.mtime
            new = dirtree.update(
                self.blocks, chain[depth], {old.name: replace(old, cid=new.cid, size=new.size, mtime=mtime)}
            )
        return new.cid

    def _lookup_in(self, root: CID, parts: builtins.list[str]) -> DirEntry | None:
        cid = root
        entry: DirEntry | None = None
        for depth, name in enumerate(parts):
            entry = dirtree.lookup(self.blocks, cid, name)
            if entry is None:
                return None
            if depth < len(parts) - 1:
                if entry.kind != "dir":
                    raise NotADirectoryPathError(f"{join_path(parts[: depth + 1])} is not a directory")
                assert entry.cid is not None
                cid = entry.cid
        return entry

    def mkdir(self, path: str, *, parents: bool = False, mode: int = 0o755) -> RootState:
        """Create directory ``path``; with ``parents``, also missing parents
        and no error if it exists already as a directory."""
        if not split_path(path):
            if parents:
                return self.current()
            raise PathExistsError("/ exists already")
        return self.apply(Mkdir(path, parents, mode))

    def _mkdir(self, root: CID, change: Mkdir) -> CID:
        parts = split_path(change.path)
        if not parts:
            if change.parents:
                return root
            raise PathExistsError("/ exists already")
        now = self._clock()
        existing = self._lookup_in(root, parts)
        if existing is not None:
            if change.parents and existing.kind == "dir":
                return root
            raise PathExistsError(f"{join_path(parts)} exists already")
        if change.parents:
            root = self._mkdirs(root, parts[:-1], now)
        entry = DirEntry(parts[-1], "dir", 0, change.mode, now, cid=dirtree.empty_directory(self.blocks))
        return self._update_dir(root, parts[:-1], {parts[-1]: entry}, now)

    def link(self, path: str, node: Node, *, replace_file: bool = True, parents: bool = False) -> RootState:
        """Make ``path`` name ``node`` (content already stored). An existing
        file there is replaced (with ``replace_file``); a directory never is."""
        parts = split_path(path)
        if not parts:
            raise InvalidInputError("cannot replace the root directory /")
        return self.apply(Link(path, node.to_entry(parts[-1]), replace_file, parents))

    def _link(self, root: CID, change: Link) -> CID:
        parts = split_path(change.path)
        if not parts:
            raise InvalidInputError("cannot replace the root directory /")
        content = change.entry.cid
        if content is not None and not self.blocks.has(content):
            # Checked here, where the change is committed: a root never
            # refers to a block the repository lacks.
            raise BlockNotFoundError(content)
        now = self._clock()
        if change.parents and len(parts) > 1:
            root = self._mkdirs(root, parts[:-1], now)
        existing = self._lookup_in(root, parts)
        if existing is not None:
            if existing.kind == "dir":
                raise IsADirectoryPathError(f"{join_path(parts)} is a directory; it is not replaced")
            if not change.replace_file:
                raise PathExistsError(f"{join_path(parts)} exists already")
        root = self._update_dir(root, parts[:-1], {parts[-1]: change.entry}, now)
        return self._recount(root, self._groups_below(existing), now) if existing is not None else root

    def set_attributes(self, path: str, *, mode: int | None = None, mtime: int | None = None) -> RootState:
        """Change the mode and/or mtime of ``path`` (file, directory or
        symlink); its content is untouched."""
        return self.apply(SetAttributes(path, mode, mtime))

    def _set_attributes(self, root: CID, change: SetAttributes) -> CID:
        parts = split_path(change.path)
        if not parts:
            raise InvalidInputError("the root directory's attributes are fixed")
        entry = self._lookup_in(root, parts)
        if entry is None:
            raise PathNotFoundError(f"{join_path(parts)}: no such file or directory")
        changed = replace(
            entry,
            mode=entry.mode if change.mode is None else change.mode,
            mtime=entry.mtime if change.mtime is None else change.mtime,
        )
        if changed == entry:
            return root
        # The parent's own mtime stays: attributes are not contents.
        return self._update_dir(root, parts[:-1], {parts[-1]: changed}, now=None)

    def _mkdirs(self, root: CID, parts: builtins.list[str], now: int) -> CID:
        """``root`` with every missing directory along ``parts`` created."""
        for depth in range(1, len(parts) + 1):
            sub = parts[:depth]
            existing = self._lookup_in(root, sub)
            if existing is None:
                entry = DirEntry(sub[-1], "dir", 0, 0o755, now, cid=dirtree.empty_directory(self.blocks))
                root = self._update_dir(root, sub[:-1], {sub[-1]: entry}, now)
            elif existing.kind != "dir":
                raise NotADirectoryPathError(f"{join_path(sub)} exists and is not a directory")
        return root

    def remove(self, path: str, *, recursive: bool = False) -> RootState:
        """Remove ``path``; a non-empty directory only with ``recursive``."""
        return self.apply(Remove(path, recursive))

    def _remove(self, root: CID, change: Remove) -> CID:
        parts = split_path(change.path)
        if not parts:
            raise InvalidInputError("cannot remove the root directory /")
        entry = self._lookup_in(root, parts)
        if entry is None:
            raise PathNotFoundError(f"{join_path(parts)}: no such file or directory")
        if entry.kind == "dir" and not change.recursive:
            assert entry.cid is not None
            if dirtree.summary(self.blocks, entry.cid).count:
                raise DirectoryNotEmptyError(f"{join_path(parts)} is a directory that is not empty; use -r")
        now = self._clock()
        root = self._update_dir(root, parts[:-1], {parts[-1]: None}, now)
        return self._recount(root, self._groups_below(entry), now)

    # -- hard links ---------------------------------------------------------------
    #
    # The names of a hard-linked inode record how many they are (``nlink``,
    # docs/formats.md, "Directories"). A change that takes names away (a
    # removal, a name replaced) has the names left record the new count;
    # the mount keeps them true its own way (cas.fuse.view). Only a change
    # that takes away a hard-linked name pays for the walk.

    def _groups_below(self, entry: DirEntry) -> set[int]:
        """The link groups of ``entry`` and of every entry below it."""
        if entry.kind != "dir":
            return set() if entry.meta.ino is None else {entry.meta.ino}
        found: set[int] = set()
        assert entry.cid is not None
        stack = [entry.cid]
        while stack:
            for child in dirtree.iterate(self.blocks, stack.pop()):
                if child.kind == "dir" and child.cid is not None:
                    stack.append(child.cid)
                elif child.meta.ino is not None:
                    found.add(child.meta.ino)
        return found

    def _recount(self, root: CID, groups: set[int], now: int) -> CID:
        """The root with the names left of ``groups`` recording how many they
        are (one left: a plain file again)."""
        if not groups:
            return root
        names: dict[int, builtins.list[tuple[builtins.list[str], DirEntry]]] = {group: [] for group in groups}
        stack: builtins.list[tuple[builtins.list[str], CID]] = [([], root)]
        while stack:
            parts, cid = stack.pop()
            for child in dirtree.iterate(self.blocks, cid):
                if child.kind == "dir" and child.cid is not None:
                    stack.append(([*parts, child.name], child.cid))
                elif child.meta.ino in names:
                    names[child.meta.ino].append(([*parts, child.name], child))
        for left in names.values():
            for parts, child in left:
                meta = (replace(child.meta, nlink=len(left), ctime=now) if len(left) > 1
                        else replace(child.meta, ino=None, nlink=1, ctime=now))
                if (meta.ino, meta.nlink) != (child.meta.ino, child.meta.nlink):
                    root = self._update_dir(root, parts[:-1], {parts[-1]: replace(child, meta=meta)}, None)
        return root

    def move(self, src: str, dst: str, *, into_directory: bool = True, no_replace: bool = False) -> RootState:
        """Rename ``src`` to ``dst``.

        With ``into_directory`` (the ``mv`` command), a ``dst`` that is an
        existing directory receives ``src`` under its own name. Without it
        (``rename(2)``, the FUSE driver), ``dst`` is the new path exactly.
        An existing target is replaced as rename(2) does (a file by a file, an
        empty directory by a directory), unless ``no_replace``.
        """
        return self.apply(Move(src, dst, into_directory, no_replace))

    def _move(self, root: CID, change: Move) -> CID:
        src_parts, dst_parts = split_path(change.src), split_path(change.dst)
        if not src_parts:
            raise InvalidMoveError("cannot move the root directory /")
        entry = self._lookup_in(root, src_parts)
        if entry is None:
            raise PathNotFoundError(f"{join_path(src_parts)}: no such file or directory")
        target_parts = dst_parts
        target = self._lookup_in(root, dst_parts) if dst_parts else None
        if change.into_directory and (not dst_parts or (target is not None and target.kind == "dir")):
            target_parts = dst_parts + [src_parts[-1]]
            target = self._lookup_in(root, target_parts)
        if not target_parts:
            raise InvalidMoveError("cannot replace the root directory /")
        if target_parts == src_parts:
            return root
        if entry.kind == "dir" and target_parts[: len(src_parts)] == src_parts:
            raise InvalidMoveError(f"cannot move {join_path(src_parts)} into itself")
        if target is not None:
            if change.no_replace:
                raise PathExistsError(f"{join_path(target_parts)} exists already")
            if target.kind == "dir":
                if entry.kind != "dir":
                    raise IsADirectoryPathError(f"{join_path(target_parts)} is a directory")
                assert target.cid is not None
                if dirtree.summary(self.blocks, target.cid).count:
                    raise DirectoryNotEmptyError(f"{join_path(target_parts)} is a directory that is not empty")
            elif entry.kind == "dir":
                raise NotADirectoryPathError(f"{join_path(target_parts)} is not a directory")
        parent = self._lookup_in(root, target_parts[:-1]) if len(target_parts) > 1 else None
        if len(target_parts) > 1 and (parent is None or parent.kind != "dir"):
            raise PathNotFoundError(f"{join_path(target_parts[:-1])}: no such directory")
        if target is not None and target.meta.ino is not None and target.meta.ino == entry.meta.ino:
            return root  # two names of one inode: rename(2) does nothing
        now = self._clock()
        moved = replace(entry, name=target_parts[-1])
        if src_parts[:-1] == target_parts[:-1]:
            changes = {src_parts[-1]: None, target_parts[-1]: moved}
            root = self._update_dir(root, src_parts[:-1], changes, now)
        else:
            root = self._update_dir(root, src_parts[:-1], {src_parts[-1]: None}, now)
            root = self._update_dir(root, target_parts[:-1], {target_parts[-1]: moved}, now)
        return self._recount(root, self._groups_below(target), now) if target is not None else root

    def node_for_cid(self, cid: CID, size: int) -> Node:
        """A node for content given by CID (``cas cp CID /path``)."""
        kind = "dir" if cid.codec == DAG_CBOR else "file"
        return Node("", "", kind, size, 0o755 if kind == "dir" else 0o644, self._clock(), cid)
