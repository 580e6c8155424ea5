"""POSIX access ACLs as Linux passes them in ``system.posix_acl_access``.

Owns what an ACL means for a file's mode: the kernel (with FUSE's POSIX ACL
support, ``enable_acl``) checks permissions against the ACL the mount keeps
as an extended attribute, but leaves the mode to the file system. Setting
an ACL sets the mode's permission bits from it (owner from the owner entry,
group from the mask or else the owning group entry, others from the other
entry); an ACL of those three entries alone says no more than the mode, so
it is not kept at all (as ext4 does).

Pure functions on bytes: no I/O, no knowledge of the mount.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ..errors import InvalidInputError

ACCESS = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")


class AccessAcl(NamedTuple):
    """What an access ACL makes of the mode: its permission bits, and
    whether the ACL says more than they do (named users or groups)."""

    bits: int
    extended: bool


def parse_access(value: bytes) -> AccessAcl:
    """The mode bits ``value`` (a Linux ACL xattr) sets; InvalidInputError
    if it is not a well-formed access ACL."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % _ENTRY.size:
        raise InvalidInputError("an ACL is a 4-byte header and 8-byte entries")
    (version,) = _HEADER.unpack_from(value)
    if version != VERSION:
        raise InvalidInputError(f"ACL version {version}; only {VERSION} is known")
    perms: dict[int, int] = {}
    named = False
    for offset in range(_HEADER.size, len(value), _ENTRY.size):
        tag, perm, _id = _ENTRY.unpack_from(value, offset)
        if tag not in (USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER) or perm & ~0o7:
            raise InvalidInputError(f"bad ACL entry (tag {tag:#x}, permissions {perm:o})")
        if tag in (USER, GROUP):
            named = True
        elif tag in perms:
            raise InvalidInputError("an ACL repeats an entry")
        else:
            perms[tag] = perm
    if not {USER_OBJ, GROUP_OBJ, OTHER} <= perms.keys() or named and MASK not in perms:
        raise InvalidInputError("an ACL needs owner, group and other entries (and a mask with named ones)")
    group = perms.get(MASK, perms[GROUP_OBJ])
    return AccessAcl(perms[USER_OBJ] << 6 | group << 3 | perms[OTHER], named or MASK in perms)
