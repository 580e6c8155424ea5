"""The FUSE kernel protocol, sans-IO: what ``/dev/fuse`` carries, as bytes.

Owns the protocol's numbers (opcodes, INIT flags, setattr bits), the layout
of every request the mount answers and of every reply, the records the
handlers give and take (:class:`EntryAttributes`, :class:`FileInfo`,
:class:`StatvfsData`, :class:`SetattrFields`, :class:`RequestContext`), the
errno a handler raises (:class:`FUSEError`), the INIT negotiation, the
directory listing a READDIR(PLUS) reply is built into
(:class:`ReaddirToken`) and the notifications the mount sends the kernel.
Layouts are those of ``linux/fuse.h`` at protocol 7.38, the version this
module speaks (the kernel adapts to an older server's version).

Must never: read or write a file descriptor, know of trio or of cas's tree
(:mod:`.session` is the edge that does both), or let a request's bytes
decide more than its own reply (a malformed request is a :class:`FUSEError`).
"""

from __future__ import annotations

import errno as errno_codes
import struct
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import FUSEError as FUSEError  # re-exported: the handlers' errno, declared with cas's other errors

MAJOR = 7
MINOR = 38
"""The protocol version spoken (``linux/fuse.h``, ``FUSE_KERNEL_*_VERSION``)."""

MAX_WRITE = 1024 * 1024
"""The largest WRITE (and READ) the kernel is asked to send: 256 pages."""

MAX_PAGES = MAX_WRITE // 4096

BUFFER_SIZE = MAX_WRITE + 4096
"""What one request may fill: the largest write and its headers."""

ROOT_INODE = 1
"""The mount point's inode (FUSE_ROOT_ID)."""

# -- opcodes ---------------------------------------------------------------------------

LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = range(8, 19)
FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = range(20, 27)
OPENDIR, READDIR, RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE = range(27, 36)
INTERRUPT, BMAP, DESTROY, IOCTL, POLL, NOTIFY_REPLY, BATCH_FORGET = range(36, 43)
FALLOCATE, READDIRPLUS, RENAME2, LSEEK, COPY_FILE_RANGE = range(43, 48)

NO_REPLY = frozenset({FORGET, BATCH_FORGET, INTERRUPT})
"""Requests the kernel expects no answer to."""

# -- INIT flags (fuse_init_in/out.flags) ------------------------------------------------

ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
PARALLEL_DIROPS = 1 << 18
POSIX_ACL = 1 << 20
MAX_PAGES_FLAG = 1 << 22
HANDLE_KILLPRIV_V2 = 1 << 28

WANTED = ASYNC_READ | ATOMIC_O_TRUNC | BIG_WRITES | AUTO_INVAL_DATA | DO_READDIRPLUS | ASYNC_DIO \
    | PARALLEL_DIROPS | MAX_PAGES_FLAG
"""Always asked for when the kernel offers them: reads in parallel and
ahead, O_TRUNC handled at open, large writes, cached pages dropped when a
file's mtime or size changes, every listing with attributes (READDIRPLUS;
never the kernel's guess between the two), directory operations in
parallel.

HANDLE_KILLPRIV_V2, asked for when the file system says it clears setuid
and setgid itself where a write, a truncate or an ``O_TRUNC`` open by a
caller without CAP_FSETID, or a chown, must clear them: the request says
so (:data:`WRITE_KILL_SUIDGID`, :data:`FATTR_KILL_SUIDGID`,
:data:`OPEN_KILL_SUIDGID`). In return the kernel keeps a file's "no
privileges to drop" mark (S_NOSEC) between writes; without the flag it
asks for ``security.capability`` (GETXATTR) before every write(2), a round
trip that held a 1 MiB ``dd`` to two thirds of its speed. The kernel still
removes ``security.capability`` itself (REMOVEXATTR) when a file has one."""

# -- setattr (fuse_setattr_in.valid) ------------------------------------------------------

FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FATTR_ATIME, FATTR_MTIME, FATTR_FH, FATTR_ATIME_NOW, FATTR_MTIME_NOW = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
FATTR_CTIME = 1 << 10
FATTR_KILL_SUIDGID = 1 << 11

WRITE_KILL_SUIDGID = 1 << 2
"""fuse_write_in.write_flags: the writer lacks CAP_FSETID (HANDLE_KILLPRIV_V2)."""
OPEN_KILL_SUIDGID = 1 << 0
"""fuse_open_in.open_flags: an O_TRUNC open by a caller without CAP_FSETID."""

# -- open reply flags, rename flags, notifications ------------------------------------------

FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_NONSEEKABLE = 1 << 0, 1 << 1, 1 << 2
RENAME_NOREPLACE, RENAME_EXCHANGE = 1 << 0, 1 << 1
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY = 2, 3

# -- layouts ------------------------------------------------------------------------------

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
_ATTR = struct.Struct("<QQQqqqIIIIIIIIII")  # fuse_attr
_ENTRY = struct.Struct("<QQQQII")  # fuse_entry_out, before its fuse_attr
_ATTR_OUT = struct.Struct("<QII")  # fuse_attr_out, before its fuse_attr
_INIT_IN = struct.Struct("<IIII")
_INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
_OPEN_OUT = struct.Struct("<QII")
_WRITE_OUT = struct.Struct("<II")
_XATTR_OUT = struct.Struct("<II")
_STATFS_OUT = struct.Struct("<QQQQQIIII24x")
_DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type
_INVAL_INODE = struct.Struct("<Qqq")
_INVAL_ENTRY = struct.Struct("<QII")

_FORGET = struct.Struct("<Q")
_BATCH_FORGET = struct.Struct("<II")
_FORGET_ONE = struct.Struct("<QQ")
_GETATTR_IN = struct.Struct("<IIQ")
_SETATTR_IN = struct.Struct("<IIQQQqqqIIIIIIII")
_MKNOD_IN = struct.Struct("<IIII")
_MKDIR_IN = struct.Struct("<II")
_RENAME_IN = struct.Struct("<Q")
_RENAME2_IN = struct.Struct("<QII")
_LINK_IN = struct.Struct("<Q")
_OPEN_IN = struct.Struct("<II")
_RW_IN = struct.Struct("<QQI")  # fuse_read_in: fh, offset, size (the rest unused)
_WRITE_IN = struct.Struct("<QQII")  # fuse_write_in: fh, offset, size, write_flags
_WRITE_DATA = 40  # sizeof(fuse_write_in): the data follows
_RELEASE_IN = struct.Struct("<Q")
_FSYNC_IN = struct.Struct("<QI")
_SETXATTR_IN = struct.Struct("<II")
_GETXATTR_IN = struct.Struct("<I")
_CREATE_IN = struct.Struct("<IIII")
_FALLOCATE_IN = struct.Struct("<QQQI")  # fh, offset, length, mode

MKNOD_SIZE, MKDIR_SIZE, CREATE_SIZE = _MKNOD_IN.size, _MKDIR_IN.size, _CREATE_IN.size
SETXATTR_SIZE, GETXATTR_SIZE = _SETXATTR_IN.size, 8

_DT = {0o010000: 1, 0o020000: 2, 0o040000: 4, 0o060000: 6, 0o100000: 8, 0o120000: 10, 0o140000: 12}
"""File type bits -> a dirent's d_type (DT_FIFO ... DT_SOCK)."""


class RequestContext(NamedTuple):
    """Who made a request (``umask``: a create's, else 0)."""

    uid: int
    gid: int
    pid: int
    umask: int = 0


class EntryAttributes:
    """A name's inode and attributes, and how long the kernel may cache
    each (an inode of 0 in a lookup's answer: the name is not there)."""

    __slots__ = ("st_ino", "generation", "entry_timeout", "attr_timeout", "st_mode", "st_nlink", "st_uid",
                 "st_gid", "st_rdev", "st_size", "st_blksize", "st_blocks", "st_atime_ns", "st_mtime_ns",
                 "st_ctime_ns")

    def __init__(self) -> None:
        self.st_ino = self.generation = self.st_mode = self.st_nlink = self.st_uid = self.st_gid = 0
        self.st_rdev = self.st_size = self.st_blocks = 0
        self.st_atime_ns = self.st_mtime_ns = self.st_ctime_ns = 0
        self.st_blksize = 4096
        self.entry_timeout = self.attr_timeout = 0.0


class SetattrFields(NamedTuple):
    """Which of a SETATTR's attributes are to change."""

    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False
    kill_suidgid: bool = False
    """Clear setuid and setgid as a chown, or a truncate by a caller without
    CAP_FSETID, must (which setgid bits stay is the file system's rule),
    unless a mode is given."""


@dataclass
class FileInfo:
    """An open file's handle and how the kernel treats its pages
    (``keep_cache``: pages cached at an earlier open stay valid)."""

    fh: int
    direct_io: bool = False
    keep_cache: bool = True
    nonseekable: bool = False


@dataclass
class StatvfsData:
    f_bsize: int = 0
    f_frsize: int = 0
    f_blocks: int = 0
    f_bfree: int = 0
    f_bavail: int = 0
    f_files: int = 0
    f_ffree: int = 0
    f_favail: int = 0
    f_namemax: int = 255


