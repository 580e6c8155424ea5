"""The namespace's concurrency rule, proven against a model.

The rule (docs/architecture.md, "Concurrent changes"): a change is applied
to the newest root and committed compare-and-swap; if another writer
committed first, it is applied again to the newer root, or fails with the
error it meets there. So every change a writer was told succeeded is in the
namespace unless a later change touched the same path, and the history has
one version per committed change, each the one before with that change.

Several writers, each with its own :class:`Namespace` as separate processes
have, share one repository. Hypothesis draws the changes and where other
writers cut in: up to three changes of other writers are committed between
any two of a writer's calls on the repository (reading the roots, committing
one), so the writer's root goes stale at every possible moment and its
compare-and-swap must catch it. A model (a dict of paths) replays the changes in the order
they finished and says, for each, whether it succeeds and what the tree
then is; the namespace must agree change by change, root by root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas import files
from cas.blocks import MemoryBlockStore
from cas.cid import CID
from cas.errors import ConcurrentUpdateError, NamespaceError
from cas.keys import NamespaceKey
from cas.names import dirtree
from cas.names.namespace import Namespace, Node
from cas.store import LocalStore, RootRow

Tree = dict[tuple[str, ...], tuple[str, "CID | None"]]
"""Every path but the root: (kind, content CID; None for a directory)."""


class MemoryRepo:
    """A repository in memory with the local store's compare-and-swap."""

    def __init__(self, key: NamespaceKey) -> None:
        self.blocks = MemoryBlockStore()
        self.rows: list[RootRow] = []
        self._key = key

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[RootRow]:
        rows = sorted(self.rows, key=lambda r: r.seq, reverse=newest_first)
        if after is not None:
            rows = [r for r in rows if (r.seq < after if newest_first else r.seq > after)]
        return rows[:limit] if limit is not None else rows

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        if self.rows and max(r.seq for r in self.rows) >= seq:
            raise ConcurrentUpdateError("a newer root exists")
        self.rows.append(RootRow(seq, root, time_ns, record))

    def namespace_key(self) -> NamespaceKey:
        return self._key


