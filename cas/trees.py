"""Local file trees in and out of a block store.

``import_path`` stores a file, or a directory tree bottom-up as directory
nodes over file DAGs; ``export`` writes a stored file or tree back to local
disk. This is the one place that touches the user's files for ``cas add`` and
``cas get``; it never changes anything it reads, and it writes only under the
output path it is given (entry names are validated, so an entry can never
name ``..`` or reach through a ``/``).

What is kept is what ``tar --xattrs`` and ``rsync -aHX`` keep:

* every kind of inode Linux has in a tree: files, directories, symlinks,
  fifos, sockets, character and block devices (their ``rdev``);
* the mode with setuid, setgid and sticky, the mtime in nanoseconds, the
  owner and group as numbers (always recorded, as tar does);
* extended attributes in ``user.``, ``trusted.`` and ``security.`` (those
  the adding user can read) and POSIX ACLs (``system.posix_acl_access``
  and ``_default``; the rest of ``system.`` is not kept). An entry keeps at
  most ``MAX_XATTR_BYTES`` of them (what ext4 keeps in a block); more is
  an error naming the file, never a silent loss (``xattrs=False`` leaves
  all of them out, ACLs included, as ``tar --no-xattrs --no-acls`` does);
* hard links: names in the added tree of one inode (same ``st_dev`` and
  ``st_ino``) become one link group, every name with the same random 63-bit
  ``ino`` (so groups of two adds never merge) and ``nlink`` the number of
  its names *in the tree*; an inode whose other names are all outside the
  tree is added as a plain file. The random ``ino`` means a tree with hard
  links gets a new directory CID each time it is added (its file content is
  still stored once).

atime and ctime are not recorded: reading a tree changes the first, and
nothing can restore the second.

``export`` restores all of it the way ``tar -xp`` does as root: owners only
when the process may give files away (root), devices only where ``mknod``
is allowed, sockets as socket inodes (``mknod``, as rsync makes them; no
process listens on them), hard links with ``link`` to the first name
written, each directory's times after its contents, and a sparse file's
holes as holes (a run of zeros is stored as whole zero leaves of the
chunker's largest size; those are skipped, not written). What the target
refuses (an xattr namespace, a device as non-root, a chown) is skipped and
reported once per kind through ``warn``, as rsync reports it; anything else
that fails is an error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat as statmod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from . import files, unixfs
from .blocks import BlockStore
from .chunker import MAX_CHUNK_SIZE
from .cid import CID, DAG_CBOR, DAG_PB, RAW
from .errors import InvalidInputError, NotAFileError, RepositoryError
from .names import dirtree
from .names.directory import MAX_NAME_BYTES, MAX_XATTR_BYTES, NO_META, SPECIAL_KINDS, DirEntry, Meta, check_name

Progress = Callable[[int], None]
Warn = Callable[[str], None]

AddFile = Callable[[BlockStore, BinaryIO, Progress | None], files.AddResult]
"""How a file's bytes go into the store: :func:`cas.api.add_file_to` (which
hands a regular file to a daemon whole), or chunked here."""

WriteFile = Callable[[BlockStore, CID, int, Progress | None, int, int | None], int]
"""How bytes [offset, offset + length) of a stored file go to a descriptor:
:func:`cas.api.write_file_from` (which lets a daemon write them itself), or
read here."""

XATTR_NAMESPACES = ("user.", "trusted.", "security.")
"""The namespaces of extended attributes kept whole."""

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
"""The POSIX ACLs, which Linux shows as these two attributes (in its own
binary form, the same on every filesystem), kept as ``rsync -A`` and ``tar
--acls`` keep them; the rest of ``system.`` is what a filesystem derives
(NFSv4 ACLs, and such) and is left out."""

_KIND_OF_TYPE = {
    statmod.S_IFREG: "file", statmod.S_IFDIR: "dir", statmod.S_IFLNK: "symlink", statmod.S_IFIFO: "fifo",
    statmod.S_IFSOCK: "socket", statmod.S_IFCHR: "chardev", statmod.S_IFBLK: "blockdev",
}
_TYPE_OF_KIND = {kind: bits for bits, kind in _KIND_OF_TYPE.items()}


def _add_here(store: BlockStore, stream: BinaryIO, progress: Progress | None) -> files.AddResult:
    return files.add_stream(store, stream, progress=progress)


def _write_here(
    store: BlockStore, cid: CID, fd: int, progress: Progress | None, offset: int = 0, length: int | None = None
) -> int:
    return files.write_file(store, cid, fd, offset, length, progress=progress)


@dataclass
class Imported:
    """What :func:`import_path` stored."""

    cid: CID
    kind: str  # "file" or "dir"
    size: int
    mode: int = 0o644  # of the source: kept when it is linked into the namespace
    mtime: int = 0
    files: int = 0
    skipped: list[str] = field(default_factory=list)
    meta: Meta = NO_META  # the source's owner and xattrs, kept with mode and mtime


def _user_error(exc: OSError, path: Path | str) -> InvalidInputError:
    reason = exc.strerror or str(exc)
    return InvalidInputError(f"cannot read {path}: {reason}")


def import_file(
    store: BlockStore, path: Path, progress: Progress | None = None, add: AddFile = _add_here
) -> files.AddResult:
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _user_error(exc, path) from None
    with f:
        try:
            return add(store, f, progress)
        except OSError as exc:
            raise _user_error(exc, path) from None


def read_xattrs(path: Path | str) -> tuple[tuple[str, bytes], ...]:
    """The extended attributes of ``path`` (not followed if a symlink) in
    :data:`XATTR_NAMESPACES` that this process can read, and its ACLs
    (:data:`ACL_XATTRS`), sorted by name;
    none where the filesystem has none. InvalidInputError naming the file
    if they are more than an entry keeps."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise _user_error(exc, path) from None
    found = []
    for name in sorted(names):
        if not name.startswith(XATTR_NAMESPACES) and name not in ACL_XATTRS:
            continue
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed since it was listed
                continue
            raise InvalidInputError(f"cannot read extended attribute {name} of {path}: {exc.strerror}") from None
    total = sum(len(name.encode("utf-8", "surrogateescape")) + len(value) for name, value in found)
    if total > MAX_XATTR_BYTES:
        raise InvalidInputError(
            f"cannot add {path}: its extended attributes take {total} bytes, and cas keeps at most "
            f"{MAX_XATTR_BYTES} per entry (what ext4 keeps in a block); remove some, or add with "
            "--no-xattrs to leave all extended attributes out")
    return tuple(found)


