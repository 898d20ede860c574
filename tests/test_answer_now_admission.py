"""Throttles, rate limits and unique jobs on the commands answered without a task.

A FETCH naming a throttled or rate-limited queue and the ACK of a throttled job are answered
in the step that read them on memory and SQLite (``soon.fetch_limited_in_process``,
``Store.reserve_limited_now``, ``Store.ack_throttled_now``): the slot or token is taken in the
reserving step, the slot freed in the ACK's. These tests send one command at a time on each
connection (so each goes that way) and check the long way's rules: a throttle's slots are
never exceeded, even by FETCHes arriving together; a rate limit gives its burst and no more;
the ACK frees the slot and wakes the FETCH it held back; a throttled job some feature wants
(unique) still has its lock released by its ACK. On memory and SQLite they also check that
the command was answered in its step (no runner task), or the rules would be checked on the
long way only.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.manager import ManagerConfig
from conveyor.server.connection import Connection
from conveyor.store.limits import QueueLimit
from tests.support.features import Connect, FeatureServer, bulk_json, encode, job, push
from tests.support.server import RawClient, RunningServer

OK = b"+OK\r\n"
WAIT = 1.0  # each FETCH waits this long for a job
WOKEN = WAIT - 0.3
"""A FETCH answered before this was woken, not answered at the end of its wait."""
TABLES = {
    "throttles": {"api": {"concurrency": 2, "timeout": 60}},
    "queues": {"paced": {"rate_limit": 0.01, "burst": 2}},
}
CONFIG = ManagerConfig(fetch_wait_seconds=WAIT)


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url, TABLES, CONFIG)


async def fetch(client: RawClient, queue: str) -> str | None:
    reply = await client.call(b"FETCH " + queue.encode(), within=WAIT + 2)
    return None if reply == b"$-1\r\n" else str(bulk_json(reply)["jid"])


def in_process(server: RunningServer) -> bool:
    return server.manager.store.in_process


def connection_of(server: RunningServer, client: RawClient) -> Connection:
    """The server's side of ``client``'s connection."""
    mine = client.writer.get_extra_info("sockname")
    for conn in server.server.connections:
        if conn.transport is not None and conn.transport.get_extra_info("peername") == mine:
            return conn
    raise AssertionError("no such connection")


async def answered_in_step(server: RunningServer, client: RawClient, line: bytes) -> bytes:
    """Feed ``line`` to ``client``'s connection on the server and read the reply; on an
    in-process store, check it was answered in the step that read it (no runner task)."""
    conn = connection_of(server, client)
    conn.data_received(line + b"\r\n")
    if in_process(server):
        assert conn.runner is None, f"{line!r} took the long way"
    return await client.reply()


async def in_use(server: RunningServer, queue: str) -> int:
    limit = server.manager.flow.fetch_limits[queue]
    usage = await server.manager.store.limit_usage({queue: limit}, time.time())
    return usage[queue].in_use


async def test_fetches_arriving_together_never_exceed_a_throttle(
    server: RunningServer, worker: Connect
) -> None:
    producer = await worker("p")
    await push(producer, "api", 6)
    workers = [await worker(f"w{n}") for n in range(5)]
    got = await asyncio.gather(*(fetch(w, "api") for w in workers))
    assert sum(jid is not None for jid in got) == 2  # concurrency 2: the others waited
    assert await in_use(server, "api") == 2
    assert (await server.manager.store.queue_sizes())["api"] == 4


async def test_a_throttled_fetch_and_its_ack_are_answered_in_their_step(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    jids = await push(a, "api", 3)
    for expected in jids[:2]:
        reply = await answered_in_step(server, a, b"FETCH api")
        assert bulk_json(reply)["jid"] == expected
    assert await in_use(server, "api") == 2
    ack = b"ACK " + encode({"jid": jids[0]})
    assert await answered_in_step(server, a, ack) == OK
    if in_process(server):  # freed by the ACK itself, not found ended by a later prune
        assert jids[0] not in server.manager.store.__dict__["_throttle_slots"]["api"].leases
    assert await in_use(server, "api") == 1
    assert (await server.manager.store.counters()).processed == 1
    reply = await answered_in_step(server, a, b"FETCH api")
    assert bulk_json(reply)["jid"] == jids[2]  # the freed slot is taken again
    assert await in_use(server, "api") == 2


async def test_the_ack_of_a_throttled_job_wakes_the_fetch_held_back(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    jids = await push(a, "api", 3)
    assert await fetch(a, "api") == jids[0]
    assert await fetch(b, "api") == jids[1]
    started = time.monotonic()
    waiting = asyncio.create_task(fetch(c, "api"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # no slot: held back
    assert await a.call(b"ACK " + encode({"jid": jids[0]})) == OK
    assert await waiting == jids[2]
    assert time.monotonic() - started < WOKEN  # woken by the ACK, not at the end of its wait


async def test_a_rate_limited_queue_gives_its_burst_to_fetches_arriving_together(
    server: RunningServer, worker: Connect
) -> None:
    producer = await worker("p")
    await push(producer, "paced", 5)
    workers = [await worker(f"w{n}") for n in range(4)]
    got = await asyncio.gather(*(fetch(w, "paced") for w in workers))
    assert sum(jid is not None for jid in got) == 2  # burst 2, then one token per 100 s
    assert (await server.manager.store.queue_sizes())["paced"] == 3
    limit = QueueLimit(rate=0.01, burst=2)
    usage = await server.manager.store.limit_usage({"paced": limit}, time.time())
    tokens = usage["paced"].tokens
    assert tokens is not None
    assert tokens < 1


async def test_a_rate_limited_fetch_is_answered_in_its_step(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    jids = await push(a, "paced", 3)
    for expected in jids[:2]:
        reply = await answered_in_step(server, a, b"FETCH paced")
        assert bulk_json(reply)["jid"] == expected
    assert await fetch(a, "paced") is None  # the bucket is empty: held back, then nothing
    assert (await server.manager.store.queue_sizes())["paced"] == 1


async def test_a_unique_throttled_job_releases_its_lock_and_its_slot_on_ack(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    unique = {"custom": {"unique_for": 600}, "args": ["same"]}
    [jid] = await push(a, "api", **unique)
    duplicate = b"PUSH " + encode(job(queue="api", **unique))
    assert await a.call(duplicate) == b"-NOTUNIQUE Job not unique\r\n"
    assert await fetch(a, "api") == jid
    assert await in_use(server, "api") == 1
    assert await a.call(b"ACK " + encode({"jid": jid})) == OK
    assert await in_use(server, "api") == 0
    assert await a.call(duplicate) == OK  # the ACK released the lock


async def test_a_unique_push_is_answered_in_its_step_and_refuses_its_duplicate(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    unique = {"custom": {"unique_for": 600}, "args": ["one"]}
    first = b"PUSH " + encode(job(queue="uq", **unique))
    conn = connection_of(server, a)
    conn.data_received(first + b"\r\n")
    if in_process(server):
        # no runner: the lock and the job were written in the step that read the PUSH (its
        # +OK waits only for their commit)
        assert conn._runner is None
    assert await a.reply() == OK
    second = b"PUSH " + encode(job(queue="uq", **unique))
    assert await answered_in_step(server, a, second) == b"-NOTUNIQUE Job not unique\r\n"
    assert (await server.manager.store.queue_sizes())["uq"] == 1
