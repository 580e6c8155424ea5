"""The README's examples, run line by line as a user types them.

``README.md`` is split into its sections; each ``sh`` block is run one line
at a time by bash in a fresh home directory, with these changes only:

- ``/tmp/X`` becomes a directory under the test's ``tmp_path``, and the
  README's ports (4711-4713) free ports, so tests never meet each other;
- the placeholders ``CID``, ``ROOT`` and ``KEY`` become what an earlier
  line printed (the first CID an ``add`` printed, the root a ``car import``
  printed, the key ``name publish`` printed), as a user copies them;
- a line ending in ``&`` starts a process the session owns (stopped by PID
  at the end, whatever happens), and ``kill %1 %2`` stops those jobs;
- between starting daemons and the next command, the session waits until
  every running daemon knows all the others, as a user waits a moment.

A line's comment says what the README promises it does; the tests check
those promises against what the line printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
PORTS = ("4711", "4712", "4713")
CID_PATTERN = re.compile(r"\bbaf[a-z2-7]{20,}\b")


def sections() -> dict[str, list[tuple[str, str]]]:
    """Each heading of the README and its fenced blocks, as (language, text)."""
    found: dict[str, list[tuple[str, str]]] = {}
    heading = ""
    lines = iter(README.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            found.setdefault(heading, [])
        elif line.startswith("```"):
            language = line[3:].strip()
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            found.setdefault(heading, []).append((language, "\n".join(body)))
    return found


def block(heading: str, index: int = 0, language: str = "sh") -> str:
    blocks = [text for lang, text in sections()[heading] if lang == language]
    return blocks[index]


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


@dataclass
class Line:
    command: str
    comment: str


def lines_of(text: str) -> Iterator[Line]:
    """Commands with their comments; a line that is only a comment belongs
    to the command before it (it shows that command's output)."""
    pending: Line | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw.lstrip().startswith("#"):
            if pending is not None:
                pending.comment = (pending.comment + " " + raw.strip().lstrip("# ")).strip()
            continue
        if pending is not None:
            yield pending
        parts = re.match(r"^(.*?)(?:\s+#\s(.*))?$", raw)
        assert parts is not None
        pending = Line(parts.group(1).strip(), (parts.group(2) or "").strip())
    if pending is not None:
        yield pending


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Shell:
    """A user's shell for the README: a home, a working directory, the
    processes started with ``&``, and the values read off earlier output."""

    root: Path
    values: dict[str, str] = field(default_factory=dict)
    jobs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    job_repos: list[Path] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)
    settled: bool = True

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.work = self.root / "work"
        self.home.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.ports = {port: str(free_port()) for port in PORTS}
        self.env = {
            "HOME": str(self.home),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
        }

    def text(self, command: str) -> str:
        command = command.replace("/tmp/", f"{self.root}/tmp/")
        for port, mine in self.ports.items():
            command = command.replace(f":{port}", f":{mine}")
        for name, value in self.values.items():
            command = re.sub(rf"\b{name}\b", value, command)
        return command

    def run(self, line: Line, *, timeout: float = 120) -> Result:
        (self.root / "tmp").mkdir(exist_ok=True)
        command = self.text(line.command)
        if command.startswith("kill %"):
            for job in re.findall(r"%(\d+)", command):
                self.stop(self.jobs[int(job) - 1])
            return Result(0, b"", "")
        if command.endswith("&"):
            self.start(command[:-1].strip())
            return Result(0, b"", "")
        self.wait_for_daemons()
        done = subprocess.run(["bash", "-c", command], cwd=self.work, env=self.env, capture_output=True,
                              timeout=timeout)
        result = Result(done.returncode, done.stdout, done.stderr.decode(errors="replace"))
        if "CID" not in self.values and " add " in f" {command} ":
            found = CID_PATTERN.search(result.text)
            if found:
                self.values["CID"] = found.group(0)
        if "ROOT" not in self.values and " car import " in f" {command} ":
            found = CID_PATTERN.search(result.text)
            if found:
                self.values["ROOT"] = found.group(0)
        return result

    def start(self, command: str) -> None:
        n = len(self.jobs) + 1
        with open(self.root / f"job{n}.out", "wb") as out, open(self.root / f"job{n}.err", "wb") as err:
            process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.work, env=self.env,
                                       stdout=out, stderr=err)
        self.jobs.append(process)
        repo = re.search(r"--repo (\S+)", command)
        self.job_repos.append(Path(repo.group(1)) if repo else Path())
        self.settled = False

    def daemons(self) -> list[Path]:
        return [repo for job, repo in zip(self.jobs, self.job_repos, strict=True) if job.poll() is None]

    def wait_for_daemons(self, timeout: float = 60) -> None:
        """Until every running daemon answers and knows every other one."""
        if self.settled:
            return
        repos = self.daemons()
        deadline = time.monotonic() + timeout
        while True:
            if all(self._peer_count(repo) >= len(repos) - 1 for repo in repos):
                self.settled = True
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the README's daemons did not find each other in {timeout:g} s")
            time.sleep(0.1)

    def _peer_count(self, repo: Path) -> int:
        result = subprocess.run([str(BIN / "cas"), "--repo", str(repo), "--json", "peers"], env=self.env,
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            return -1
        return len(json.loads(result.stdout))

    def stderr_of(self, job: int) -> str:
        """What job ``job`` (1 for %1) wrote to stderr so far."""
        return (self.root / f"job{job}.err").read_text(errors="replace")

    def stop(self, job: subprocess.Popen[bytes], timeout: float = 30) -> None:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)
            try:
                job.wait(timeout)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()

    def close(self) -> None:
        for job in self.jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
