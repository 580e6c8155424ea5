"""Compare two local directory trees attribute by attribute, as a user
checks that ``cp -a``, ``tar``, ``rsync -aHAX``, ``cas add``/``cas get``
or a mount kept everything.

``compare_trees(a, b)`` walks both (never following symlinks) and returns a
list of human-readable differences, empty when the trees are the same:
names present on one side only; per name its type, permission bits (with
setuid, setgid, sticky), owner and group, mtime in nanoseconds, size,
content of regular files, symlink target, device number, link count,
extended attributes; and the hard-link structure (which names share an
inode on each side). Raw inode numbers, atime and ctime differ on any copy
and are compared only when asked; so are allocated blocks (holes kept).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import defaultdict
from pathlib import Path


def compare_trees(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    atime: bool = False,
    ctime: bool = False,
    ino: bool = False,
    blocks: bool = False,
    top: bool = True,
    owners: bool = True,
    xattrs: bool = True,
    skip_xattrs: tuple[str, ...] = ("system.",),
) -> list[str]:
    """The differences between the trees at ``a`` and ``b`` (see the module
    docstring); ``top`` compares the two roots' own attributes too, and
    ``skip_xattrs`` names attribute prefixes left out (ACLs by default)."""
    a, b = Path(a), Path(b)
    diffs: list[str] = []
    names_a, names_b = _walk(a), _walk(b)
    for rel in sorted(names_a.keys() - names_b.keys()):
        diffs.append(f"{rel}: only in {a}")
    for rel in sorted(names_b.keys() - names_a.keys()):
        diffs.append(f"{rel}: only in {b}")
    for rel in sorted(names_a.keys() & names_b.keys()):
        if rel == "." and not top:
            continue
        diffs += [f"{rel}: {d}" for d in _compare_one(
            a / rel, names_a[rel], b / rel, names_b[rel], atime=atime, ctime=ctime, ino=ino, blocks=blocks,
            owners=owners, xattrs=xattrs, skip_xattrs=skip_xattrs)]
    links_a, links_b = _link_groups(names_a), _link_groups(names_b)
    for group in sorted(links_a - links_b, key=sorted):
        diffs.append(f"hard links {sorted(group)} are one inode in {a} only")
    for group in sorted(links_b - links_a, key=sorted):
        diffs.append(f"hard links {sorted(group)} are one inode in {b} only")
    return diffs


def _walk(root: Path) -> dict[str, os.stat_result]:
    found = {".": os.lstat(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = os.lstat(path)
    return found


def _link_groups(names: dict[str, os.stat_result]) -> set[frozenset[str]]:
    by_inode: dict[tuple[int, int], set[str]] = defaultdict(set)
    for rel, st in names.items():
        if not stat.S_ISDIR(st.st_mode):
            by_inode[st.st_dev, st.st_ino].add(rel)
    return {frozenset(group) for group in by_inode.values() if len(group) > 1}


def _compare_one(
    pa: Path, sa: os.stat_result, pb: Path, sb: os.stat_result, *, atime: bool, ctime: bool, ino: bool,
    blocks: bool, owners: bool, xattrs: bool, skip_xattrs: tuple[str, ...],
) -> list[str]:
    diffs = []
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return [f"type {stat.filemode(sa.st_mode)[0]!r} != {stat.filemode(sb.st_mode)[0]!r}"]
    checks = [("mode", oct(stat.S_IMODE(sa.st_mode)), oct(stat.S_IMODE(sb.st_mode))),
              ("nlink", sa.st_nlink, sb.st_nlink)]
    if not stat.S_ISDIR(sa.st_mode):
        checks.append(("size", sa.st_size, sb.st_size))
    if not stat.S_ISLNK(sa.st_mode) or os.geteuid() == 0:  # symlink times: any owner may not set them
        checks.append(("mtime_ns", sa.st_mtime_ns, sb.st_mtime_ns))
    if owners:
        checks += [("uid", sa.st_uid, sb.st_uid), ("gid", sa.st_gid, sb.st_gid)]
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        checks.append(("rdev", f"{os.major(sa.st_rdev)},{os.minor(sa.st_rdev)}",
                       f"{os.major(sb.st_rdev)},{os.minor(sb.st_rdev)}"))
    if atime:
        checks.append(("atime_ns", sa.st_atime_ns, sb.st_atime_ns))
    if ctime:
        checks.append(("ctime_ns", sa.st_ctime_ns, sb.st_ctime_ns))
    if ino:
        checks.append(("ino", sa.st_ino, sb.st_ino))
    if blocks and stat.S_ISREG(sa.st_mode):
        checks.append(("blocks", sa.st_blocks, sb.st_blocks))
    if stat.S_ISLNK(sa.st_mode):
        checks.append(("target", os.readlink(pa), os.readlink(pb)))
    for what, x, y in checks:
        if x != y:
            diffs.append(f"{what} {x} != {y}")
    if stat.S_ISREG(sa.st_mode) and sa.st_size == sb.st_size and _digest(pa) != _digest(pb):
        diffs.append("content differs")
    if xattrs:
        xa, xb = _xattrs(pa, skip_xattrs), _xattrs(pb, skip_xattrs)
        for name in sorted(xa.keys() | xb.keys()):
            if xa.get(name) != xb.get(name):
                diffs.append(f"xattr {name} {xa.get(name)!r} != {xb.get(name)!r}")
    return diffs


def _digest(path: Path) -> bytes:
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.digest()


def _xattrs(path: Path, skip: tuple[str, ...]) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names if not name.startswith(skip)}
