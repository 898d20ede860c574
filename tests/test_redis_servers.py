"""Several conveyor servers over one Redis: wake-ups, shared state, no double moves, kill -9.

Servers run in-process (``make_server``) or as ``conveyor server`` subprocesses
(``spawn_server``), all with ``--storage redis://...`` on the session's private redis-server.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import msgspec

from conveyor.manager import ClientInfo, Manager
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from tests.support.server import TEST_TIMINGS, MakeServer, RawClient, RawConnect, SpawnServer


def push_line(jid: str, **fields: object) -> bytes:
    job = {"jid": jid, "jobtype": "Work", "args": [1], "queue": "default", **fields}
    return b"PUSH " + json.dumps(job).encode()


async def test_push_on_one_server_wakes_a_fetch_waiting_on_another(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    config = replace(TEST_TIMINGS, fetch_wait_seconds=3.0)
    a = await make_server(redis_url, config=config)
    b = await make_server(redis_url, config=config)
    producer = await raw_client(a.port)
    consumer = await raw_client(b.port)
    delays = []
    for i in range(10):
        await consumer.send(b"FETCH default")
        await asyncio.sleep(0.05)  # the FETCH is now waiting on server B
        start = time.monotonic()
        assert await producer.call(push_line(f"jid-{i:08d}")) == b"+OK\r\n"
        reply = await consumer.reply()
        delays.append(time.monotonic() - start)
        assert json.loads(reply.split(b"\r\n")[1])["jid"] == f"jid-{i:08d}"
    delays.sort()
    # PUSH round trip + SPUBLISH + wake-up + reserve + reply: a few milliseconds, no polling.
    assert delays[len(delays) // 2] < 0.03, delays
    assert delays[-1] < 0.5, delays


async def test_info_workers_and_quiet_are_cluster_wide(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    a = await make_server(redis_url)
    b = await make_server(redis_url)
    hello = b'{"v":2,"hostname":"box","pid":42,"wid":"w-1","labels":["x"]}'
    worker = await raw_client(a.port, hello=hello)
    other = await raw_client(b.port)
    assert await other.call(push_line("jid-00000001")) == b"+OK\r\n"
    fetched = await worker.call(b"FETCH default")
    assert b'"jid-00000001"' in fetched
    assert await worker.call(b'ACK {"jid":"jid-00000001"}') == b"+OK\r\n"

    reply = await other.call(b"INFO")
    info = json.loads(reply.split(b"\r\n")[1])
    assert info["faktory"]["total_processed"] == 1
    assert info["faktory"]["tasks"]["Workers"]["size"] == 1
    assert [v.record.wid for v in await b.manager.workers()] == ["w-1"]

    # A quiet sent through server B reaches the worker connected to server A.
    assert await b.manager.signal_workers(["w-1"], "quiet") == 1
    assert await worker.call(b'BEAT {"wid":"w-1"}') == b'$17\r\n{"state":"quiet"}\r\n'


async def test_a_quiet_is_not_lost_to_beats_racing_on_another_server(redis_url: str) -> None:
    """Server B signals quiet while server A handles a stream of BEATs for the same workers:
    a BEAT must never write back the "running" it read before the quiet landed."""
    managers = [Manager(open_store(redis_url), TEST_TIMINGS) for _ in range(2)]
    for manager in managers:
        await manager.start()
    a, b = managers
    wids = [f"race-{i}" for i in range(5)]
    stop = asyncio.Event()

    async def beat_forever(wid: str) -> int:
        beats = 0
        while not stop.is_set():
            await a.beat(wid, rss_kb=beats)
            beats += 1
        return beats

    try:
        for wid in wids:
            await a.connect(ClientInfo(wid=wid, hostname="box", pid=1))
        beaters = [asyncio.create_task(beat_forever(wid)) for wid in wids for _ in range(4)]
        await asyncio.sleep(0.02)
        assert await b.signal_workers(wids, "quiet") == len(wids)
        await asyncio.sleep(0.05)  # beats keep landing after the quiet
        stop.set()
        assert min(await asyncio.gather(*beaters)) > 5
        for wid in wids:
            record = await b.store.get_worker(wid)
            assert record is not None
            assert (record.state, record.connections) == ("quiet", 1)
            assert await a.beat(wid) == "quiet"
    finally:
        stop.set()
        for manager in managers:
            await manager.stop()


async def test_connections_are_counted_across_servers(redis_url: str) -> None:
    """One worker process with connections on both servers, opened and closed at once: the
    record counts them all, and goes away only when the last one closes."""
    managers = [Manager(open_store(redis_url), TEST_TIMINGS) for _ in range(2)]
    for manager in managers:
        await manager.start()
    try:
        clients = [ClientInfo(wid="w-many", hostname="box", pid=9) for _ in range(20)]
        await asyncio.gather(*(managers[i % 2].connect(c) for i, c in enumerate(clients)))
        record = await managers[0].store.get_worker("w-many")
        assert record is not None
        assert record.connections == 20
        await asyncio.gather(*(managers[i % 2].disconnect(c) for i, c in enumerate(clients[2:])))
        record = await managers[1].store.get_worker("w-many")
        assert record is not None
        assert record.connections == 2
        await asyncio.gather(managers[0].disconnect(clients[0]), managers[1].disconnect(clients[1]))
        assert await managers[0].store.get_worker("w-many") is None
        assert await managers[1].workers() == []
    finally:
        for manager in managers:
            await manager.stop()


async def test_two_managers_promote_and_expire_each_job_once(redis_url: str) -> None:
    config = replace(TEST_TIMINGS, min_reserve_for_seconds=1, reaper_interval_seconds=0.02)
    managers = [Manager(open_store(redis_url), config) for _ in range(2)]
    for manager in managers:
        await manager.start()
    try:
        at = time.time() + 0.3
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
        for i in range(300):
            job = {
                "jid": f"sch-{i:08d}",
                "jobtype": "Work",
                "args": [],
                "at": stamp,
                "reserve_for": 1,
            }
            await managers[i % 2].push(msgspec.json.encode(job))
        deadline = time.monotonic() + 10
        while await managers[0].store.set_size(SortedSet.SCHEDULED):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # a second promotion, if any, would land now
        page = await managers[1].store.list_queue("default", 0, 1000)
        assert sorted(j.jid for j in page.items) == sorted(f"sch-{i:08d}" for i in range(300))

        # Reserve everything, let it expire: both reapers run, each job fails exactly once.
        fetched = await managers[0].fetch_many(["default"], "", 300, wait=0.5)
        assert len(fetched) == 300
        while (await managers[0].store.list_reservations(0, 0)).total:
            assert time.monotonic() < deadline + 5
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        counters = await managers[1].store.counters()
        assert (counters.processed, counters.failures) == (300, 300)
        assert await managers[0].store.set_size(SortedSet.RETRIES) == 300
    finally:
        for manager in managers:
            await manager.stop()


async def _consume(
    ports: list[int],
    raw_client: RawConnect,
    acked: set[str],
    done: asyncio.Event,
) -> None:
    """A worker loop that moves to the next server when its connection dies, re-sending the
    ACK it owed (reservations live in Redis, so any server can take it)."""
    owed: str | None = None
    index = 0
    client: RawClient | None = None
    while not done.is_set():
        try:
            if client is None:
                client = await raw_client(ports[index % len(ports)])
            if owed is not None:
                assert await client.call(b'ACK {"jid":"%s"}' % owed.encode()) == b"+OK\r\n"
                acked.add(owed)
                owed = None
            reply = await client.call(b"FETCH default")
            if reply.startswith(b"$") and reply != b"$-1\r\n":
                owed = json.loads(reply.split(b"\r\n")[1])["jid"]
                await asyncio.sleep(0.001)  # "work"
        except (OSError, asyncio.IncompleteReadError, AssertionError, TimeoutError):
            client = None
            index += 1
            await asyncio.sleep(0.05)


async def test_kill_9_one_of_two_servers_loses_no_job(
    redis_url: str, spawn_server: SpawnServer, raw_client: RawConnect
) -> None:
    env = {"CONVEYOR_MIN_RESERVE_FOR_SECONDS": "1"}
    a = spawn_server(storage=redis_url, env=env)
    b = spawn_server(storage=redis_url, env=env)
    total = 1500
    producers = [await raw_client(a.port), await raw_client(b.port)]
    for i in range(total):
        reply = await producers[i % 2].call(push_line(f"kill-{i:08d}", reserve_for=1, retry=-1))
        assert reply == b"+OK\r\n"
    acked: set[str] = set()
    done = asyncio.Event()
    workers = [
        asyncio.create_task(_consume([s.port, t.port], raw_client, acked, done))
        for s, t in ((a, b), (b, a))
        for _ in range(4)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(acked) < total // 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        a.kill()
        inspector = Manager(open_store(redis_url), TEST_TIMINGS)
        await inspector.start()
        try:
            while len(acked) < total:
                assert time.monotonic() < deadline, f"{total - len(acked)} jobs never acked"
                # A FETCH reply lost with server A: its reservation expires (1 s) and, with
                # retry 0, the job goes to Dead; put such jobs back, as an operator would.
                if await inspector.store.set_size(SortedSet.DEAD):
                    await inspector.requeue(SortedSet.DEAD, None)
                await asyncio.sleep(0.05)
        finally:
            await inspector.stop()
    finally:
        done.set()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert acked == {f"kill-{i:08d}" for i in range(total)}
