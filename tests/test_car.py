"""CAR files: the codec (sans-IO), and export / import through the library
and the command line, all or nothing.

The IPFS tools' side of it (ipfs-car, @ipld/car, the UnixFS exporter) is
tests/test_ipfs_tools.py.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cas
from cas.car import CARV2_PRAGMA, END, NEED_DATA, CarBlock, CarHeader, CarReader, encode_header, encode_section
from cas.cid import CID, DAG_PB, RAW, SHA2_256
from cas.errors import InvalidBlockError, InvalidInputError
from tests.conftest import pseudo_random, run_cas


def _events(data: bytes, step: int) -> list[object]:
    reader = CarReader()
    out: list[object] = []
    pos = 0
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.receive_data(data[pos : pos + step])
            pos += step
        elif event is END:
            return out
        else:
            out.append(event)


def _car(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    return encode_header(roots) + b"".join(encode_section(cid, data) for cid, data in blocks)


def _carv2(v1: bytes, pad: int = 5) -> bytes:
    pragma = bytes.fromhex("0aa16776657273696f6e02")
    offset = len(pragma) + 40 + pad
    header = struct.pack("<16sQQQ", bytes(16), offset, len(v1), 0)
    return pragma + header + b"\0" * pad + v1 + b"index bytes, skipped"


BLOCKS = [(CID.for_data(RAW, data, hash_code), data)
          for data, hash_code in ((b"one", SHA2_256), (b"two" * 1000, 0x1E), (b"", SHA2_256))]
V0 = CID.v0(CID.for_data(DAG_PB, b"\x0a\x02\x08\x01", SHA2_256).digest)


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_the_reader_gives_the_header_then_every_section_however_the_bytes_come(step: int) -> None:
    data = _car([BLOCKS[0][0], V0], [*BLOCKS, (V0, b"\x0a\x02\x08\x01")])
    events = _events(data, step)
    assert events[0] == CarHeader((BLOCKS[0][0], V0), 1)
    assert str(events[0].roots[1]) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # type: ignore[union-attr]
    assert [(b.cid, b.data) for b in events[1:]] == [*BLOCKS, (V0, b"\x0a\x02\x08\x01")]  # type: ignore[union-attr]
    assert all(isinstance(b, CarBlock) for b in events[1:])


def test_a_carv2_is_read_through_to_its_inner_carv1() -> None:
    events = _events(_carv2(_car([BLOCKS[1][0]], BLOCKS)), 3)
    assert events[0] == CarHeader((BLOCKS[1][0],), 2)
    assert [(b.cid, b.data) for b in events[1:]] == BLOCKS  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (_car([], BLOCKS)[:-3], "truncated"),
        (_car([], BLOCKS)[:30], "truncated"),
        (_carv2(_car([], BLOCKS))[:80], "truncated"),
        (bytes.fromhex("04a16162f5"), "version None"),  # {"b": true}: not a CAR header
        (encode_header([])[:-1] + b"\x03", "unsupported CAR version 3"),
        (b"\x12\xa2\x65roots\x81\x01\x67version\x01", "roots are not a list of CIDs"),
        (encode_header([]) + b"\x05\x01\x55\x1e\x20\x00", "usable CID"),
        (encode_header([]) + b"\xff\xff\xff\x7f", "over the"),
    ],
)
def test_a_malformed_car_is_refused_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _events(data, 4)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_arbitrary_bytes_never_crash_the_reader(data: bytes, step: int) -> None:
    for candidate in (data, encode_header([BLOCKS[0][0]]) + data, CARV2_PRAGMA + data):
        try:
            _events(candidate, step)
        except InvalidInputError:
            pass


@given(st.integers(0, 3200), st.integers(1, 16))
def test_a_valid_car_cut_anywhere_but_between_sections_is_refused_as_truncated(cut: int, step: int) -> None:
    # A cut between two sections leaves a valid CAR of fewer blocks, which
    # only the import's completeness check can refuse (tested below).
    header = encode_header([BLOCKS[0][0]])
    sections = [encode_section(cid, data) for cid, data in BLOCKS]
    boundaries = {len(header) + sum(len(x) for x in sections[:i]) for i in range(len(sections) + 1)}
    data = header + b"".join(sections)
    cut = min(cut, len(data))
    if cut in boundaries:
        assert [(b.cid, b.data) for b in _events(data[:cut], step)[1:]] == BLOCKS[: sorted(boundaries).index(cut)]  # type: ignore[union-attr]
    else:
        with pytest.raises(InvalidInputError, match="truncated"):
            _events(data[:cut], step)


@pytest.fixture
def repo(tmp_path: Path):
    with cas.open_repository(tmp_path / "repo") as r:
        yield r


def _stat(path: Path) -> tuple[int, list[CID]]:
    with cas.open_repository(path) as r:
        return r.repo_stat().blocks, r.pins()


def test_export_then_import_moves_a_tree_whole_and_pins_its_root(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    data = pseudo_random(2_500_000, seed="car")
    (tree / "big").write_bytes(data)
    (tree / "sub" / "small").write_bytes(b"small\n")
    with cas.open_repository(tmp_path / "a") as a:
        root = a.add_path(tree, recursive=True).cid
        done = a.export_car(root, tmp_path / "t.car", native=True)  # the DAG-CBOR tree, for another cas
        stream = io.BytesIO()
        assert a.export_car(f"{root}/big", stream).roots == (a.resolve(f"{root}/big"),)
    assert done.roots == (root,) and done.bytes == (tmp_path / "t.car").stat().st_size
    with cas.open_repository(tmp_path / "b") as b:
        got = b.import_car(tmp_path / "t.car")
        assert (got.roots, got.blocks, got.new_blocks, got.version) == ((root,), done.blocks, done.blocks, 1)
        assert b.read(f"{root}/big") == data and b.pins() == [root]
        assert b.import_car(tmp_path / "t.car").new_blocks == 0  # again: nothing new


def test_a_directory_exports_as_its_unixfs_view_by_default_the_same_view_every_time(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"content\n")
    (tree / "g").write_bytes(pseudo_random(300_000, seed="view"))
    with cas.open_repository(tmp_path / "a") as a:
        root = a.add_path(tree, recursive=True).cid
        view = a.export_car(root, tmp_path / "v.car").roots[0]
        assert view.codec == DAG_PB and view != root
        assert a.export_car(root, tmp_path / "again.car").roots == (view,)
        assert (tmp_path / "v.car").read_bytes() == (tmp_path / "again.car").read_bytes()
        file_cid = a.resolve(f"{root}/g")
    with cas.open_repository(tmp_path / "b") as b:
        b.import_car(tmp_path / "v.car")
        assert [(e.name, e.kind) for e in b.list_dir(view)] == [("g", "file"), ("sub", "dir")]
        assert b.resolve(f"{view}/g") == file_cid  # the file DAG is the namespace's own
        assert b.read(f"{view}/sub/f") == b"content\n"


def test_a_car_of_ipfs_blocks_imports_under_its_own_cids(tmp_path: Path, repo: cas.Repository) -> None:
    leaf = CID.for_data(RAW, b"leaf", SHA2_256)
    (tmp_path / "x.car").write_bytes(_carv2(_car([leaf], [(leaf, b"leaf")])))
    got = repo.import_car(tmp_path / "x.car")
    assert got.roots == (leaf,) and got.version == 2 and repo.read(str(leaf)) == b"leaf"


def _refused(tmp_path: Path, car: bytes, error: type[Exception], message: str) -> None:
    path = tmp_path / "bad.car"
    path.write_bytes(car)
    with cas.open_repository(tmp_path / "victim") as victim:
        with pytest.raises(error, match=message):
            victim.import_car(path)
    assert _stat(tmp_path / "victim") == (0, [])


def test_a_block_that_does_not_match_its_cid_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    good = [(CID.for_data(RAW, bytes([i]) * 100), bytes([i]) * 100) for i in range(5)]
    bad = [*good[:3], (good[3][0], b"forged" * 10), good[4]]
    _refused(tmp_path, _car([good[0][0]], bad), InvalidBlockError, f"{good[3][0]}.*does not match its blake3 hash")


def test_a_car_lacking_a_block_its_root_reaches_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    with cas.open_repository(tmp_path / "a") as a:
        root = a.add_bytes(pseudo_random(1_500_000, seed="gap"))
        a.export_car(root, tmp_path / "whole.car")
        blocks = [(e.cid, e.data) for e in _events((tmp_path / "whole.car").read_bytes(), 1 << 20)[1:]]  # type: ignore[union-attr]
    _refused(tmp_path, _car([root], blocks[:-1]), InvalidInputError, "lacks 1 block")


def test_a_truncated_car_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    blocks = [(CID.for_data(RAW, bytes([i]) * 1000), bytes([i]) * 1000) for i in range(5)]
    _refused(tmp_path, _car([blocks[0][0]], blocks)[:-10], InvalidInputError, "truncated")


class _ChangesOnRewind(io.BytesIO):
    """A CAR that another writer replaces between the import's two passes."""

    def __init__(self, first: bytes, second: bytes) -> None:
        super().__init__(first)
        self.second = second

    def seek(self, pos: int, whence: int = 0) -> int:
        if pos == 0 and self.tell() > 0 and self.second:
            self.__init__(self.second, b"")  # type: ignore[misc]  # the file's new content
        return super().seek(pos, whence)


