"""Lost Redis replies as a Faktory client sees them: ``+OK`` means stored exactly once.

A conveyor server runs over a ``FaultProxy`` in front of Redis. The proxy relays a script call
and cuts the connection before the reply (the server cannot know whether Redis ran it), or
Redis kills the server's connection (``CLIENT KILL``) between running a command and sending
its reply. The client must see either ``+OK`` with the change made exactly once, or an
``-ERR`` that says the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from conveyor.store.base import SortedSet
from conveyor.store.redis.scripts import load_scripts
from conveyor.store.redis.store import Keys
from tests.support.fault_proxy import FaultProxy
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.support.services import RedisServer

K = Keys("conveyor")


def sha(name: str) -> bytes:
    return load_scripts()[name].sha.encode()


def push_line(jid: str) -> bytes:
    return b"PUSH " + json.dumps({"jid": jid, "jobtype": "Work", "args": [1]}).encode()


def jid_of(raw: bytes) -> str:
    """The jid of a queue entry: ``<reserve_for>:<len>:<jid><payload>``."""
    _, rest = raw.split(b":", 1)
    size, rest = rest.split(b":", 1)
    return rest[: int(size)].decode()


@pytest.fixture
async def direct(kv_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=kv_server.port)
    for script in load_scripts().values():
        await client.script_load(script.source)
    for library in {s.library for s in load_scripts().values() if s.library is not None}:
        await client.function_load(library, replace=True)  # the batch scripts' FCALLs too
    yield client
    await client.aclose()


@pytest.fixture
async def running(
    fault_proxy: FaultProxy, direct: aioredis.Redis, make_server: MakeServer
) -> RunningServer:
    return await make_server(fault_proxy.url + "?retry_for=0.5")


@pytest.fixture
async def client(running: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(running.port)


async def queued(direct: aioredis.Redis, queue: str = "default") -> list[str]:
    return [jid_of(raw) for raw in await direct.lrange(K.queue(queue), 0, -1)]


async def stats(direct: aioredis.Redis) -> tuple[int, int]:
    processed, failures = await direct.hmget(K.stats, ["processed", "failures"])
    return int(processed or 0), int(failures or 0)


async def test_push_whose_reply_is_lost_answers_ok_and_stores_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"))
    assert await client.call(push_line("jid-00000001")) == b"+OK\r\n"
    assert fault_proxy.cuts == 1
    assert await queued(direct) == ["jid-00000001"]


async def test_pushb_whose_reply_is_lost_stores_each_job_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    jobs = [{"jid": f"jid-0000000{i}", "jobtype": "Work", "args": []} for i in range(3)]
    fault_proxy.lose_reply(sha("enqueue"))
    assert await client.call(b"PUSHB " + json.dumps(jobs).encode()) == b"$2\r\n{}\r\n"
    assert fault_proxy.cuts == 1
    assert await queued(direct) == [job["jid"] for job in jobs]


async def test_fetch_whose_reply_is_lost_hands_out_the_job_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    for jid in ("jid-00000001", "jid-00000002"):
        assert await client.call(push_line(jid)) == b"+OK\r\n"
    fault_proxy.lose_reply(sha("reserve"))
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    assert fault_proxy.cuts == 1
    assert await direct.hkeys(K.res) == [b"jid-00000001"]
    assert await queued(direct) == ["jid-00000002"]


async def test_ack_and_fail_whose_replies_are_lost_count_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    for jid in ("jid-00000001", "jid-00000002"):
        assert await client.call(push_line(jid)) == b"+OK\r\n"
        assert jid.encode() in await client.call(b"FETCH default")
    # a job this server saw at FETCH carry no feature's marks (no unique, expiring or batch
    # keys) is ACKed by ack.lua, as with no features; the others by endings_end.lua, which
    # says what it ended (below: the batch job's ACK)
    fault_proxy.lose_reply(sha("ack"))
    assert await client.call(b'ACK {"jid":"jid-00000001"}') == b"+OK\r\n"
    fault_proxy.lose_reply(sha("fail"))
    fail = b'FAIL {"jid":"jid-00000002","errtype":"E","message":"m"}'
    assert await client.call(fail) == b"+OK\r\n"
    assert fault_proxy.cuts == 2
    assert await stats(direct) == (2, 1)
    assert await direct.zrange(K.zset(SortedSet.RETRIES), 0, -1) == [b"jid-00000002"]
    assert await direct.hlen(K.res) == 0


async def test_push_whose_every_reply_is_lost_answers_an_honest_error(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    fault_proxy.lose_reply(sha("enqueue"), times=1000)
    reply = await client.call(push_line("jid-00000001"))
    assert reply.startswith(b"-ERR storage error: Redis at 127.0.0.1:")
    assert b"outcome unknown" in reply
    assert await queued(direct) == ["jid-00000001"]  # stored, once: the client was told maybe


async def test_fetch_whose_every_reply_is_lost_lets_the_job_go_to_the_next_fetch(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    assert await client.call(push_line("jid-00000001")) == b"+OK\r\n"
    fault_proxy.lose_reply(sha("reserve"), times=1000)
    reply = await client.call(b"FETCH default")
    assert b"outcome unknown" in reply
    fault_proxy.clear()
    # Not reserved to nobody for 30 minutes: the job is given back and fetched again.
    deadline = time.monotonic() + 5
    while await queued(direct) != ["jid-00000001"]:
        assert time.monotonic() < deadline, "the job was not given back"
        await asyncio.sleep(0.02)
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    assert await direct.hkeys(K.res) == [b"jid-00000001"]


async def killed_between_run_and_reply(
    direct: aioredis.Redis, client: RawClient, line: bytes
) -> bytes:
    """Send ``line``; while Redis sleeps (``DEBUG SLEEP``: it reads nothing meanwhile), queue
    behind it a command that kills the server's connections to Redis, so Redis runs the
    server's command, then kills the connection before its reply is written."""
    ids = [c["id"] for c in await direct.client_list() if c.get("name") == "conveyor-main"]
    assert ids, "the server's Redis connections are not named"
    blocker = aioredis.Redis(port=direct.connection_pool.connection_kwargs["port"])
    killer = aioredis.Redis(port=direct.connection_pool.connection_kwargs["port"])
    await killer.ping()
    blocked = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "0.3"))
    await asyncio.sleep(0.1)  # Redis is now busy for 0.2 s more
    await client.send(line)  # the server sends its script call; Redis reads it later
    await asyncio.sleep(0.05)
    pipe = killer.pipeline(transaction=False)  # on the connection the PING opened
    for i in ids:
        pipe.client_kill_filter(_id=i)
    kills = asyncio.create_task(pipe.execute(raise_on_error=False))
    reply = await client.reply()
    await blocked
    killed = await kills
    assert all(n == 1 for n in killed), killed
    await blocker.aclose()
    await killer.aclose()
    return reply