class Header(NamedTuple):
    length: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


def parse_header(buf: bytes | bytearray | memoryview, size: int) -> Header:
    """The header of a request ``size`` bytes long at the start of ``buf``."""
    if size < IN_HEADER.size:
        raise FUSEError(errno_codes.EIO)
    length, opcode, unique, nodeid, uid, gid, pid, _, _ = IN_HEADER.unpack_from(buf)
    if length != size:
        raise FUSEError(errno_codes.EIO)
    return Header(length, opcode, unique, nodeid, uid, gid, pid)


# -- replies ------------------------------------------------------------------------------

def reply(unique: int, *payload: bytes | memoryview) -> list[bytes | memoryview]:
    """A successful reply: its header and ``payload``, for one writev."""
    return [OUT_HEADER.pack(OUT_HEADER.size + sum(len(p) for p in payload), 0, unique), *payload]


def error_reply(unique: int, errno: int) -> list[bytes | memoryview]:
    return [OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)]


def _split(timeout: float) -> tuple[int, int]:
    seconds = int(timeout)
    return seconds, int((timeout - seconds) * 1e9)


def attr_bytes(a: EntryAttributes) -> bytes:
    """``a`` as a ``fuse_attr``."""
    at_s, at_n = divmod(a.st_atime_ns, 1_000_000_000)
    mt_s, mt_n = divmod(a.st_mtime_ns, 1_000_000_000)
    ct_s, ct_n = divmod(a.st_ctime_ns, 1_000_000_000)
    return _ATTR.pack(a.st_ino, a.st_size, a.st_blocks, at_s, mt_s, ct_s, at_n, mt_n, ct_n, a.st_mode,
                      a.st_nlink, a.st_uid, a.st_gid, a.st_rdev & 0xFFFFFFFF, a.st_blksize, 0)


def entry_bytes(a: EntryAttributes) -> bytes:
    """``a`` as a ``fuse_entry_out`` (the answer to LOOKUP, MKDIR, CREATE...)."""
    entry_s, entry_n = _split(a.entry_timeout)
    attr_s, attr_n = _split(a.attr_timeout)
    return _ENTRY.pack(a.st_ino, a.generation, entry_s, attr_s, entry_n, attr_n) + attr_bytes(a)


def attr_out_bytes(a: EntryAttributes) -> bytes:
    """``a`` as a ``fuse_attr_out`` (the answer to GETATTR and SETATTR)."""
    attr_s, attr_n = _split(a.attr_timeout)
    return _ATTR_OUT.pack(attr_s, attr_n, 0) + attr_bytes(a)


def open_bytes(info: FileInfo) -> bytes:
    flags = ((FOPEN_DIRECT_IO if info.direct_io else 0) | (FOPEN_KEEP_CACHE if info.keep_cache else 0)
             | (FOPEN_NONSEEKABLE if info.nonseekable else 0))
    return _OPEN_OUT.pack(info.fh, flags, 0)


def dir_open_bytes(fh: int) -> bytes:
    return _OPEN_OUT.pack(fh, 0, 0)


def write_bytes(written: int) -> bytes:
    return _WRITE_OUT.pack(written, 0)


def statfs_bytes(s: StatvfsData) -> bytes:
    return _STATFS_OUT.pack(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_bsize,
                            s.f_namemax, s.f_frsize, 0)


def xattr_reply(unique: int, value: bytes, asked: int) -> list[bytes | memoryview]:
    """The answer to GETXATTR or LISTXATTR: ``value``'s size when the
    caller asked for the size (0), ERANGE when its buffer is too small."""
    if asked == 0:
        return reply(unique, _XATTR_OUT.pack(len(value), 0))
    if len(value) > asked:
        return error_reply(unique, errno_codes.ERANGE)
    return reply(unique, value)


class Init(NamedTuple):
    """What the mount answers the kernel's INIT with."""

    minor: int
    flags: int
    max_readahead: int


def negotiate(body: bytes | memoryview, *, writeback_cache: bool, posix_acl: bool,
              export_support: bool, killpriv: bool) -> tuple[Init, bytes]:
    """The answer to INIT: the flags of :data:`WANTED` (and the writeback
    cache, POSIX ACLs, lookups of "." and "..", HANDLE_KILLPRIV_V2, as
    asked) that the kernel offers, 1 MiB requests. Raises
    FUSEError(EPROTO) for a kernel of another major version or older than
    7.31 (Linux 5.4)."""
    major, minor, max_readahead, offered = _INIT_IN.unpack_from(body)
    if major != MAJOR or minor < 31:
        raise FUSEError(errno_codes.EPROTO)
    wanted = WANTED | (WRITEBACK_CACHE if writeback_cache else 0) | (POSIX_ACL if posix_acl else 0) \
        | (EXPORT_SUPPORT if export_support else 0) | (HANDLE_KILLPRIV_V2 if killpriv else 0)
    flags = offered & wanted
    agreed = Init(min(minor, MINOR), flags, max_readahead)
    out = _INIT_OUT.pack(MAJOR, agreed.minor, max_readahead, flags, 0, 0, MAX_WRITE, 1, MAX_PAGES, 0, 0)
    return agreed, out


