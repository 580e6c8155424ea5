"""The Python library: one object for everything a program does with cas.

``open_repository()`` gives a :class:`Repository` over the local repository
(the embedded default); every method is synchronous and safe to call from
ordinary code. :class:`cas.aio.AsyncRepository` is the trio-native form of the same
object, with the same methods as coroutines.

Example::

    import cas

    with cas.open_repository() as repo:
        cid = repo.add_bytes(b"hello")
        assert repo.read(cid) == b"hello"
        with repo.open(cid) as f:
            f.seek(1)
            assert f.read(2) == b"el"
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from . import files
from .blocks import (
    AddsFiles,
    Block,
    BlockSource,
    BlockStore,
    OpensSessions,
    ProtectsBlocks,
    ServedByDaemon,
    WritesFiles,
)
from .cid import BLAKE3, CID, DAG_CBOR, DAG_PB, RAW, parse_cid
from .errors import (
    BlockNotFoundError,
    InvalidInputError,
    NotAFileError,
    PathNotFoundError,
    RepositoryLockedError,
)
from .store import LOCK_NOTICE_AFTER, LocalStore, RepoStat, locked_error

if TYPE_CHECKING:
    from .carfile import CarExported, CarImported
    from .control import ControlClient
    from .names.directory import DirEntry, Meta
    from .names.history import ThinReport
    from .names.namespace import Namespace, Node, RootState
    from .names.remote import RemoteNamespace
    from .store import GcReport, VerifyReport

# The namespace (cas.names), directory trees (cas.trees) and platformdirs
# are imported where they are used: a `cas cat CID` needs none of them, and
# they are a third of its imports (bench/README.md, start-up).

Progress = Callable[[int], None]


def add_file_to(store: BlockStore, stream: BinaryIO, progress: Progress | None = None) -> files.AddResult:
    """Add ``stream`` to its end as a file. A regular file added to a store
    that :class:`~cas.blocks.AddsFiles` (a daemon's) is handed over whole
    (the same CID either way), and ``stream`` is left at its end; anything
    else is chunked here (:func:`cas.files.add_stream`)."""
    if isinstance(store, AddsFiles):
        place = _regular_file_position(stream)
        if place is not None:
            fd, offset = place
            result = store.add_file(fd, offset, progress)
            if result is not None:
                stream.seek(offset + result.size)
                return result
    return files.add_stream(store, stream, progress=progress)


def _regular_file_position(stream: BinaryIO) -> tuple[int, int] | None:
    """(descriptor, logical position) of a stream reading a regular file;
    None for anything else (a pipe, a socket, bytes in memory)."""
    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fd, stream.tell()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None


def write_file_from(
    store: BlockStore, cid: CID, fd: int, progress: Progress | None = None,
    offset: int = 0, length: int | None = None,
) -> int:
    """Write bytes [offset, offset + length) of file ``cid`` to ``fd``; return
    how many. A store that :class:`~cas.blocks.WritesFiles` (a daemon's)
    writes them itself, so they never cross its socket; otherwise they are
    read here (:func:`cas.files.write_file`)."""
    if isinstance(store, WritesFiles):
        written = store.write_file(cid, fd, offset, length, progress)
        if written is not None:
            return written
    return files.write_file(store, cid, fd, offset, length, progress=progress)


def default_repository_path() -> Path:
    """``$CAS_HOME`` if set, else the platform's per-user data directory."""
    env = os.environ.get("CAS_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cas", appauthor=False))


class Added(NamedTuple):
    """The result of adding one input."""

    cid: CID
    kind: str  # "file" or "dir"
    size: int
    source: str  # the path added, or "-" for a stream
    linked_at: str | None = None  # the namespace path, when added with ``to``


class NodeInfo(NamedTuple):
    """What a CID names: its kind, and its size in bytes of content."""

    cid: CID
    kind: str
    size: int


class Repository:
    """A repository: content by CID, and the namespace of paths over it.

    Every method that reads content takes a CID or a namespace path (text
    starting with ``/``), and ``at=SEQ`` reads a path as it was in an
    earlier root (``log()`` lists them). Adding without ``to`` pins what was
    added; adding with ``to`` links it into the namespace instead, which
    keeps it as long as a kept root refers to it.
    """

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self.blocks = store.blocks

    @cached_property
    def namespace(self) -> Namespace:
        """The namespace of paths (made on first use)."""
        from .names.namespace import Namespace

        return Namespace(self._store)

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def through_daemon(self) -> bool:
        """Whether a daemon owns the repository and this object reaches it
        through the daemon's control socket."""
        return not isinstance(self._store, LocalStore)

    @property
    def daemon(self) -> ControlClient | None:
        """The control-socket client of the daemon that owns the repository,
        if this object reaches it through one."""
        return self._store.client if isinstance(self._store, ServedByDaemon) else None

    def close(self) -> None:
        """Release the repository (and its lock)."""
        self._store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adding ---------------------------------------------------------------

    def add_bytes(self, data: bytes, *, pin: bool = True, to: str | None = None) -> CID:
        """Store ``data`` as a file; return its CID."""
        return self.add_stream(io.BytesIO(data), pin=pin, to=to).cid

    def add_stream(
        self,
        stream: BinaryIO,
        *,
        pin: bool = True,
        to: str | None = None,
        progress: Progress | None = None,
    ) -> Added:
        """Store everything read from ``stream`` (in bounded memory); with
        ``to``, link it at that namespace path."""
        if to is not None and (to.endswith("/") or self._is_dir(to)):
            raise InvalidInputError(f"{to} is a directory; give the new file's full path")
        with self._session() as session:
            result = add_file_to(session, stream, progress)
            target = self._finish_add(result.cid, "file", result.size, pin, to, "", 0o644, time.time_ns())
        return Added(result.cid, "file", result.size, "-", target)

    def add_path(
        self,
        path: str | os.PathLike[str],
        *,
        recursive: bool = False,
        pin: bool = True,
        to: str | None = None,
        progress: Progress | None = None,
        xattrs: bool = True,
    ) -> Added:
        """Store a file, or with ``recursive`` a directory tree; with ``to``,
        link it into the namespace (into ``to`` if that is a directory or
        ends with ``/``, else at ``to`` itself), creating missing parents.
        Modes, mtimes, owners, extended attributes (unless ``xattrs`` is
        false), hard links and special files are kept (:mod:`cas.trees`)."""
        from . import trees

        with self._session() as session:
            imported = trees.import_path(
                session, path, recursive=recursive, progress=progress, add=add_file_to, xattrs=xattrs)
            target = self._finish_add(
                imported.cid, imported.kind, imported.size, pin, to, Path(path).name, imported.mode, imported.mtime,
                imported.meta,
            )
        return Added(imported.cid, imported.kind, imported.size, os.fspath(path), target)

    def _session(self) -> contextlib.AbstractContextManager[Any]:
        """A write session of the store's (gc keeps what it puts until it
        ends), or the store itself for one without sessions."""
        if isinstance(self._store.blocks, OpensSessions):
            return self._store.blocks.open_session()
        return contextlib.nullcontext(self.blocks)

    def _is_dir(self, path: str) -> bool:
        try:
            return self.namespace.resolve(path).kind == "dir"
        except PathNotFoundError:
            return False

    def _finish_add(
        self, cid: CID, kind: str, size: int, pin: bool, to: str | None, name: str, mode: int, mtime: int,
        meta: Meta | None = None,
    ) -> str | None:
        """Pin what was added, or link it at ``to``; return the path linked."""
        if to is None:
            if pin:
                self._store.pin(cid)  # includes the barrier
            else:
                self.blocks.barrier()
            return None
        target = to
        if to.endswith("/") or self._is_dir(to):
            if not name:
                raise InvalidInputError(f"{to} is a directory; give the new file's full path")
            target = to.rstrip("/") + "/" + name
        from .names.directory import NO_META
        from .names.namespace import Node

        node = Node(target, name, kind, size, mode, mtime, cid, meta=meta or NO_META)
        self.namespace.link(target, node, parents=True)
        return target

    # -- reading --------------------------------------------------------------

    def namespace_for(self, path: str) -> tuple[Namespace, str]:
        """The namespace a path is in, and the path within it: the local
        one, or for ``/ns/<public key hex>/rest`` that key's published
        namespace as of the newest record found (through the node, which
        looks it up on the network; offline, the record this repository
        holds, if any)."""
        from .names.remote import split_ns_path

        split = split_ns_path(path)
        if split is None:
            return self.namespace, path
        public_key, inner = split
        return self.remote_namespace(public_key), inner

    def remote_namespace(self, public_key: bytes) -> RemoteNamespace:
        """The published namespace of ``public_key``, resolved now."""
        from .control.schema import NameResolve
        from .names.record import record_key
        from .names.remote import RemoteNamespace

        records: list[bytes] = []
        client = self.daemon
        if client is not None:
            found = client.call(NameResolve(public_key))["found"]
            if found is not None:
                records.append(found["record"])
        else:
            held = self._store.records.get(record_key(public_key))
            if held is not None:
                records.append(held)
            if self._store.namespace_key().public_key == public_key:
                records += [row.record for row in self._store.roots(newest_first=True, limit=1)]
        return RemoteNamespace(self.blocks, public_key, records)

    def resolve(self, ref: CID | str, at: int | None = None) -> CID:
        """The CID that ``ref`` names: a CID as it is, or what a namespace
        path (``/…``, or ``/ns/KEY/…`` in a published one) points at."""
        if isinstance(ref, str) and ref.startswith("/"):
            namespace, path = self.namespace_for(ref)
            node = namespace.resolve(path, at)
            if node.cid is None:
                raise _no_content(ref, node.kind, node.target)
            return node.cid
        if at is not None:
            raise InvalidInputError("--at applies to namespace paths, not to CIDs")
        if isinstance(ref, str) and "/" in ref.strip("/"):
            return self._resolve_below(ref)
        return parse_cid(ref.rstrip("/") if isinstance(ref, str) else ref)

    def _resolve_below(self, ref: str) -> CID:
        """``CID/name/...``: a path inside a directory named by CID (a cas
        directory or an IPFS UnixFS one), as IPFS tools take them."""
        from . import trees

        first, *names = [part for part in ref.split("/") if part]
        cid = parse_cid(first)
        walked = first
        for name in names:
            entry = trees.lookup(self.blocks, cid, name)
            if entry is None:
                raise PathNotFoundError(f"{walked} has no entry {name!r}")
            walked += "/" + name
            if entry.cid is None:
                raise _no_content(walked, entry.kind, entry.target)
            cid = entry.cid
        return cid

    def open(self, ref: CID | str, *, at: int | None = None) -> files.FileReader:
        """A seekable, read-only binary file object over a file."""
        return files.open_file(self.blocks, self.resolve(ref, at))

    def read(self, ref: CID | str, offset: int = 0, length: int | None = None, *, at: int | None = None) -> bytes:
        """The bytes of a file (all, or ``length`` from ``offset``)."""
        cid = self.resolve(ref, at)
        _check_range(offset, length)
        # One walk from the root (a length of None reads to the end).
        return b"".join(files.iter_file(self.blocks, cid, offset, length))

    def iter_read(
        self, ref: CID | str, offset: int = 0, length: int | None = None, *, at: int | None = None
    ) -> Iterator[bytes]:
        """Stream a file in pieces, in bounded memory."""
        _check_range(offset, length)
        return files.iter_file(self.blocks, self.resolve(ref, at), offset, length)

    def write_to(
        self, ref: CID | str, fd: int, offset: int = 0, length: int | None = None, *, at: int | None = None
    ) -> int:
        """Write a file's bytes (all, or ``length`` from ``offset``) to the
        open descriptor ``fd``; return how many. With a daemon, the daemon
        writes them itself and they never cross its socket. A failed write
        raises its OSError (BrokenPipeError when a pipe's reader has gone)."""
        _check_range(offset, length)
        return write_file_from(self.blocks, self.resolve(ref, at), fd, None, offset, length)

    def info(self, ref: CID | str, *, at: int | None = None) -> NodeInfo:
        """Kind and size of what ``ref`` names."""
        cid = self.resolve(ref, at)
        if cid.codec == DAG_CBOR:
            from .names import dirtree

            return NodeInfo(cid, "dir", dirtree.summary(self.blocks, cid).size)
        if cid.codec == DAG_PB:
            from . import unixfs

            if unixfs.is_directory(self.blocks, cid):  # made by IPFS
                return NodeInfo(cid, "dir", unixfs.size(self.blocks, cid))
        return NodeInfo(cid, "file", files.file_size(self.blocks, cid))

    def list_dir(self, ref: CID | str, *, at: int | None = None) -> Iterator[DirEntry]:
        """The entries of a directory (a cas one, or a UnixFS one made by
        IPFS), sorted by name, streamed."""
        from . import trees

        return trees.entries(self.blocks, self.resolve(ref, at))

    def get(
        self,
        ref: CID | str | Node,
        out: str | os.PathLike[str],
        *,
        at: int | None = None,
        overwrite: bool = False,
        progress: Progress | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> str:
        """Write a file or tree to the local path ``out``; return its kind.
        Modes, times, hard links, special files and extended attributes are
        restored, owners when running as root (:mod:`cas.trees`); what the
        target refuses is skipped and said through ``warn``. Given a
        namespace path, or the node :meth:`stat` gave, its own metadata goes
        on ``out`` too."""
        from . import trees

        if isinstance(ref, str) and ref.startswith("/"):
            ref = self.stat(ref, at=at)
        if isinstance(ref, (CID, str)):
            cid, top = self.resolve(ref, at), None
        else:
            if ref.cid is None:
                raise _no_content(ref.path, ref.kind, ref.target)
            cid, top = ref.cid, ref.to_entry(ref.name or "top")
        return trees.export(self.blocks, cid, out, overwrite=overwrite, progress=progress, write=write_file_from,
                            top=top, warn=warn)

    # -- the namespace ----------------------------------------------------------

    def ls(self, path: str = "/", *, at: int | None = None) -> Iterator[DirEntry]:
        """The entries of namespace directory ``path``, sorted, streamed."""
        namespace, inner = self.namespace_for(path)
        return namespace.list(inner, at)

    def stat(self, path: str, *, at: int | None = None) -> Node:
        """What namespace ``path`` names (kind, size, mode, mtime, CID)."""
        namespace, inner = self.namespace_for(path)
        node = namespace.resolve(inner, at)
        if namespace is self.namespace:
            return node
        from dataclasses import replace  # a namespace record; the module loads with it

        return replace(node, path=path)

    def mkdir(self, path: str, *, parents: bool = False) -> RootState:
        return self.namespace.mkdir(path, parents=parents)

    def mv(self, src: str, dst: str) -> RootState:
        """Rename as ``mv`` does; moves no data."""
        return self.namespace.move(src, dst)

    def cp(self, src: CID | str, dst: str) -> RootState:
        """Make ``dst`` name the same content as ``src`` (a CID, CID/path or
        a path): a link, no data copied. A UnixFS directory made by IPFS is
        linked as the cas directory of the same entries (its subdirectories
        likewise), over the very same file DAGs. As ``cp -a`` makes new
        inodes, hard links in a copied tree become groups of the copy's own
        (the directories holding them are stored anew), and a copied
        hard-linked file is a file of one name."""
        with self._session() as session:
            if isinstance(src, str) and src.startswith("/"):
                node = self.namespace.resolve(src)
            else:
                cid = self.resolve(src)
                if not self.blocks.has(cid):
                    raise BlockNotFoundError(cid)
                if cid.codec == DAG_PB:
                    from . import trees, unixfs

                    if unixfs.is_directory(self.blocks, cid):
                        # A directory made by IPFS: the namespace holds cas
                        # directories, so it is adopted as one, over the
                        # same file DAGs.
                        cid = trees.adopt_unixfs(session, cid).cid
                node = self.namespace.node_for_cid(cid, self.info(cid).size)
            target = dst
            if dst.endswith("/") or self._is_dir(dst):
                name = node.name or (str(node.cid) if node.cid else "")
                target = dst.rstrip("/") + "/" + name
            from dataclasses import replace

            if node.meta.ino is not None:  # a copy is a new inode, with one name
                node = replace(node, meta=replace(node.meta, ino=None, nlink=1))
            elif node.cid is not None and node.cid.codec == DAG_CBOR:
                from . import trees

                # As cp -a makes new inodes: the copy's hard links are groups
                # of its own, never sharing one with the original's names.
                node = replace(node, cid=trees.new_link_groups(session, node.cid))
            if node.cid is not None and isinstance(session, ProtectsBlocks):
                session.protect(node.cid)
            return self.namespace.link(target, node)

    def rm(self, path: str, *, recursive: bool = False) -> RootState:
        return self.namespace.remove(path, recursive=recursive)

    def root(self) -> RootState:
        """The current namespace root: sequence number, CID, key."""
        return self.namespace.current()

    def log(self, limit: int | None = None, *, before: int | None = None) -> Iterator[RootState]:
        """The kept namespace roots, newest first, streamed: at most
        ``limit`` (only those are read), those numbered below ``before``."""
        return self.namespace.log(limit, before=before)

    # -- blocks ---------------------------------------------------------------

    def put_block(self, data: bytes, codec: int = RAW, *, hash_code: int = BLAKE3) -> CID:
        """Store one block (≤ 1 MiB) as it is; return its CID, hashed with
        BLAKE3 or, given ``hash_code=cas.cid.SHA2_256``, as IPFS tools hash.
        Not pinned."""
        block = Block.of(codec, data, hash_code)
        self.blocks.put(block)
        self.blocks.barrier()
        return block.cid

    def get_block(self, cid: CID | str) -> bytes:
        """The verified bytes of one block."""
        return self.blocks.get(parse_cid(cid))

    def has_block(self, cid: CID | str) -> bool:
        return self.blocks.has(parse_cid(cid))

    # -- CAR files (IPFS's archives) --------------------------------------------

    def export_car(
        self, ref: CID | str, out: str | os.PathLike[str] | BinaryIO, *, at: int | None = None,
        native: bool = False,
    ) -> CarExported:
        """Write a CARv1 of the whole DAG under ``ref`` (a CID, ``CID/path``
        or a namespace path) to ``out``: a path (written whole or not at
        all) or a binary file object. Streamed, in bounded memory. A cas
        directory is exported as its UnixFS view (:mod:`cas.unixfs_view`:
        what IPFS tools list; the CAR's root is the view's CID), or with
        ``native`` as its own DAG-CBOR tree (for another cas)."""
        from . import carfile, trees

        cid = self.resolve(ref, at)
        source: BlockSource = self.blocks
        if not native:
            from .unixfs_view import view_of

            cid, source = view_of(self.blocks, cid)
        if not isinstance(out, (str, os.PathLike)):
            return carfile.export_car(source, [cid], out.write)
        with trees.written_whole(Path(out)) as f:
            return carfile.export_car(source, [cid], f.write)

    def import_car(self, source: str | os.PathLike[str] | BinaryIO, *, pin: bool = True) -> CarImported:
        """Store the blocks of a CARv1 or CARv2 (a path or a binary file
        object) and, with ``pin``, pin its roots. Every block is verified
        with its own hash and the roots' DAGs must be whole (in the CAR or
        already here) before anything is stored: a bad, truncated or
        incomplete CAR raises and stores nothing."""
        import shutil
        import tempfile

        from . import carfile

        with contextlib.ExitStack() as stack:
            if isinstance(source, (str, os.PathLike)):
                try:
                    stream: BinaryIO = stack.enter_context(open(source, "rb"))
                except OSError as exc:
                    raise InvalidInputError(f"cannot read {os.fspath(source)}: {exc.strerror or exc}") from None
            elif source.seekable():
                stream = source
            else:  # a pipe: kept in a temporary file for the second pass
                stream = stack.enter_context(tempfile.TemporaryFile())
                shutil.copyfileobj(source, stream, carfile.READ_SIZE)
                stream.seek(0)
            start = stream.tell()
            check = carfile.check_car(self.blocks.has, stream)
            stream.seek(start)
            with self._session() as session:
                done = carfile.store_car(session, stream, check)
                if pin:
                    for root in done.roots:
                        self._store.pin(root)
        return done

    # -- storage management ---------------------------------------------------

    def pin(self, cid: CID | str) -> bool:
        return self._store.pin(self.resolve(cid))

    def unpin(self, cid: CID | str) -> bool:
        return self._store.unpin(self.resolve(cid))

    def pins(self) -> list[CID]:
        return self._store.pins()

    def gc(self, *, history: int | None = None, on_wait: Callable[[str], None] | None = None) -> GcReport:
        """Delete what no pin and no kept root reaches; report what was freed.
        Offline, commands reading beside the owner are waited for first
        (``on_wait`` is told if that takes more than a second)."""
        if self.through_daemon:
            return self._store.gc(history=history, on_wait=on_wait)  # the daemon thins first itself
        thinned = self.prune()
        report = self._store.gc(history=history, on_wait=on_wait)
        report.roots_dropped += thinned.dropped
        return report

    def prune(self, *, dry_run: bool = False) -> ThinReport:
        """Drop the namespace versions the history policy no longer keeps
        (``history.keep`` in the repository's settings; cas.names.history):
        never the newest, nor one whose root is pinned. With ``dry_run``,
        only say what would go. ``gc`` does this first."""
        if isinstance(self._store, LocalStore):
            from .names.history import policy_from_config, thin

            policy = policy_from_config(LocalStore.check_config(self._store.path))
            return thin(self._store, policy, time.time_ns(), dry_run=dry_run)
        return self._store.prune(dry_run=dry_run)

    def repo_stat(self) -> RepoStat:
        """Blocks, bytes and pins in the repository."""
        return self._store.stat()

    def verify(self, progress: Progress | None = None, *, repair: bool = False) -> VerifyReport:
        """Re-hash every block and check every reference. With ``repair``,
        blocks that fail are quarantined and, through a daemon, good copies
        of what is damaged or missing are fetched from the network."""
        return self._store.verify(progress, repair=repair)


def _no_content(ref: str, kind: str, target: str | None) -> NotAFileError:
    """The error for reading the content of what has none."""
    if kind == "symlink":
        return NotAFileError(f"{ref} is a symlink to {target!r}")
    return NotAFileError(f"{ref} is a {kind}: it has no content (cas get of its directory makes it)")


def _check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidInputError(f"offset must be 0 or more, not {offset}")
    if length is not None and length < 0:
        raise InvalidInputError(f"length must be 0 or more, not {length}")


def open_repository(
    path: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    wait: float = 0.0,
    on_wait: Callable[[str], None] | None = None,
    read_only: bool = False,
) -> Repository:
    """Open the repository at ``path`` (default: :func:`default_repository_path`),
    creating it if needed (unless ``create`` is false).

    With ``read_only``, a program that only reads opens it beside another
    process that owns it offline, without waiting for it (see
    :meth:`cas.store.LocalStore.open`); a change through it fails.

    If a daemon owns the repository (it answers on ``<repo>/control.sock``),
    the repository is reached through it; a socket file nobody answers on is
    left by a daemon that died, and is ignored.

    If another process owns it offline (a ``cas`` command, a mount), wait
    up to ``wait`` seconds for it to finish, then raise
    :class:`RepositoryLockedError` naming it; after a second of waiting
    ``on_wait`` is called once with a phrase naming the owner ("in use by
    process 123 (cas add big.iso)"). A daemon that starts meanwhile is
    noticed within ``DAEMON_RECHECK`` seconds, and then the repository is
    reached through it. The default ``wait`` of 0 fails at once, as a
    library call that may block for seconds should be asked for (the
    ``cas`` command waits 5 s unless told otherwise: ``--wait``).
    """
    path = path if path is not None else default_repository_path()
    socket_file = os.path.join(os.path.expanduser(path), CONTROL_SOCKET)
    start = time.monotonic()
    deadline = start + max(wait, 0.0)
    notice = start + LOCK_NOTICE_AFTER if on_wait is not None else math.inf
    while True:
        if os.path.exists(socket_file):
            from .control import RemoteStore  # only then: the common offline path stays light

            remote = RemoteStore.connect(path)
            if remote is not None:
                return Repository(remote)  # type: ignore[arg-type]  # the daemon's store speaks the same protocol over its socket
        slice_ = min(DAEMON_RECHECK, deadline - time.monotonic())
        try:
            return Repository(LocalStore.open(path, create=create, wait=max(slice_, 0.0), read_only=read_only))
        except RepositoryLockedError as exc:
            now = time.monotonic()
            holder = exc.holder or "another process"
            if now >= deadline:
                if wait <= 0:
                    raise
                raise locked_error(Path(path).expanduser().absolute(), holder, wait) from None
            if now >= notice:
                notice = math.inf
                assert on_wait is not None
                on_wait(f"in use by {holder}")


DAEMON_RECHECK = 1.0
"""Seconds between looks for a daemon's control socket while waiting for
the repository offline: a daemon that starts meanwhile takes the lock
before it opens its socket, and commands waiting then go through it. Each
look takes the waiter out of the kernel's queue for the lock and puts it
at the back, so looks are not frequent: with 16 writers at once, looking
every 0.25 s made the slowest commands slower than looking every second
(docs/architecture.md, "Decisions taken by measurement")."""


CONTROL_SOCKET = "control.sock"
"""``cas.control.SOCKET_NAME``, known here without importing the control
client (~4 ms of a short command's start-up) when no daemon has a socket."""