async def test_client_kill_between_run_and_reply_stores_once(
    fault_proxy: FaultProxy, direct: aioredis.Redis, make_server: MakeServer,
    raw_client: RawConnect,
) -> None:  # fmt: skip
    url = f"redis://127.0.0.1:{fault_proxy.target_port}/0?client_name=conveyor-main"
    running = await make_server(url)
    client = await raw_client(running.port)
    assert await client.call(push_line("jid-00000000")) == b"+OK\r\n"  # connections exist
    assert await killed_between_run_and_reply(direct, client, push_line("jid-00000001")) == (
        b"+OK\r\n"
    )
    assert await queued(direct) == ["jid-00000000", "jid-00000001"]
    reply = await killed_between_run_and_reply(direct, client, b"FETCH default")
    assert b'"jid-00000000"' in reply
    assert await direct.hkeys(K.res) == [b"jid-00000000"]
    assert await queued(direct) == ["jid-00000001"]


async def test_batch_steps_whose_replies_are_lost_happen_once(
    client: RawClient, fault_proxy: FaultProxy, direct: aioredis.Redis
) -> None:
    """The batch scripts are sent again after a lost reply (they change nothing the second
    time): a job joins once, its ACK counts once, the callback is enqueued once."""
    spec = {"complete": {"jobtype": "Done", "args": [], "queue": "callbacks"}}
    fault_proxy.lose_reply(sha("batches_new"))
    reply = await client.call(b"BATCH NEW " + json.dumps(spec).encode())
    bid = reply.split(b"\r\n")[1].decode()
    assert bid.startswith("b-")
    job = {"jid": "jid-00000001", "jobtype": "Work", "args": [1], "custom": {"bid": bid}}
    fault_proxy.lose_reply(sha("batches_mark"))
    assert await client.call(b"PUSH " + json.dumps(job).encode()) == b"+OK\r\n"
    assert await client.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert b"jid-00000001" in await client.call(b"FETCH default")
    # the ACK: endings_end.lua finds the job's batch, then ends it with the batch declared
    fault_proxy.lose_reply(sha("endings_end"), times=2)
    assert await client.call(b'ACK {"jid":"jid-00000001"}') == b"+OK\r\n"
    assert fault_proxy.cuts == 4
    status = json.loads((await client.call(b"BATCH STATUS " + bid.encode())).split(b"\r\n")[1])
    assert (status["total"], status["pending"], status["complete_st"]) == (1, 0, "1")
    # the step that ran first scheduled the callback; the promoter enqueues it, once
    deadline = time.monotonic() + 5
    while await direct.llen(K.queue("callbacks")) == 0:
        assert time.monotonic() < deadline, "the callback never came"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert await direct.llen(K.queue("callbacks")) == 1
    assert await direct.zcard(K.zset(SortedSet.SCHEDULED)) == 0
    assert await stats(direct) == (1, 0)


