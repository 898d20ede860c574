"""Queue order, the connection pool (reconnect, backoff, broken connections), TLS and passwords."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ssl
import time
from typing import Any

import pytest

import conveyor
import conveyor.testing
import conveyor.worker.runtime
from conveyor.backoff import Backoff
from conveyor.client import Client
from conveyor.errors import AuthenticationError, ConnectError
from conveyor.pool import ConnectionPool
from conveyor.worker.queues import QueueOrder, QueueSpec, parse_queue
from tests.support.server import TEST_TIMINGS, MakeServer, RunningServer
from tests.support.tls import CertFiles


def test_parse_queue() -> None:
    assert parse_queue("critical") == QueueSpec("critical")
    assert parse_queue("bulk.v2:7") == QueueSpec("bulk.v2", 7)
    bad_specs = [
        ("", "invalid queue name"),
        ("a b", "invalid queue name"),
        ("a:x", "expected NAME:INTEGER"),
        ("a:0", "weights start at 1"),
    ]
    for bad, message in bad_specs:
        with pytest.raises(ValueError, match=message):
            parse_queue(bad)
    with pytest.raises(ValueError, match="listed twice"):
        QueueOrder(["a", "a"])
    with pytest.raises(ValueError, match="at least one queue"):
        QueueOrder([])


def test_strict_order_is_the_given_order() -> None:
    order = QueueOrder(["c", "b", "a"])
    assert not order.weighted
    assert all(order.order() == ["c", "b", "a"] for _ in range(50))


def test_weighted_order_puts_queues_first_in_proportion_to_weight() -> None:
    order = QueueOrder(["critical:3", "default:1"])
    firsts = collections.Counter(order.order()[0] for _ in range(4000))
    assert order.weighted
    assert 0.70 < firsts["critical"] / 4000 < 0.80  # 3 of 4 expected
    assert sorted(order.order()) == ["critical", "default"]  # every queue, every time


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(first_seconds=0.1, max_seconds=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1


class FakeConnection:
    """Stands in for a Client in pool tests: the pool only needs ``close`` and ``closed``."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_pool_reuses_connections_and_bounds_them() -> None:
    made: list[FakeConnection] = []

    async def connect() -> FakeConnection:
        made.append(FakeConnection(len(made)))
        return made[-1]

    pool: ConnectionPool[FakeConnection] = ConnectionPool(connect, size=2)
    inside = 0
    peak = 0

    async def use(conn: FakeConnection) -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.01)
        inside -= 1
        return conn.number

    numbers = await asyncio.gather(*(pool.run(use) for _ in range(10)))
    assert set(numbers) == {0, 1}
    assert len(made) == 2
    assert peak == 2
    await pool.close()
    assert all(conn.closed for conn in made)
    with pytest.raises(ConnectError, match="closed"):
        await pool.run(use)


async def test_pool_drops_broken_connections_and_retries_with_backoff() -> None:
    made: list[FakeConnection] = []
    refusals = 2

    async def connect() -> FakeConnection:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise ConnectError("refused")
        made.append(FakeConnection(len(made)))
        return made[-1]

    pool: ConnectionPool[FakeConnection] = ConnectionPool(
        connect, size=1, backoff=lambda: Backoff(0.001, 0.01)
    )
    calls: list[int] = []

    async def flaky(conn: FakeConnection) -> str:
        calls.append(conn.number)
        if conn.number == 0:
            raise ConnectError("connection reset")
        return "ok"

    assert await pool.run(flaky) == "ok"
    assert calls == [0, 1]  # the broken connection was closed, never reused
    assert made[0].closed
    await pool.close()


