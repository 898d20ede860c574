"""Redis: a steady worker's next job reserved in its ACK's round trip (manager/ahead.py).

A connection that FETCHes one job after each ACK (every Faktory client's processor) has its
next job reserved by a reserve sent right behind the ACK's script; its FETCH then takes it
without waiting for Redis. These tests pin down that it happens, and that a job reserved
ahead is never lost, never handed out twice and never kept from other workers for longer
than ``fetch_ahead_seconds``: it goes back to the head of its queue when no FETCH comes, when
the FETCH names other queues, when the connection closes, when the worker is told to quiet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.manager import Manager
from conveyor.store.redis.scripts import load_scripts
from tests.support.fault_proxy import FaultProxy
from tests.support.manager import decode, encode, job
from tests.support.server import TEST_TIMINGS, MakeServer, RawClient, RawConnect, RunningServer

HELLO = b'{"v":2,"wid":"w-steady","hostname":"h","pid":1,"labels":[]}'


class Reserves:
    """Counts the reserves the store sends: for FETCHes, and ahead of them."""

    def __init__(self, manager: Manager) -> None:
        self.fetches = 0
        self.ahead = 0
        store: Any = manager.store
        reserve_soon, reserve_ahead = store.reserve_soon, store.reserve_ahead_soon

        def counted_soon(*args: Any) -> Any:
            self.fetches += 1
            return reserve_soon(*args)

        def counted_ahead(*args: Any) -> Any:
            self.ahead += 1
            return reserve_ahead(*args)

        store.reserve_soon, store.reserve_ahead_soon = counted_soon, counted_ahead


async def start(make_server: MakeServer, redis_url: str, hold: float) -> RunningServer:
    config = dataclasses.replace(TEST_TIMINGS, fetch_ahead_seconds=hold)
    server = await make_server(redis_url, config=config)
    # Redis learns each script at its first EVAL (after a NOSCRIPT), which goes on in a task:
    # one job through first, so every script is known.
    warm = job()
    await server.manager.push(encode(warm))
    [first] = await server.manager.fetch_many(["default"], "warm-up", 1, 0)
    await server.manager.ack(decode(first)["jid"])
    return server


async def push(conn: RawClient, *jobs: dict[str, Any]) -> None:
    for payload in jobs:
        assert await conn.call(b"PUSH " + encode(payload)) == b"+OK\r\n"


async def fetch(conn: RawClient, queues: bytes = b"default") -> str | None:
    reply = await conn.call(b"FETCH " + queues)
    if reply == b"$-1\r\n":
        return None
    return str(decode(reply.split(b"\r\n")[1])["jid"])


async def ack(conn: RawClient, jid: str) -> None:
    assert await conn.call(b'ACK {"jid":"' + jid.encode() + b'"}') == b"+OK\r\n"


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def reserved(manager: Manager) -> list[tuple[str, str]]:
    return [(r.jid, r.wid) for r in (await manager.busy(0, 100)).items]


async def steady(conn: RawClient, jobs: list[dict[str, Any]]) -> None:
    """FETCH, ACK, FETCH, ACK: the first two jobs, in order; the connection keeps the rhythm."""
    for sent in jobs[:2]:
        jid = await fetch(conn)
        assert jid == sent["jid"]
        await ack(conn, jid)


async def held(
    make_server: MakeServer,
    raw_client: RawConnect,
    redis_url: str,
    hold: float,
    jobs: list[dict[str, Any]],
    *others: dict[str, Any],
) -> tuple[RunningServer, RawClient]:
    """A worker in the rhythm (it BEATs, so it can be told to quiet): ``jobs`` and
    ``others`` pushed, the first two of ``jobs`` run, the third reserved for it ahead."""
    server = await start(make_server, redis_url, hold)
    conn = await raw_client(server.port, hello=HELLO)
    assert (await conn.call(b'BEAT {"wid":"w-steady"}')).startswith(b"+OK")
    await push(conn, *jobs, *others)
    await steady(conn, jobs)
    await until(
        lambda: _equals(reserved(server.manager), [(jobs[2]["jid"], "w-steady")]),
        "the third job was not reserved ahead for the worker",
    )
    return server, conn


async def test_the_ack_of_a_steady_worker_reserves_its_next_job_and_its_fetch_takes_it(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    server = await start(make_server, redis_url, hold=30.0)
    manager = server.manager
    jobs = [job() for _ in range(4)]
    conn = await raw_client(server.port, hello=HELLO)
    await push(conn, *jobs)
    counts = Reserves(manager)
    await steady(conn, jobs)
    # the second ACK (a FETCH had followed the first) sent the next FETCH's reserve
    assert counts.ahead == 1
    await until(
        lambda: _equals(reserved(manager), [(jobs[2]["jid"], "w-steady")]),
        "the third job was not reserved ahead for the worker",
    )
    assert await manager.store.queue_sizes() == {"default": 1}
    fetches = counts.fetches
    assert await fetch(conn) == jobs[2]["jid"]
    assert counts.fetches == fetches, "the FETCH sent a reserve of its own"
    await ack(conn, jobs[2]["jid"])
    assert await fetch(conn) == jobs[3]["jid"]
    await ack(conn, jobs[3]["jid"])
    assert counts.fetches == fetches
    assert await fetch(conn) is None  # reserved ahead: nothing found, then the FETCH waited
    assert await reserved(manager) == []
    assert (await manager.store.counters()).processed == 5


async def test_a_job_reserved_ahead_and_not_fetched_goes_back_to_the_head_of_its_queue(
    make_server: MakeServer,
    raw_client: RawConnect,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = [job() for _ in range(4)]
    server, _ = await held(make_server, raw_client, redis_url, 0.1, jobs)
    manager = server.manager
    # no FETCH comes: within the hold it is given back, in its place
    await until(lambda: _equals(reserved(manager), []), "the job stayed reserved", within=3)
    other = await raw_client(server.port)
    assert [await fetch(other), await fetch(other)] == [jobs[2]["jid"], jobs[3]["jid"]]
    # routine, not a fault: no warning about a lost reserve call
    assert not [r for r in caplog.records if "lost reserve" in r.getMessage()]


async def test_closing_the_connection_gives_the_job_back_at_once(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    jobs = [job() for _ in range(3)]
    server, conn = await held(make_server, raw_client, redis_url, 60.0, jobs)
    manager = server.manager
    await conn.close()
    # long before the 60 s hold: the connection is gone, so is its claim on the job
    await until(lambda: _equals(reserved(manager), []), "kept for a closed connection", 3)
    other = await raw_client(server.port)
    assert await fetch(other) == jobs[2]["jid"]


async def test_a_fetch_of_other_queues_gets_its_own_job_and_the_one_held_goes_back(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    jobs = [job() for _ in range(3)]
    urgent = job(queue="urgent")
    server, conn = await held(make_server, raw_client, redis_url, 60.0, jobs, urgent)
    manager = server.manager
    # the worker asks for "urgent" first now: it must get urgent's job, not the one held
    assert await fetch(conn, b"urgent default") == urgent["jid"]
    await until(
        lambda: _equals(reserved(manager), [(urgent["jid"], "w-steady")]),
        "the job held for another FETCH was not given back",
        within=3,
    )
    assert await manager.store.queue_sizes() == {"default": 1, "urgent": 0}
    await ack(conn, urgent["jid"])
    assert await fetch(conn, b"urgent default") == jobs[2]["jid"]


async def test_a_fetch_of_the_same_queues_in_another_order_takes_the_job_held(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Clients that weigh their queues shuffle them for each FETCH: the job reserved in the
    order of the FETCH before is theirs (no reserve of its own, nothing given back)."""
    server = await start(make_server, redis_url, hold=60.0)
    manager = server.manager
    jobs = [job(queue="a") for _ in range(3)]
    conn = await raw_client(server.port, hello=HELLO)
    await push(conn, *jobs)
    for sent, order in zip(jobs[:2], (b"a b", b"b a"), strict=True):
        assert await fetch(conn, order) == sent["jid"]
        await ack(conn, sent["jid"])
    await until(lambda: _equals(reserved(manager), [(jobs[2]["jid"], "w-steady")]), "ahead")
    counts = Reserves(manager)
    assert await fetch(conn, b"a b") == jobs[2]["jid"]
    assert counts.fetches == 0
    assert await reserved(manager) == [(jobs[2]["jid"], "w-steady")]


