"""The worker runtime against a real in-process conveyor server over loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

import pytest

import conveyor
import conveyor.job
import conveyor.manager
import conveyor.testing
from conveyor.client import Client
from conveyor.config import ServerConfig
from conveyor.job import Job
from conveyor.manager import Manager
from conveyor.server import FaktoryServer
from conveyor.store import open_store
from tests.support.server import TEST_TIMINGS, MakeServer, RunningServer


@dataclasses.dataclass
class Email:
    to: str
    subject: str = "hi"


def make_app(url: str) -> tuple[conveyor.App, list[Any]]:
    app = conveyor.App(url)
    seen: list[Any] = []

    @app.job
    async def send_email(msg: Email) -> None:
        seen.append(("email", msg))

    @app.job(queue="math")
    def add(a: int, b: int) -> int:  # sync: runs in a thread
        seen.append(("add", a + b, threading.current_thread().name))
        return a + b

    @app.job(retry=3)
    async def explode(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    return app, seen


async def locate(server: RunningServer, jid: str) -> str | None:
    found = await server.manager.locate(jid)
    return None if found is None else found.where


async def eventually(check: Any, within: float = 5.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_typed_and_positional_jobs_run_and_are_acked(server: RunningServer) -> None:
    app, seen = make_app(server.url)
    jid1 = await app.jobs["send_email"].push(Email("a@b.c"))
    jid2 = await app.jobs["add"].push(2, 3)
    worker = await conveyor.testing.drain(app, queues=["default", "math"])
    assert worker.processed == 2
    assert worker.failed == 0
    assert ("email", Email("a@b.c")) in seen
    assert any(item[:2] == ("add", 5) and item[2].startswith("conveyor") for item in seen)
    assert await locate(server, jid1) is None  # acked: gone
    assert await locate(server, jid2) is None
    await app.aclose()


async def test_exception_fails_job_with_errtype_message_backtrace(server: RunningServer) -> None:
    app, _ = make_app(server.url)
    jid = await app.jobs["explode"].push(7)
    await conveyor.testing.drain(app)
    found = await server.manager.locate(jid)
    assert found is not None
    assert found.where == "retries"
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "RuntimeError"
    assert failure["message"] == "boom 7"
    assert any("explode" in line for line in failure["backtrace"])
    assert failure["backtrace"][-1] == "RuntimeError: boom 7"
    await app.aclose()


@pytest.mark.parametrize("batch", [True, False], ids=["fetchb", "fetch"])
async def test_concurrency_runs_jobs_in_parallel(server: RunningServer, batch: bool) -> None:
    app = conveyor.App(server.url)
    running = 0
    peak = 0

    @app.job
    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1

    await app.push_bulk([slow.build() for _ in range(8)])
    started = time.monotonic()
    worker = await conveyor.testing.drain(app, concurrency=8, batch=batch)
    elapsed = time.monotonic() - started
    assert worker.processed == 8
    assert peak == 8 if batch else peak >= 2
    assert elapsed < 1.5  # serially it would take 1.6 s
    await app.aclose()


async def test_strict_queue_order(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    order: list[str] = []

    @app.job
    async def record(tag: str) -> None:
        order.append(tag)

    for i in range(3):
        await record.options(queue="low").push(f"low{i}")
        await record.options(queue="high").push(f"high{i}")
    await conveyor.testing.drain(app, queues=["high", "low"], concurrency=1)
    assert order == ["high0", "high1", "high2", "low0", "low1", "low2"]
    await app.aclose()


async def test_worker_inside_another_program_start_stop(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    done = asyncio.Event()

    @app.job
    async def ping() -> None:
        done.set()

    async with app.worker(concurrency=2, heartbeat_seconds=0.1) as worker:
        await ping.push()
        await asyncio.wait_for(done.wait(), 5)
        assert worker.state == "running"
    assert worker.state == "stopped"
    assert worker.processed == 1
    await app.aclose()


async def test_server_quiet_then_terminate_is_honoured(server: RunningServer) -> None:
    app = conveyor.App(server.url)

    @app.job
    async def noop() -> None:
        pass

    worker = app.worker(heartbeat_seconds=0.05)
    await worker.start()
    await server.manager.signal_workers([worker.wid], "quiet")
    assert await eventually(lambda: _is(worker.state, "quiet"))
    await server.manager.signal_workers([worker.wid], "terminate")
    await asyncio.wait_for(worker.wait(), 5)
    assert worker.state == "stopped"
    await app.aclose()


async def _is(value: str, expected: str) -> bool:
    return value == expected


async def test_stop_fails_running_jobs_after_grace_so_they_are_retried(
    server: RunningServer,
) -> None:
    app = conveyor.App(server.url)
    started = asyncio.Event()

    @app.job
    async def forever() -> None:
        started.set()
        await asyncio.sleep(60)

    jid = await forever.push()
    worker = app.worker(heartbeat_seconds=0.1)
    await worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(grace_seconds=0.1)
    found = await server.manager.locate(jid)
    assert found is not None
    assert found.where == "retries"
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.WorkerShutdown"
    await app.aclose()


async def test_timeout_cancels_async_handler(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    cancelled = asyncio.Event()

    @app.job(timeout=0.1)
    async def sleepy() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    jid = await sleepy.push()
    await conveyor.testing.drain(app)
    assert cancelled.is_set()
    found = await server.manager.locate(jid)
    assert found is not None
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.JobTimeout"
    await app.aclose()


async def test_fetch_and_ack_fall_back_to_standard_commands(server: RunningServer) -> None:
    """batch=False is what the worker picks for a server whose description lacks 'conveyor'."""
    app = conveyor.App(server.url)
    ran: list[int] = []

    @app.job
    async def one(n: int) -> None:
        ran.append(n)

    await app.push_bulk([one.build(i) for i in range(5)])
    worker = await conveyor.testing.drain(app, batch=False)
    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert worker.batch is False
    info = await server.manager.info(conveyor.manager.ServerStats())
    assert info["faktory"]["total_processed"] == 5
    await app.aclose()


async def test_batch_mode_detected_from_server_description(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    worker = await conveyor.testing.drain(app)
    assert worker.batch is True
    await app.aclose()


async def test_unknown_jobtype_is_failed_and_retried(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    client = await Client.connect(server.url)
    jid = await client.push(Job(jid="x" * 12, jobtype="nobody_knows", args=[]))
    await client.close()
    await conveyor.testing.drain(app)
    found = await server.manager.locate(jid)
    assert found is not None
    assert found.where == "retries"
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.UnknownJobType"


async def test_reconnects_after_server_restart(make_server: MakeServer) -> None:
    first = await make_server()
    port = first.port
    app = conveyor.App(first.url)
    ran = asyncio.Event()

    @app.job
    async def hello() -> None:
        ran.set()

    async with app.worker(heartbeat_seconds=0.1):
        await first.stop()
        manager = Manager(open_store("memory://"), TEST_TIMINGS)
        await manager.start()
        second = FaktoryServer(manager, ServerConfig(port=port, web_port=None))
        await second.start()
        try:
            await hello.push()  # the producer pool reconnects too
            await asyncio.wait_for(ran.wait(), 10)
        finally:
            await app.aclose()
    await second.stop()
    await manager.stop()


async def test_heartbeats_report_rss_and_labels(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    async with app.worker(heartbeat_seconds=0.05, labels=["eu", "gpu"]) as worker:

        async def beaten() -> bool:
            views = await server.manager.workers()
            return any(v.record.wid == worker.wid and v.record.rss_kb > 1000 for v in views)

        assert await eventually(beaten)
        (record,) = [v.record for v in await server.manager.workers() if v.record.wid == worker.wid]
        assert record.labels == ["python", "eu", "gpu"]
    await app.aclose()


async def test_timeout_fails_sync_handler_while_its_thread_runs_on(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    release = threading.Event()
    finished = threading.Event()

    @app.job(timeout=0.1)
    def stubborn() -> None:
        release.wait(5)
        finished.set()

    jid = await stubborn.push()
    worker = await conveyor.testing.drain(app)
    assert worker.failed == 1
    assert not finished.is_set()  # the job FAILed; its thread is still inside the handler
    release.set()
    await asyncio.to_thread(finished.wait, 5)
    found = await server.manager.locate(jid)
    assert found is not None
    failure = conveyor.job.decode_job(found.payload).failure
    assert failure is not None
    assert failure["errtype"] == "conveyor.JobTimeout"
    assert "its thread keeps running" in failure["message"]
    await app.aclose()
