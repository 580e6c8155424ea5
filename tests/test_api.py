"""The Python library, used as the README shows."""

from __future__ import annotations

import io
import os
import types

import pytest
import trio

import cas
from tests.conftest import pseudo_random

MiB = 1 << 20


@pytest.fixture
def repo(tmp_path):
    with cas.open_repository(tmp_path / "repo") as r:
        yield r


def test_the_exported_surface_is_what_the_docs_promise():
    public = {  # dir(), not vars(): some names load on first use
        name
        for name in dir(cas)
        if not name.startswith("_") and not isinstance(getattr(cas, name), types.ModuleType)
        and name != "annotations"
    }
    assert sorted(cas.__all__) == sorted(public)
    for name in cas.__all__:
        assert getattr(cas, name).__doc__, f"cas.{name} has no docstring"


def test_bytes_in_bytes_out(repo):
    cid = repo.add_bytes(b"hello")
    assert isinstance(cid, cas.CID)
    assert repo.read(cid) == b"hello"
    assert repo.read(str(cid), offset=1, length=3) == b"ell"
    assert repo.pins() == [cid]


def test_an_open_file_seeks_and_reads_like_a_local_file(repo):
    data = pseudo_random(3 * MiB + 5, seed="api open")
    cid = repo.add_stream(io.BytesIO(data)).cid
    with repo.open(cid) as f:
        assert f.seekable() and f.readable()
        f.seek(MiB - 3)
        assert f.read(10) == data[MiB - 3 : MiB + 7]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        assert f.tell() == len(data)
        f.seek(0)
        assert f.read() == data


def test_iter_read_streams_a_range(repo):
    data = pseudo_random(2 * MiB, seed="api iter")
    cid = repo.add_bytes(data)
    assert b"".join(repo.iter_read(cid, 1000, MiB)) == data[1000 : 1000 + MiB]


def test_add_path_and_get_a_tree(repo, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"deep")
    added = repo.add_path(src, recursive=True)
    assert added.kind == "dir" and added.size == 4
    [entry] = repo.list_dir(added.cid)
    assert (entry.name, entry.kind) == ("d", "dir")
    assert repo.info(added.cid).kind == "dir"
    repo.get(added.cid, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "f").read_bytes() == b"deep"


def test_blocks_put_get_has(repo):
    cid = repo.put_block(b"\x00raw block")
    assert repo.has_block(cid)
    assert repo.get_block(cid) == b"\x00raw block"
    with pytest.raises(cas.BlockNotFoundError):
        repo.get_block(cas.CID.for_data(cas.RAW, b"other"))
    with pytest.raises(cas.InvalidBlockError, match="limit"):
        repo.put_block(b"x" * (MiB + 1))


def test_a_sha2_256_block_is_kept_under_its_own_cid_and_verified_with_its_own_hash(tmp_path):
    from cas.cid import SHA2_256
    from cas.store import LocalStore

    with cas.open_repository(tmp_path / "repo") as r:
        data = b"hello" * 20000  # big enough for a pack, not the small-block table
        cid = r.put_block(data, hash_code=SHA2_256)
        assert str(cid) == str(cas.CID.for_data(cas.RAW, data, SHA2_256)) and str(cid).startswith("bafkrei")
        blake = r.put_block(data)  # the same bytes under BLAKE3: another CID, another block
        assert blake != cid and r.get_block(cid) == data == r.get_block(blake)
        assert r.get_block(str(cid)) == data
    with LocalStore.open(tmp_path / "repo") as store:
        where = store.blocks.locate(cid)
    with open(where.path, "r+b") as f:  # bit rot in the sha2-256 block
        f.seek(where.start + 10)
        f.write(b"X")
    with cas.open_repository(tmp_path / "repo") as r:
        with pytest.raises(cas.InvalidBlockError, match="corrupt"):
            r.get_block(cid)
        assert r.get_block(blake) == data


def test_errors_are_cas_errors_with_useful_messages(repo):
    with pytest.raises(cas.InvalidCIDError, match="not a CID"):
        repo.read("nonsense")
    with pytest.raises(cas.InvalidInputError, match="offset"):
        repo.read(repo.add_bytes(b"x"), offset=-1)
    with pytest.raises(cas.CasError):
        repo.add_path("/does/not/exist")


def test_the_repository_is_released_on_close(tmp_path):
    r = cas.open_repository(tmp_path / "repo")
    with pytest.raises(cas.RepositoryLockedError):
        cas.open_repository(tmp_path / "repo")
    r.close()
    cas.open_repository(tmp_path / "repo").close()


