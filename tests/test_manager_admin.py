"""MUTATE, set actions, INFO, history, and the middleware chains."""

from __future__ import annotations

import re
import time

import pytest

from conveyor.errors import CommandError, Halt
from conveyor.manager import (
    Discard,
    FailContext,
    FetchContext,
    Manager,
    ManagerConfig,
    Middleware,
    Next,
    PushContext,
)
from conveyor.store import open_store
from conveyor.store.base import JobFilter, SortedSet
from conveyor.timefmt import format_time
from tests.support.manager import decode, encode, job

FUTURE = format_time(time.time() + 3600)


async def _schedule(manager: Manager, jobtype: str, *args: object) -> str:
    pushed = job(jobtype, *args, at=FUTURE)
    await manager.push(encode(pushed))
    return str(pushed["jid"])


async def _sizes(manager: Manager) -> tuple[int, int, int]:
    store = manager.store
    queued = sum((await store.queue_sizes()).values())
    return queued, await store.set_size(SortedSet.SCHEDULED), await store.set_size(SortedSet.DEAD)


async def test_mutate_filters_by_jids_jobtype_and_glob(manager: Manager) -> None:
    a = await _schedule(manager, "A", "uid:1")
    await _schedule(manager, "A", "uid:2")
    await _schedule(manager, "B", "uid:12345")
    await manager.mutate("kill", "scheduled", JobFilter(jids=(a,)))
    assert await _sizes(manager) == (0, 2, 1)
    await manager.mutate("requeue", "scheduled", JobFilter(pattern="*uid:12345*"))
    assert await _sizes(manager) == (1, 1, 1)
    queued = decode((await manager.list_queue("default", 0, 1)).items[0].payload)
    assert queued["jobtype"] == "B"
    assert queued["enqueued_at"]  # requeue refreshes enqueued_at (latency stays true)
    await manager.mutate("discard", "scheduled", JobFilter(jobtype="A"))
    assert await _sizes(manager) == (1, 0, 1)
    await manager.mutate("clear", "dead", JobFilter(jobtype="nothing"))  # clear ignores filter
    assert await _sizes(manager) == (1, 0, 0)


async def test_mutate_discard_without_filter_clears_and_kill_in_dead_refreshes(
    manager: Manager,
) -> None:
    for n in range(5):
        await _schedule(manager, "A", n)
    await manager.mutate("kill", "scheduled", JobFilter())
    before = [e.score for e in (await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 9)).items]
    await manager.mutate("kill", "dead", JobFilter())  # stays dead, expiry refreshed, no loop
    after = (await manager.list_set(SortedSet.DEAD, JobFilter(), 0, 9)).items
    assert len(after) == 5
    assert min(e.score for e in after) >= max(before)
    await manager.mutate("discard", "dead", None)
    assert await _sizes(manager) == (0, 0, 0)


@pytest.mark.parametrize(
    ("cmd", "target", "message"),
    [
        ("explode", "dead", "unknown mutate operation"),
        ("kill", "working", "invalid target for mutation command"),
    ],
)
async def test_mutate_errors(manager: Manager, cmd: str, target: str, message: str) -> None:
    await _schedule(manager, "A")
    with pytest.raises(CommandError, match=message):
        await manager.mutate(cmd, target, JobFilter())
    assert await _sizes(manager) == (0, 1, 0)


async def test_set_actions_by_jid(manager: Manager) -> None:
    jids = [await _schedule(manager, "A", n) for n in range(4)]
    assert await manager.requeue(SortedSet.SCHEDULED, jids[:1]) == 1
    assert await manager.kill(SortedSet.SCHEDULED, jids[1:2]) == 1
    assert await manager.delete(SortedSet.SCHEDULED, jids[2:3]) == 1
    assert await manager.delete(SortedSet.SCHEDULED, jids[2:3]) == 0  # already gone
    assert await _sizes(manager) == (1, 1, 1)
    location = await manager.locate(jids[1])
    assert location is not None
    assert location.where == "dead"
    assert await manager.locate("missing-jid") is None


