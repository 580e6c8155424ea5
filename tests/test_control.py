"""The control socket: round trips of every store op, errors that come back
as the same classes and messages, owner-only permissions, limits, a stale
socket ignored, and the CLI going through a running daemon."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cas
from cas import api, control, files
from cas.blocks import Block, MemoryBlockStore
from cas.cid import RAW
from cas.errors import BlockNotFoundError, CasError, InvalidBlockError, InvalidInputError, RepositoryError
from tests.conftest import CAS, pseudo_random, run_cas
from tests.nodeproc import Daemon, Daemons, wait_until
from tests.trees_compare import compare_trees


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


@pytest.fixture
def daemon(daemons: Daemons, tmp_path: Path) -> Daemon:
    return daemons.start(tmp_path / "repo")


# -- pure: framing and error mapping -------------------------------------------------------


def test_errors_map_back_to_their_class_and_message() -> None:
    original = BlockNotFoundError("bafyexample", "the repository")
    again = control.error_from_value(control.error_value(original))
    assert type(again) is BlockNotFoundError and str(again) == str(original)
    again = control.error_from_value(control.error_value(RepositoryError("disk full")))
    assert type(again) is RepositoryError and str(again) == "disk full"


def test_unknown_error_types_become_caserror_and_bugs_become_nodeerror() -> None:
    assert type(control.error_from_value({"type": "Nope", "message": "m"})) is CasError
    bug = control.error_from_value(control.error_value(ZeroDivisionError("x")))
    assert isinstance(bug, control.NodeError) and "ZeroDivisionError" in str(bug)
    assert isinstance(control.error_from_value("junk"), control.ControlProtocolError)


def test_frames_over_the_limit_are_refused_both_ways() -> None:
    with pytest.raises(control.ControlProtocolError):
        control.check_length(struct.pack(">I", control.MAX_FRAME + 1))
    with pytest.raises(control.ControlProtocolError):
        control.encode_frame(b"x" * (control.MAX_FRAME + 1))


def test_remote_store_offers_what_the_repository_and_namespace_use_with_the_same_signatures() -> None:
    import inspect

    from cas.names.namespace import Repo
    from cas.store import LocalStore

    names = {n for n in vars(Repo) if not n.startswith("_") and callable(getattr(Repo, n))}
    names |= {"pin", "unpin", "pins", "stat", "verify", "gc", "close"}
    for name in sorted(names):
        local = inspect.signature(getattr(LocalStore, name))
        remote = inspect.signature(getattr(control.RemoteStore, name))
        assert list(remote.parameters) == list(local.parameters), name


# -- against a running daemon ---------------------------------------------------------------


def test_every_store_op_round_trips(daemon: Daemon) -> None:
    store = control.RemoteStore.connect(daemon.repo)
    assert store is not None
    try:
        block = Block.of(RAW, b"round trip")
        # Puts are batched and pipelined: the daemon's "new or not" is not
        # waited for, so both say True; the block is there all the same.
        assert store.blocks.put(block) is True
        assert store.blocks.put(block) is True
        store.blocks.barrier()
        assert store.blocks.has(block.cid)
        assert store.blocks.get(block.cid) == b"round trip"
        assert block.cid in list(store.blocks.iterate())
        assert store.pin(block.cid) is True
        assert store.pins() == [block.cid]
        st = store.stat()
        assert (st.blocks, st.pinned, st.path) == (1, 1, str(daemon.repo.absolute()))
        assert store.verify().ok
        assert store.unpin(block.cid) is True
        assert store.blocks.delete(block.cid) is True
        assert not store.blocks.has(block.cid)
    finally:
        store.close()


def test_stat_through_the_daemon_reports_the_pack_space(daemon: Daemon) -> None:
    store = control.RemoteStore.connect(daemon.repo)
    assert store is not None
    try:
        large = Block.of(RAW, pseudo_random(200_000, "a large block"))
        store.blocks.put(large)
        store.blocks.barrier()
        st = store.stat()
        assert st.pack_bytes > 200_000 and st.dead_bytes == 0
    finally:
        store.close()


def test_batched_puts_are_seen_by_the_next_request_and_survive_many_batches(daemon: Daemon) -> None:
    store = control.RemoteStore.connect(daemon.repo)
    assert store is not None
    try:
        first = Block.of(RAW, b"first")
        store.blocks.put(first)
        assert store.blocks.has(first.cid)  # the pending batch went out before the question
        big = [Block.of(RAW, bytes([i]) * (512 * 1024)) for i in range(12)]  # several frames' worth
        for block in big:
            store.blocks.put(block)
        store.blocks.barrier()
        assert all(store.blocks.get(b.cid) == b.data for b in big)
        assert store.pin(big[-1].cid) is True  # the connection is still in step
    finally:
        store.close()


def test_reads_from_another_thread_during_batched_puts_keep_the_connection_in_step(daemon: Daemon) -> None:
    """AsyncRepository reads on the trio thread while an add puts from a
    worker, through one client: each read sends the writer's pending batch
    and reads the answers outstanding, and every answer still reaches the
    call it belongs to, every block is stored. (The batch's own lock is
    correct by construction; a lost block needs a thread switch between two
    bytecodes, which no test here can force.)"""
    import threading

    blocks = [Block.of(RAW, i.to_bytes(4, "big") * 4096) for i in range(600)]
    probe = Block.of(RAW, b"probe")
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        store = control.RemoteBlockStore(client)
        store.put(probe)
        store.barrier()
        done = threading.Event()

        def read_meanwhile() -> None:
            while not done.is_set():
                assert store.has(probe.cid)

        reader = threading.Thread(target=read_meanwhile)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # threads interleave between almost any two bytecodes
        reader.start()
        try:
            for block in blocks:
                store.put(block)
            store.barrier()
        finally:
            done.set()
            reader.join(timeout=60)
            sys.setswitchinterval(interval)
        assert all(store.has(block.cid) for block in blocks)


def test_a_reading_store_made_per_call_leaves_the_client_as_it_was(daemon: Daemon) -> None:
    """The published mount makes a RemoteBlockStore per read: only a store
    that batches puts hooks itself onto the client."""
    block = Block.of(RAW, b"read many times")
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        writer = control.RemoteBlockStore(client)
        writer.put(block)
        writer.barrier()
        for _ in range(100):
            assert control.RemoteBlockStore(client).get(block.cid) == block.data
        assert len(client.before_request) == 1


def test_an_error_in_a_request_sent_ahead_is_raised_by_the_next_call(daemon: Daemon) -> None:
    good = Block.of(RAW, b"good")
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        client.send_ahead("put", 4, cid=good.cid, data=b"not the bytes of that CID")
        client.send_ahead("put", 4, cid=good.cid, data=good.data)
        with pytest.raises(CasError, match="does not match"):
            client.call("barrier")
        assert client.call("has", cid=good.cid) is True  # the good one was stored, in order


def test_iterate_streams_more_than_one_batch(daemon: Daemon) -> None:
    with cas.open_repository(daemon.repo) as repo:
        cids = {repo.put_block(i.to_bytes(4, "big")) for i in range(control.MAX_ITERATE_BATCH + 10)}
        assert set(repo.blocks.iterate()) == cids
        assert repo.has_block(next(iter(cids)))  # the connection is still in step


def test_errors_come_back_as_the_same_one_line_errors(daemon: Daemon) -> None:
    missing = Block.of(RAW, b"never stored").cid
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        with pytest.raises(BlockNotFoundError, match=f"block {missing} is not in the repository"):
            client.call("get", cid=missing)
        with pytest.raises(InvalidBlockError):
            client.call("put", cid=missing, data=b"other bytes")
        with pytest.raises(control.UnknownOpError, match="no operation"):
            client.call("format_the_disk")
        with pytest.raises(RepositoryError, match="not in the repository"):
            client.call("pin", cid=missing)
        assert client.call("ping") == "pong"  # still answering on the same connection
    result = run_cas("cat", str(missing), repo=daemon.repo, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"cas cat: error: block {missing} is not in the repository"


def test_a_block_over_one_mebibyte_is_refused(daemon: Daemon) -> None:
    data = b"x" * ((1 << 20) + 1)
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        with pytest.raises(InvalidBlockError, match="limit"):
            client.call("put", cid=Block.of(RAW, b"x").cid, data=data)


def test_an_oversized_frame_closes_that_client_only(daemon: Daemon) -> None:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(str(control.socket_path(daemon.repo)))
    raw.sendall(struct.pack(">I", control.MAX_FRAME + 1))
    answer = raw.recv(65536)
    assert b"over the" in answer
    assert raw.recv(65536) == b""  # closed
    raw.close()
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        assert client.call("ping") == "pong"


def test_the_socket_is_owner_only(daemon: Daemon) -> None:
    mode = control.socket_path(daemon.repo).stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_cli_add_and_cat_go_through_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    data = pseudo_random(700_000, "through the daemon")
    src = tmp_path / "input"
    src.write_bytes(data)
    cid = run_cas("add", "-q", str(src), repo=daemon.repo).stdout.decode().strip()
    assert run_cas("cat", cid, repo=daemon.repo).stdout == data
    stat_out = run_cas("repo", "stat", "--json", repo=daemon.repo).stdout.decode()
    assert '"pinned": 1' in stat_out
    # The daemon holds the lock, so these can only have gone through it.
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        assert client.call("pins") == [cas.parse_cid(cid)]


def _open_fds(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.pid}/fd"))


def _settled_fds(daemon: Daemon, client: control.ControlClient) -> int:
    """The daemon's descriptor count once it has written a block to its pack
    (which stays open), counted while ``client`` is connected: compare with
    a count taken on the same connection."""
    data = b"opens the pack" * 5000  # over SMALL_BLOCK_LIMIT: a pack's, not a row's
    client.call("put", cid=Block.of(RAW, data).cid, data=data)
    return _open_fds(daemon)


def test_a_file_added_through_the_daemon_is_read_by_the_daemon_from_its_descriptor(
        daemon: Daemon, tmp_path: Path) -> None:
    data = pseudo_random(3_000_000, "read by the daemon")
    src = tmp_path / "input"
    src.write_bytes(data)
    with control.ControlClient(control.socket_path(daemon.repo)) as client, open(src, "rb") as f:
        fds_before = _settled_fds(daemon, client)
        f.seek(12345)
        store = control.RemoteBlockStore(client)
        deltas: list[int] = []
        result = api.add_file_to(store, f, deltas.append)
        assert f.tell() == len(data)  # the stream is consumed, as if read here
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == len(data)
        assert result == files.add_bytes(MemoryBlockStore(), data[12345:])
        assert result.new_blocks == result.blocks > 1  # counted by the daemon's store
        assert sum(deltas) == len(data) - 12345 and len(deltas) > 1
        assert client.call("has", cid=result.cid) is True
        wait_until(lambda: _open_fds(daemon) == fds_before, 10, "the daemon to close the passed descriptor")
    assert run_cas("cat", str(result.cid), repo=daemon.repo).stdout == data[12345:]


def test_add_file_refuses_anything_but_one_regular_file_and_closes_what_it_was_passed(
        daemon: Daemon, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        with control.ControlClient(control.socket_path(daemon.repo)) as client:
            fds_before = _settled_fds(daemon, client)
            with pytest.raises(InvalidInputError, match="regular files only"):
                list(client.stream_with_fd("add_file", read_end))
            with pytest.raises(InvalidInputError, match="one file descriptor"):
                list(client.stream("add_file"))
            (tmp_path / "f").write_bytes(b"x")
            with open(tmp_path / "f", "rb") as f:
                with pytest.raises(InvalidInputError, match="offset"):
                    list(client.stream_with_fd("add_file", f.fileno(), offset=-1))
                assert list(client.stream_with_fd("ping", f.fileno())) == []  # passed, unused: closed
            assert client.call("ping") == "pong"
            wait_until(lambda: _open_fds(daemon) == fds_before, 10, "the daemon to close every passed descriptor")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_client_gone_in_the_middle_of_add_file_leaves_no_descriptor_open(daemon: Daemon, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(pseudo_random(48 << 20, "big"))
    with control.ControlClient(control.socket_path(daemon.repo)) as observer:
        fds_before = _settled_fds(daemon, observer)
        adder = control.ControlClient(control.socket_path(daemon.repo))
        with open(src, "rb") as f:
            answers = adder.stream_with_fd("add_file", f.fileno())
            assert "read" in next(answers)  # under way
            answers.close()  # the client goes: its connection closes mid-stream
        adder.close()
        wait_until(lambda: _open_fds(daemon) == fds_before, 10, "the daemon to close the file and the connection")
        assert observer.call("ping") == "pong"


def test_cli_adds_through_the_daemon_give_the_cids_an_offline_add_gives(daemon: Daemon, tmp_path: Path) -> None:
    # Regular files are passed to the daemon (add_file); a pipe still
    # travels as blocks (put_many). Either way: the offline CIDs.
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(pseudo_random(900_000, "a"))
    (tree / "sub" / "b.bin").write_bytes(pseudo_random(5_000, "b"))
    offline = tmp_path / "offline"
    run_cas("init", repo=offline)
    piped = pseudo_random(600_000, "piped")

    def cids(repo: Path) -> list[str]:
        with open(tree / "a.bin", "rb") as stdin:
            stdin.seek(1000)  # standard input that is a file: added from where it stands
            from_file = subprocess.run([CAS, "--repo", str(repo), "add", "-q", "-"], stdin=stdin,
                                       capture_output=True, check=True).stdout.decode().split()
        return [*from_file,
                *run_cas("add", "-q", "-", repo=repo, input=piped).stdout.decode().split(),
                *run_cas("add", "-q", "-r", str(tree), repo=repo).stdout.decode().split()]

    through_daemon = cids(daemon.repo)
    assert through_daemon == cids(offline)
    assert run_cas("cat", through_daemon[0], repo=daemon.repo).stdout == (tree / "a.bin").read_bytes()[1000:]
    assert run_cas("cat", through_daemon[1], repo=daemon.repo).stdout == piped


def _open_fds_but_the_index(daemon: Daemon) -> int:
    """The daemon's descriptors, less its index database's: a worker thread
    of write_file closes its index connection when done, but SQLite may keep
    the file descriptor for the next connection (its locks are per process)."""
    count = 0
    for fd in os.listdir(f"/proc/{daemon.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{daemon.pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        count += not target.endswith(("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"))
    return count


def test_write_file_has_the_daemon_write_a_file_to_the_descriptor_it_was_passed(
        daemon: Daemon, tmp_path: Path) -> None:
    data = pseudo_random(5_000_000, "written by the daemon")  # leaves in a pack, nodes in the database
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        store = control.RemoteBlockStore(client)
        cid = files.add_bytes(store, data).cid
        store.barrier()
        fds_before = _open_fds_but_the_index(daemon)
        out = tmp_path / "out"
        with open(out, "wb") as f:
            f.write(b"head:")
            f.flush()
            assert store.write_file(cid, f.fileno(), 0, None) == len(data)
            assert store.write_file(cid, f.fileno(), 1_234_567, 10) == 10  # at the descriptor's position
        assert out.read_bytes() == b"head:" + data + data[1_234_567:1_234_577]
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb") as reader:
            assert store.write_file(cid, write_end, len(data) - 5, 100) == 5
            os.close(write_end)
            assert reader.read() == data[-5:]
        wait_until(lambda: _open_fds_but_the_index(daemon) == fds_before, 10,
                   "the daemon to close the passed descriptors")


def test_write_file_reports_a_reader_gone_and_bad_arguments_and_closes_what_it_was_passed(
        daemon: Daemon) -> None:
    data = pseudo_random(3_000_000, "nobody reads")
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        store = control.RemoteBlockStore(client)
        cid = files.add_bytes(store, data).cid
        store.barrier()
        fds_before = _open_fds_but_the_index(daemon)
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader has gone before a byte is written
        try:
            with pytest.raises(BrokenPipeError):
                store.write_file(cid, write_end, 0, None)
            with pytest.raises(InvalidInputError, match="byte counts"):
                list(client.stream_with_fd("write_file", write_end, cid=cid, offset=-1))
            with pytest.raises(InvalidInputError, match="one file descriptor"):
                list(client.stream("write_file", cid=cid))
            with pytest.raises(CasError, match="not a file"):
                store.write_file(files.add_bytes(MemoryBlockStore(), b"").cid._replace(codec=0x71), write_end, 0, None)
        finally:
            os.close(write_end)
        assert client.call("ping") == "pong"
        wait_until(lambda: _open_fds_but_the_index(daemon) == fds_before, 10,
                   "the daemon to close every passed descriptor")


def test_a_client_gone_in_the_middle_of_write_file_stops_the_copy_and_leaves_no_descriptor_open(
        daemon: Daemon) -> None:
    data = pseudo_random(16 << 20, "abandoned")
    with control.ControlClient(control.socket_path(daemon.repo)) as observer:
        store = control.RemoteBlockStore(observer)
        cid = files.add_bytes(store, data).cid
        store.barrier()
        fds_before = _open_fds_but_the_index(daemon)
        read_end, write_end = os.pipe()
        client = subprocess.Popen(
            [sys.executable, "-c", "import sys; from cas import control; "
             "c = control.ControlClient(control.socket_path(sys.argv[1])); "
             "list(c.stream_with_fd('write_file', int(sys.argv[2]), cid=sys.argv[3]))",
             str(daemon.repo), str(write_end), str(cid)], pass_fds=[write_end])
        os.close(write_end)  # the client and then the daemon hold it; the daemon fills the pipe
        try:
            with os.fdopen(read_end, "rb") as reader:
                first = reader.read(1 << 16)  # under way
                client.kill()  # the client goes mid-copy
                client.wait(timeout=10)
                rest = reader.read()  # to the end: the daemon stopped and closed its copy
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        copied = first + rest
        assert len(first) == 1 << 16 and len(copied) < len(data) and copied == data[:len(copied)]
        wait_until(lambda: _open_fds_but_the_index(daemon) == fds_before, 10,
                   "the daemon to close the pipe and the connection")
        assert observer.call("ping") == "pong"


def test_cas_cat_through_a_daemon_is_written_by_the_daemon_and_ends_quietly_on_a_closed_pipe(
        daemon: Daemon, tmp_path: Path) -> None:
    data = pseudo_random(4_000_000, "cat through the daemon")
    cid = run_cas("add", "-q", "-", repo=daemon.repo, input=data).stdout.decode().strip()
    assert run_cas("cat", cid, repo=daemon.repo).stdout == data
    assert run_cas("cat", "--offset", "100", "--length", "2000000", cid, repo=daemon.repo).stdout \
        == data[100:2_000_100]
    head = subprocess.run(f"{CAS} --repo {daemon.repo} cat {cid} | head -c 10", shell=True,
                          capture_output=True, timeout=60, executable="/bin/bash")
    assert head.stdout == data[:10] and head.stderr == b""
    with open("/dev/full", "wb") as full:
        failed = subprocess.run([CAS, "--repo", str(daemon.repo), "cat", cid], stdout=full,
                                stderr=subprocess.PIPE, timeout=60)
    assert failed.returncode == 1
    assert failed.stderr == b"cas cat: error: cannot write to standard output: No space left on device\n"
    assert run_cas("cat", cid, repo=daemon.repo).stdout == data  # the daemon is still there


def test_cas_get_through_a_daemon_has_the_daemon_write_the_files(daemon: Daemon, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(pseudo_random(9_000_000, "big"))
    (tree / "sub" / "small.txt").write_bytes(b"small")
    with open(tree / "sparse", "wb") as f:  # a hole between two runs of data, written around by offsets
        f.write(b"head")
        f.seek(5 << 20)
        f.write(b"tail")
    file_cid = run_cas("add", "-q", str(tree / "big.bin"), repo=daemon.repo).stdout.decode().strip()
    os.link(tree / "sub" / "small.txt", tree / "small-too")
    os.setxattr(tree / "sub" / "small.txt", "user.kept", b"through the daemon")
    run_cas("add", "-q", "-r", str(tree), "--to", "/t", repo=daemon.repo)  # the entries' metadata crosses the socket
    run_cas("get", file_cid, "-o", str(tmp_path / "big.out"), repo=daemon.repo)
    assert (tmp_path / "big.out").read_bytes() == (tree / "big.bin").read_bytes()
    run_cas("get", "/t", "-o", str(tmp_path / "tree.out"), repo=daemon.repo)
    assert compare_trees(tree, tmp_path / "tree.out") == []
    assert (tmp_path / "tree.out" / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    assert (tmp_path / "tree.out" / "sub" / "small.txt").read_bytes() == b"small"
    sparse = tmp_path / "tree.out" / "sparse"
    assert sparse.read_bytes() == (tree / "sparse").read_bytes() and sparse.stat().st_blocks * 512 < 3 << 20
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        deltas: list[int] = []
        with open(tmp_path / "again", "wb") as f:
            written = control.RemoteBlockStore(client).write_file(
                cas.parse_cid(file_cid), f.fileno(), 0, None, deltas.append)
        assert written == sum(deltas) == 9_000_000 and len(deltas) >= 2  # every 4 MiB, then the rest


def test_an_older_daemon_without_write_file_is_read_block_by_block(tmp_path: Path) -> None:
    class OlderDaemon:
        """A RemoteBlockStore of a daemon before write_file."""

        def __init__(self) -> None:
            self.memory = MemoryBlockStore()

        def get(self, cid):
            return self.memory.get(cid)

        def write_file(self, cid, fd, offset, length, progress=None):
            return None

    older = OlderDaemon()
    data = pseudo_random(700_000, "old")
    cid = files.add_bytes(older.memory, data).cid
    repo = cas.open_repository(tmp_path / "repo")
    try:
        repo.blocks = older  # type: ignore[assignment]
        with open(tmp_path / "out", "wb") as f:
            assert repo.write_to(cid, f.fileno(), 10, None) == len(data) - 10
        assert (tmp_path / "out").read_bytes() == data[10:]
    finally:
        repo.close()


def test_a_stale_socket_is_ignored_and_replaced(tmp_path: Path, daemons: Daemons) -> None:
    repo = tmp_path / "repo"
    run_cas("init", repo=repo)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(repo / "control.sock"))
    stale.close()  # the file stays, nobody listens: a daemon that died
    cid = run_cas("add", "-q", "-", repo=repo, input=b"offline").stdout.decode().strip()
    assert run_cas("cat", cid, repo=repo).stdout == b"offline"
    daemon = daemons.start(repo)
    assert run_cas("cat", cid, repo=daemon.repo).stdout == b"offline"


def test_sigterm_removes_the_socket_and_releases_the_repository(daemons: Daemons, daemon: Daemon) -> None:
    assert control.socket_path(daemon.repo).exists()
    assert daemons.stop(daemon) == 0
    assert not control.socket_path(daemon.repo).exists()
    cid = run_cas("add", "-q", "-", repo=daemon.repo, input=b"after").stdout.decode().strip()
    assert run_cas("cat", cid, repo=daemon.repo).stdout == b"after"


def test_namespace_commands_and_gc_go_through_the_daemon(daemon: Daemon) -> None:
    run_cas("mkdir", "/docs", repo=daemon.repo)
    cid = run_cas("add", "-q", "-", "--to", "/docs/note", repo=daemon.repo, input=b"a note").stdout.decode().strip()
    assert run_cas("cat", "/docs/note", repo=daemon.repo).stdout == b"a note"
    assert "note" in run_cas("ls", "/docs", repo=daemon.repo).stdout.decode()
    run_cas("gc", repo=daemon.repo)
    assert run_cas("cat", cid, repo=daemon.repo).stdout == b"a note"
    with control.ControlClient(control.socket_path(daemon.repo)) as client:
        assert [r["seq"] for r in client.call("roots")][:1] == [2]


def test_gc_spares_what_a_connected_client_has_put_until_it_disconnects(daemon: Daemon) -> None:
    from tests.nodeproc import wait_until

    block = Block.of(RAW, b"not pinned yet")
    writer = control.ControlClient(control.socket_path(daemon.repo))
    with control.ControlClient(control.socket_path(daemon.repo)) as other:
        try:
            writer.call("put", cid=block.cid, data=block.data)
            writer.call("barrier")
            other.call("gc", history=None)
            assert other.call("has", cid=block.cid)  # an add in progress keeps its blocks
        finally:
            writer.close()

        def collected() -> bool:
            other.call("gc", history=None)
            return not other.call("has", cid=block.cid)

        wait_until(collected, 10, "gc to collect the block once its writer left")


def test_namespace_changes_are_applied_by_the_daemon_not_committed_by_the_client(daemon: Daemon) -> None:
    from cas.names.changes import Link, Mkdir, Move, Remove, SetAttributes, change_to_value
    from cas.names.directory import DirEntry
    from cas.names.namespace import Namespace

    store = control.RemoteStore.connect(daemon.repo)
    assert store is not None
    try:
        def no_commits(*args: object) -> None:
            raise AssertionError("the client committed a root itself")

        store.commit_root = no_commits  # type: ignore[method-assign]
        ns = Namespace(store)  # type: ignore[arg-type]
        cid = files.add_bytes(store.blocks, b"through the daemon").cid
        store.blocks.barrier()
        assert ns.apply(Mkdir("/d")).seq == 1
        entry = DirEntry("f", "file", 18, 0o644, 1, cid=cid)
        assert ns.apply(Link("/d/e/f", entry, parents=True)).seq == 2
        assert ns.apply(Move("/d/e/f", "/g", into_directory=False)).seq == 3
        assert ns.apply(SetAttributes("/g", mode=0o600)).seq == 4
        assert ns.apply(Remove("/d", recursive=True)).seq == 5
        assert [e.name for e in ns.list("/")] == ["g"]
        assert ns.resolve("/g").mode == 0o600 and ns.resolve("/g").cid == cid
        assert [s.seq for s in ns.log()] == [5, 4, 3, 2, 1]
        # The error a change meets on the daemon's root comes back as itself.
        with pytest.raises(cas.errors.PathNotFoundError, match="/nowhere"):
            ns.apply(Remove("/nowhere"))
        # A link to content the daemon does not hold is refused: no root
        # ever refers to a missing block.
        missing = Block.of(RAW, b"never stored").cid
        with pytest.raises(BlockNotFoundError):
            ns.apply(Link("/h", DirEntry("h", "file", 12, 0o644, 1, cid=missing)))
        with control.ControlClient(control.socket_path(daemon.repo)) as client:
            for bad in [{"kind": "mkdir", "path": "/x"}, {"kind": "explode"}, [1, 2],
                        {**change_to_value(Mkdir("/x")), "mode": True},
                        # a link whose entry is not named after its path
                        {**change_to_value(Link("/x", DirEntry("x", "file", 18, 0o644, 1, cid=cid))), "path": "/y"}]:
                with pytest.raises(InvalidInputError):
                    client.call("namespace_change", change=bad)
            assert client.call("ping") == "pong"  # and the daemon serves on
            # Paths are resolved by the daemon in one round trip.
            assert client.call("namespace_resolve", path="/g", at=None)["cid"] == cid
            assert client.call("namespace_resolve", path="/d/e", at=2)["kind"] == "dir"
            with pytest.raises(InvalidInputError):
                client.call("namespace_resolve", path=7, at=None)
            with pytest.raises(cas.errors.PathNotFoundError):
                client.call("namespace_resolve", path="/g", at=99)
        assert ns.current().seq == 5
        old = store.resolve_path("/d/e/f", 2)
        assert old is not None and (old.path, old.name, old.kind, old.cid) == ("/d/e/f", "f", "file", cid)
    finally:
        store.close()


def test_closing_a_client_wakes_a_call_blocked_on_it_in_another_thread(tmp_path: Path) -> None:
    # A node that never answers: the call waits, as a fetch the network is
    # slow to serve does, until the mount ends and closes its connections.
    import threading

    path = tmp_path / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        client = control.ControlClient(path)
        accepted, _ = server.accept()
        failed: list[BaseException] = []

        def call() -> None:
            try:
                client.call("stat")
            except BaseException as exc:  # what the caller sees
                failed.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        wait_until(lambda: accepted.recv(4, socket.MSG_PEEK) != b"", timeout=10, what="the request to arrive")
        client.close()
        caller.join(timeout=10)
        assert not caller.is_alive(), "the blocked call did not wake when its client was closed"
        assert failed and isinstance(failed[0], CasError), failed
        accepted.close()
    finally:
        server.close()