# -- requests -----------------------------------------------------------------------------

def name(body: bytes | memoryview) -> bytes:
    """A request's one NUL-terminated name."""
    raw = bytes(body)
    end = raw.find(b"\0")
    if end < 0:
        raise FUSEError(errno_codes.EINVAL)
    return raw[:end]


def two_names(body: bytes | memoryview) -> tuple[bytes, bytes]:
    """A request's two NUL-terminated names (RENAME's, SYMLINK's)."""
    parts = bytes(body).split(b"\0")
    if len(parts) < 3:
        raise FUSEError(errno_codes.EINVAL)
    return parts[0], parts[1]


def forgets(opcode: int, nodeid: int, body: bytes | memoryview) -> list[tuple[int, int]]:
    """(inode, lookups to forget) of a FORGET or BATCH_FORGET."""
    if opcode == FORGET:
        return [(nodeid, _FORGET.unpack_from(body)[0])]
    count, _ = _BATCH_FORGET.unpack_from(body)
    return [_FORGET_ONE.unpack_from(body, _BATCH_FORGET.size + i * _FORGET_ONE.size) for i in range(count)]


def getattr_fh(body: bytes | memoryview) -> int | None:
    flags, _, fh = _GETATTR_IN.unpack_from(body)
    return fh if flags & 1 else None


def setattr_request(body: bytes | memoryview, now_ns: int) -> tuple[EntryAttributes, SetattrFields, int | None]:
    """A SETATTR's new attributes, which of them change, and its file
    handle; a time set to "now" is ``now_ns``."""
    (valid, _, fh, size, _, atime, mtime, ctime, atime_n, mtime_n, ctime_n, mode, _, uid, gid,
     _) = _SETATTR_IN.unpack_from(body)
    a = EntryAttributes()
    a.st_size, a.st_mode, a.st_uid, a.st_gid = size, mode, uid, gid
    a.st_atime_ns = now_ns if valid & FATTR_ATIME_NOW else atime * 1_000_000_000 + atime_n
    a.st_mtime_ns = now_ns if valid & FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtime_n
    a.st_ctime_ns = ctime * 1_000_000_000 + ctime_n
    fields = SetattrFields(
        update_atime=bool(valid & (FATTR_ATIME | FATTR_ATIME_NOW)),
        update_mtime=bool(valid & (FATTR_MTIME | FATTR_MTIME_NOW)),
        update_ctime=bool(valid & FATTR_CTIME),
        update_mode=bool(valid & FATTR_MODE),
        update_uid=bool(valid & FATTR_UID),
        update_gid=bool(valid & FATTR_GID),
        update_size=bool(valid & FATTR_SIZE),
        kill_suidgid=bool(valid & FATTR_KILL_SUIDGID),
    )
    return a, fields, (fh if valid & FATTR_FH else None)


def mknod_request(body: bytes | memoryview) -> tuple[int, int, int]:
    """(mode, rdev, umask) of a MKNOD (its name follows at MKNOD_SIZE)."""
    mode, rdev, umask, _ = _MKNOD_IN.unpack_from(body)
    return mode, rdev, umask


def mkdir_request(body: bytes | memoryview) -> tuple[int, int]:
    """(mode, umask) of a MKDIR (its name follows at MKDIR_SIZE)."""
    mode, umask = _MKDIR_IN.unpack_from(body)
    return mode, umask


def rename_request(opcode: int, body: bytes | memoryview) -> tuple[int, int, int]:
    """(new parent, flags, where the names start) of a RENAME or RENAME2."""
    if opcode == RENAME:
        return _RENAME_IN.unpack_from(body)[0], 0, _RENAME_IN.size
    new_parent, flags, _ = _RENAME2_IN.unpack_from(body)
    return new_parent, flags, _RENAME2_IN.size


def link_request(body: bytes | memoryview) -> int:
    """The inode a LINK names anew (its new name follows at 8)."""
    return int(_LINK_IN.unpack_from(body)[0])