class Writer:
    """One writer's view of the shared repository, where other writers can
    cut in: each of ``cut_ins`` is (n, fn), and fn runs just before this
    writer's n-th call on the repository from now (reading the roots or
    committing one), whatever that call is."""

    def __init__(self, repo: Any) -> None:
        self.repo = repo
        self.blocks = repo.blocks
        self.cut_ins: list[tuple[int, Callable[[], None]]] = []
        self.calls = 0

    def cut_in(self, at: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` just before this writer's ``at``-th call on the
        repository, counted from its next change (0: the first call)."""
        self.cut_ins.append((at, fn))

    def start_change(self) -> None:
        """The writer starts a change: calls are counted from here."""
        self.calls = 0

    def _cut_in(self) -> None:
        due = [fn for at, fn in self.cut_ins if at <= self.calls]
        self.cut_ins = [(at, fn) for at, fn in self.cut_ins if at > self.calls]
        self.calls += 1
        for fn in due:
            fn()

    def roots(self, newest_first: bool = True, limit: int | None = None, after: int | None = None) -> list[Any]:
        self._cut_in()
        return self.repo.roots(newest_first=newest_first, limit=limit, after=after)

    def commit_root(self, seq: int, root: CID, time_ns: int, record: bytes) -> None:
        self._cut_in()
        self.repo.commit_root(seq, root, time_ns, record)

    def namespace_key(self) -> NamespaceKey:
        return self.repo.namespace_key()


# -- the changes and the model --------------------------------------------------------

NAMES = ("a", "b", "c")
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(tuple)


@dataclass(frozen=True)
class Op:
    kind: str  # mkdir | put | mv | rm
    path: tuple[str, ...]
    other: tuple[str, ...] = ()  # mv's destination
    content: int = 0  # put's file, one of CONTENTS


CONTENTS = (b"one", b"two", b"three")

ops = st.one_of(
    st.builds(Op, st.just("mkdir"), paths),
    st.builds(Op, st.just("put"), paths, st.just(()), st.integers(0, len(CONTENTS) - 1)),
    st.builds(Op, st.just("mv"), paths, paths),
    st.builds(Op, st.just("rm"), paths),
)


def model_apply(tree: Tree, op: Op, cids: list[CID]) -> Tree | None:
    """``tree`` with ``op`` applied, or None where the namespace must refuse
    it. mkdir is ``mkdir -p``, put is ``add --to`` (parents made, a file
    replaced), mv is rename(2) without replacing, rm is ``rm -r``."""
    new = dict(tree)

    def make_parents(parts: tuple[str, ...]) -> bool:
        for depth in range(1, len(parts) + 1):
            kind = new.get(parts[:depth])
            if kind is None:
                new[parts[:depth]] = ("dir", None)
            elif kind[0] != "dir":
                return False
        return True

    if op.kind == "mkdir":
        return new if make_parents(op.path) else None
    if op.kind == "put":
        if not make_parents(op.path[:-1]) or new.get(op.path, ("file",))[0] == "dir":
            return None
        new[op.path] = ("file", cids[op.content])
        return new
    if op.path not in tree:
        return None
    if op.kind == "rm":
        return {p: v for p, v in tree.items() if p[: len(op.path)] != op.path}
    src, dst = op.path, op.other
    if dst == src:
        return new
    if dst in tree or (tree[src][0] == "dir" and dst[: len(src)] == src):
        return None
    if len(dst) > 1 and tree.get(dst[:-1], ("file",))[0] != "dir":
        return None
    moved = {p: v for p, v in tree.items() if p[: len(src)] != src}
    moved.update({dst + p[len(src):]: v for p, v in tree.items() if p[: len(src)] == src})
    return moved


def run(ns: Namespace, op: Op, cids: list[CID]) -> None:
    path = "/" + "/".join(op.path)
    if op.kind == "mkdir":
        ns.mkdir(path, parents=True)
    elif op.kind == "put":
        cid = cids[op.content]
        ns.link(path, Node(path, op.path[-1], "file", len(CONTENTS[op.content]), 0o644, 1, cid), parents=True)
    elif op.kind == "mv":
        ns.move(path, "/" + "/".join(op.other), into_directory=False, no_replace=True)
    else:
        ns.remove(path, recursive=True)


def tree_of(blocks: Any, root: CID) -> Tree:
    found: Tree = {}

    def walk(cid: CID, prefix: tuple[str, ...]) -> None:
        for entry in dirtree.iterate(blocks, cid):
            path = prefix + (entry.name,)
            if entry.kind == "dir":
                assert entry.cid is not None
                found[path] = ("dir", None)
                walk(entry.cid, path)
            else:
                found[path] = ("file", entry.cid)

    walk(root, ())
    return found


# -- the property ------------------------------------------------------------------------


@dataclass
class Finished:
    op: Op
    newest: int  # the newest root when it finished: the one it committed, if it did
    error: BaseException | None = None  # why it was refused


@dataclass
class Run:
    writers: list[Namespace]
    cids: list[CID]
    finished: list[Finished] = field(default_factory=list)

    def change(self, writer: int, op: Op, cut_ins: list[tuple[int, int, Op]]) -> None:
        """Writer ``writer`` makes change ``op``, while each of ``cut_ins``
        (other, at, op) has writer ``other`` commit its own change just
        before ``writer``'s ``at``-th call on the repository."""
        ns = self.writers[writer]
        view = ns.repo
        assert isinstance(view, Writer)
        view.start_change()
        for other, at, other_op in cut_ins:
            other = (writer + 1 + other) % len(self.writers)  # another writer than this one
            view.cut_in(at, lambda other=other, other_op=other_op: self.change(other, other_op, []))
        try:
            run(ns, op, self.cids)
        except NamespaceError as exc:
            self.finished.append(Finished(op, self.newest(), exc))
        else:
            self.finished.append(Finished(op, self.newest()))
        # Cut-ins whose moment never came (the change finished first) happen after it.
        pending, view.cut_ins = view.cut_ins, []
        for _, cut_in in pending:
            cut_in()

    def newest(self) -> int:
        shared = self.writers[0].repo.repo  # type: ignore[attr-defined]
        return max((r.seq for r in shared.roots(limit=1)), default=0)


steps = st.lists(
    st.tuples(st.integers(0, 2), ops,
              st.lists(st.tuples(st.integers(0, 1), st.integers(0, 4), ops), max_size=3)),
    min_size=1, max_size=12,
)


def check_against_model(run_: Run, reader: Namespace) -> None:
    """Replay the finished changes on the model in the order they finished:
    each refused where the model refuses it, and each acknowledged one
    committed as the version right after the one before (or as no version,
    when it changed nothing), holding exactly the model's tree."""
    roots = {state.seq: state.root for state in reader.log()}
    empty = dirtree.empty_directory(reader.blocks)
    tree: Tree = {}
    seq = 0
    for done in run_.finished:
        expected = model_apply(tree, done.op, run_.cids)
        if expected is None:
            assert done.error is not None, f"{done.op} succeeded where it must fail on {sorted(tree)}"
            assert done.newest == seq
            continue
        assert done.error is None, f"{done.op} failed ({done.error}) where it applies to {sorted(tree)}"
        assert done.newest in (seq, seq + 1), "a change committed as more than one version, or none in order"
        assert done.newest == seq + 1 or expected == tree, f"{done.op} changed the tree but made no version"
        seq, tree = done.newest, expected
        assert tree_of(reader.blocks, roots[seq] if seq else empty) == tree, f"version {seq} lost a change"
    assert sorted(roots, reverse=True) == list(range(seq, 0, -1))
    assert reader.current().seq == seq


def make_run(repo: Any) -> tuple[Run, Namespace]:
    cids = [files.add_bytes(repo.blocks, data).cid for data in CONTENTS]
    writers = [Namespace(Writer(repo)) for _ in range(3)]  # type: ignore[arg-type]
    return Run(writers, cids), Namespace(repo)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_interleaved_writers_lose_no_acknowledged_change(steps, tmp_path_factory):
    key = NamespaceKey.load_or_create(tmp_path_factory.getbasetemp() / "namespace.key")
    run_, reader = make_run(MemoryRepo(key))
    for writer, op, cut_ins in steps:
        run_.change(writer, op, cut_ins)
    check_against_model(run_, reader)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_interleaved_writers_on_a_real_repository(steps, tmp_path):
    repo_path = tmp_path / f"repo{len(list(tmp_path.iterdir()))}"
    with LocalStore.open(repo_path) as store:
        run_, reader = make_run(store)
        for writer, op, cut_ins in steps:
            run_.change(writer, op, cut_ins)
        check_against_model(run_, reader)


def test_a_change_made_on_a_replaced_root_is_applied_again_not_committed(tmp_path):
    """The case that lost writes: another commit lands between reading the
    root and committing; both changes must be in the result."""
    with LocalStore.open(tmp_path / "repo") as store:
        first, second = Namespace(Writer(store)), Namespace(Writer(store))  # type: ignore[arg-type]
        first.mkdir("/a")
        view = first.repo
        assert isinstance(view, Writer)
        view.start_change()
        view.cut_in(1, lambda: second.mkdir("/b"))  # after first read the newest root
        first.mkdir("/c")
        reader = Namespace(store)
        assert sorted(e.name for e in reader.list("/")) == ["a", "b", "c"]
        assert [s.seq for s in reader.log()] == [3, 2, 1]
        assert sorted(e.name for e in reader.list("/", at=2)) == ["a", "b"]


def test_a_change_that_no_longer_fits_fails_with_the_error_it_meets(tmp_path):
    with LocalStore.open(tmp_path / "repo") as store:
        first, second = Namespace(Writer(store)), Namespace(Writer(store))  # type: ignore[arg-type]
        first.mkdir("/a")
        view = first.repo
        assert isinstance(view, Writer)
        view.start_change()
        view.cut_in(1, lambda: second.remove("/a"))
        with pytest.raises(NamespaceError, match="/a"):
            first.move("/a", "/b")
        reader = Namespace(store)
        assert list(reader.list("/")) == [] and reader.current().seq == 2


class _FirstReadHook:
    """A block store that runs ``hook`` once, just before its first read."""

    def __init__(self, blocks: Any, hook: Callable[[], None]) -> None:
        self._blocks, self._hook = blocks, hook

    def get(self, cid: CID) -> bytes:
        hook, self._hook = self._hook, lambda: None
        hook()
        return self._blocks.get(cid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blocks, name)


def test_a_read_whose_root_is_collected_meanwhile_reads_the_newest_root(tmp_path, monkeypatch):
    # The reader is another process: it has none of the writer's decoded nodes.
    monkeypatch.setattr(dirtree, "_cache", dirtree._NodeCache(budget=0))
    repo = MemoryRepo(NamespaceKey.load_or_create(tmp_path / "namespace.key"))
    writer = Namespace(repo)  # type: ignore[arg-type]
    writer.mkdir("/a/b", parents=True)
    old = writer.current().root

    def change_and_collect() -> None:
        # Another writer changes the tree and gc drops the old root's nodes
        # (past the history limit) after this reader read the old root.
        writer.mkdir("/a/c")
        writer.remove("/a/b")
        writer.mkdir("/a/b")
        assert repo.blocks.delete(old)

    reading = MemoryRepo(repo.namespace_key())
    reading.rows, reading.blocks = repo.rows, _FirstReadHook(repo.blocks, change_and_collect)  # type: ignore[assignment]
    reader = Namespace(reading)  # type: ignore[arg-type]
    assert reader.resolve("/a/b").kind == "dir"
    assert sorted(e.name for e in reader.list("/a")) == ["b", "c"]
