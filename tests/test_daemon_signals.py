"""A daemon outlives peers that hang up on it mid-conversation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cas.errors import ConnectionClosedError
from cas.net.connection import connect_tcp
from cas.net.identity import Identity
from cas.net.messages import Ping
from tests.conftest import run_cas
from tests.nodeproc import Daemons


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as d:
        yield d


async def _ping_and_hang_up(host: str, port: int) -> None:
    channel = await connect_tcp(host, port, Identity.generate())
    try:
        for request_id in range(1, 50):
            await channel.send_message(Ping(request_id=request_id))
    except ConnectionClosedError:
        pass  # the daemon hung up first (rate limit)
    # Hang up without reading the answers: the daemon's first pong makes our
    # kernel answer with a reset, and its next write meets EPIPE, which with
    # SIGPIPE at its default action would end the daemon.
    await channel.aclose()


def test_peers_that_hang_up_mid_answer_do_not_kill_the_daemon(daemons: Daemons, tmp_path: Path) -> None:
    daemon = daemons.start(tmp_path / "repo")
    for _ in range(10):
        trio.run(_ping_and_hang_up, daemon.host, daemon.port)
    assert daemon.proc.poll() is None, daemon.stderr()
    assert run_cas("id", repo=daemon.repo).returncode == 0
    assert daemon.proc.poll() is None