async def test_info_has_faktorys_exact_shape(manager: Manager) -> None:
    await manager.push(encode(job(queue="critical")))
    await _schedule(manager, "Later")
    info = await manager.info()
    # Faktory's keys, plus conveyor's ``features`` section (added only: docs/protocol.md)
    assert set(info) == {"now", "server_utc_time", "faktory", "server", "features"}
    assert info["features"] == {
        "unique": {"locks": 0},
        "expiring": {"expired": 0, "expired_today": 0},
        "cancellation": {"cancelled": 0, "cancelled_today": 0},
        "aggregation": {"groups": 0, "aggregating": 0},
    }
    assert re.fullmatch(r"\d\d:\d\d:\d\d UTC", info["server_utc_time"])
    faktory = info["faktory"]
    assert faktory["queues"] == {"critical": 1}
    assert faktory["sets"] == {"scheduled": 1, "retries": 0, "dead": 0, "working": 0}
    assert faktory["tasks"]["Scheduled"]["size"] == 1
    assert set(faktory["tasks"]) == {"Scheduled", "Retries", "Dead", "Busy", "Workers"}
    assert (faktory["total_enqueued"], faktory["total_queues"]) == (1, 1)
    server = info["server"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", server["faktory_version"])
    assert "conveyor" in server["description"]
    assert "Enterprise" not in server["description"]
    await manager.flush()
    flushed = await manager.info()
    assert flushed["faktory"]["queues"] == {}
    assert flushed["faktory"]["sets"]["scheduled"] == 0


async def test_history_counts_per_day(manager: Manager) -> None:
    await manager.push(encode(job()))
    fetched = decode(await manager.fetch(["default"], wait=0))
    await manager.fail(fetched["jid"], "E", "m")
    history = await manager.history(7)
    assert len(history) == 7
    day, today = history[-1]
    assert day == time.strftime("%Y-%m-%d", time.gmtime())
    assert (today.processed, today.failures) == (1, 1)
    assert all(c.processed == 0 for _, c in history[:-1])


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        self.calls.append(f"{self.name}:push:before")
        await call_next()
        self.calls.append(f"{self.name}:push:after")

    async def fail(self, ctx: FailContext, call_next: Next) -> None:
        self.calls.append(f"{self.name}:fail:{ctx.report.errtype}")
        await call_next()


class Refuse(Middleware):
    async def push(self, ctx: PushContext, call_next: Next) -> None:
        if ctx.job.jobtype == "Dup":
            raise Halt("Job not unique", code="NOTUNIQUE")
        ctx.job.custom = {"seen": True}
        await call_next()

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        if ctx.job.jobtype == "Expired":
            raise Discard("expired")
        await call_next()


async def _started(*middleware: Middleware) -> Manager:
    manager = Manager(open_store("memory://"), ManagerConfig(), middleware)
    await manager.start()
    return manager


async def test_middleware_runs_in_registration_order() -> None:
    calls: list[str] = []
    manager = await _started(Recorder("a", calls), Recorder("b", calls))
    try:
        await manager.push(encode(job()))
        fetched = decode(await manager.fetch(["default"], wait=0))
        await manager.fail(fetched["jid"], "Oops", "m")
    finally:
        await manager.stop()
    assert calls == [
        "a:push:before",
        "b:push:before",
        "b:push:after",
        "a:push:after",
        "a:fail:Oops",
        "b:fail:Oops",
    ]


async def test_middleware_can_halt_change_and_discard() -> None:
    manager = await _started(Refuse())
    try:
        with pytest.raises(Halt) as raised:
            await manager.push(encode(job("Dup")))
        assert str(raised.value) == "NOTUNIQUE Job not unique"
        errors = await manager.push_bulk(encode([dup := job("Dup"), job("Ok")]))
        assert errors == {dup["jid"]: "NOTUNIQUE Job not unique"}
        await manager.push(encode(job("Expired")))
        fetched = decode(await manager.fetch(["default"], wait=0))
        assert fetched["jobtype"] == "Ok"
        assert fetched["custom"] == {"seen": True}
        assert await manager.fetch(["default"], wait=0) is None  # the expired one was dropped
        assert (await manager.busy(0, 10)).total == 1
    finally:
        await manager.stop()


def test_lifecycle_table_allows_only_listed_moves() -> None:
    from conveyor.manager.lifecycle import JobState, check_transition

    assert check_transition("working", "retries").startswith("fail")
    with pytest.raises(ValueError, match="cannot go from done to queued"):
        check_transition(JobState.DONE, JobState.QUEUED)
    with pytest.raises(ValueError, match="cannot go from queued to dead"):
        check_transition(JobState.QUEUED, JobState.DEAD)
