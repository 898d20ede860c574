"""Redis going away and coming back, and Redis memory per queued job.

Each test here runs its own redis-server so it can stop and restart it freely.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conveyor.errors import StoreError
from conveyor.store.base import QueuedJob, SortedSet
from conveyor.store.redis import RedisStore
from tests.support.server import MakeServer, RawConnect
from tests.support.services import RedisServer
from tests.support.tls import CertFiles

JOBS = 100_000
PAYLOAD_BYTES = 100
OVERHEAD_LIMIT_BYTES = 150
"""Measured ~40 B per queued job (see docs/redis.md); the bound fails on a bad regression."""


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_unreachable_redis_raises_store_error_and_recovers(
    private_redis: RedisServer,
) -> None:
    store = RedisStore.from_url(private_redis.url)
    await store.open()
    woken: list[str] = []
    store.set_ready_listener(woken.append)
    try:
        await store.enqueue([QueuedJob("default", "j1", b"{}", 60)])
        private_redis.stop()
        for call in (
            store.enqueue([QueuedJob("default", "j2", b"{}", 60)]),
            store.reserve(["default"], "w1", time.time()),
            store.set_size(SortedSet.DEAD),
            store.queue_sizes(),
        ):
            with pytest.raises(StoreError, match=f"127.0.0.1:{private_redis.port}"):
                await call

        private_redis.start()  # same port, empty: persistence is off in this test
        await store.enqueue([QueuedJob("default", "j3", b"{}", 60)])
        assert await store.queue_sizes() == {"default": 1}
        # The wake-up subscriber reconnects on its own and wakes every known queue.
        deadline = time.monotonic() + 5
        woken.clear()
        while "default" not in woken:
            assert time.monotonic() < deadline, "no wake-up after Redis came back"
            await asyncio.sleep(0.02)
        await store.wait_subscribed()
        woken.clear()
        other = RedisStore.from_url(private_redis.url)
        await other.open()
        await other.enqueue([QueuedJob("later", "j4", b"{}", 60)])
        await other.close()
        while "later" not in woken:
            assert time.monotonic() < deadline, "wake-ups lost after Redis came back"
            await asyncio.sleep(0.01)
    finally:
        await store.close()


async def test_open_fails_clearly_when_redis_is_down(private_redis: RedisServer) -> None:
    url = private_redis.url
    private_redis.stop()
    store = RedisStore.from_url(url)
    with pytest.raises(StoreError, match="is unreachable"):
        await store.open()
    with pytest.raises(StoreError, match="not open"):
        await store.queue_sizes()


async def test_acknowledged_jobs_survive_a_redis_restart_with_aof(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always"))
    server.start()
    try:
        store = RedisStore.from_url(server.url)
        await store.open()
        await store.enqueue([QueuedJob("default", f"j{i}", b"{}", 60) for i in range(50)])
        reserved = await store.reserve(["default"], "w1", time.time(), count=10)
        assert await store.ack([r.jid for r in reserved[:4]], "2026-01-01") == 4
        server.stop(kill=True)  # kill -9: only what the AOF holds survives
        server.start()
        assert await store.queue_sizes() == {"default": 40}
        assert (await store.counters()).processed == 4
        left = await store.list_reservations(0, 100)
        assert sorted(r.jid for r in left.items) == sorted(r.jid for r in reserved[4:])
        await store.close()
    finally:
        server.stop()


async def test_memory_per_queued_job(private_redis: RedisServer) -> None:
    client = redis.Redis(port=private_redis.port)
    store = RedisStore.from_url(private_redis.url)
    await store.open()
    try:
        await store.enqueue([QueuedJob("default", "warm", b"{}", 60)])
        before = int(client.info("memory")["used_memory"])
        filler = b"x" * (PAYLOAD_BYTES - 63)  # 24-byte jids, like Faktory's
        for start in range(0, JOBS, 5000):
            await store.enqueue(
                [
                    QueuedJob(
                        "default",
                        f"{i:024d}",
                        b'{"jid":"%024d","jobtype":"Work","args":["%s"]}' % (i, filler),
                        1800,
                    )
                    for i in range(start, start + 5000)
                ]
            )
        after = int(client.info("memory")["used_memory"])
        assert await store.queue_sizes() == {"default": JOBS + 1}
    finally:
        await store.close()
        client.close()
    assert len(b'{"jid":"%024d","jobtype":"Work","args":["%s"]}' % (0, filler)) == PAYLOAD_BYTES
    per_job = (after - before) / JOBS
    overhead = per_job - PAYLOAD_BYTES
    print(f"Redis memory per queued job: {per_job:.1f} B ({overhead:.1f} B over the payload)")
    assert overhead < OVERHEAD_LIMIT_BYTES


async def test_rediss_url_speaks_tls(tmp_path: Path, self_signed_cert: CertFiles) -> None:
    server = RedisServer(tmp_path / "tls")
    server.extra = (
        "--port", "0", "--tls-port", str(server.port),
        "--tls-cert-file", str(self_signed_cert.cert),
        "--tls-key-file", str(self_signed_cert.key), "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    try:
        url = f"rediss://localhost:{server.port}/0?ssl_ca_certs={self_signed_cert.cert}"
        store = RedisStore.from_url(url)
        await store.open()
        woken: list[str] = []
        store.set_ready_listener(woken.append)
        try:
            await store.wait_subscribed()
            await store.enqueue([QueuedJob("default", "jid-00000001", b"{}", 60)])
            assert await store.queue_sizes() == {"default": 1}
        finally:
            await store.close()
        # Without the CA the certificate is refused: TLS really is checked.
        untrusted = RedisStore.from_url(f"rediss://localhost:{server.port}/0")
        with pytest.raises(StoreError, match="certificate"):
            await untrusted.open()
    finally:
        server.stop()


async def test_server_answers_an_error_while_redis_is_down_and_recovers(
    private_redis: RedisServer, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(private_redis.url)
    client = await raw_client(server.port)
    push = b'PUSH {"jid":"jid-00000001","jobtype":"Work","args":[]}'
    assert await client.call(push) == b"+OK\r\n"
    private_redis.stop()
    reply = await client.call(push.replace(b"01", b"02"))
    assert reply.startswith(b"-ERR storage error: Redis at 127.0.0.1:")
    # A fresh connection is refused ("unreachable"); a pooled one that Redis closed under it
    # loses the reply, and the retries find no Redis ("outcome unknown"). Which one the PUSH
    # gets depends on which of the server's loops met the closed connections first.
    assert b"is unreachable" in reply or b"outcome unknown" in reply
    private_redis.start()
    assert await client.call(push.replace(b"01", b"03")) == b"+OK\r\n"
    fetched = await client.call(b"FETCH default")
    assert b'"jid-00000003"' in fetched


async def test_a_redis_outage_is_logged_a_few_times_not_per_command(
    private_redis: RedisServer,
    make_server: MakeServer,
    raw_client: RawConnect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every command and every background tick fails while Redis is down; the log says so
    with a growing pause and a count of what it left out, then says when it works again."""
    server = await make_server(private_redis.url)
    client = await raw_client(server.port)
    private_redis.stop()
    failed = 0
    with caplog.at_level(logging.INFO):
        # The first PUSH may have been under way when Redis went: its outcome is unknown
        # and the store retries it for a while; every later one fails at once.
        first = await client.call(b'PUSH {"jid":"jid-first-01","jobtype":"W","args":[]}')
        assert first.startswith(b"-ERR storage error")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            reply = await client.call(b'PUSH {"jid":"jid-%08d","jobtype":"W","args":[]}' % failed)
            assert reply.startswith(b"-ERR storage error")
            failed += 1
        private_redis.start()
        await asyncio.sleep(0.5)  # the background loops tick again
        assert await client.call(b'PUSH {"jid":"jid-back-01","jobtype":"W","args":[]}') == (
            b"+OK\r\n"
        )
    lines = [r for r in caplog.records if r.name in ("conveyor.store", "conveyor.manager.tasks")]
    assert failed > 100
    # at most three lines (failed, later with a count, works again) per background loop (the
    # features' sweeps included) and for the commands: a few per source, never one per command
    sources = len(server.manager.tasks.loop_names) + 1
    assert 3 <= len(lines) <= 3 * sources, [r.getMessage() for r in lines]
    messages = [r.getMessage() for r in lines]
    assert any("similar messages suppressed" in m for m in messages)
    assert any("works again" in m for m in messages)


async def test_full_redis_refuses_a_push_clearly_and_stores_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "full", extra=("--maxmemory", "2mb"))
    server.start()
    store = RedisStore.from_url(server.url)
    await store.open()
    try:
        big = b"x" * 100_000
        stored = 0
        error: StoreError | None = None
        for i in range(100):  # 10 MB into 2 MB
            try:
                await store.enqueue([QueuedJob("default", f"j{i}", big, 60)])
            except StoreError as exc:
                error = exc
                break
            stored += 1
        assert error is not None
        assert "failed (enqueue): command not allowed when used memory" in str(error)
        # The refused PUSH left nothing behind, and what was stored before is intact.
        assert await store.queue_sizes() == {"default": stored}
        assert stored > 0
    finally:
        await store.close()
        server.stop()
