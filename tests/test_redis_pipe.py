"""The Redis store's own connection for its scripts (``store/redis/pipe.py``).

Many callers share one connection: their commands go out together at the end of a loop
iteration and the replies come back in order. What must hold: every caller gets its own
reply, a password and a database number in the URL are used, and a command whose reply does
not come within ``socket_timeout`` counts as a lost reply (retried with its token, done
once) rather than leaving the connection's replies out of step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from conveyor.errors import StoreError
from conveyor.store.base import QueuedJob
from conveyor.store.redis import RedisStore
from conveyor.store.redis.codec import parse_url
from conveyor.store.redis.pipe import NotSent, Pipe, usable
from conveyor.store.redis.store import Keys
from tests.support.services import RedisServer

NOW = 1_700_000_000.0
K = Keys("conveyor")
PASSWORD = "pipe-secret"


def job(jid: str, queue: str = "default") -> QueuedJob:
    return QueuedJob(queue, jid, b'{"jid":"%s","jobtype":"Work","args":[]}' % jid.encode(), 1800)


@pytest.fixture
def locked_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "locked", extra=("--requirepass", PASSWORD))
    server.start()
    yield server
    server.stop()


def test_the_pipe_serves_plain_redis_urls_only() -> None:
    assert usable(parse_url("redis://h:1/2?socket_timeout=3&retry_for=1"))
    assert not usable(parse_url("rediss://h:1/0"))
    assert not usable(parse_url("redis+sentinel://h:1/svc"))
    assert not usable(parse_url("redis+cluster://h:1"))
    assert not usable(parse_url("redis://h:1/0?health_check_interval=5"))


async def test_concurrent_callers_each_get_their_own_reply(kv_url: str) -> None:
    store = RedisStore.from_url(kv_url)
    await store.open()
    try:
        queues = [f"q{n}" for n in range(10)]
        await asyncio.gather(
            *(store.enqueue([job(f"{q}-{i}", q) for i in range(20)]) for q in queues)
        )
        # 200 reserves at once, each from one queue: each must get a job of its own queue
        taken = await asyncio.gather(
            *(store.reserve([q], f"w-{q}-{i}", NOW) for q in queues for i in range(20))
        )
        for (reservation,), (queue, wid) in zip(
            taken, ((q, f"w-{q}-{i}") for q in queues for i in range(20)), strict=True
        ):
            assert reservation.queue == queue
            assert reservation.wid == wid
            assert reservation.jid.startswith(queue + "-")
        jids = [r.jid for (r,) in taken]
        assert len(set(jids)) == 200
        assert sum(await asyncio.gather(*(store.ack([j], "2023-11-14") for j in jids))) == 200
    finally:
        await store.close()


async def test_password_and_database_of_the_url_are_used(locked_server: RedisServer) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_server.port}/3"
    store = RedisStore.from_url(url)
    await store.open()
    try:
        await store.enqueue([job("in-db-3")])
    finally:
        await store.close()
    direct = aioredis.Redis(port=locked_server.port, password=PASSWORD, db=3)
    try:
        assert await direct.llen(K.queue("default")) == 1
        await direct.select(0)
        assert await direct.exists(K.queue("default")) == 0
    finally:
        await direct.aclose()


async def test_a_wrong_password_is_a_clear_error(locked_server: RedisServer) -> None:
    store = RedisStore.from_url(f"redis://:wrong@127.0.0.1:{locked_server.port}/0")
    with pytest.raises(StoreError, match=r"Redis at 127\.0\.0\.1:\d+"):
        await store.open()


async def test_a_reply_later_than_socket_timeout_is_a_lost_reply_done_once(
    redis_url: str, redis_server: RedisServer
) -> None:
    """DEBUG SLEEP holds Redis still past the timeout: the enqueue already sent is run when
    Redis wakes, and its retry (same token) finds it done."""
    store = RedisStore.from_url(redis_url + "?socket_timeout=0.2&retry_for=3")
    await store.open()
    sleeper = aioredis.Redis(port=redis_server.port)
    try:
        await store.enqueue([job("warm-up")])
        before = (await sleeper.info("stats"))["total_connections_received"]
        sleeping = asyncio.ensure_future(sleeper.execute_command("DEBUG", "SLEEP", "0.6"))
        await asyncio.sleep(0.05)
        await store.enqueue([job("slow-1")])
        await sleeping
        # the timed-out connection was dropped and the retry went out on a new one
        assert (await sleeper.info("stats"))["total_connections_received"] > before
        sizes = await store.queue_sizes()
        assert sizes == {"default": 2}
        reserved = await store.reserve(["default"], "w", NOW, count=5)
        assert [r.jid for r in reserved] == ["warm-up", "slow-1"]
    finally:
        await sleeper.aclose()
        await store.close()


async def test_closing_while_the_connection_opens_leaves_no_socket_behind() -> None:
    """A store closed while its pipe waits on Redis's answer to AUTH must not keep that
    connection: it would live on with nobody to close it (an unclosed socket)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads AUTH, never answers

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pipe = Pipe(parse_url(f"redis://:secret@127.0.0.1:{port}/0"))
    call = asyncio.ensure_future(pipe.call("PING"))
    for _ in range(100):
        if accepted:
            break
        await asyncio.sleep(0.01)
    assert accepted, "the pipe never connected"
    await pipe.close()
    answer = b""
    try:
        # Redis's side of the connection: EOF once the pipe let go of it
        answer = await asyncio.wait_for(_read_to_end(accepted[0]), 3)
    finally:
        call.cancel()
        listener.close()
        for writer in accepted:
            writer.close()
    assert b"AUTH" in answer  # what the pipe sent before it was closed, then EOF
    with pytest.raises(NotSent):  # the caller is told nothing was sent, not left waiting
        await call


async def _read_to_end(writer: asyncio.StreamWriter) -> bytes:
    reader = writer._protocol._stream_reader  # type: ignore[attr-defined]
    return await reader.read()
