"""The Python side of batches, tracking and workflows, against a real server and real
workers: ``app.batch``, ``ctx.batch``, ``ctx.progress``/``ctx.extend``, ``chain``, ``group``,
DAGs with ``after=``, and workflows that outlive a server restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import conveyor
import conveyor.testing
from conveyor.errors import CommandError
from conveyor.store.base import SortedSet
from tests.support.server import MakeServer, RunningServer


class Recorder:
    """An app whose jobs record what ran, in order, with their args."""

    def __init__(self, url: str) -> None:
        self.app = conveyor.App(url)
        self.ran: list[tuple[str, tuple[Any, ...]]] = []
        self.results: dict[str, Any] = {}

    def job(self, name: str, result: Any = None, fail: bool = False) -> conveyor.JobDef[Any, Any]:
        async def handler(*args: Any) -> Any:
            self.ran.append((name, args))
            if fail:
                raise RuntimeError(f"{name} fails")
            return result if result is not None else f"{name}-result"

        handler.__name__ = name
        return self.app.register(handler, retry=-1)

    def names(self) -> list[str]:
        return [name for name, _ in self.ran]

    async def drain(self, queues: Sequence[str] = ("default",)) -> None:
        await conveyor.testing.drain(self.app, queues=list(queues), concurrency=1)


@pytest.fixture
async def rec(server: RunningServer) -> Any:
    recorder = Recorder(server.url)
    yield recorder
    await recorder.app.aclose()


async def test_a_batch_block_commits_and_calls_back_in_order(rec: Recorder) -> None:
    work = rec.job("work")
    finished, succeeded = rec.job("finished"), rec.job("succeeded")
    async with rec.app.batch(
        description="three", on_complete=finished.s("c"), on_success=succeeded.s("s")
    ) as batch:
        for i in range(3):
            await work.push(i)
        assert conveyor.app.batches.current_bid() == batch.bid
    assert conveyor.app.batches.current_bid() is None
    status = await rec.app.batch_status(batch.bid)
    assert (status.total, status.pending, status.description) == (3, 3, "three")
    await rec.drain()
    assert rec.names() == ["work", "work", "work", "finished", "succeeded"]
    assert rec.ran[-1] == ("succeeded", ("s",))
    status = await batch.status()
    assert (status.pending, status.complete_state, status.success_state) == (0, "2", "2")
    assert status.complete
    assert status.succeeded


async def test_an_exception_leaves_the_batch_uncommitted(rec: Recorder) -> None:
    work, done = rec.job("work"), rec.job("done")
    bids: list[str] = []

    async def push_then_fail() -> None:
        async with rec.app.batch(on_success=done.s()) as batch:
            bids.append(batch.bid)
            await work.push(1)
            raise ValueError("oops")

    with pytest.raises(ValueError, match="oops"):
        await push_then_fail()
    (bid,) = bids
    await rec.drain()
    assert rec.names() == ["work"]  # the job ran, the callback did not: not committed
    assert (await rec.app.batch_status(bid)).success_state == ""


async def test_failed_jobs_call_complete_not_success(rec: Recorder) -> None:
    work, broken = rec.job("work"), rec.job("broken", fail=True)
    finished, succeeded = rec.job("finished"), rec.job("succeeded")
    async with rec.app.batch(on_complete=finished.s(), on_success=succeeded.s()) as batch:
        await work.push(1)
        await broken.push(2)
    await rec.drain()
    assert sorted(rec.names()) == ["broken", "finished", "work"]
    status = await rec.app.batch_status(batch.bid)
    assert (status.failed, status.complete_state, status.success_state) == (1, "2", "")
    with pytest.raises(CommandError, match="no such batch b-nope"):
        await rec.app.batch_status("b-nope")


async def test_a_job_reopens_its_own_batch_to_add_jobs(rec: Recorder) -> None:
    leaf, succeeded = rec.job("leaf"), rec.job("succeeded")

    async def fan_out(n: int) -> None:
        rec.ran.append(("fan_out", (n,)))
        ctx = conveyor.current_job()
        assert ctx.batch is not None
        async with ctx.batch.open():
            for i in range(n):
                await leaf.push(i)

    rec.app.register(fan_out)
    async with rec.app.batch(on_success=succeeded.s()) as batch:
        await rec.app.jobs["fan_out"].push(2)
    await rec.drain()
    assert rec.names() == ["fan_out", "leaf", "leaf", "succeeded"]
    assert (await rec.app.batch_status(batch.bid)).total == 3


async def test_a_batch_in_a_batch_block_is_its_child(rec: Recorder) -> None:
    work, parent_done, child_done = rec.job("work"), rec.job("parent_done"), rec.job("child_done")
    async with rec.app.batch(on_success=parent_done.s()) as parent:
        await work.push(1)
        async with rec.app.batch(on_success=child_done.s()) as child:
            await work.push(2)
    assert (await rec.app.batch_status(child.bid)).parent_bid == parent.bid
    await rec.drain()
    assert rec.names()[-2:] == ["child_done", "parent_done"]


async def test_progress_and_extend_from_a_running_job(rec: Recorder, server: RunningServer) -> None:
    seen: dict[str, float] = {}

    async def long_job() -> None:
        ctx = conveyor.current_job()
        await ctx.progress(50, "half way")
        await ctx.extend(3600)
        reservation = await server.manager.store.get_reservation(ctx.jid)
        assert reservation is not None
        seen["expires_at"] = reservation.expires_at
        info = await rec.app.track(ctx.jid)
        seen["working"] = info.state == "working"

    rec.app.register(long_job)
    jid = await rec.app.jobs["long_job"].options(track=True).push()
    assert (await rec.app.track(jid)).state == "enqueued"
    await rec.drain()
    assert seen["expires_at"] > time.time() + 3000
    assert seen["working"]
    info = await rec.app.track(jid)
    assert (info.state, info.percent, info.desc) == ("success", 50, "half way")
    assert info.updated_at is not None


async def test_a_chain_runs_step_after_step(rec: Recorder, server: RunningServer) -> None:
    a, b, c = rec.job("a"), rec.job("b"), rec.job("c")
    flow = conveyor.chain(c.s(3), b.s(2), a.s(1))
    jids = await flow.push()
    assert [len(step) for step in jids] == [1, 1, 1]
    assert await server.manager.store.count_waiting() == 2
    await rec.drain()
    # in the chain's order, each step given the result of the one before
    # (tests/test_chain_results.py on every store)
    assert rec.ran == [("c", (3,)), ("b", ("c-result", 2)), ("a", ("b-result", 1))]


async def test_a_group_then_a_callback(rec: Recorder) -> None:
    part, whole = rec.job("part"), rec.job("whole")
    flow = conveyor.group([part.s(i) for i in range(3)]).then(whole.s("all"))
    jids = await flow.push()
    assert len(jids) == 3
    assert flow.bid.startswith("b-")
    await rec.drain()
    assert rec.names() == ["part", "part", "part", "whole"]
    assert (await rec.app.batch_status(flow.bid)).success_state == "2"


async def test_a_dag_by_dependencies(rec: Recorder, server: RunningServer) -> None:
    fetch, parse, report = rec.job("fetch"), rec.job("parse"), rec.job("report")
    first = await fetch.options(track=True).push("a")
    second = await fetch.options(track=True).push("b")
    parsed = await parse.options(track=True, after=[first]).push("a")
    await report.options(after=[parsed, second]).push()
    await rec.drain()
    names = rec.names()
    assert names.index("parse") > names.index("fetch")
    assert names[-1] == "report"
    with pytest.raises(TypeError, match="list of jids"):
        report.options(after="x" * 12)


async def test_a_dead_dependency_sends_its_dependents_to_the_dead_set(
    rec: Recorder, server: RunningServer
) -> None:
    broken, after = rec.job("broken", fail=True), rec.job("after")
    jid = await broken.options(track=True).push()
    waiting = await after.options(after=[jid]).push()
    await rec.drain()
    assert rec.names() == ["broken"]
    (entry,) = await server.manager.store.get_set_entries(SortedSet.DEAD, [waiting])
    assert b'"errtype":"DependencyDied"' in entry.payload
    assert (await rec.app.track(waiting)).state == "dead"


async def test_a_workflow_outlives_a_server_restart(
    make_server: MakeServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    first = await make_server(storage_url=url)
    rec = Recorder(first.url)
    a, b, c = rec.job("a"), rec.job("b"), rec.job("c")
    await conveyor.chain(a.s(1), b.s(2), c.s(3)).push()
    await first.stop()
    await rec.app.aclose()
    second = await make_server(storage_url=url)
    rec.app.url = second.url
    await rec.drain()
    assert rec.names() == ["a", "b", "c"]
    await rec.app.aclose()


def test_inline_testing_says_batches_need_a_server() -> None:
    app = conveyor.App()

    @app.job
    async def done() -> None:
        pass

    async def use() -> None:
        async with app.batch(on_success=done.s()):
            pass

    with conveyor.testing.inline(app), pytest.raises(RuntimeError, match="need a server"):
        asyncio.run(use())