def _lp(data: bytes) -> bytes:
    return b"%d:%s" % (len(data), data)


async def test_a_results_ack_whose_reply_is_lost_stores_and_counts_once(
    running: RunningServer,
    raw_client: RawConnect,
    fault_proxy: FaultProxy,
    direct: aioredis.Redis,
) -> None:
    """The ACK of a job that asked for its result and to be kept ends its reservation,
    writes its record and its completed entry and publishes the wake-up in one run of
    endings_settle.lua (the short way's endings_end.lua). Its reply is lost, and meanwhile
    (another server's doing) the same jid is reserved again: the retry replays the first
    run's reply (its token) instead of running again, so the new reservation stays, and the
    job is counted, kept and recorded once; a RESULT waiting on the server is answered."""
    hello = b'{"v":2,"hostname":"box","pid":1,"wid":"w-results","labels":[]}'
    client = await raw_client(running.port, hello=hello)
    waiter = await raw_client(running.port)
    job = {"jid": "jid-00000001", "jobtype": "Work", "args": [1]}
    job["custom"] = {"result_ttl": 60, "retain": 60}
    assert await client.call(b"PUSH " + json.dumps(job).encode()) == b"+OK\r\n"
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    await waiter.send(b'RESULT {"jid":"jid-00000001","wait":10}')
    await asyncio.sleep(0.05)  # waiting on the server
    again = _lp(b"default") + _lp(b"w-other") + json.dumps(job).encode()

    async def reserved_again() -> None:
        await direct.hset(K.res, "jid-00000001", again)
        await direct.zadd(K.exp, {"jid-00000001": time.time() + 600})
        await direct.zadd(K.busy, {"jid-00000001": time.time()})

    fault_proxy.lose_reply(sha("endings_settle"), then=reserved_again)
    ack = b'ACK {"jid":"jid-00000001","result":"{\\"n\\":1}"}'
    assert await client.call(ack) == b"+OK\r\n"
    assert fault_proxy.cuts == 1
    outcome = json.loads((await waiter.reply(within=5)).split(b"\r\n", 1)[1])
    assert (outcome["state"], outcome["result"], outcome["wid"]) == (
        "succeeded",
        {"n": 1},
        "w-results",
    )
    assert await direct.hget(K.res, "jid-00000001") == again  # the retry ended nothing
    assert await stats(direct) == (1, 0)
    stored = await direct.hget(K.records("results"), "jid-00000001")
    assert stored is not None
    assert json.loads(stored.split(b":", 1)[1][int(stored.split(b":", 1)[0]) :])["result"] == {
        "n": 1
    }
    assert await direct.zrange(K.zset(SortedSet.COMPLETED), 0, -1) == [b"jid-00000001"]


async def test_a_late_results_ack_stores_nothing(client: RawClient, direct: aioredis.Redis) -> None:
    """The record is written only when the ACK's own run ends the reservation: an ACK sent
    again after its job ended (a late one) changes neither the record nor the counts."""
    job = {"jid": "jid-00000001", "jobtype": "Work", "args": [1], "custom": {"result_ttl": 60}}
    assert await client.call(b"PUSH " + json.dumps(job).encode()) == b"+OK\r\n"
    assert b'"jid-00000001"' in await client.call(b"FETCH default")
    assert await client.call(b'ACK {"jid":"jid-00000001","result":"1"}') == b"+OK\r\n"
    first = await direct.hget(K.records("results"), "jid-00000001")
    assert first is not None
    assert await client.call(b'ACK {"jid":"jid-00000001","result":"2"}') == b"+OK\r\n"
    assert await direct.hget(K.records("results"), "jid-00000001") == first
    assert await stats(direct) == (1, 0)
    reply = await client.call(b'RESULT {"jid":"jid-00000001"}')
    assert json.loads(reply.split(b"\r\n", 1)[1])["result"] == 1
