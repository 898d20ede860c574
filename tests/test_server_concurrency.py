"""Many connections at once: no job lost, none delivered twice."""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from tests.support.server import RawClient, RawConnect, RunningServer

PRODUCERS = 100
CONSUMERS = 100
JOBS_EACH = 20


async def produce(client: RawClient, pushed: list[str]) -> None:
    for _ in range(JOBS_EACH):
        jid = uuid.uuid4().hex
        payload = msgspec.json.encode({"jid": jid, "jobtype": "C", "args": [], "queue": "conc"})
        assert await client.call(b"PUSH " + payload) == b"+OK\r\n"
        pushed.append(jid)


async def consume(client: RawClient, fetched: list[str], done: asyncio.Event) -> None:
    while not done.is_set():
        reply = await client.call(b"FETCH conc other")
        if reply == b"$-1\r\n":
            continue
        jid = msgspec.json.decode(reply.split(b"\r\n", 1)[1][:-2])["jid"]
        fetched.append(jid)
        assert await client.call(b'ACK {"jid":"' + jid.encode() + b'"}') == b"+OK\r\n"
        if len(fetched) >= PRODUCERS * JOBS_EACH:
            done.set()


async def test_200_connections_push_and_fetch(
    server: RunningServer, raw_client: RawConnect
) -> None:
    producers = [await raw_client(server.port) for _ in range(PRODUCERS)]
    consumers = [
        await raw_client(server.port, hello=b'{"v":2,"wid":"w%d"}' % i) for i in range(CONSUMERS)
    ]
    info = await server.manager.info(server.server.stats())
    assert info["server"]["connections"] == PRODUCERS + CONSUMERS
    pushed: list[str] = []
    fetched: list[str] = []
    done = asyncio.Event()
    consuming = [asyncio.create_task(consume(c, fetched, done)) for c in consumers]
    await asyncio.wait_for(asyncio.gather(*(produce(p, pushed) for p in producers)), 30)
    await asyncio.wait_for(done.wait(), 30)
    await asyncio.wait_for(asyncio.gather(*consuming), 10)  # each ends after its last FETCH
    assert len(pushed) == PRODUCERS * JOBS_EACH
    assert len(fetched) == len(set(fetched)), "a job was delivered twice"
    assert set(fetched) == set(pushed)
    info = await server.manager.info()
    assert info["faktory"]["sets"]["working"] == 0
    assert info["faktory"]["queues"].get("conc", 0) == 0
    assert info["faktory"]["total_processed"] == PRODUCERS * JOBS_EACH
