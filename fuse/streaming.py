"""Storing a large file while it is written: the chunks of its staged
content cut and hashed on a worker thread as the writer appends, so that
the close (or fsync) of a file written from start to end stores only its
last chunks instead of reading the whole file again.

A :class:`Follower` belongs to a file whose staged content began empty. It
tracks the *frontier*: how far the staged content is written contiguously
from its start. Writes may arrive ahead of it (the kernel's write-back
sends dirty pages in its own order) and are held as extents until the gap
closes; a write behind it (an overwrite of what may be chunked already)
or a truncate makes it *give up*. The chunker reads the prefix below the
frontier through :meth:`Follower.readinto`, which blocks its thread until
more is written or :meth:`Follower.finish` says where the content ends, so
the cut points, and the root CID, are exactly those of
:func:`cas.files.add_stream` of the whole file.

Each :meth:`Follower.step` returns the blocks its chunks completed, for the
caller to put into the store. A follower that gave up stops at its next
read (its step returns None); its file is stored from its staged content
as any other.

A file stored at an fsync may be written on (a log, a download that syncs
as it goes). The follower that stored it leaves a :class:`Resume`: the
last cut no later bytes can move, and the file's tree up to it. A new
follower started there, when the next write appends to the same staged
content, cuts and hashes only what comes after, not the whole file again,
and gives the CID the whole file has.

This module owns that state and the thread side of the reading. It never
touches the store (its blocks are returned), never calls FUSE, and never
closes the staged file's descriptor (it reads through a duplicate).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import NamedTuple

from ..blocks import Block
from ..chunker import MAX_CHUNK_SIZE, chunk_stream
from ..cid import CID
from ..files import FileBuilder

MAX_EXTENTS_AHEAD = 64
"""Writes held past the frontier before the follower gives up (the
write-back's reordering stays far below this)."""


class Resume(NamedTuple):
    """Where a follower of the same staged content may start: ``start`` is
    a cut that bytes written after the end cannot move (the chunker had a
    whole maximum chunk beyond it, or the end), ``builder`` the file's tree
    over the chunks before it."""

    builder: FileBuilder
    start: int


class _GaveUp(Exception):
    """Raised through the chunker from :meth:`Follower.readinto` once the
    follower was given up; :meth:`Follower.step` turns it into None."""


class Follower:
    """One file's chunking as it is written (see the module docstring).

    The writer's side (:meth:`wrote`, :meth:`attach`, :meth:`finish`,
    :meth:`close`) runs on the FUSE thread; :meth:`step` and the
    :meth:`readinto` it drives run on one worker thread at a time."""

    def __init__(self, written: int = 0, resume: Resume | None = None) -> None:
        """``written``: bytes from the start of the file written already, in
        order; ``resume``: where an earlier follower of this staged content
        left off (the chunker starts there), if any."""
        self._cond = threading.Condition()
        self._frontier = written
        self._ahead: list[tuple[int, int]] = []
        self._end: int | None = None
        self._given_up = False
        self._fd = -1
        self._read = resume.start if resume is not None else 0  # bytes handed to the chunker
        self._pushed = self._read  # bytes of the chunks built into the tree
        self._stepping = False
        self._builder = resume.builder.copy() if resume is not None else FileBuilder()
        self._chunks: Iterator[bytes] = chunk_stream(self)
        self.result: tuple[CID, int] | None = None
        """(root CID, size) once the last step has built the file."""
        self.resume: Resume | None = None
        """Set by the step that reaches the end (see the module docstring)."""

    # -- the writer's side -----------------------------------------------------------

    @property
    def given_up(self) -> bool:
        return self._given_up

    def wrote(self, offset: int, end: int) -> bool:
        """Bytes ``offset`` to ``end`` were written; False if that (or an
        earlier event) gave the follower up."""
        with self._cond:
            if self._given_up or self._end is not None:
                self._give_up()
                return False
            if end <= offset:
                return True
            if offset < self._frontier:
                self._give_up()
                return False
            self._ahead.append((offset, end))
            self._advance()
            if len(self._ahead) > MAX_EXTENTS_AHEAD:
                self._give_up()
                return False
            self._cond.notify_all()
            return True

    def attach(self, fd: int) -> None:
        """The staged content is in the file ``fd`` from now on (read
        through a duplicate, closed by :meth:`close`)."""
        with self._cond:
            self._fd = os.dup(fd)
            self._cond.notify_all()

    def finish(self, size: int) -> bool:
        """The staged content ends at ``size``: the chunker reads to there
        and the next steps build the file. False (and given up) if the
        content up to ``size`` was not all written in order."""
        with self._cond:
            if self._given_up or self._fd < 0 or self._frontier != size or self._ahead:
                self._give_up()
                return False
            self._end = size
            self._cond.notify_all()
            return True

    def _give_up(self) -> None:
        self._given_up = True
        self._cond.notify_all()

    def _advance(self) -> None:
        """Move the frontier over every held extent it has reached."""
        moved = True
        while moved:
            moved = False
            for extent in self._ahead:
                if extent[0] <= self._frontier:
                    self._frontier = max(self._frontier, extent[1])
                    self._ahead.remove(extent)
                    moved = True
                    break

    # -- the worker thread's side ----------------------------------------------------

    def readinto(self, buffer: memoryview) -> int:
        """The chunker's read: blocks until there is more below the frontier,
        or the end is known (0 there); raises _GaveUp once given up."""
        with self._cond:
            while True:
                if self._given_up:
                    raise _GaveUp
                if self._fd >= 0 and self._read < self._frontier:
                    want = min(len(buffer), self._frontier - self._read)
                    break
                if self._end is not None and self._read >= self._end:
                    return 0
                self._cond.wait()
            fd, at = self._fd, self._read
        got = os.preadv(fd, [buffer[:want]], at)
        if got <= 0:
            raise _GaveUp  # the staged file is shorter than its writes said (it failed)
        self._read += got
        return got

    def step(self, max_bytes: int) -> list[Block] | None:
        """Cut and hash at least ``max_bytes`` more (waiting for the writer
        as needed), or to the end: the blocks to put, in order, or None
        once given up. After the step that reaches the end, :attr:`result`
        is set. The step that ends the follower (the last, or one given
        up) closes its descriptor."""
        with self._cond:
            self._stepping = True
        try:
            blocks: list[Block] = []
            read = 0
            try:
                for chunk in self._chunks:
                    self._note_resume()
                    blocks.extend(self._builder.push(chunk))
                    self._pushed += len(chunk)
                    read += len(chunk)
                    if read >= max_bytes:
                        return blocks
            except _GaveUp:
                return None
            self._note_resume()
            more, root, size = self._builder.finish()
            blocks.extend(more)
            self.result = (root, size)
            return blocks
        finally:
            with self._cond:
                self._stepping = False
                if self.result is not None or self._given_up:
                    self._close()

    def _note_resume(self) -> None:
        """Before the next chunk is built in (or the tree is finished): keep
        where a later follower may start, if the chunk may have been cut
        short by the end (it starts less than a maximum chunk before it).
        Before the end is known, every cut had a whole maximum chunk after
        it (the chunker waited for one), so none is taken too early."""
        end = self._end
        if self.resume is None and end is not None and self._pushed + MAX_CHUNK_SIZE > end:
            self.resume = Resume(self._builder.copy(), self._pushed)

    def close(self) -> None:
        """Give up unless finished, and close the descriptor now, or, if a
        step still runs (a thread abandoned by a cancelled caller), when
        that step ends, which giving up makes it do at once."""
        with self._cond:
            if self.result is None:
                self._give_up()
            if not self._stepping:
                self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
