"""fuse/acl.py: what an access ACL makes of a file's mode."""

from __future__ import annotations

import struct

import pytest
from cas.fuse.acl import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, AccessAcl, parse_access

from cas.errors import InvalidInputError


def acl(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_a_minimal_acl_is_just_the_mode() -> None:
    value = acl((USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0))
    assert parse_access(value) == AccessAcl(0o754, extended=False)


def test_with_named_entries_the_mask_is_the_group_bits() -> None:
    value = acl((USER_OBJ, 6, 0), (USER, 7, 1234), (GROUP_OBJ, 4, 0), (GROUP, 2, 50), (MASK, 6, 0), (OTHER, 0, 0))
    assert parse_access(value) == AccessAcl(0o660, extended=True)


@pytest.mark.parametrize("value", [
    b"",
    acl((USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0), version=1),
    acl((USER_OBJ, 7, 0), (OTHER, 4, 0)),  # no owning group entry
    acl((USER_OBJ, 7, 0), (USER, 7, 5), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)),  # named entry, no mask
    acl((USER_OBJ, 8, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)),
    acl((USER_OBJ, 7, 0), (USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)),
    acl((0x40, 7, 0), (USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)),
    acl((USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 4, 0)) + b"\x00",
])
def test_malformed_acls_are_refused(value: bytes) -> None:
    with pytest.raises(InvalidInputError):
        parse_access(value)
