"""cas.fuse.wire: the FUSE protocol's bytes, checked against linux/fuse.h's layouts."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from cas.fuse import wire
from cas.fuse.wire import EntryAttributes, FileInfo, FUSEError, ReaddirToken, StatvfsData


def _attrs(ino: int = 5, mode: int = 0o100644, name_timeout: float = 1.5) -> EntryAttributes:
    a = EntryAttributes()
    a.st_ino, a.st_mode, a.st_nlink, a.st_uid, a.st_gid = ino, mode, 1, 1000, 100
    a.st_size, a.st_blocks, a.st_blksize, a.st_rdev = 12345, 25, 131072, 0
    a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = 1_700_000_000_123_456_789, 5, -1_500_000_000
    a.entry_timeout, a.attr_timeout = name_timeout, 0.25
    return a


def _request(opcode: int, body: bytes, *, unique: int = 9, nodeid: int = 1) -> bytes:
    return wire.IN_HEADER.pack(wire.IN_HEADER.size + len(body), opcode, unique, nodeid, 1000, 100, 4242, 0, 0) + body


def test_a_request_header_is_parsed_and_a_short_or_misstated_one_refused() -> None:
    raw = _request(wire.LOOKUP, b"name\0", unique=77, nodeid=3)
    h = wire.parse_header(raw, len(raw))
    assert (h.opcode, h.unique, h.nodeid, h.uid, h.gid, h.pid) == (wire.LOOKUP, 77, 3, 1000, 100, 4242)
    with pytest.raises(FUSEError):
        wire.parse_header(raw, len(raw) - 1)  # the header says more than was read
    with pytest.raises(FUSEError):
        wire.parse_header(raw[:20], 20)


def test_an_entry_reply_lays_out_fuse_entry_out_and_fuse_attr() -> None:
    out = wire.entry_bytes(_attrs())
    assert len(out) == 128  # sizeof(struct fuse_entry_out) at 7.38
    nodeid, generation, entry_s, attr_s, entry_ns, attr_ns = struct.unpack_from("<QQQQII", out)
    assert (nodeid, generation, entry_s, entry_ns, attr_s, attr_ns) == (5, 0, 1, 500_000_000, 0, 250_000_000)
    (ino, size, blocks, atime, mtime, ctime, atime_ns, mtime_ns, ctime_ns, mode, nlink, uid, gid, rdev,
     blksize, _) = struct.unpack_from("<QQQqqqIIIIIIIIII", out, 40)
    assert (ino, size, blocks, mode, nlink, uid, gid, rdev, blksize) == (5, 12345, 25, 0o100644, 1, 1000, 100, 0,
                                                                          131072)
    assert (atime, atime_ns) == (1_700_000_000, 123_456_789)
    assert (mtime, mtime_ns) == (0, 5)
    assert (ctime, ctime_ns) == (-2, 500_000_000)  # before 1970: seconds down, nanoseconds up


def test_getattr_and_write_and_open_replies() -> None:
    assert len(wire.attr_out_bytes(_attrs())) == 104
    assert wire.write_bytes(4096) == struct.pack("<II", 4096, 0)
    assert struct.unpack("<QII", wire.open_bytes(FileInfo(fh=7))) == (7, wire.FOPEN_KEEP_CACHE, 0)
    assert struct.unpack("<QII", wire.open_bytes(FileInfo(fh=7, direct_io=True, keep_cache=False))) == (
        7, wire.FOPEN_DIRECT_IO, 0)
    statfs = wire.statfs_bytes(StatvfsData(f_bsize=4096, f_frsize=4096, f_blocks=10, f_bfree=4, f_bavail=3,
                                           f_files=9, f_ffree=8, f_namemax=255))
    assert len(statfs) == 80
    assert struct.unpack_from("<QQQQQIII", statfs) == (10, 4, 3, 9, 8, 4096, 255, 4096)


def test_a_reply_header_counts_every_part_and_an_error_is_negative() -> None:
    parts = wire.reply(12, b"abc", memoryview(b"defg"))
    assert struct.unpack("<IiQ", parts[0]) == (16 + 7, 0, 12)
    assert struct.unpack("<IiQ", wire.error_reply(12, errno.ENOENT)[0]) == (16, -errno.ENOENT, 12)


def test_xattr_replies_give_the_size_when_asked_and_erange_when_it_does_not_fit() -> None:
    size_only = wire.xattr_reply(3, b"value", 0)
    assert struct.unpack("<II", size_only[1]) == (5, 0)
    assert wire.xattr_reply(3, b"value", 5)[1] == b"value"
    assert struct.unpack("<IiQ", wire.xattr_reply(3, b"value", 4)[0])[1] == -errno.ERANGE


def test_init_takes_only_what_the_kernel_offers_and_refuses_another_major() -> None:
    offered = wire.ASYNC_READ | wire.WRITEBACK_CACHE | wire.POSIX_ACL | wire.MAX_PAGES_FLAG | (1 << 1)
    body = struct.pack("<IIII", 7, 45, 131072, offered) + bytes(48)
    agreed, out = wire.negotiate(body, writeback_cache=True, posix_acl=False, export_support=True, killpriv=True)
    assert agreed.minor == wire.MINOR  # the older of the two
    assert agreed.flags == wire.ASYNC_READ | wire.WRITEBACK_CACHE | wire.MAX_PAGES_FLAG  # not locks, not ACLs
    # (nor HANDLE_KILLPRIV_V2, asked for but not offered)
    major, minor, readahead, flags, _, _, max_write, time_gran, max_pages = struct.unpack_from("<IIIIHHIIH", out)
    assert (major, minor, readahead, flags) == (7, wire.MINOR, 131072, agreed.flags)
    assert (max_write, time_gran, max_pages) == (1 << 20, 1, 256)
    assert len(out) == 64
    older, _ = wire.negotiate(struct.pack("<IIII", 7, 31, 0, 0) + bytes(48), writeback_cache=False,
                              posix_acl=False, export_support=False, killpriv=False)
    assert older.minor == 31
    with pytest.raises(FUSEError) as refused:
        wire.negotiate(struct.pack("<IIII", 8, 0, 0, 0) + bytes(48), writeback_cache=False, posix_acl=False,
                       export_support=False, killpriv=False)
    assert refused.value.errno == errno.EPROTO


def test_killpriv_is_asked_for_only_by_a_file_system_that_clears_setid_bits() -> None:
    body = struct.pack("<IIII", 7, 38, 0, wire.HANDLE_KILLPRIV_V2 | wire.ASYNC_READ) + bytes(48)
    clears, _ = wire.negotiate(body, writeback_cache=False, posix_acl=False, export_support=False, killpriv=True)
    assert clears.flags == wire.HANDLE_KILLPRIV_V2 | wire.ASYNC_READ
    leaves, _ = wire.negotiate(body, writeback_cache=False, posix_acl=False, export_support=False, killpriv=False)
    assert leaves.flags == wire.ASYNC_READ


def test_requests_say_when_setuid_and_setgid_are_to_be_cleared() -> None:
    write_in = struct.pack("<QQIIQII", 7, 4096, 3, wire.WRITE_KILL_SUIDGID | 1, 0, 0, 0)
    assert wire.write_request(write_in) == (7, 4096, 3, True)
    assert wire.write_request(struct.pack("<QQIIQII", 7, 0, 3, 1, 0, 0, 0))[3] is False  # a cached page's write
    assert wire.open_request(struct.pack("<II", os.O_WRONLY | os.O_TRUNC, wire.OPEN_KILL_SUIDGID)) == (
        os.O_WRONLY | os.O_TRUNC, True)
    assert wire.open_request(struct.pack("<II", os.O_RDONLY, 0)) == (os.O_RDONLY, False)
    setattr_in = bytearray(88)  # sizeof(fuse_setattr_in)
    struct.pack_into("<I", setattr_in, 0, wire.FATTR_UID | wire.FATTR_KILL_SUIDGID)
    _, fields, _ = wire.setattr_request(setattr_in, 0)
    assert fields.update_uid and fields.kill_suidgid and not fields.update_mode


def test_names_are_nul_terminated_and_one_without_its_nul_is_refused() -> None:
    assert wire.name(b"file.txt\0") == b"file.txt"
    assert wire.two_names(b"old\0new\0") == (b"old", b"new")
    with pytest.raises(FUSEError):
        wire.name(b"no-end")
    with pytest.raises(FUSEError):
        wire.two_names(b"only\0")


def test_setattr_says_which_fields_change_and_now_is_the_clock() -> None:
    body = struct.pack("<IIQQQqqqIIIIIIII", wire.FATTR_MODE | wire.FATTR_SIZE | wire.FATTR_ATIME_NOW
                       | wire.FATTR_MTIME | wire.FATTR_FH, 0, 77, 4096, 0, 1, 2, 3, 10, 20, 30, 0o100600, 0, 5, 6, 0)
    attr, fields, fh = wire.setattr_request(body, now_ns=999)
    assert fields.update_mode and fields.update_size and fields.update_atime and fields.update_mtime
    assert not (fields.update_uid or fields.update_gid or fields.update_ctime)
    assert (attr.st_mode, attr.st_size, attr.st_atime_ns, attr.st_mtime_ns, fh) == (0o100600, 4096, 999,
                                                                                    2_000_000_020, 77)


def test_fallocate_request() -> None:
    body = struct.pack("<QQQII", 7, 4096, 1 << 20, 0x03, 0)
    assert wire.fallocate_request(body) == (7, 4096, 1 << 20, 0x03)


def test_forgets_single_and_batched() -> None:
    assert wire.forgets(wire.FORGET, 12, struct.pack("<Q", 3)) == [(12, 3)]
    batch = struct.pack("<II", 2, 0) + struct.pack("<QQ", 5, 1) + struct.pack("<QQ", 6, 2)
    assert wire.forgets(wire.BATCH_FORGET, 0, batch) == [(5, 1), (6, 2)]


def test_a_listing_fills_up_to_the_size_asked_and_aligns_each_entry() -> None:
    plus = ReaddirToken(size=2 * (128 + 24 + 8), plus=True)
    assert wire.readdir_reply(plus, b"a", _attrs(ino=10), 1)
    assert wire.readdir_reply(plus, b"bcdefgh", _attrs(ino=11, mode=0o040755), 2)
    assert not wire.readdir_reply(plus, b"c", _attrs(ino=12), 3)  # full: nothing added
    assert len(plus.parts) == 2 and plus.used == plus.size
    ino, off, namelen, kind = struct.unpack_from("<QQII", plus.parts[1], 128)
    assert (ino, off, namelen, kind) == (11, 2, 7, 4)  # DT_DIR
    assert plus.parts[1][128 + 24:] == b"bcdefgh\0"
    assert plus.unlooked == []  # a READDIRPLUS entry is a lookup the kernel counts
    plain = ReaddirToken(size=4096, plus=False)
    for i, entry in enumerate((b".", b"..", b"x")):
        assert wire.readdir_reply(plain, entry, _attrs(ino=20 + i), i + 1)
    assert [len(p) for p in plain.parts] == [32, 32, 32]
    assert plain.unlooked == [22]  # only the entry the handler looked up; "." and ".." never are


def test_notifications_name_their_code_and_carry_no_unique() -> None:
    header, body = wire.inval_entry(1, b"name")
    assert struct.unpack("<IiQ", header) == (16 + 16 + 5, wire.NOTIFY_INVAL_ENTRY, 0)
    assert body == struct.pack("<QII", 1, 4, 0) + b"name\0"
    header, body = wire.inval_inode(9)
    assert struct.unpack("<IiQ", header) == (16 + 24, wire.NOTIFY_INVAL_INODE, 0)
    assert struct.unpack("<Qqq", body) == (9, 0, 0)  # every page, and the attributes
