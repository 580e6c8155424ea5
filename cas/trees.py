"""Local file trees in and out of a block store.

``import_path`` stores a file, or a directory tree bottom-up as directory
nodes over file DAGs; ``export`` writes a stored file or tree back to local
disk. This is the one place that touches the user's files for ``cas add`` and
``cas get``; it never changes anything it reads, and it writes only under the
output path it is given (entry names are validated, so an entry can never
name ``..`` or reach through a ``/``).
"""

from __future__ import annotations

import contextlib
import os
import stat as statmod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from . import files, unixfs
from .blocks import BlockStore
from .cid import CID, DAG_CBOR, DAG_PB, RAW
from .errors import InvalidInputError, NotAFileError, RepositoryError
from .names import dirtree
from .names.directory import DirEntry, check_name

Progress = Callable[[int], None]

AddFile = Callable[[BlockStore, BinaryIO, Progress | None], files.AddResult]
"""How a file's bytes go into the store: :func:`cas.api.add_file_to` (which
hands a regular file to a daemon whole), or chunked here."""

WriteFile = Callable[[BlockStore, CID, int, Progress | None], int]
"""How a stored file's bytes go to a descriptor: :func:`cas.api.write_file_from`
(which lets a daemon write them itself), or read here."""


def _add_here(store: BlockStore, stream: BinaryIO, progress: Progress | None) -> files.AddResult:
    return files.add_stream(store, stream, progress=progress)


def _write_here(store: BlockStore, cid: CID, fd: int, progress: Progress | None) -> int:
    return files.write_file(store, cid, fd, progress=progress)


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


def import_path(
    store: BlockStore,
    path: str | os.PathLike[str],
    *,
    recursive: bool = False,
    progress: Progress | None = None,
    add: AddFile = _add_here,
) -> Imported:
    """Store the file or (with ``recursive``) the directory tree at ``path``."""
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
        entry = _import_dir(store, path, st, result, progress, add)
        assert entry.cid is not None
        result.cid, result.size = entry.cid, entry.size
        return result
    if not statmod.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{path} is not a regular file or directory")
    added = import_file(store, path, progress, add)
    return Imported(
        cid=added.cid, kind="file", size=added.size, mode=statmod.S_IMODE(st.st_mode), mtime=st.st_mtime_ns, files=1
    )


def _import_dir(
    store: BlockStore, path: Path, st: os.stat_result, result: Imported, progress: Progress | None,
    add: AddFile,
) -> DirEntry:
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
        mode, mtime = statmod.S_IMODE(child_st.st_mode), child_st.st_mtime_ns
        if statmod.S_ISDIR(child_st.st_mode):
            sub = _import_dir(store, child_path, child_st, result, progress, add)
            entries.append(sub)
        elif statmod.S_ISREG(child_st.st_mode):
            added = import_file(store, child_path, progress, add)
            result.files += 1
            entries.append(DirEntry(name, "file", added.size, mode, mtime, cid=added.cid))
        elif statmod.S_ISLNK(child_st.st_mode):
            target = os.readlink(child_path)
            entries.append(
                DirEntry(name, "symlink", len(target.encode()), mode, mtime, target=target)
            )
        else:
            result.skipped.append(f"{child_path} (not a file, directory or symlink)")
    built = dirtree.build(store, entries)
    return DirEntry(
        name=path.name or "root",
        kind="dir",
        size=built.size,
        mode=statmod.S_IMODE(st.st_mode),
        mtime=st.st_mtime_ns,
        cid=built.cid,
    )


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


# -- export ------------------------------------------------------------------


def export(
    store: BlockStore,
    cid: CID,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    write: WriteFile = _write_here,
) -> str:
    """Write the file or tree ``cid`` to ``out``; return its kind."""
    out = Path(out)
    if os.path.lexists(out) and not overwrite:
        raise InvalidInputError(f"{out} already exists; choose another output or use --force")
    if cid.codec == DAG_CBOR or (cid.codec == DAG_PB and unixfs.is_directory(store, cid)):
        if cid.codec == DAG_CBOR:
            dirtree.summary(store, cid)  # a directory, or a clear error, before creating anything
        if os.path.lexists(out):
            raise InvalidInputError(f"{out} already exists; cas get writes a new directory")
        _export_dir(store, entries(store, cid), out, progress, write)
        return "dir"
    _export_file(store, cid, out, progress, write)
    return "file"


@contextlib.contextmanager
def written_whole(dest: Path) -> Iterator[BinaryIO]:
    """A file to write ``dest`` through: a part file beside it, renamed
    into place once the block ends, removed if it fails (a disk error is a
    RepositoryError naming ``dest``). A reader never sees half a file."""
    part = dest.with_name(f".{dest.name}.cas-part")
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


def _write_file(store: BlockStore, cid: CID, dest: Path, progress: Progress | None, write: WriteFile) -> None:
    with written_whole(dest) as f:
        write(store, cid, f.fileno(), progress)  # a daemon's store writes into it itself


def _export_file(store: BlockStore, cid: CID, out: Path, progress: Progress | None, write: WriteFile) -> None:
    if cid.codec not in (RAW, DAG_PB):
        raise NotAFileError(f"{cid} is not a file")
    _write_file(store, cid, out, progress, write)


def _export_dir(
    store: BlockStore, listing: Iterable[DirEntry], out: Path, progress: Progress | None, write: WriteFile
) -> None:
    try:
        out.mkdir()
    except OSError as exc:
        raise RepositoryError(f"cannot create {out}: {exc.strerror}") from None
    for entry in listing:
        dest = out / entry.name
        try:
            if entry.kind == "dir":
                assert entry.cid is not None
                _export_dir(store, entries(store, entry.cid), dest, progress, write)
                # Metadata after the children: writing them changes the mtime,
                # and a read-only mode would stop them being written.
                os.chmod(dest, entry.mode)
                os.utime(dest, ns=(entry.mtime, entry.mtime))
            elif entry.kind == "file":
                assert entry.cid is not None
                _write_file(store, entry.cid, dest, progress, write)
                os.chmod(dest, entry.mode)
                os.utime(dest, ns=(entry.mtime, entry.mtime))
            else:
                assert entry.target is not None
                os.symlink(entry.target, dest)
                os.utime(dest, ns=(entry.mtime, entry.mtime), follow_symlinks=False)
        except OSError as exc:
            raise RepositoryError(f"cannot write {dest}: {exc.strerror or exc}") from None