def _meta_of(path: Path, st: os.stat_result, xattrs: bool) -> Meta:
    """What is kept of ``st`` beyond mode and mtime: owner, device number
    and extended attributes (atime and ctime are not restorable)."""
    kind = _KIND_OF_TYPE.get(statmod.S_IFMT(st.st_mode))
    rdev = st.st_rdev if kind in ("chardev", "blockdev") else None
    found = read_xattrs(path) if xattrs else ()
    if rdev is None and not found:
        return _owner_only(st.st_uid, st.st_gid)
    try:
        return Meta(uid=st.st_uid, gid=st.st_gid, rdev=rdev, xattrs=found)
    except InvalidInputError as exc:  # a name cas cannot keep (not UTF-8, too long)
        raise InvalidInputError(f"cannot add {path}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _owner_only(uid: int, gid: int) -> Meta:
    """The metadata of most entries, made once per owner (a tree has few)."""
    return Meta(uid=uid, gid=gid)


def _link_counts(root: Path) -> dict[tuple[int, int], int]:
    """For each inode with several names in the tree at ``root`` (not
    counting names outside it), how many it has there."""
    counts: dict[tuple[int, int], int] = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            listing = os.scandir(directory)
        except OSError as exc:
            raise _user_error(exc, directory) from None
        with listing:
            for child in listing:
                try:
                    if child.is_dir(follow_symlinks=False):
                        stack.append(Path(child.path))
                        continue
                    st = child.stat(follow_symlinks=False)
                except OSError as exc:
                    raise _user_error(exc, child.path) from None
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    counts[key] = counts.get(key, 0) + 1
    return {key: count for key, count in counts.items() if count > 1}


@dataclass
class _Import:
    """One recursive add: where its bytes go, and its link groups."""

    store: BlockStore
    result: Imported
    progress: Progress | None
    add: AddFile
    xattrs: bool
    links: dict[tuple[int, int], int]  # inode -> its names in the tree
    made: dict[tuple[int, int], DirEntry] = field(default_factory=dict)  # inode -> its first name's entry
    seen: dict[tuple[int, int], int] = field(default_factory=dict)


def import_path(
    store: BlockStore,
    path: str | os.PathLike[str],
    *,
    recursive: bool = False,
    progress: Progress | None = None,
    add: AddFile = _add_here,
    xattrs: bool = True,
) -> Imported:
    """Store the file or (with ``recursive``) the directory tree at ``path``,
    with the metadata the module docstring lists (``xattrs=False``: none of
    the extended attributes)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise _user_error(exc, path) from None
    if statmod.S_ISDIR(st.st_mode):
        if not recursive:
            raise InvalidInputError(f"{path} is a directory; use -r to add it with its contents")
        result = Imported(
            cid=CID.for_data(RAW, b""), kind="dir", size=0, mode=statmod.S_IMODE(st.st_mode), mtime=st.st_mtime_ns
        )
        walk = _Import(store, result, progress, add, xattrs, _link_counts(path))
        entry = _import_dir(walk, path, st)
        if walk.seen != walk.links:
            raise InvalidInputError(f"{path} changed while it was added (its hard links moved); add it again")
        assert entry.cid is not None
        result.cid, result.size, result.meta = entry.cid, entry.size, entry.meta
        return result
    if not statmod.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{path} is not a regular file or directory")
    meta = _meta_of(path, st, xattrs)
    added = import_file(store, path, progress, add)
    return Imported(
        cid=added.cid, kind="file", size=added.size, mode=statmod.S_IMODE(st.st_mode), mtime=st.st_mtime_ns, files=1,
        meta=meta,
    )


def _import_dir(walk: _Import, path: Path, st: os.stat_result) -> DirEntry:
    try:
        children = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise _user_error(exc, path) from None
    entries: list[DirEntry] = []
    for child in children:
        child_path = Path(child.path)
        try:
            name = check_name(child.name)
            child_st = child.stat(follow_symlinks=False)
        except InvalidInputError as exc:
            raise InvalidInputError(f"cannot add {child_path}: {exc}") from None
        except OSError as exc:
            raise _user_error(exc, child_path) from None
        if statmod.S_ISDIR(child_st.st_mode):
            entries.append(_import_dir(walk, child_path, child_st))
            continue
        key = (child_st.st_dev, child_st.st_ino)
        names = walk.links.get(key)
        if names is not None:
            walk.seen[key] = walk.seen.get(key, 0) + 1
            first = walk.made.get(key)
            if first is not None:  # another name of an inode already added: its entry again
                entries.append(replace(first, name=name))
                continue
        entry = _import_leaf(walk, child_path, name, child_st)
        if entry is None:
            continue
        if names is not None:
            entry = replace(entry, meta=replace(entry.meta, ino=secrets.randbits(63), nlink=names))
            walk.made[key] = entry
        entries.append(entry)
    built = dirtree.build(walk.store, entries)
    return DirEntry(
        name=path.name or "root",
        kind="dir",
        size=built.size,
        mode=statmod.S_IMODE(st.st_mode),
        mtime=st.st_mtime_ns,
        cid=built.cid,
        meta=_meta_of(path, st, walk.xattrs),
    )


def _import_leaf(walk: _Import, path: Path, name: str, st: os.stat_result) -> DirEntry | None:
    """The entry of anything but a directory (None: a kind Linux lacks)."""
    kind = _KIND_OF_TYPE.get(statmod.S_IFMT(st.st_mode))
    mode, mtime = statmod.S_IMODE(st.st_mode), st.st_mtime_ns
    if kind is None:
        walk.result.skipped.append(f"{path} (an inode of unknown type)")
        return None
    meta = _meta_of(path, st, walk.xattrs)
    if kind == "file":
        added = import_file(walk.store, path, walk.progress, walk.add)
        walk.result.files += 1
        return DirEntry(name, "file", added.size, mode, mtime, cid=added.cid, meta=meta)
    if kind == "symlink":
        try:
            target = os.readlink(path)
        except OSError as exc:
            raise _user_error(exc, path) from None
        return DirEntry(name, "symlink", len(target.encode()), mode, mtime, target=target, meta=meta)
    return DirEntry(name, kind, 0, mode, mtime, meta=meta)


# -- reading either kind of directory ------------------------------------------


def entries(store: BlockStore, cid: CID) -> Iterator[DirEntry]:
    """The entries of directory ``cid``, sorted by name: a cas directory
    (dag-cbor) or a UnixFS one made by IPFS (dag-pb, plain or HAMT)."""
    if cid.codec == DAG_PB:
        return unixfs.iterate(store, cid)
    if cid.codec != DAG_CBOR:
        raise InvalidInputError(f"{cid} is a file, not a directory")
    return dirtree.iterate(store, cid)


def lookup(store: BlockStore, cid: CID, name: str) -> DirEntry | None:
    """The entry ``name`` of directory ``cid`` (either kind), or None."""
    if cid.codec == DAG_PB:
        return unixfs.lookup(store, cid, name)
    if cid.codec != DAG_CBOR:
        raise InvalidInputError(f"{cid} is a file, not a directory")
    return dirtree.lookup(store, cid, name)


def adopt_unixfs(store: BlockStore, cid: CID) -> dirtree.DirSummary:
    """Store the cas directory with the entries of UnixFS directory ``cid``
    (made by IPFS): its files and symlinks as they are (the file DAGs
    shared, not copied), its subdirectories adopted the same way."""
    adopted = []
    for entry in unixfs.iterate(store, cid):
        if entry.kind == "dir" and entry.cid is not None and entry.cid.codec == DAG_PB:
            sub = adopt_unixfs(store, entry.cid)
            entry = replace(entry, cid=sub.cid, size=sub.size)
        adopted.append(entry)
    return dirtree.build(store, adopted)


def new_link_groups(store: BlockStore, cid: CID) -> CID:
    """Cas directory ``cid`` with every hard-link group in it given a new
    random ``ino`` (the names of a group keep sharing one): what a copy of
    a tree is, as ``cp -a`` makes new inodes, so that no group has names in
    two trees. ``cid`` itself when the tree has no hard links (nothing is
    written); otherwise the directories holding them are stored anew."""
    renamed: dict[int, int] = {}
    copied = _new_link_groups(store, cid, renamed)
    return cid if copied is None else copied.cid


def _new_link_groups(store: BlockStore, cid: CID, renamed: dict[int, int]) -> dirtree.DirSummary | None:
    changed = False
    kept = []
    for entry in dirtree.iterate(store, cid):
        if entry.kind == "dir" and entry.cid is not None:
            sub = _new_link_groups(store, entry.cid, renamed)
            if sub is not None:
                entry, changed = replace(entry, cid=sub.cid), True
        elif entry.meta.ino is not None:
            ino = renamed.setdefault(entry.meta.ino, secrets.randbits(63))
            entry, changed = replace(entry, meta=replace(entry.meta, ino=ino)), True
        kept.append(entry)
    return dirtree.build(store, kept) if changed else None


# -- export ------------------------------------------------------------------


def export(
    store: BlockStore,
    cid: CID,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    write: WriteFile = _write_here,
    top: DirEntry | None = None,
    warn: Warn | None = None,
) -> str:
    """Write the file or tree ``cid`` to ``out``; return its kind. ``top``,
    the entry that names ``cid`` (a namespace path's), gives ``out`` its
    metadata too. What the target refuses is skipped and said through
    ``warn`` (default: logged), once per kind of refusal (the module
    docstring)."""
    out = Path(out)
    if os.path.lexists(out) and not overwrite:
        raise InvalidInputError(f"{out} already exists; choose another output or use --force")
    restore = _Restore(store, progress, write)
    if cid.codec == DAG_CBOR or (cid.codec == DAG_PB and unixfs.is_directory(store, cid)):
        if cid.codec == DAG_CBOR:
            dirtree.summary(store, cid)  # a directory, or a clear error, before creating anything
        if os.path.lexists(out):
            raise InvalidInputError(f"{out} already exists; cas get writes a new directory")
        restore.directory(entries(store, cid), out)
        kind = "dir"
    else:
        if cid.codec not in (RAW, DAG_PB):
            raise NotAFileError(f"{cid} is not a file")
        _write_file(store, cid, out, progress, write)
        kind = "file"
    if top is not None and top.kind == kind:
        try:
            restore.attributes(top, out)
        except OSError as exc:
            raise RepositoryError(f"cannot write {out}: {exc.strerror or exc}") from None
    for line in restore.warnings():
        (warn or _log_warning)(line)
    return kind


def _log_warning(line: str) -> None:
    """Where a warning goes when the caller gave no ``warn``: the log (on
    stderr when logging is not set up)."""
    import logging

    logging.getLogger(__name__).warning("%s", line)


@contextlib.contextmanager
def written_whole(dest: Path) -> Iterator[BinaryIO]:
    """A file to write ``dest`` through: a part file beside it, renamed
    into place once the block ends, removed if it fails (a disk error is a
    RepositoryError naming ``dest``). A reader never sees half a file."""
    part = dest.with_name(_part_name(dest.name))
    try:
        with open(part, "wb") as f:
            yield f
        os.replace(part, dest)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise RepositoryError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _part_name(name: str) -> str:
    """``.NAME.cas-part``, NAME cut (at a character) to keep within the
    255 bytes a name may have."""
    room = MAX_NAME_BYTES - len(".") - len(".cas-part")
    cut = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{cut}.cas-part"


def _write_file(store: BlockStore, cid: CID, dest: Path, progress: Progress | None, write: WriteFile) -> None:
    with written_whole(dest) as f:
        fd = f.fileno()
        holes = _zero_leaves(store, cid)
        if not holes:
            write(store, cid, fd, progress, 0, None)  # a daemon's store writes into it itself
            return
        # Runs of zeros stored as whole zero leaves are left as holes, as
        # cp --sparse=auto and tar -S leave them; the rest written around them.
        at = 0
        for start, end in holes:
            if start > at:
                os.lseek(fd, at, os.SEEK_SET)
                write(store, cid, fd, progress, at, start - at)
            if progress is not None:
                progress(end - start)
            at = end
        size = files.file_size(store, cid)
        if at < size:
            os.lseek(fd, at, os.SEEK_SET)
            write(store, cid, fd, progress, at, None)
        os.ftruncate(fd, size)


@functools.cache
def _zero_leaf() -> CID:
    """The leaf a run of zeros is cut into (the chunker cuts zeros at its
    largest size): what a hole of a sparse file is stored as."""
    return CID.for_data(RAW, bytes(MAX_CHUNK_SIZE))


def _zero_leaves(store: BlockStore, cid: CID) -> list[tuple[int, int]]:
    """The byte ranges of file ``cid`` that are whole leaves of zeros,
    merged; none for a file too small to hold one (its leaves unread)."""
    if cid.codec != DAG_PB:  # one block: not worth a hole
        return []
    ranges: list[tuple[int, int]] = []
    for leaf in files.file_leaves(store, cid):
        if not isinstance(leaf, files.LeafSpan) or leaf.cid != _zero_leaf():  # (bytes held in an interior node)
            continue
        if ranges and ranges[-1][1] == leaf.offset:
            ranges[-1] = (ranges[-1][0], leaf.offset + leaf.size)
        else:
            ranges.append((leaf.offset, leaf.offset + leaf.size))
    return ranges


_REFUSED = (errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSPC, errno.E2BIG,
            errno.ERANGE)
"""What a filesystem answers when it will not keep an attribute (rather
than a fault of the disk): skipped with a warning, as rsync and tar do."""


@dataclass
class _Refusal:
    count: int
    first: Path
    reason: str


@dataclass
class _Restore:
    """One ``cas get`` of a tree: entries written in order, metadata after
    content and a directory's after its children, hard links to the first
    name written of their group, refusals counted for :meth:`warnings`."""

    store: BlockStore
    progress: Progress | None
    write: WriteFile
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    linked: dict[int, Path] = field(default_factory=dict)  # link group -> its first name written
    refused: dict[str, _Refusal] = field(default_factory=dict)

    def directory(self, listing: Iterable[DirEntry], out: Path) -> None:
        try:
            out.mkdir()
        except OSError as exc:
            raise RepositoryError(f"cannot create {out}: {exc.strerror}") from None
        for entry in listing:
            self.entry(entry, out / entry.name)

    def entry(self, entry: DirEntry, dest: Path) -> None:
        try:
            group = entry.meta.ino
            if group is not None and group in self.linked:
                # The same inode, whose metadata is set (a symlink's own
                # inode, not its target's).
                os.link(self.linked[group], dest, follow_symlinks=False)
                return
            if entry.kind == "dir":
                assert entry.cid is not None
                self.directory(entries(self.store, entry.cid), dest)
            elif entry.kind == "file":
                assert entry.cid is not None
                _write_file(self.store, entry.cid, dest, self.progress, self.write)
            elif entry.kind == "symlink":
                assert entry.target is not None
                os.symlink(entry.target, dest)
            elif not self._special(entry, dest):
                return
            # Metadata after the content (a directory's after its children:
            # writing them changes its mtime, and a read-only mode would stop
            # them being written).
            self.attributes(entry, dest)
            if group is not None:
                self.linked[group] = dest
        except OSError as exc:
            raise RepositoryError(f"cannot write {dest}: {exc.strerror or exc}") from None

    def _special(self, entry: DirEntry, dest: Path) -> bool:
        """Make a fifo, socket or device node; False if refused (a device
        where this process may not make one)."""
        assert entry.kind in SPECIAL_KINDS
        if entry.kind == "fifo":
            os.mkfifo(dest, 0o600)
            return True
        try:
            # A socket is made as rsync makes it: an inode nobody listens on.
            os.mknod(dest, _TYPE_OF_KIND[entry.kind] | 0o600, entry.meta.rdev or 0)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EACCES):
                raise
            self._refuse("device nodes not made (only root can make them)", dest, exc)
            return False
        return True

    def attributes(self, entry: DirEntry, dest: Path) -> None:
        """Owner (as root), extended attributes, mode and times, in the
        order that keeps each: chown clears setuid and capabilities, and a
        read-only mode would refuse the attributes."""
        meta, symlink = entry.meta, entry.kind == "symlink"
        if self.as_root and (meta.uid is not None or meta.gid is not None):
            try:
                os.lchown(dest, -1 if meta.uid is None else meta.uid, -1 if meta.gid is None else meta.gid)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                self._refuse("owners not restored", dest, exc)
        for name, value in meta.xattrs:
            try:
                os.setxattr(dest, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                self._refuse(f"extended attributes {name.split('.', 1)[0]}.* not restored", dest, exc)
        if not symlink:  # Linux gives every symlink 0o777
            os.chmod(dest, entry.mode)
        atime = entry.mtime if meta.atime is None else meta.atime
        os.utime(dest, ns=(atime, entry.mtime), follow_symlinks=not symlink)

    def _refuse(self, what: str, dest: Path, exc: OSError) -> None:
        known = self.refused.get(what)
        if known is None:
            self.refused[what] = _Refusal(1, dest, exc.strerror or str(exc))
        else:
            known.count += 1

    def warnings(self) -> list[str]:
        return [f"{what} on {r.count} entr{'y' if r.count == 1 else 'ies'}: {r.reason} (the first: {r.first})"
                for what, r in self.refused.items()]