async def test_pool_retries_at_once_when_a_pooled_connection_turns_out_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server closed it just as it was taken (its EOF not seen yet): straight on to a
    new connection, as for one seen closed, without a warning or a backoff delay."""
    made: list[FakeConnection] = []
    delays: list[float] = []

    async def connect() -> FakeConnection:
        made.append(FakeConnection(len(made)))
        return made[-1]

    class Recorded(Backoff):
        def next_delay(self) -> float:
            delays.append(super().next_delay())
            return delays[-1]

    pool: ConnectionPool[FakeConnection] = ConnectionPool(
        connect, size=1, backoff=lambda: Recorded(0.001, 0.01)
    )
    used: list[int] = []

    async def push(conn: FakeConnection) -> None:
        used.append(conn.number)
        if conn.number == 0 and len(used) == 2:
            raise ConnectError("closed the connection while we waited for the reply")

    await pool.run(push)
    await pool.run(push)
    assert used == [0, 0, 1]
    assert made[0].closed
    assert delays == []
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    # a new connection failing is no stale one: backoff as before
    made.clear()
    await pool.discard_idle()
    failures = 1

    async def fresh_fails_once(conn: FakeConnection) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectError("reset")

    await pool.run(fresh_fails_once)
    assert len(delays) == 1
    await pool.close()


async def test_pool_gives_up_after_retry_seconds_and_fails_fast_on_bad_password() -> None:
    async def refuse() -> FakeConnection:
        raise ConnectError("refused")

    pool: ConnectionPool[FakeConnection] = ConnectionPool(
        refuse, retry_seconds=0.05, backoff=lambda: Backoff(0.01, 0.02)
    )
    with pytest.raises(ConnectError, match="cannot connect: refused"):
        await pool.run(lambda conn: asyncio.sleep(0))
    attempts = 0

    async def bad_password() -> FakeConnection:
        nonlocal attempts
        attempts += 1
        raise AuthenticationError("Invalid password")

    pool = ConnectionPool(bad_password, retry_seconds=5)
    with pytest.raises(AuthenticationError):
        await pool.run(lambda conn: asyncio.sleep(0))
    assert attempts == 1
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionPool(bad_password, size=0)


async def test_producer_reports_unreachable_server(server: RunningServer) -> None:
    app = conveyor.App("tcp://127.0.0.1:1", retry_seconds=0.1)

    @app.job
    async def nowhere() -> None: ...

    with pytest.raises(ConnectError):
        await nowhere.push()
    await app.aclose()


async def test_app_and_worker_over_tls_with_a_password(
    make_server: MakeServer, self_signed_cert: CertFiles
) -> None:
    server = await make_server(
        password="s3cret", tls_cert=self_signed_cert.cert, tls_key=self_signed_cert.key
    )
    context = ssl.create_default_context(cafile=str(self_signed_cert.cert))
    app = conveyor.App(f"tcp+tls://127.0.0.1:{server.port}", password="s3cret", tls=context)
    seen: list[Any] = []

    @app.job
    async def secure(n: int) -> None:
        seen.append(n)

    await secure.push(42)
    worker = await conveyor.testing.drain(app)
    assert seen == [42]
    assert worker.processed == 1
    await app.aclose()

    wrong = conveyor.App(f"tcp+tls://127.0.0.1:{server.port}", password="nope", tls=context)
    with pytest.raises(AuthenticationError):
        await wrong.push_job(secure.build(1))
    await wrong.aclose()


async def test_pool_reconnects_quietly_when_the_server_closed_an_idle_connection(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Servers close idle connections (conveyor after ``idle_timeout_seconds``, Faktory's
    hunter-io fork after 2 min): the pool must not send the next command into one."""
    server = await make_server(idle_timeout_seconds=0.2)
    made: list[Client] = []

    async def connect() -> Client:
        made.append(await Client.connect(server.url))
        return made[-1]

    pool: ConnectionPool[Client] = ConnectionPool(connect, size=1)
    await pool.run(lambda client: client.push({"jobtype": "A", "args": [1], "queue": "idle"}))
    deadline = time.monotonic() + 5
    while server.server.connections:  # the server closes it
        assert time.monotonic() < deadline, "the idle connection was never closed"
        await asyncio.sleep(0.01)
    await pool.run(lambda client: client.push({"jobtype": "A", "args": [2], "queue": "idle"}))
    assert len(made) == 2
    assert pool.stats == {"open": 1, "idle": 1}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # no retry, no delay
    assert (await server.manager.store.queue_sizes())["idle"] == 2
    await pool.close()


async def test_worker_fetches_again_after_its_idle_connection_was_closed(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With every slot busy longer than the idle timeout, the fetching connection sits idle
    and the server closes it; the next fetch reconnects without an error."""
    server = await make_server(idle_timeout_seconds=0.2)
    app = conveyor.App(server.url)
    done: list[int] = []

    @app.job
    async def slow(n: int) -> None:
        await asyncio.sleep(0.6)
        done.append(n)

    await slow.push(1)
    await slow.push(2)
    async with app.worker(concurrency=1, heartbeat_seconds=0.05):
        deadline = time.monotonic() + 10
        while len(done) < 2:
            assert time.monotonic() < deadline, f"jobs done: {done}"
            await asyncio.sleep(0.02)
    await app.aclose()
    assert done == [1, 2]
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


async def test_worker_registers_again_after_the_server_reaped_it(make_server: MakeServer) -> None:
    config = dataclasses.replace(
        TEST_TIMINGS, worker_timeout_seconds=0.3, worker_reaper_interval_seconds=0.1
    )
    server = await make_server(config=config)
    app = conveyor.App(server.url)
    ran = asyncio.Event()

    @app.job
    async def later() -> None:
        ran.set()

    async with app.worker(heartbeat_seconds=0.6) as worker:  # slower than the reaper
        await asyncio.sleep(1.0)  # reaped at least once by now
        await later.push()
        await asyncio.wait_for(ran.wait(), 5)
        # It keeps being reaped (it beats too slowly) and keeps coming back: poll for it.
        deadline = time.monotonic() + 3
        while worker.wid not in {view.record.wid for view in await server.manager.workers()}:
            assert time.monotonic() < deadline, "the worker never registered again"
            await asyncio.sleep(0.01)
    await app.aclose()


async def test_stopping_is_bounded_when_the_server_is_gone(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conveyor.worker.runtime, "FINAL_FLUSH_SECONDS", 0.5)
    server = await make_server()
    app = conveyor.App(server.url)
    started = asyncio.Event()

    @app.job
    async def hang() -> None:
        started.set()
        await asyncio.sleep(60)

    await hang.push()
    worker = app.worker(heartbeat_seconds=0.1)
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await server.stop()
    await asyncio.sleep(0.3)  # the fetcher is now retrying with backoff
    began = time.monotonic()
    await asyncio.wait_for(worker.stop(grace_seconds=0.1), 10)
    assert time.monotonic() - began < 3
    assert worker.state == "stopped"
    await app.aclose()
