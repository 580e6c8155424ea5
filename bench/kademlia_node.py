"""One bmuller ``kademlia`` node in a process of its own, for bench/dht_lookup.py.

The bench starts 50 of these so that kademlia is measured the way the
``cas daemon`` processes are: each node an OS process, each lookup's time
taken inside the node that runs it. Control is by lines: the node prints
``ready 127.0.0.1 PORT`` once it listens (and has bootstrapped, if told to),
then answers each line on stdin with one line on stdout:

    refresh        -> ok                       (a crawl for every bucket, now)
    find HEX40     -> {"elapsed_us": .., "messages": ..}

End of stdin (the bench closing the pipe, or dying) stops the node.

    python bench/kademlia_node.py --id HEX40 [--bootstrap PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol


class CountingProtocol(KademliaProtocol):  # type: ignore[misc]
    """kademlia's protocol, counting the FIND_NODE queries this node sends."""

    sent = 0

    async def call_find_node(self, node_to_ask, node_to_find):  # type: ignore[no-untyped-def]
        CountingProtocol.sent += 1  # one node per process: a class counter is this node's
        return await super().call_find_node(node_to_ask, node_to_find)


class CountingServer(Server):  # type: ignore[misc]
    protocol_class = CountingProtocol


async def refresh(server: Server) -> None:
    # The same refresh the in-process network does: every bucket, at once.
    for node_id in server.protocol.get_refresh_ids():
        target = Node(node_id)
        await NodeSpiderCrawl(server.protocol, target,
                              server.protocol.router.find_neighbors(target, server.alpha),
                              server.ksize, server.alpha).find()


async def find(server: Server, key: bytes) -> dict[str, int]:
    target = Node(key)
    before = CountingProtocol.sent
    # Only the crawl is timed, as in the in-process network: the nearest
    # contacts are picked before the clock starts there too.
    nearest = server.protocol.router.find_neighbors(target)
    started = time.perf_counter()
    await NodeSpiderCrawl(server.protocol, target, nearest, server.ksize, server.alpha).find()
    elapsed = time.perf_counter() - started
    return {"elapsed_us": round(elapsed * 1e6), "messages": CountingProtocol.sent - before}


def reply(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve(node_id: bytes, bootstrap: int | None) -> None:
    server = CountingServer(ksize=20, alpha=3, node_id=node_id)
    await server.listen(0, interface="127.0.0.1")  # loopback only
    port = server.transport.get_extra_info("sockname")[1]
    try:
        if bootstrap is not None:
            await server.bootstrap([("127.0.0.1", bootstrap)])
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        reply(f"ready 127.0.0.1 {port}")
        while line := (await stdin.readline()).decode():
            command, *args = line.split()
            if command == "refresh":
                await refresh(server)
                reply("ok")
            elif command == "find":
                reply(json.dumps(await find(server, bytes.fromhex(args[0]))))
            else:
                reply(json.dumps({"error": f"unknown command {command!r}"}))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--id", required=True, help="node ID, 40 hex digits")
    parser.add_argument("--bootstrap", type=int, help="port of a node on 127.0.0.1 to join through")
    args = parser.parse_args()
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    try:
        asyncio.run(serve(bytes.fromhex(args.id), args.bootstrap))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the bench cleans up
        pass


if __name__ == "__main__":
    main()
