"""Commands answered in the step that read them (``Connection._answer_now``).

PUSH, ACK and a FETCH that finds a job are answered without a task on an idle connection; a
PUSH's ``+OK`` waits for the commit that holds its job, and whatever came after it on the
same connection waits for that ``+OK``. These tests pin down that replies keep their order
and that nothing changes on the way through the long path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.server import MakeServer, RawConnect
from tests.support.services import RedisServer


def _url(storage: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    if storage == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    if storage == "redis":  # commands answered when Redis replies (manager/soon.py)
        return str(request.getfixturevalue("redis_url"))
    return storage


STORES = ["memory://", "sqlite", "redis"]


@pytest.mark.parametrize("storage", STORES)
async def test_pipelined_commands_in_one_packet_are_answered_in_order(
    storage: str,
    make_server: MakeServer,
    raw_client: RawConnect,
    tmp_path: Any,
    request: pytest.FixtureRequest,
) -> None:
    running = await make_server(_url(storage, tmp_path, request))
    client = await raw_client(running.port)
    client.writer.write(
        b'PUSH {"jid":"piped-0001","jobtype":"T","args":[],"queue":"piped"}\r\n'
        b"FETCH piped\r\n"
        b'ACK {"jid":"piped-0001"}\r\n'
        b'ACK {"jid":"piped-0001"}\r\n'  # a second ACK of the same job: +OK, counts nothing
        b"FETCH piped\r\n"  # nothing left: waits (0.2 s here), then the null reply
        b'PUSH {"jid":"x","jobtype":"T","args":[]}\r\n'
        b'PUSH {"jid":"piped-0002","jobtype":"T","args":[],"queue":"piped"}\r\n'
        b"INFO\r\n"
    )
    assert await client.reply() == b"+OK\r\n"
    assert b'"jid":"piped-0001"' in await client.reply()
    assert await client.reply() == b"+OK\r\n"
    assert await client.reply() == b"+OK\r\n"
    assert await client.reply() == b"$-1\r\n"
    assert (await client.reply()).startswith(b"-ERR jobs must have a reasonable jid")
    assert await client.reply() == b"+OK\r\n"
    assert (await client.reply()).startswith(b"$")
    assert (await running.manager.store.counters()).processed == 1
    assert await running.manager.store.queue_sizes() == {"piped": 1}


@pytest.mark.parametrize("storage", STORES)
async def test_bad_fetch_and_ack_are_refused_as_on_the_long_path(
    storage: str,
    make_server: MakeServer,
    raw_client: RawConnect,
    tmp_path: Any,
    request: pytest.FixtureRequest,
) -> None:
    running = await make_server(_url(storage, tmp_path, request))
    client = await raw_client(running.port)
    assert await client.call(b"FETCH") == b"-ERR must call fetch with at least one queue\r\n"
    assert await client.call(b"ACK") == (
        b'-ERR invalid ACK: missing argument, expected ACK {"jid":"..."}\r\n'
    )
    assert await client.call(b"ACK nope") == b"-ERR invalid ACK nope\r\n"
    assert await client.call(b'ACK {"jid":"never-fetched"}') == b"+OK\r\n"
    assert (await running.manager.store.counters()).processed == 0
    assert await client.call(b"INFO") != b""  # the connection goes on


async def test_a_push_waiting_for_its_commit_is_answered_before_the_server_stops(
    make_server: MakeServer, raw_client: RawConnect, tmp_path: Any
) -> None:
    """Shutdown closes idle connections at once; a PUSH whose +OK waits for its commit is
    not idle. The PUSH is fed to the connection directly so that the shutdown begins in the
    very step that read it, before the commit: over the wire the two cannot be lined up."""
    running = await make_server(f"sqlite:///{tmp_path}/s.db")
    client = await raw_client(running.port)
    [conn] = list(running.server.connections)
    conn.data_received(b'PUSH {"jid":"last-0001","jobtype":"T","args":[],"queue":"last"}\r\n')
    waiting = conn.runner
    assert waiting is not None, "the PUSH waits for its commit"
    running.server.closing = True
    conn.shutdown()
    await asyncio.wait_for(waiting, 5)
    assert await client.reply() == b"+OK\r\n"
    assert await client.closed_by_server()
    assert await running.manager.store.queue_sizes() == {"last": 1}


async def test_a_fetch_whose_client_left_before_redis_answered_gives_the_job_back(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str, redis_server: RedisServer
) -> None:
    """On Redis a FETCH's reserve is on its way when the client hangs up: the job it reserves
    for nobody goes back to its queue (store/redis/release.py), not to a 30-minute wait."""
    running = await make_server(redis_url)
    store = running.manager.store
    producer = await raw_client(running.port)
    pushed = b'PUSH {"jid":"held-0001","jobtype":"T","args":[],"queue":"held"}'
    assert await producer.call(pushed) == b"+OK\r\n"
    sleeper = aioredis.Redis(port=redis_server.port)
    try:
        sleeping = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "0.3"))
        await asyncio.sleep(0.05)  # Redis holds still: the reserve waits in its socket
        worker = await raw_client(running.port)
        worker.writer.write(b"FETCH held\r\n")
        await worker.writer.drain()
        await worker.close()
        await sleeping
    finally:
        await sleeper.aclose()
    for _ in range(100):
        if await store.queue_sizes() == {"held": 1}:
            break
        await asyncio.sleep(0.02)
    assert await store.queue_sizes() == {"held": 1}
    assert (await store.list_reservations(0, 10)).total == 0
