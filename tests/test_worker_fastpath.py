"""The per-job path: bare async handlers are called directly, everything else goes through the
chain, and both behave the same; FETCHB decoded straight into ``Job``; ACKB in chunks."""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from typing import Any

import pytest

import conveyor
import conveyor.job
import conveyor.testing
from conveyor import Handler, JobContext
from conveyor.client import Client
from conveyor.client._connection import fetch_jobs
from conveyor.manager import ServerStats
from conveyor.worker import JobRunner
from conveyor.worker.reporter import ACK_BATCH_MAX
from tests.support.server import RunningServer


@dataclasses.dataclass
class Order:
    number: int
    total: float = 0.0


def job(jobtype: str, *args: Any, **fields: Any) -> conveyor.Job:
    return conveyor.Job(
        jid=f"{jobtype}-1", jobtype=jobtype, queue="default", args=list(args), **fields
    )


def jobs_app() -> tuple[conveyor.App, list[Any]]:
    app = conveyor.App()
    seen: list[Any] = []

    @app.job
    async def bare(order: Order) -> int:
        ctx = conveyor.current_job()
        seen.append((ctx.jid, ctx.wid, order))
        return order.number * 2

    @app.job
    async def broken(n: int) -> None:
        raise ValueError(f"bad {n}")

    @app.job(timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(10)

    @app.job(timeout=5)
    async def quick_with_timeout(n: int) -> int:
        return n + 1

    return app, seen


async def test_a_bare_async_handler_gets_its_args_context_and_result() -> None:
    app, seen = jobs_app()
    outcome = await JobRunner(app, wid="w1").execute(job("bare", {"number": 21}))
    assert outcome.ok
    assert outcome.result == 42
    assert seen == [("bare-1", "w1", Order(21))]
    with pytest.raises(LookupError):
        conveyor.current_job()  # reset after the job, as on the chain's path


async def test_a_bare_handler_error_is_a_failure_with_the_handlers_traceback() -> None:
    app, _ = jobs_app()
    errors: list[tuple[str, BaseException]] = []

    @app.on_error
    def record(ctx: JobContext, error: BaseException) -> None:
        errors.append((ctx.jid, error))

    outcome = await JobRunner(app).execute(job("broken", 3))
    assert not outcome.ok
    assert not outcome.dead
    assert (outcome.errtype, outcome.message) == ("ValueError", "bad 3")
    assert any("raise ValueError" in line for line in outcome.backtrace)
    assert [(jid, str(error)) for jid, error in errors] == [("broken-1", "bad 3")]


async def test_a_payload_that_does_not_fit_a_bare_handler_is_dead() -> None:
    app, seen = jobs_app()
    outcome = await JobRunner(app).execute(job("bare", "not an object"))
    assert outcome.dead
    assert outcome.errtype == "conveyor.PayloadError"
    assert seen == []


async def test_timeouts_still_apply_and_do_not_touch_jobs_that_finish_in_time() -> None:
    app, _ = jobs_app()
    runner = JobRunner(app)
    timed_out = await runner.execute(job("slow"))
    assert timed_out.errtype == "conveyor.JobTimeout"
    finished = await runner.execute(job("quick_with_timeout", 1))
    assert (finished.ok, finished.result) == (True, 2)


async def test_hooks_and_middleware_added_anywhere_wrap_handlers_that_have_none() -> None:
    app, _ = jobs_app()
    events: list[str] = []

    @app.before
    def before(ctx: JobContext) -> None:
        events.append(f"before {ctx.jobtype}")

    @app.after
    async def after(ctx: JobContext, error: BaseException | None) -> None:
        events.append(f"after {ctx.jobtype} {type(error).__name__ if error else None}")

    def doubling(call_next: Handler) -> Handler:
        async def run(ctx: JobContext) -> Any:
            events.append(f"mw {ctx.jobtype}")
            return 2 * await call_next(ctx)

        return run

    runner = JobRunner(app, middleware=[doubling])
    ok = await runner.execute(job("bare", {"number": 1}))
    bad = await runner.execute(job("bare", "not an object"))
    assert ok.result == 4  # 1 * 2 by the handler, * 2 by the worker-level middleware
    assert bad.dead
    assert events == [
        "mw bare", "before bare", "after bare None",
        "mw bare", "before bare", "after bare PayloadError",
    ]  # fmt: skip


async def test_middleware_on_one_job_leaves_the_others_bare() -> None:
    app, _ = jobs_app()
    wrapped: list[str] = []

    def tag(call_next: Handler) -> Handler:
        async def run(ctx: JobContext) -> Any:
            wrapped.append(ctx.jobtype)
            return await call_next(ctx)

        return run

    app.jobs["quick_with_timeout"].use(tag)
    runner = JobRunner(app)
    assert (await runner.execute(job("bare", {"number": 1}))).result == 2
    assert (await runner.execute(job("quick_with_timeout", 1))).result == 2
    assert wrapped == ["quick_with_timeout"]


async def test_the_handler_runs_right_under_execute() -> None:
    """The point of the bare path: no wrapper coroutines between the job's task and the handler."""
    app = conveyor.App()
    stacks: list[list[str]] = []

    @app.job
    async def where_am_i() -> None:
        stacks.append([frame.name for frame in traceback.extract_stack()])

    await JobRunner(app).execute(job("where_am_i"))
    (names,) = stacks
    assert names[-2:] == ["execute", "where_am_i"]


async def test_fetch_jobs_decodes_the_reply_into_job_structs(server: RunningServer) -> None:
    client = await Client.connect(server.url)
    try:
        for n in range(3):
            await client.push(
                {"jobtype": "bare", "args": [{"number": n}], "custom": {"n": n}, "queue": "q"}
            )
        fetched = await fetch_jobs(client, 2, "q")
        rest = await fetch_jobs(client, 10, "q")
        assert await fetch_jobs(client, 5, "q") == []
        with pytest.raises(ValueError, match="at least 1"):
            await fetch_jobs(client, 0, "q")
    finally:
        await client.close()
    assert all(isinstance(j, conveyor.Job) for j in fetched + rest)
    assert [j.args for j in fetched + rest] == [[{"number": n}] for n in range(3)]
    assert [j.custom for j in fetched + rest] == [{"n": n} for n in range(3)]
    assert {j.queue for j in fetched + rest} == {"q"}
    assert all(j.jid and j.enqueued_at and j.retry is not None for j in fetched + rest)


async def test_more_results_than_one_ackb_carries_are_all_acked(server: RunningServer) -> None:
    app = conveyor.App(server.url)
    ran: list[int] = []

    @app.job
    async def tick(n: int) -> None:
        ran.append(n)

    count = ACK_BATCH_MAX * 2 + 500
    await app.push_bulk([tick.build(n) for n in range(count)])
    worker = await conveyor.testing.drain(app, concurrency=100)
    assert sorted(ran) == list(range(count))
    assert (worker.processed, worker.failed) == (count, 0)
    info = await server.manager.info(ServerStats())
    assert info["faktory"]["total_processed"] == count
    assert info["faktory"]["sets"]["working"] == 0  # every reservation ended by an ACK
    await app.aclose()
