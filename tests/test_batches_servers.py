"""Batch callbacks exactly once: final ACKs racing on two servers over one Redis (and on one
server of each store), ACKs sent to another server than the FETCH, a server killed (kill -9)
between the last ACK and its callback, and a callback left in the scheduled set by a crash."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.job import Job, encode_job
from conveyor.manager import Manager
from conveyor.store import open_store
from conveyor.store.base import QueuedJob
from conveyor.store.batches import CallbackJob, EndContext, JobEnd, NewBatch, NewMark, Outcome
from tests.support.server import TEST_TIMINGS, MakeServer, RawClient, RawConnect, SpawnServer
from tests.support.stores import STORE_BACKENDS, store_url
from tests.test_feature_batches import HELLO, bulk_json, bulk_text, job

CALLBACKS = "callbacks"


async def new_batch(conn: RawClient) -> str:
    spec = {
        "complete": job(jobtype="Complete", queue=CALLBACKS),
        "success": job(jobtype="Success", queue=CALLBACKS),
    }
    return bulk_text(await conn.call(b"BATCH NEW " + msgspec.json.encode(spec)))


async def fetch_all(conn: RawClient, queue: str, count: int) -> list[dict[str, Any]]:
    fetched: list[dict[str, Any]] = []
    while len(fetched) < count:
        reply = await conn.call(f"FETCHB {count - len(fetched)} {queue}".encode())
        assert reply != b"$-1\r\n", f"only {len(fetched)} of {count} jobs came"
        fetched += bulk_json(reply)
    return fetched


async def drain(conns: Sequence[RawClient], queue: str, within: float = 1.0) -> list[str]:
    """Every jobtype that can be fetched from ``queue`` within ``within`` seconds."""
    found: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for conn in conns:
            reply = await conn.call(f"FETCH {queue}".encode())
            if reply != b"$-1\r\n":
                fetched = bulk_json(reply)
                found.append(fetched["jobtype"])
                assert await conn.call(b'ACK {"jid":"' + fetched["jid"].encode() + b'"}') == (
                    b"+OK\r\n"
                )
    return found


async def race(producers: Sequence[RawClient], workers: Sequence[RawClient], jobs: int) -> str:
    """One batch of ``jobs``, all fetched first, then every ACK sent at once, each on another
    connection (and server) than the one that fetched it."""
    bid = await new_batch(producers[0])
    payload = msgspec.json.encode([job(custom={"bid": bid}) for _ in range(jobs)])
    assert bulk_json(await producers[0].call(b"PUSHB " + payload)) == {}
    assert await producers[-1].call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    fetched = await fetch_all(workers[0], "work", jobs)
    lines = [b'ACK {"jid":"' + f["jid"].encode() + b'"}\r\n' for f in fetched]
    per_worker = [lines[i :: len(workers)] for i in range(len(workers))]
    for worker, mine in zip(workers[::-1], per_worker, strict=True):
        worker.writer.write(b"".join(mine))  # pipelined: the last ACKs land together
    for worker, mine in zip(workers[::-1], per_worker, strict=True):
        for _ in mine:
            assert await worker.reply() == b"+OK\r\n"
    return bid


@pytest.mark.slow
async def test_final_acks_racing_on_two_servers_fire_each_callback_once(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    a = await make_server(redis_url)
    b = await make_server(redis_url)
    conns = [
        await raw_client(server.port, hello=HELLO.replace(b"w1", f"w{i}".encode()))
        for i, server in enumerate((a, b, a, b))
    ]
    for _ in range(3):
        bid = await race(conns[:2], conns, jobs=40)
        status = bulk_json(await conns[1].call(b"BATCH STATUS " + bid.encode()))
        assert (status["pending"], status["complete_st"]) == (0, "1")
        assert await drain(conns, CALLBACKS, within=0.5) == ["Complete", "Success"]
        status = bulk_json(await conns[0].call(b"BATCH STATUS " + bid.encode()))
        assert (status["complete_st"], status["success_st"]) == ("2", "2")


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_final_acks_racing_on_one_server_fire_each_callback_once(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    make_server: MakeServer,
    raw_client: RawConnect,
) -> None:
    server = await make_server(store_url(backend, tmp_path, request))
    conns = [
        await raw_client(server.port, hello=HELLO.replace(b"w1", f"w{i}".encode()))
        for i in range(4)
    ]
    for _ in range(3):
        await race(conns[:1], conns, jobs=40)
        assert await drain(conns, CALLBACKS, within=0.3) == ["Complete", "Success"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_kill_9_between_the_last_ack_and_the_callback(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, spawn_server: SpawnServer
) -> None:
    """The server dies (SIGKILL) right as the batch's last ACK reaches it: after a restart
    the complete callback comes exactly once, whether the ACK survived or not (if not, the
    job's reservation expires, it runs again and its ACK fires the callback)."""
    storage = store_url(backend, tmp_path, request)
    env = {"CONVEYOR_MIN_RESERVE_FOR_SECONDS": "1"}
    for delay in (0.0, 0.01):
        server = spawn_server(storage=storage, env=env)
        conn = await connect(server.port)
        bid = await new_batch(conn)
        jobs = [job(custom={"bid": bid}, reserve_for=1) for _ in range(3)]
        assert bulk_json(await conn.call(b"PUSHB " + msgspec.json.encode(jobs))) == {}
        assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
        fetched = await fetch_all(conn, "work", 3)
        for done in fetched[:2]:
            assert await conn.call(b'ACK {"jid":"' + done["jid"].encode() + b'"}') == b"+OK\r\n"
        await conn.send(b'ACK {"jid":"' + fetched[2]["jid"].encode() + b'"}')
        await asyncio.sleep(delay)
        server.kill()
        await conn.close()

        server = spawn_server(storage=storage, env=env, port=server.port)
        conn = await connect(server.port)
        found = await drain([conn], CALLBACKS, within=0.3)
        # An ACK lost with the server: its job's reservation runs out (a failure, retried
        # later), or the FETCH was lost too (queued again). Retry such jobs now and run them.
        await asyncio.sleep(1.2)
        retries = bulk_json(await conn.call(b'ADMIN job.list {"where":"retries"}'))["jobs"]
        jids = [entry["jid"] for entry in retries]
        if jids:
            await conn.call(b"ADMIN job.retry " + msgspec.json.encode({"jids": jids}))
        redone = await drain([conn], "work", within=0.5)
        found += await drain([conn], CALLBACKS, within=0.5)
        status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
        assert found == ["Complete", "Success"], (delay, redone, status)
        status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
        assert (status["pending"], status["complete_st"], status["success_st"]) == (0, "2", "2")
        server.kill()
        await conn.close()


async def connect(port: int) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RawClient(reader, writer)
    assert (await reader.readline()).startswith(b"+HI")
    assert await client.call(b"HELLO " + HELLO.replace(b"w1", uuid.uuid4().hex.encode())) == (
        b"+OK\r\n"
    )
    return client


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_a_callback_left_in_the_scheduled_set_is_enqueued_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What a crash right after the deciding transition leaves: the callback in the scheduled
    set, due now. The promoters of two servers enqueue it, once."""
    url = store_url(backend, tmp_path, request)
    store = open_store(url)
    await store.open()
    now = time.time()
    callback = Job(retry=1, jid="callback-1", queue=CALLBACKS, jobtype="Complete", args=[])
    batch = NewBatch(
        "b-crash",
        now,
        now + 60,
        complete=CallbackJob("callback-1", CALLBACKS, "Complete", encode_job(callback)),
    )
    assert await store.create_batch(batch) is None
    await store.mark_jobs([NewMark("only-job", "b-crash", now + 60)], now)
    member = Job(retry=1, jid="only-job", queue="work", jobtype="T", args=[])
    await store.enqueue([QueuedJob("work", "only-job", encode_job(member), 60)])
    await store.commit_batch("b-crash", now, now + 60)
    await store.reserve(["work"], "w", now)
    fired = await store.end_jobs(
        [JobEnd("only-job", Outcome.SUCCESS, "b-crash")], EndContext("d", now, 60, now + 60)
    )
    assert [e.jid for e in fired.scheduled] == ["callback-1"]  # ... and the server dies here
    await store.close()  # the managers open it again
    stores = [store] if backend != "redis" else [store, open_store(url)]
    managers = [Manager(s, TEST_TIMINGS) for s in stores]
    for manager in managers:
        await manager.start()
    try:
        deadline = time.monotonic() + 5
        while (await store.queue_sizes()).get(CALLBACKS, 0) == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        page = await store.list_queue(CALLBACKS, 0, 10)
        assert [q.jid for q in page.items] == ["callback-1"]
    finally:
        for manager in managers:
            await manager.stop()


async def _monitored(redis_url: str, act: Any) -> list[str]:
    """The commands Redis ran (those of scripts included) while ``act()`` ran, from MONITOR;
    read up to an ECHO sent after it, so no line is missed or waited for."""
    from urllib.parse import urlparse

    import redis.asyncio as aioredis

    where = urlparse(redis_url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    writer.write(b"MONITOR\r\n")
    assert await reader.readline() == b"+OK\r\n"
    await act()
    marker = uuid.uuid4().hex
    client = aioredis.Redis.from_url(redis_url)
    await client.echo(marker)
    await client.aclose()
    lines: list[str] = []
    async with asyncio.timeout(5):
        while marker not in (line := (await reader.readline()).decode()):
            lines.append(line)
    writer.close()
    return lines


async def test_redis_an_ack_looks_up_no_mark_for_a_job_this_server_saw_unmarked(
    redis_url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    """The ACK script reads a job's mark only when the job may have one: a job this server
    reserved and saw without batch keys skips the lookup; a batch job, or a job reserved by
    another server (not seen here), takes it, so its batch still counts it."""
    a = await make_server(redis_url)
    b = await make_server(redis_url)
    on_a = await raw_client(a.port, hello=HELLO)
    on_b = await raw_client(b.port, hello=HELLO.replace(b"w1", b"w2"))
    bid = await new_batch(on_a)
    plain, batched, elsewhere = job(), job(custom={"bid": bid}), job(custom={"track": 1})
    payload = msgspec.json.encode([plain, batched, elsewhere])
    assert bulk_json(await on_a.call(b"PUSHB " + payload)) == {}
    assert await on_a.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert len(await fetch_all(on_a, "work", 3)) == 3

    async def ack(conn: RawClient, jid: str) -> None:
        assert await conn.call(b'ACK {"jid":"' + jid.encode() + b'"}') == b"+OK\r\n"

    def mark_reads(lines: list[str], jid: str) -> int:
        return sum('"HGET"' in line and "marks" in line and jid in line for line in lines)

    lines = await _monitored(redis_url, lambda: ack(on_a, plain["jid"]))
    # its reservation ended (a plain job's ACK is ack.lua: HDEL, nothing read back)
    assert any('"HDEL"' in line and plain["jid"] in line for line in lines)
    assert mark_reads(lines, plain["jid"]) == 0
    lines = await _monitored(redis_url, lambda: ack(on_a, batched["jid"]))
    assert mark_reads(lines, batched["jid"]) >= 1
    lines = await _monitored(redis_url, lambda: ack(on_b, elsewhere["jid"]))  # B never saw it
    assert mark_reads(lines, elsewhere["jid"]) >= 1
    status = bulk_json(await on_b.call(b"BATCH STATUS " + bid.encode()))
    assert (status["pending"], status["complete_st"]) == (0, "1")
    tracked = bulk_json(await on_b.call(b"TRACK GET " + elsewhere["jid"].encode()))
    assert tracked["state"] == "success"