def test_a_car_changed_between_the_two_passes_stores_no_changed_block(tmp_path: Path, repo: cas.Repository) -> None:
    blocks = [(CID.for_data(RAW, bytes([i]) * 1000, SHA2_256), bytes([i]) * 1000) for i in range(3)]
    forged = [blocks[0], (blocks[1][0], b"forged" * 100), blocks[2]]
    with pytest.raises(InvalidInputError, match="changed while it was imported"):
        repo.import_car(_ChangesOnRewind(_car([blocks[0][0]], blocks), _car([blocks[0][0]], forged)))
    assert not repo.has_block(blocks[1][0]) and repo.pins() == []


def test_the_command_line_exports_to_stdout_and_imports_from_a_pipe(tmp_path: Path) -> None:
    data = pseudo_random(600_000, seed="pipe")
    (tmp_path / "f").write_bytes(data)
    cid = run_cas("add", "-q", str(tmp_path / "f"), repo=tmp_path / "a").stdout.decode().strip()
    car = run_cas("car", "export", cid, repo=tmp_path / "a").stdout
    imported = run_cas("car", "import", "-", repo=tmp_path / "b", input=car)
    assert imported.stdout.decode().split() == [cid]
    assert "pinned" in imported.stderr.decode()
    assert run_cas("cat", cid, repo=tmp_path / "b").stdout == data
    refused = run_cas("car", "import", "-", repo=tmp_path / "c", input=car[:-1], check=False)
    assert refused.returncode == 1 and "truncated" in refused.stderr.decode()


