"""The cas command, driven as a user drives it: a subprocess per command."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cas import files
from cas.cid import parse_cid
from cas.store import LocalStore
from tests.conftest import pseudo_random, run_cas

MiB = 1 << 20


def add(repo: Path, *args: str, input: bytes | None = None) -> str:
    return run_cas("add", *args, repo=repo, input=input).stdout.decode().strip()


@pytest.mark.parametrize(
    "size",
    [0, 1, 64 * 1024 - 1, 64 * 1024, 256 * 1024, MiB, MiB + 1, 3 * MiB + 12345],
    ids=lambda n: f"{n}B",
)
def test_files_round_trip_byte_for_byte(repo, tmp_path, size):
    data = pseudo_random(size, seed=f"round trip {size}")
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    cid = add(repo, str(src))
    assert run_cas("cat", cid, repo=repo).stdout == data
    run_cas("get", cid, "-o", str(tmp_path / "out.bin"), repo=repo)
    assert (tmp_path / "out.bin").read_bytes() == data


def test_the_same_bytes_give_the_same_cid_in_two_repositories(tmp_path):
    data = pseudo_random(2 * MiB + 7, seed="determinism")
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    a = add(tmp_path / "a", str(src))
    b = add(tmp_path / "b", "-", input=data)
    assert a == b
    assert a.startswith("bafyb4i")  # a multi-block file is a dag-pb root


def test_add_prints_one_cid_per_input_in_order(repo, tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(f"file {i}".encode())
        paths.append(str(p))
    cids = add(repo, *paths).splitlines()
    assert len(cids) == 3
    for p, cid in zip(paths, cids):
        assert run_cas("cat", cid, repo=repo).stdout == Path(p).read_bytes()


def test_add_from_standard_input(repo):
    cid = add(repo, "-", input=b"from a pipe\n")
    assert run_cas("cat", cid, repo=repo).stdout == b"from a pipe\n"


def test_byte_ranges_with_offset_and_length(repo, tmp_path):
    data = pseudo_random(3 * MiB, seed="ranges")
    (tmp_path / "in").write_bytes(data)
    cid = add(repo, str(tmp_path / "in"))
    for offset, length in [(0, 10), (MiB - 5, 10), (3 * MiB - 1, 1), (2 * MiB, MiB + 100), (5 * MiB, 4)]:
        out = run_cas("cat", cid, "--offset", str(offset), "--length", str(length), repo=repo).stdout
        assert out == data[offset : offset + length]
    assert run_cas("cat", cid, "--offset", str(MiB), repo=repo).stdout == data[MiB:]


def make_tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(pseudo_random(700_000, seed="tree"))
    (root / "sub" / "deeper" / "c").write_bytes(b"")
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o755)
    os.chmod(root / "sub" / "deeper", 0o750)
    (root / "link").symlink_to("a.txt")
    (root / "dangling").symlink_to("nowhere/at/all")
    os.utime(root / "a.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def tree_listing(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def test_directory_trees_round_trip_with_modes_times_and_symlinks(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    cid = add(repo, "-r", str(src))
    assert cid.startswith("bafyr4i")  # a directory is a dag-cbor node
    run_cas("get", cid, "-o", str(tmp_path / "copy"), repo=repo)
    assert tree_listing(tmp_path / "copy") == tree_listing(src)
    # the same tree added elsewhere gets the same CID
    assert add(tmp_path / "other", "-r", str(src)) == cid


def test_adding_a_directory_needs_r(repo, tmp_path):
    result = run_cas("add", str(tmp_path), repo=repo, check=False)
    assert result.returncode == 1
    assert b"is a directory; use -r" in result.stderr


def test_json_output_describes_each_input(repo, tmp_path):
    (tmp_path / "f").write_bytes(b"12345")
    doc = json.loads(run_cas("add", "--json", str(tmp_path / "f"), repo=repo).stdout)
    [item] = doc["added"]
    assert item["size"] == 5 and item["kind"] == "file" and item["path"] == str(tmp_path / "f")
    stat_doc = json.loads(run_cas("repo", "stat", "--json", repo=repo).stdout)
    assert stat_doc["blocks"] == 1 and stat_doc["bytes"] == 5 and stat_doc["pinned"] == 1


def test_global_options_work_before_and_after_the_command(tmp_path):
    repo = tmp_path / "r"
    run_cas("--repo", str(repo), "--quiet", "add", "-", input=b"x")
    out = run_cas("repo", "stat", "--json", "--repo", str(repo)).stdout
    assert json.loads(out)["blocks"] == 1


def test_cas_home_selects_the_repository(tmp_path):
    home = tmp_path / "home"
    cid = run_cas("add", "-", input=b"home", env={"CAS_HOME": str(home)}).stdout.decode().strip()
    assert (home / "config.json").exists()
    assert run_cas("cat", cid, env={"CAS_HOME": str(home)}).stdout == b"home"


def test_no_progress_bar_or_notes_when_piped_or_quiet(repo, tmp_path):
    (tmp_path / "f").write_bytes(pseudo_random(5 * MiB))
    result = run_cas("add", str(tmp_path / "f"), repo=repo)
    assert result.stderr == b""
    assert result.stdout.decode().count("\n") == 1


def test_init_creates_and_reports_an_existing_repository(tmp_path):
    first = run_cas("init", repo=tmp_path / "r").stdout.decode()
    again = run_cas("init", repo=tmp_path / "r").stdout.decode()
    assert "initialised" in first and "already" in again


def test_verify_passes_on_a_healthy_repository(repo, tmp_path):
    (tmp_path / "f").write_bytes(pseudo_random(2 * MiB))
    add(repo, str(tmp_path / "f"))
    result = run_cas("repo", "verify", repo=repo)
    assert b"ok:" in result.stderr


# -- bad input: one clear line on stderr, exit 1, nothing lost ----------------


def error_of(*args: str, repo: Path, input: bytes | None = None, partial_output: bool = False) -> str:
    result = run_cas(*args, repo=repo, check=False, input=input)
    assert result.returncode == 1, result
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    if not partial_output:  # a streaming cat may have written bytes before the failure
        assert result.stdout == b""
    return lines[0]


def test_missing_path(repo, tmp_path):
    assert "no such file or directory" in error_of("add", str(tmp_path / "nope"), repo=repo)


@pytest.fixture
def unprivileged(tmp_path_factory):
    """Run cas as a user that file permissions apply to (root reads anything).

    Yields (run, workdir): ``run(*args)`` runs cas as that user with a
    repository in ``workdir``, which the user may write.
    """
    import shutil
    import subprocess
    import tempfile

    from tests.conftest import CAS

    work = Path(tempfile.mkdtemp(prefix="cas-unpriv-", dir="/tmp"))
    os.chmod(work, 0o777)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to test permissions as root")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*prefix, CAS, "--repo", str(work / "repo"), *args],
            capture_output=True, timeout=120, env={"PATH": os.environ["PATH"]},
        )

    yield run, work
    shutil.rmtree(work, ignore_errors=True)


def test_unreadable_path(unprivileged):
    run, work = unprivileged
    secret = work / "secret"
    secret.write_text("x")
    secret.chmod(0)
    result = run("add", str(secret))
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"cas add: error: cannot read {secret}: Permission denied"


def test_unreadable_file_inside_a_tree_names_it(unprivileged):
    run, work = unprivileged
    src = work / "src"
    (src / "ok").mkdir(parents=True)
    (src / "ok" / "fine").write_text("fine")
    (src / "locked").write_text("x")
    for p in (src, src / "ok"):
        p.chmod(0o755)
    (src / "ok" / "fine").chmod(0o644)
    (src / "locked").chmod(0)
    result = run("add", "-r", str(src))
    assert result.returncode == 1
    assert f"cannot read {src / 'locked'}: Permission denied" in result.stderr.decode()


def test_special_files_are_refused_as_inputs(repo, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in error_of("add", str(fifo), repo=repo)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("hello", "is not a CID"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdl", "not a CIDv0"),
        ("bafkrgqaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "unsupported hash"),  # sha2-512
    ],
)
def test_strings_that_are_not_usable_cids(repo, text, expected):
    assert expected in error_of("cat", text, repo=repo)


def test_a_cid_that_is_not_in_the_repository(repo):
    missing = "bafkr4ihkr4ld3m4gqkjf4reryxsy2s5tkbxprqkow6fin2iiyvreuzzab4"
    assert f"block {missing} is not in the repository" in error_of("cat", missing, repo=repo)


def test_a_changed_block_fails_its_read_by_cid_and_verify_lists_it(repo, tmp_path):
    data = pseudo_random(3 * MiB, seed="tamper")
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "g").write_bytes(b"innocent bystander")
    cid = add(repo, str(tmp_path / "f"))
    other = add(repo, str(tmp_path / "g"))
    with LocalStore.open(repo) as store:  # where a leaf in the middle lies, in the file and on disk
        spans = list(files.file_leaves(store.blocks, parse_cid(cid)))
        leaf, offset = spans[len(spans) // 2].cid, spans[len(spans) // 2].offset
        where = store.blocks.locate(leaf)
    with open(where.path, "r+b") as f:  # bit rot: one byte of it flipped
        f.seek(where.start + 100)
        byte = f.read(1)[0]
        f.seek(where.start + 100)
        f.write(bytes([byte ^ 1]))
    message = error_of("cat", cid, repo=repo, partial_output=True)
    assert str(leaf) in message and "corrupt" in message
    # Everything before the leaf was written, nothing of it or after it
    # (the leaves after it were being read ahead).
    assert run_cas("cat", cid, repo=repo, check=False).stdout == data[:offset]
    verify = run_cas("repo", "verify", repo=repo, check=False)
    assert verify.returncode == 1
    assert verify.stdout.decode().splitlines() == [f"{leaf}: corrupt: content does not match its hash"]
    assert run_cas("cat", other, repo=repo).stdout == b"innocent bystander"


def test_a_repository_owned_by_another_process(repo, tmp_path):
    import subprocess
    import sys

    run_cas("init", repo=repo)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cas.store import LocalStore; "
         f"s = LocalStore.open({str(repo)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        message = error_of("--wait", "0", "add", "-", repo=repo, input=b"x")
        assert f"is in use by process {holder.pid}" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert run_cas("add", "-", repo=repo, input=b"x").returncode == 0


def test_get_refuses_to_overwrite_without_force(repo, tmp_path):
    cid = add(repo, "-", input=b"new")
    (tmp_path / "out").write_bytes(b"precious")
    assert "already exists" in error_of("get", cid, "-o", str(tmp_path / "out"), repo=repo)
    assert (tmp_path / "out").read_bytes() == b"precious"
    run_cas("get", cid, "-o", str(tmp_path / "out"), "--force", repo=repo)
    assert (tmp_path / "out").read_bytes() == b"new"


def test_cat_of_a_directory_says_it_is_not_a_file(repo, tmp_path):
    (tmp_path / "d").mkdir()
    cid = add(repo, "-r", str(tmp_path / "d"))
    assert "not a file" in error_of("cat", cid, repo=repo)


def test_cat_to_a_full_disk_or_a_closed_pipe_ends_as_cat_does(repo):
    import subprocess

    from tests.conftest import CAS

    data = pseudo_random(3 * MiB, "out")
    cid = add(repo, "-", input=data)
    with open("/dev/full", "wb") as full:
        failed = subprocess.run([CAS, "--repo", str(repo), "cat", cid], stdout=full, stderr=subprocess.PIPE)
    assert failed.returncode == 1
    assert failed.stderr == b"cas cat: error: cannot write to standard output: No space left on device\n"
    head = subprocess.run(f"{CAS} --repo {repo} cat {cid} | head -c 10; echo \" ${{PIPESTATUS[0]}}\"",
                          shell=True, capture_output=True, executable="/bin/bash")
    assert head.stdout == data[:10] + b" 141\n" and head.stderr == b""  # killed by SIGPIPE, quietly


def test_bad_usage_exits_2(repo):
    assert run_cas("cat", repo=repo, check=False).returncode == 2
    assert run_cas("frobnicate", repo=repo, check=False).returncode == 2
    assert run_cas("cat", "x", "--offset", "-3", repo=repo, check=False).returncode == 2


def commands_of(parser) -> set[str]:
    import argparse

    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_the_command_table_names_every_command_and_the_module_that_builds_it():
    from cas.cli import main

    assert commands_of(main.build_parser()) == set(main.COMMANDS)
    for command in main.COMMANDS:
        built = commands_of(main.build_parser(command))
        assert command in built and built < set(main.COMMANDS)


def test_the_command_word_is_found_past_the_main_options_as_argparse_reads_them():
    from cas.cli.main import command_named

    assert command_named(["cat", "X"]) == "cat"
    assert command_named(["--repo", "cat", "ls"]) == "ls"  # a repository named "cat"
    assert command_named(["--rep", "cat", "-q", "--json", "get", "X"]) == "get"  # abbreviated
    assert command_named(["--repo=cat", "ls"]) == "ls"
    assert command_named(["-q", "--json"]) is None
    assert command_named(["--", "cat"]) is None


def test_abbreviated_options_before_the_command_still_work(repo):
    cid = add(repo, "-", input=b"abbreviated")
    result = run_cas("--rep", str(repo), "--qu", "cat", cid)
    assert result.stdout == b"abbreviated"
    assert b"usage: cas" in run_cas("--help").stdout and b"umount" in run_cas("--help").stdout


def test_cat_of_a_cid_loads_no_namespace_tree_or_daemon_code(repo):
    # What keeps `cas cat CID` starting fast (bench/README.md): it must not
    # pull in the modules only paths, trees and daemons need.
    import subprocess
    import sys

    cid = add(repo, "-", input=b"light")
    script = (
        "import sys; from cas.cli.main import main; "
        f"main(['--repo', {str(repo)!r}, 'cat', {cid!r}]); sys.stdout.flush(); "
        "print('\\n' + ' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True).stdout
    content, modules = out.split(b"\n", 1)
    assert content == b"light"
    loaded = set(modules.decode().split())
    heavy = {"cas.names.namespace", "cas.names.dirtree", "cas.trees", "cas.control", "platformdirs",
             "cas.cli.names_cmds", "cas.cli.node_cmds", "cas.cli.mount_cmds", "trio",
             "shutil", "bz2", "lzma", "ctypes",  # argparse's terminal size; the allocator's mallopt
             "cbor2", "cas.dagcbor",  # only verify and gc read links
             "dataclasses", "cas.keys", "cas.store._reports"}  # records on this path are named tuples
    assert not heavy & loaded


def test_help_is_wrapped_to_the_terminal_width_given_in_columns():
    narrow = run_cas("cat", "--help", env={"COLUMNS": "40"}).stdout.decode()
    wide = run_cas("cat", "--help", env={"COLUMNS": "200"}).stdout.decode()
    assert max(map(len, narrow.splitlines())) <= 40 < max(map(len, wide.splitlines()))


def test_a_repository_path_that_is_a_non_empty_directory_is_left_alone(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert "not a cas repository" in error_of("add", "-", repo=tmp_path / "mine", input=b"x")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_a_progress_bar_is_drawn_on_a_terminal_for_long_work(repo, tmp_path):
    import fcntl
    import pty
    import signal
    import struct
    import subprocess
    import termios
    import time

    from tests.conftest import CAS, pseudo_random_stream

    big = tmp_path / "big"
    with open(big, "wb") as f:
        for piece in pseudo_random_stream(400 * MiB, seed="progress"):
            f.write(piece)
    controller, terminal = pty.openpty()
    # A terminal 80 columns wide (a fresh pty has none, and no bar fits).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [CAS, "--repo", str(repo), "add", str(big)], stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)
    # Make the work long for sure: 400 MiB can take under the bar's 0.5 s
    # delay now that an add fsyncs once. Once the add is appending (its bar
    # exists), hold it stopped for longer than the delay.
    packs, deadline = repo / "packs", time.monotonic() + 60
    while proc.poll() is None and sum(p.stat().st_size for p in packs.glob("*.pack")) < 64 * MiB:
        assert time.monotonic() < deadline, "cas add never started appending"
        time.sleep(0.001)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.6)  # the work taking long, not a synchronisation
    proc.send_signal(signal.SIGCONT)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.decode().startswith("bafyb4i")
    assert b"adding:" in drawn and b"/400M" in drawn, drawn[-500:]  # "adding:  69%|###  | 276M/400M"


def test_version_is_the_package_version():
    import cas

    result = run_cas("--version")
    assert result.stdout.decode().strip() == f"cas {cas.__version__}"
    from importlib.metadata import version

    assert version("casnet") == cas.__version__


def test_with_json_an_error_is_a_json_document_on_stdout_too(repo, tmp_path):
    missing = tmp_path / "missing.txt"
    result = run_cas("add", "--json", str(missing), repo=repo, check=False)
    assert result.returncode == 1
    line = result.stderr.decode().strip()
    assert line.startswith("cas add: error: ") and str(missing) in line
    doc = json.loads(result.stdout)
    assert doc == {"error": {"command": "add", "type": "InvalidInputError",
                             "message": line.removeprefix("cas add: error: ")}}
    # Without --json, stdout stays empty.
    assert run_cas("add", str(missing), repo=repo, check=False).stdout == b""


@pytest.mark.parametrize("argv", [["--json", "cat"], ["cat", "--json"], ["--json", "no-such-command"]])
def test_with_json_bad_usage_is_a_json_document_and_exit_2(repo, argv):
    result = run_cas(*argv, repo=repo, check=False)
    assert result.returncode == 2
    assert b"usage: cas" in result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "usage" and error["message"] and error["message"] in result.stderr.decode()


def test_every_json_document_is_laid_out_the_same_way(repo, tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_bytes(name.encode())
        run_cas("add", str(tmp_path / name), "--to", f"/{name}", repo=repo)
    for argv in (["ls", "--json", "/"], ["ls", "--json", "/", "--long"], ["repo", "stat", "--json"],
                 ["log", "--json"]):
        out = run_cas(*argv, repo=repo).stdout.decode()
        assert out == json.dumps(json.loads(out), indent=2, sort_keys=True) + "\n", argv
    empty = run_cas("mkdir", "/empty", repo=repo)
    assert empty.returncode == 0
    assert run_cas("ls", "--json", "/empty", repo=repo).stdout == b"[]\n"


def test_get_into_an_existing_directory_places_it_inside_as_cp_does(repo, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"file")
    cid = add(repo, str(tmp_path / "f.txt"), "--to", "/docs/f.txt")
    into = tmp_path / "into"
    into.mkdir()
    run_cas("get", "/docs/f.txt", "-o", str(into), repo=repo)
    run_cas("get", "/docs", "-o", f"{into}/", repo=repo)
    run_cas("get", cid, "-o", str(into), repo=repo)
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*")) == [cid, "docs", "docs/f.txt", "f.txt"]
    assert (into / "f.txt").read_bytes() == (into / "docs" / "f.txt").read_bytes() == (into / cid).read_bytes()
    # Again: the file inside exists now, and is not replaced without --force.
    again = run_cas("get", "/docs/f.txt", "-o", str(into), repo=repo, check=False)
    assert again.returncode == 1 and f"{into / 'f.txt'} already exists" in again.stderr.decode()
    # A trailing '/' names a directory: made if new (its parent must exist),
    # and what is written goes inside, as rsync does.
    run_cas("get", "/docs/f.txt", "-o", f"{tmp_path / 'new'}/", repo=repo)
    run_cas("get", "/docs", "-o", f"{tmp_path / 'restored'}/", repo=repo)
    assert (tmp_path / "new" / "f.txt").read_bytes() == b"file"
    assert (tmp_path / "restored" / "docs" / "f.txt").read_bytes() == b"file"
    orphan = run_cas("get", "/docs/f.txt", "-o", f"{tmp_path / 'no' / 'such'}/", repo=repo, check=False)
    assert orphan.returncode == 1 and f"{tmp_path / 'no'} does not exist" in orphan.stderr.decode()
    # A get that fails leaves no directory behind.
    failed = run_cas("get", "/docs/none.txt", "-o", f"{tmp_path / 'empty'}/", repo=repo, check=False)
    assert failed.returncode == 1 and not (tmp_path / "empty").exists()


def test_cat_of_a_directory_says_so_in_the_users_terms(repo, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"file")
    add(repo, str(tmp_path / "f.txt"), "--to", "/docs/f.txt")
    for path in ("/", "/docs"):
        result = run_cas("cat", path, repo=repo, check=False)
        assert result.returncode == 1 and result.stdout == b""
        assert result.stderr.decode().strip() == f"cas cat: error: {path} is a directory, not a file; list it with 'cas ls {path}'"


def test_every_command_and_argument_is_described_in_help():
    import argparse

    from cas.cli.main import build_parser

    def undescribed(parser: argparse.ArgumentParser, name: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                lines = {choice.dest: choice.help for choice in action._choices_actions}
                for command, subparser in action.choices.items():
                    if not lines.get(command):
                        missing.append(f"{name} {command}: no line in the list of commands")
                    if not subparser.description:
                        missing.append(f"{name} {command}: no description")
                    missing += undescribed(subparser, f"{name} {command}")
            elif not action.help:
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest} has no help")
        return missing

    assert undescribed(build_parser(), "cas") == []
    # And argparse prints them: a description is in the command's own --help.
    assert "Rename or move a namespace entry" in " ".join(run_cas("mv", "--help").stdout.decode().split())


def complete(line: str, repo: Path) -> list[str]:
    """What the shell offers after ``line`` (argcomplete's protocol, as
    the code from 'cas completion bash' drives it)."""
    import subprocess

    from tests.conftest import CAS

    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE": "1",
           "_ARGCOMPLETE_IFS": "\n", "CAS_HOME": str(repo)}
    result = subprocess.run(["bash", "-c", f"{CAS} 8>&1 9>/dev/null"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return sorted(word.strip() for word in result.stdout.split("\n") if word.strip())


def test_the_shell_completes_commands_options_paths_and_pinned_cids(repo, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"file")
    add(repo, str(tmp_path / "f.txt"), "--to", "/docs/f.txt")
    run_cas("mkdir", "/data", repo=repo)
    pinned = add(repo, str(tmp_path / "f.txt"))
    assert complete("cas mo", repo) == ["mount"]
    assert complete("cas ls --l", repo) == ["--long"]
    assert complete("cas ls /", repo) == ["/data/", "/docs/"]
    assert complete("cas cat /docs/", repo) == ["/docs/f.txt"]
    assert complete("cas cat /do", repo) == ["/docs/"]
    assert complete(f"cas unpin {pinned[:6]}", repo) == [pinned]
    assert complete("cas cat ", repo) == sorted(["/", pinned])
    # No repository there: nothing offered, nothing created, no error in the prompt.
    assert complete(f"cas --repo {tmp_path / 'none'} ls /", repo) == []
    assert not (tmp_path / "none").exists()
    for shell in ("bash", "zsh"):
        code = run_cas("completion", shell).stdout.decode()
        assert "_ARGCOMPLETE" in code and "cas" in code