def test_open_waits_for_another_owner_when_asked_and_names_it(tmp_path):
    path = tmp_path / "repo"
    owner = cas.open_repository(path)
    with pytest.raises(cas.RepositoryLockedError, match=rf"in use by process {os.getpid()} \(.*0\.2 s"):
        cas.open_repository(path, wait=0.2)
    notes: list[str] = []

    def on_wait(text: str) -> None:  # after a second of waiting: the owner goes
        notes.append(text)
        owner.close()

    with cas.open_repository(path, wait=60, on_wait=on_wait) as repo:
        assert repo.path == path.absolute()
    assert len(notes) == 1 and notes[0].startswith(f"in use by process {os.getpid()} (")


def test_a_daemon_that_starts_during_the_wait_is_gone_through(tmp_path, monkeypatch):
    from cas import control

    path = tmp_path / "repo"
    owner = cas.open_repository(path)  # holds the lock, as a starting daemon does
    daemon_store = types.SimpleNamespace(blocks=object(), close=lambda: None)

    def connect(cls: type, repo: object) -> object:
        return daemon_store if (path / "control.sock").exists() else None

    monkeypatch.setattr(control.RemoteStore, "connect", classmethod(connect))
    try:
        repo = cas.open_repository(path, wait=60, on_wait=lambda text: (path / "control.sock").touch())
        assert repo._store is daemon_store
    finally:
        owner.close()


def test_default_path_follows_cas_home(monkeypatch, tmp_path):
    monkeypatch.setenv("CAS_HOME", str(tmp_path / "home"))
    assert cas.default_repository_path() == tmp_path / "home"
    monkeypatch.delenv("CAS_HOME")
    assert cas.default_repository_path().name == "cas"


def test_the_daemon_is_looked_for_at_the_control_socket_the_daemon_makes():
    from cas import api, control

    assert api.CONTROL_SOCKET == control.SOCKET_NAME


def test_the_trio_api_reads_and_adds(tmp_path):
    data = pseudo_random(2 * MiB + 1, seed="async")
    (tmp_path / "f").write_bytes(data)

    async def main() -> None:
        arepo = await cas.AsyncRepository.open(tmp_path / "repo")
        try:
            added = await arepo.add_path(tmp_path / "f")
            assert await arepo.read(added.cid, offset=5, length=10) == data[5:15]
            pieces = [p async for p in arepo.iter_read(added.cid)]
            assert b"".join(pieces) == data
            small = await arepo.add_bytes(b"tiny")
            assert await arepo.get_block(small) == b"tiny"
        finally:
            await arepo.aclose()

    trio.run(main)


def test_the_trio_api_has_the_same_methods_as_the_sync_one():
    import inspect

    from cas.aio import AsyncRepository

    def public(cls):
        return {name for name in dir(cls) if not name.startswith("_")}

    sync, asynchronous = public(cas.Repository), public(AsyncRepository)
    # The same names, but: open is the async constructor, so the file object
    # is open_file; close is aclose.
    assert asynchronous == (sync - {"close"}) | {"open_file", "aclose"}
    for name in sync - {"open", "close", "path", "through_daemon", "daemon", "namespace", "blocks"}:
        ours, theirs = getattr(AsyncRepository, name), getattr(cas.Repository, name)
        assert inspect.iscoroutinefunction(ours) or inspect.isasyncgenfunction(ours), name
        assert list(inspect.signature(ours).parameters) == list(inspect.signature(theirs).parameters), name
    assert list(inspect.signature(AsyncRepository.open_file).parameters) == \
        list(inspect.signature(cas.Repository.open).parameters)


def test_the_trio_api_does_the_namespace_and_file_objects(tmp_path):
    data = pseudo_random(300_000, seed="async namespace")

    async def main() -> None:
        async with await cas.AsyncRepository.open(tmp_path / "repo") as repo:
            await repo.mkdir("/docs")
            added = await repo.add_bytes(data, to="/docs/a.bin")
            await repo.mv("/docs/a.bin", "/docs/b.bin")
            assert [e.name for e in await repo.ls("/docs")] == ["b.bin"]
            assert (await repo.stat("/docs/b.bin")).cid == added
            assert await repo.read("/docs/b.bin", offset=10, length=5) == data[10:15]
            first = (await repo.log())[-1].seq
            assert await repo.read("/docs/b.bin") == data
            async with await repo.open_file("/docs/b.bin") as f:
                assert await f.seek(-100, 2) == len(data) - 100
                assert await f.read() == data[-100:]
            await repo.rm("/docs/b.bin")
            assert await repo.ls("/docs") == []
            assert (await repo.root()).seq > first
            assert (await repo.repo_stat()).blocks >= 2
        # The repository was released: another opener gets it at once.
        with cas.open_repository(tmp_path / "repo") as again:
            assert again.read(added) == data

    trio.run(main)