def test_an_ipfs_dag_imported_through_one_daemon_is_fetched_and_verified_by_another(tmp_path: Path) -> None:
    from cas.dagpb import TYPE_FILE, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
    from tests.nodeproc import Daemons, has, start_network

    leaves = [pseudo_random(200_000, seed=f"sha leaf {i}") for i in range(3)]
    leaf_cids = [CID.for_data(RAW, leaf, SHA2_256) for leaf in leaves]
    node = encode_node(PBNode(tuple(PBLink(cid, "", len(leaf)) for cid, leaf in zip(leaf_cids, leaves, strict=True)),
                              encode_unixfs(UnixFSData(TYPE_FILE, filesize=600_000, blocksizes=(200_000,) * 3))))
    root = CID.v0(CID.for_data(DAG_PB, node, SHA2_256).digest)  # kubo's classic form: Qm…
    (tmp_path / "ipfs.car").write_bytes(_car([root], [(root, node), *zip(leaf_cids, leaves, strict=True)]))
    # Imported offline, so only a's repository holds it.
    imported = run_cas("car", "import", str(tmp_path / "ipfs.car"), repo=tmp_path / "n0")
    assert imported.stdout.decode().split() == [str(root)]
    with Daemons() as daemons:
        a, b = start_network(daemons, tmp_path, 2)
        assert not any(has(b, cid) for cid in [root, *leaf_cids])
        # Every block comes from a, found by its sha2-256 CID's DHT key and
        # checked against its own hash on arrival.
        assert run_cas("cat", str(root), repo=b.repo).stdout == b"".join(leaves)
        # And a daemon imports too (the import goes through it, the root is pinned there).
        run_cas("car", "import", str(tmp_path / "ipfs.car"), repo=b.repo)
        # (pins are kept by the CIDv1 binary form, one key for both forms, so
        # they list as the v1 of the Qm… root)
        assert run_cas("pin", "ls", repo=b.repo).stdout.decode().split() == [str(root.to_v1())]