def open_request(body: bytes | memoryview) -> tuple[int, bool]:
    """(flags, whether setuid and setgid are to be cleared) of an OPEN."""
    flags, open_flags = _OPEN_IN.unpack_from(body)
    return flags, bool(open_flags & OPEN_KILL_SUIDGID)


def rw_request(body: bytes | memoryview) -> tuple[int, int, int]:
    """(fh, offset, size) of a READ or READDIR(PLUS) (a WRITE's:
    :func:`write_request`)."""
    fh, offset, size = _RW_IN.unpack_from(body)
    return fh, offset, size


def write_request(body: bytes | memoryview) -> tuple[int, int, int, bool]:
    """(fh, offset, size, whether setuid and setgid are to be cleared) of a
    WRITE (its data follows at :data:`WRITE_DATA`)."""
    fh, offset, size, write_flags = _WRITE_IN.unpack_from(body)
    return fh, offset, size, bool(write_flags & WRITE_KILL_SUIDGID)


WRITE_DATA = _WRITE_DATA


def fh_of(body: bytes | memoryview) -> int:
    """The file handle of a RELEASE(DIR), FLUSH or OPEN-less request."""
    return int(_RELEASE_IN.unpack_from(body)[0])


def fsync_request(body: bytes | memoryview) -> tuple[int, bool]:
    """(fh, data only) of an FSYNC or FSYNCDIR."""
    fh, flags = _FSYNC_IN.unpack_from(body)
    return fh, bool(flags & 1)


def setxattr_request(body: bytes | memoryview) -> tuple[bytes, bytes]:
    """(name, value) of a SETXATTR."""
    size, _ = _SETXATTR_IN.unpack_from(body)
    rest = bytes(body[SETXATTR_SIZE:])
    end = rest.find(b"\0")
    if end < 0 or len(rest) < end + 1 + size:
        raise FUSEError(errno_codes.EINVAL)
    return rest[:end], rest[end + 1:end + 1 + size]


def getxattr_size(body: bytes | memoryview) -> int:
    """The buffer size a GETXATTR or LISTXATTR's caller has (0: asks the size)."""
    return int(_GETXATTR_IN.unpack_from(body)[0])


def create_request(body: bytes | memoryview) -> tuple[int, int, int]:
    """(flags, mode, umask) of a CREATE (its name follows at CREATE_SIZE)."""
    flags, mode, umask, _ = _CREATE_IN.unpack_from(body)
    return flags, mode, umask


def fallocate_request(body: bytes | memoryview) -> tuple[int, int, int, int]:
    """(fh, offset, length, mode) of a FALLOCATE."""
    fh, offset, length, mode = _FALLOCATE_IN.unpack_from(body)
    return fh, offset, length, mode


# -- directory listings -----------------------------------------------------------------------

class ReaddirToken:
    """A READDIR(PLUS) reply being filled: entries are added while they fit
    in the size the kernel asked for. ``plus``: each carries its attributes
    (and counts as a lookup of its inode); else the inodes added are in
    ``unlooked``, for the caller to forget."""

    def __init__(self, size: int, plus: bool) -> None:
        self.size = size
        self.plus = plus
        self.parts: list[bytes] = []
        self.used = 0
        self.unlooked: list[int] = []


def readdir_reply(token: ReaddirToken, name: bytes, attr: EntryAttributes, next_id: int) -> bool:
    """Add one entry (``next_id``: the offset a listing resumes from after
    it); False, with nothing added, when it does not fit."""
    padded = (len(name) + 7) & ~7
    dirent = _DIRENT.pack(attr.st_ino, next_id, len(name), _DT.get(attr.st_mode & 0o170000, 0)) \
        + name + b"\0" * (padded - len(name))
    part = entry_bytes(attr) + dirent if token.plus else dirent
    if token.used + len(part) > token.size:
        return False
    token.parts.append(part)
    token.used += len(part)
    if not token.plus and name not in (b".", b".."):
        token.unlooked.append(attr.st_ino)
    return True


# -- notifications ----------------------------------------------------------------------------

def inval_inode(ino: int) -> list[bytes]:
    """Tell the kernel to drop an inode's cached attributes and pages."""
    body = _INVAL_INODE.pack(ino, 0, 0)
    return [OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_INODE, 0), body]


def inval_entry(parent: int, name: bytes) -> list[bytes]:
    """Tell the kernel to drop a name it cached in ``parent`` (or its absence)."""
    body = _INVAL_ENTRY.pack(parent, len(name), 0) + name + b"\0"
    return [OUT_HEADER.pack(OUT_HEADER.size + len(body), NOTIFY_INVAL_ENTRY, 0), body]
