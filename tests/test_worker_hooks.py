"""Hooks, three levels of middleware, the job context and error handlers, on a real server."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import conveyor
import conveyor.testing
from conveyor import Handler, JobContext
from tests.support.server import RunningServer


def tracing(events: list[str], name: str) -> conveyor.Middleware:
    def middleware(call_next: Handler) -> Handler:
        async def run(ctx: JobContext) -> Any:
            events.append(f"{name}>")
            try:
                return await call_next(ctx)
            finally:
                events.append(f"<{name}")

        return run

    return middleware


async def test_middleware_and_hooks_run_in_documented_order(server: RunningServer) -> None:
    events: list[str] = []
    app = conveyor.App(server.url, middleware=[tracing(events, "app1")])
    app.use(tracing(events, "app2"))
    billing = app.group("billing", middleware=[tracing(events, "group")])

    @billing.job(middleware=[tracing(events, "job1")])
    async def charge(amount: int) -> None:
        events.append(f"charge {amount} {conveyor.current_job().jobtype}")

    charge.use(tracing(events, "job2"))

    @app.before
    async def global_before(ctx: JobContext) -> None:
        events.append(f"before global {ctx.jid == jid}")

    @charge.before
    def job_before(ctx: JobContext) -> None:  # sync hooks work too
        events.append("before job")

    @app.after
    def global_after(ctx: JobContext, error: BaseException | None) -> None:
        events.append(f"after global {error}")

    @charge.after
    async def job_after(ctx: JobContext, error: BaseException | None) -> None:
        events.append(f"after job {error}")

    jid = await charge.push(5)
    await conveyor.testing.drain(app)
    assert events == [
        "app1>", "app2>", "group>", "job1>", "job2>",
        "before global True", "before job",
        "charge 5 charge",
        "after global None", "after job None",
        "<job2", "<job1", "<group", "<app2", "<app1",
    ]  # fmt: skip
    await app.aclose()


async def test_worker_level_middleware_wraps_app_middleware_in_registration_order(
    server: RunningServer,
) -> None:
    events: list[str] = []
    app = conveyor.App(server.url, middleware=[tracing(events, "app")])

    @app.job
    async def noop() -> None:
        events.append("run")

    await noop.push()
    await conveyor.testing.drain(app, middleware=[tracing(events, "worker")])
    assert events == ["app>", "worker>", "run", "<worker", "<app"]
    await app.aclose()


async def test_middleware_can_change_the_result_and_short_circuit(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    ran: list[str] = []

    def skip_flagged(call_next: Handler) -> Handler:
        async def run(ctx: JobContext) -> Any:
            if ctx.custom.get("skip"):
                ran.append(f"skipped {ctx.jid}")
                return None
            return await call_next(ctx)

        return run

    @app.job(middleware=[skip_flagged])
    async def maybe() -> None:
        ran.append("ran")

    jid = await maybe.options(custom={"skip": True}).push()
    await maybe.push()
    worker = await conveyor.testing.drain(app, concurrency=1)
    assert ran == [f"skipped {jid}", "ran"]
    assert worker.failed == 0
    await app.aclose()


async def test_after_hooks_see_the_error_and_error_handler_gets_it(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = conveyor.App(server.url)
    seen: list[Any] = []

    @app.job(retry=0)
    async def broken() -> None:
        raise ValueError("bad input")

    @app.after
    def after(ctx: JobContext, error: BaseException | None) -> None:
        seen.append(("after", type(error).__name__))

    @app.on_error
    async def report(ctx: JobContext, error: BaseException) -> None:
        seen.append(("error handler", ctx.jid, str(error)))

    @app.on_error
    def broken_reporter(ctx: JobContext, error: BaseException) -> None:
        raise RuntimeError("the error handler itself failed")

    jid = await broken.push()
    with caplog.at_level(logging.ERROR, logger="conveyor.worker"):
        worker = await conveyor.testing.drain(app)
    assert seen == [("after", "ValueError"), ("error handler", jid, "bad input")]
    assert worker.failed == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"[broken {jid}] failed: ValueError: bad input" in m for m in messages)
    assert any("error handler" in m and "failed" in m for m in messages)
    await app.aclose()


async def test_before_hook_error_fails_the_job_without_running_it(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    ran: list[str] = []

    @app.job
    async def guarded() -> None:
        ran.append("ran")

    @guarded.before
    def deny(ctx: JobContext) -> None:
        raise PermissionError("not today")

    jid = await guarded.push()
    await conveyor.testing.drain(app)
    found = await server.manager.locate(jid)
    assert ran == []
    assert found is not None
    assert found.where == "retries"
    await app.aclose()


async def test_job_context_in_async_and_sync_handlers(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    seen: dict[str, Any] = {}

    @app.job
    async def in_loop() -> None:
        ctx = conveyor.current_job()
        seen["async"] = (ctx.jid, ctx.queue, dict(ctx.custom), ctx.retry_count)
        ctx.logger.info("hello from the job")

    @app.job
    def in_thread() -> None:
        ctx = conveyor.current_job()
        seen["sync"] = (ctx.jid, threading.current_thread() is not threading.main_thread())

    jid1 = await in_loop.options(queue="q1", custom={"tenant": 7}).push()
    jid2 = await in_thread.push()
    await conveyor.testing.drain(app, queues=["q1", "default"])
    assert seen["async"] == (jid1, "q1", {"tenant": 7}, 0)
    assert seen["sync"] == (jid2, True)
    with pytest.raises(LookupError, match="outside a running job"):
        conveyor.current_job()
    await app.aclose()


async def test_retry_count_counts_previous_failures() -> None:
    job = conveyor.Job(jid="x" * 10, jobtype="t", args=[], failure={"retry_count": 2})
    assert JobContext(job).retry_count == 3
    assert JobContext(conveyor.Job(jid="y" * 10, jobtype="t")).retry_count == 0
