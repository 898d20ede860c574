"""Faktory's own load test (``make load`` = ``go run test/load/main.go 30000 10``) on conveyor.

30,000 operations over 10 connections: even connections PUSH, odd ones FETCH from all five
queues and ACK (1 % FAIL instead). One command in flight per connection, like the Go loader;
the reported figure is operations per second, which is what Faktory's ~2,500 jobs/s measures.
"""

from __future__ import annotations

import asyncio
import random
import time

from conveyor.client import Client, new_jid

QUEUES = tuple(f"load{i}" for i in range(5))


async def _pusher(client: Client, ops: int) -> None:
    for _ in range(ops):
        await client.push(
            {"jid": new_jid(), "jobtype": "SomeJob", "args": [1, "string", 3],
             "queue": random.choice(QUEUES)}
        )  # fmt: skip


async def _fetcher(client: Client, ops: int) -> None:
    for _ in range(ops):
        job = await client.fetch(*QUEUES)
        if job is None:
            continue
        if random.random() < 0.01:
            await client.fail(job["jid"], "LoadError", "failed on purpose", [])
        else:
            await client.ack(job["jid"])


async def load(url: str, ops: int = 30_000, connections: int = 10) -> float:
    """Run the shape once; returns operations per second."""
    clients = [
        await Client.connect(url, wid=f"load-{i}" if i % 2 else None) for i in range(connections)
    ]
    share = ops // connections
    started = time.perf_counter()
    await asyncio.gather(
        *(
            (_fetcher if index % 2 else _pusher)(client, share)
            for index, client in enumerate(clients)
        )
    )
    seconds = time.perf_counter() - started
    await clients[0].queue_remove(*QUEUES)
    await asyncio.gather(*(c.close() for c in clients))
    return share * connections / seconds


def run(url: str, ops: int, repeat: int) -> list[float]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return [asyncio.run(load(url, ops)) for _ in range(repeat)]