async def test_a_quiet_worker_gets_nothing_reserved_and_what_was_held_goes_back(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    jobs = [job() for _ in range(5)]
    server, conn = await held(make_server, raw_client, redis_url, 60.0, jobs)
    manager = server.manager
    assert await manager.signal_workers(["w-steady"], "quiet") == 1
    # a quiet worker is given no more jobs (as Faktory): the held one goes back
    assert await fetch(conn) is None
    await until(lambda: _equals(reserved(manager), []), "held for a quiet worker", within=3)
    assert await manager.store.queue_sizes() == {"default": 3}


async def test_an_empty_queue_stops_the_reserves_until_a_fetch_finds_a_job_again(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    server = await start(make_server, redis_url, hold=60.0)
    manager = server.manager
    jobs = [job() for _ in range(2)]
    conn = await raw_client(server.port, hello=HELLO)
    await push(conn, *jobs)
    counts = Reserves(manager)
    await steady(conn, jobs)  # the second ACK reserves ahead, and finds nothing
    assert counts.ahead == 1
    assert await fetch(conn) is None
    for _ in range(3):  # an idle worker's loop: no reserve sent ahead of these FETCHes
        await ack(conn, "no-such-jid")
        assert await fetch(conn) is None
    assert counts.ahead == 1
    late = [job() for _ in range(4)]
    await push(conn, *late)
    # found at once after an ACK: the rhythm again, and after the miss one chance passes by
    await steady(conn, late)
    assert counts.ahead == 1
    assert await fetch(conn) == late[2]["jid"]
    await ack(conn, late[2]["jid"])
    assert counts.ahead == 2
    assert await fetch(conn) == late[3]["jid"]


async def test_a_client_that_pushes_before_each_fetch_sends_few_reserves_ahead(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """PUSH, FETCH, ACK in a loop on a queue of its own: at each ACK the queue is empty, so
    a reserve ahead finds nothing. After each miss the next 1, 3, 7 ... chances pass by: a
    handful of reserves for 60 jobs, not one every other job."""
    server = await start(make_server, redis_url, hold=60.0)
    conn = await raw_client(server.port, hello=HELLO)
    counts = Reserves(server.manager)
    for _ in range(60):
        sent = job()
        await push(conn, sent)
        assert await fetch(conn) == sent["jid"]
        await ack(conn, sent["jid"])
    assert 1 <= counts.ahead <= 6, counts.ahead
    assert await reserved(server.manager) == []


async def test_busy_workers_closing_and_pausing_at_random_run_every_job_exactly_once(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Three workers in the rhythm; now and then one pauses past the hold, asks for other
    queues, or drops its connection (the job it was running then goes back only when its
    reservation expires: it is ACKed here by a fresh connection). Every job is run exactly
    once, in its queue's order per run, and nothing stays reserved."""
    server = await start(make_server, redis_url, hold=0.02)
    manager = server.manager
    rng = random.Random(11)
    sent = [job() for _ in range(150)]
    producer = await raw_client(server.port)
    await push(producer, *sent)
    ran: list[str] = []

    async def worker(n: int) -> None:
        conn = await raw_client(server.port, hello=HELLO.replace(b"w-steady", f"w{n}".encode()))
        while True:
            jid = await fetch(conn, b"default" if rng.random() < 0.9 else b"other default")
            if jid is None:
                return
            ran.append(jid)
            roll = rng.random()
            if roll < 0.05:  # gone after running it: ACKed on a new connection
                await conn.close()
                conn = await raw_client(server.port, hello=HELLO.replace(b"w-steady", b"wx"))
            await ack(conn, jid)
            if roll > 0.95:
                await asyncio.sleep(0.04)  # past the hold

    await asyncio.gather(*(worker(n) for n in range(3)))
    assert sorted(ran) == sorted(p["jid"] for p in sent), "a job lost or run twice"
    assert await reserved(manager) == []
    assert await manager.store.queue_sizes() == {"default": 0}


async def test_no_reserve_ahead_on_sqlite(
    make_server: MakeServer, raw_client: RawConnect, tmp_path: Any
) -> None:
    """In process, a FETCH is answered in its own step already: nothing is reserved ahead."""
    server = await make_server(f"sqlite:///{tmp_path}/a.db")
    jobs = [job() for _ in range(3)]
    conn = await raw_client(server.port, hello=HELLO)
    await push(conn, *jobs)
    await steady(conn, jobs)
    assert await reserved(server.manager) == []
    assert await fetch(conn) == jobs[2]["jid"]


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def test_a_lost_reply_to_the_reserve_sent_ahead_loses_and_duplicates_nothing(
    make_server: MakeServer, raw_client: RawConnect, fault_proxy: FaultProxy
) -> None:
    """The connection to Redis is cut after Redis ran the ACK and the reserve sent behind it
    (both in one write): the ACK is answered +OK once, and each job runs exactly once: the
    one reserved ahead reaches the worker's FETCH (the retry reads the token) or goes back
    to its queue, never stays reserved for nobody."""
    server = await start(make_server, fault_proxy.url + "?retry_for=0.5", hold=5.0)
    manager = server.manager
    jobs = [job() for _ in range(5)]
    conn = await raw_client(server.port, hello=HELLO)
    await push(conn, *jobs)
    jid = await fetch(conn)
    assert jid == jobs[0]["jid"]
    await ack(conn, jid)
    jid = await fetch(conn)
    assert jid == jobs[1]["jid"]
    fault_proxy.lose_reply(load_scripts()["reserve"].sha.encode())
    await ack(conn, jid)  # the reserve sent ahead rides with this ACK; the reply is lost
    assert fault_proxy.cuts == 1, "no reserve went out with the ACK"
    ran = [jobs[0]["jid"], jobs[1]["jid"]]
    while (jid := await fetch(conn)) is not None:
        ran.append(jid)
        await ack(conn, jid)
    assert fault_proxy.cuts == 1
    assert ran == [p["jid"] for p in jobs], "a job lost, run twice or out of order"
    assert await reserved(manager) == []
    assert await manager.store.queue_sizes() == {"default": 0}
    assert (await manager.store.counters()).processed == 6  # the warm-up job and these five
