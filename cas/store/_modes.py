"""Who may read a repository: its owner, and nobody else.

This module owns the permission bits of what cas creates in a repository
directory (the functions every creator calls: :func:`private_dir`,
:func:`open_private`) and the tightening of an existing repository whose
modes are looser (:func:`tighten`, run by ``LocalStore.open``). Issue 14:
with the umask's 0755 and 0644, another user could list ``packs/`` and
grep a file's text out of ``meta.sqlite``.

The rules:

1. **Directories are 0700 and files 0600, whatever the umask.** Each is
   created with that mode (the umask can only take bits away from it, so
   it is never looser, not even for a moment) and then set to exactly
   that mode with ``chmod``/``fchmod`` (a umask of 0277 would otherwise
   leave a file its owner cannot write). The process umask is never
   changed: it is shared by every thread of the node, and a directory
   made while another thread held a 0177 umask would be 0600, unusable.
2. **SQLite's companion files take ``meta.sqlite``'s mode.** SQLite
   creates ``-wal``, ``-shm`` and ``-journal`` with the main file's
   permission bits (and ``fchmod``s them to those bits, whatever the
   umask), so ``Database`` makes ``meta.sqlite`` 0600 before its first
   connection, and that covers them (tests/test_store.py checks the
   ``-wal`` and ``-shm`` of an open repository made under umask 000).
3. **An existing repository is tightened on open.** ``LocalStore.open``
   walks the repository directory, its top-level entries and the entries
   of ``packs/``, ``keys/``, ``dht/`` and ``tmp/`` (a few dozen names:
   since packs there is no file per block) and takes the group and other
   bits off whatever has them. Bits are only ever removed, and only where
   some are set, so a repository that is private already is not written
   to, and the walk does its work once. What it changed is said in one
   line on stderr, and a key that others could read is named: it may be
   known to them, and chmod cannot undo that.
4. **A refused chmod never fails the open.** A file owned by another user
   (root ran a command in your repository) cannot be changed by you; it
   is named on stderr with its owner and mode, and what to run, on every
   open until it is fixed. The open goes on: the file was as readable
   before the command ran.

Must never: loosen a mode when tightening (a 0400 file stays 0400; only
:func:`open_private` sets 0600 on a file it opens, to write), follow a
symbolic link inside the repository (``chmod`` would change its target,
which may lie anywhere; a link is skipped), touch anything outside the
repository directory but the missing parents it creates for a new one, or
change the process umask.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import NamedTuple

DIR_MODE = 0o700
"""Every directory cas creates in a repository, the repository included."""
FILE_MODE = 0o600
"""Every file cas creates in a repository (and the control socket)."""
OPEN_BITS = 0o077
"""The bits that give the group or other users any access: what
:func:`tighten` takes off."""
WALKED_DIRS = ("packs", "keys", "dht", "tmp")
"""The directories whose entries :func:`tighten` looks at besides the
top level; everything else cas keeps in a repository is a top-level file."""


def private_dir(path: str | os.PathLike[str], *, parents: bool = False) -> None:
    """Create the directory ``path`` with mode exactly 0700, unless it is a
    directory already (which is left as it is: :func:`tighten` sees to
    existing ones). With ``parents``, the missing ones above it are made
    0700 too (rule 1: nothing cas creates is open to others). Raises
    FileExistsError if ``path`` is something other than a directory."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileNotFoundError:
        if not parents:
            raise
        private_dir(os.path.dirname(os.path.abspath(path)), parents=True)
        private_dir(path)
        return
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, DIR_MODE)


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` for a file in a repository: a new
    file is made mode 0600 exactly; an existing one of another mode is set
    to 0600 if this process may (if not, :func:`tighten` names it on the
    next open). ``O_CLOEXEC`` is always added."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            try:
                os.fchmod(fd, FILE_MODE)
            except PermissionError:
                pass  # another user's file: rule 4
    except BaseException:
        os.close(fd)
        raise
    return fd


class Refused(NamedTuple):
    """An entry :func:`tighten` could not make private."""

    path: str
    mode: int
    uid: int
    reason: str


class Tightening(NamedTuple):
    """What :func:`tighten` did: the entries it made private (with the
    mode each had) and those it could not."""

    changed: list[tuple[str, int]]
    refused: list[Refused]


def tighten(repo: Path) -> Tightening:
    """Take the group and other bits off the repository directory ``repo``,
    its entries and those of ``WALKED_DIRS`` (rule 3); never raises for a
    chmod refused (rule 4). ``repo`` itself is followed if it is a link
    (it is what the user named); nothing inside it is."""
    result = Tightening([], [])
    try:
        _tighten_entry(str(repo), os.stat(repo), result)
        with os.scandir(repo) as entries:
            top = list(entries)
    except OSError:
        return result  # the open that follows says what is wrong with the directory
    for entry in top:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        _tighten_entry(entry.path, info, result)
        if entry.name in WALKED_DIRS and stat.S_ISDIR(info.st_mode):
            try:
                with os.scandir(entry.path) as inner:
                    for child in inner:
                        try:
                            _tighten_entry(child.path, child.stat(follow_symlinks=False), result)
                        except OSError:
                            continue
            except OSError:
                continue
    return result


def _tighten_entry(path: str, info: os.stat_result, result: Tightening) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if not mode & OPEN_BITS or stat.S_ISLNK(info.st_mode):
        return  # private already; or a link, whose target may lie anywhere
    try:
        os.chmod(path, mode & ~OPEN_BITS)
    except FileNotFoundError:
        return
    except OSError as exc:
        result.refused.append(Refused(path, mode, info.st_uid, exc.strerror or str(exc)))
        return
    result.changed.append((path, mode))


def report(repo: Path, done: Tightening) -> None:
    """Say on stderr what :func:`tighten` changed (one line) and what it
    could not (a line per entry); nothing if both are empty."""
    if done.changed:
        print(f"cas: repository {repo} was open to other users: took their access off "
              f"{len(done.changed)} of its files and directories",
              file=sys.stderr, flush=True)
        for path, mode in done.changed:
            if os.path.basename(os.path.dirname(path)) == "keys" and mode & 0o044:
                print(f"cas: warning: the key {path} was readable by other users (mode {mode:04o}) "
                      "until now: if anyone else uses this machine, treat it as known to them",
                      file=sys.stderr, flush=True)
    for refused in done.refused:
        whose = "" if refused.uid == os.geteuid() else f" (owned by user {refused.uid}, not by you)"
        print(f"cas: warning: {refused.path}{whose} stays open to other users "
              f"(mode {refused.mode:04o}): {refused.reason}; its owner can run: "
              f"chmod go-rwx {refused.path}", file=sys.stderr, flush=True)
