"""Cron end to end over the manager, on every backend, with a fixed clock: one job per tick
whichever server claims it, missed ticks after a stopped server, DST nights, a claim whose
owner died, refused pushes, outcomes, run-time management and changes seen by other servers.

The planner is driven by ``CronFeature.step(now)`` and ``sweep()``; the manager's loops are
not started, so nothing runs on the real clock here (tests/test_cron_realtime.py does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from conveyor.errors import Halt, StoreError
from conveyor.manager import Manager, ManagerConfig, Middleware, Next, PushContext
from conveyor.manager.features.cron import CLAIM_LEASE_SECONDS, CronFeature
from conveyor.manager.features.cron_admin import CronError
from conveyor.manager.features.cron_records import SPACE_META, Run, decode, encode, runs_space
from conveyor.store import Store, open_store
from conveyor.store.records import Record
from tests.support.stores import STORE_BACKENDS, store_url

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EVERY_SECOND = {"id": "tick", "schedule": "* * * * * *", "job": {"type": "Tick", "args": [1]}}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Server:
    """One server's manager and cron feature over a shared store, driven by hand."""

    def __init__(self, manager: Manager, cron: CronFeature, clock: Clock) -> None:
        self.manager = manager
        self.cron = cron
        self.clock = clock

    async def step(self, now: float) -> float:
        self.clock.now = now
        return await self.cron.step(now)


MakeServer = Callable[..., Any]


@pytest.fixture(params=STORE_BACKENDS)
async def make_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeServer]:
    """Servers over one store: the same store object for memory and SQLite (one process), a
    client of its own to the same Redis for each Redis server (as separate processes)."""
    url = store_url(request.param, tmp_path, request)
    stores: list[Store] = []

    async def store_for_server() -> Store:
        if stores and request.param != "redis":
            return stores[0]
        store = open_store(url)
        await store.open()
        stores.append(store)
        return store

    async def make(
        entries: Sequence[dict[str, Any]] = (EVERY_SECOND,),
        now: float = T0,
        middleware: Sequence[Middleware] = (),
    ) -> Server:
        clock = Clock(now)
        cron = CronFeature.from_config({"cron": list(entries)})
        cron.clock = clock
        store = await store_for_server()
        manager = Manager(store, ManagerConfig(), middleware=middleware, features=[cron])
        return Server(manager, cron, clock)

    yield make
    for store in stores:
        await store.close()


async def drain(manager: Manager, queue: str = "default") -> list[dict[str, Any]]:
    jobs = []
    while (payload := await manager.fetch([queue], wait=0)) is not None:
        jobs.append(msgspec.json.decode(payload))
    return jobs


def ticks_of(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["custom"]["cron_tick"] for job in jobs]


def iso(tick: float) -> str:
    return datetime.fromtimestamp(tick, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_each_tick_is_enqueued_once_whichever_server_claims_it(
    make_server: MakeServer,
) -> None:
    a, b = await make_server(), await make_server()
    assert await a.step(T0) == T0 + 1  # plans the next tick; nothing was missed yet
    await b.step(T0)
    for second in range(1, 6):
        first, then = (a, b) if second % 2 else (b, a)  # either server may be first
        await first.step(T0 + second + 0.002)
        await then.step(T0 + second + 0.004)
    jobs = await drain(a.manager)
    assert ticks_of(jobs) == [iso(T0 + s) for s in range(1, 6)]
    assert [job["jid"] for job in jobs] == [f"cron:tick:{iso(T0 + s)}" for s in range(1, 6)]
    assert all(job["custom"]["cron_id"] == "tick" for job in jobs)
    assert {job["jobtype"] for job in jobs} == {"Tick"}
    owners = {
        decode(r.value, Run).owner
        for r in await a.manager.store.list_records(runs_space("tick"), T0 + 6)
    }
    assert owners == {a.cron.owner, b.cron.owner}  # both servers won some ticks


@pytest.mark.parametrize("policy", ["one", "skip"])
async def test_missed_ticks_after_a_stopped_server_follow_the_policy(
    make_server: MakeServer, policy: str
) -> None:
    entry = {**EVERY_SECOND, "missed": policy}
    first = await make_server([entry])
    await first.step(T0)
    await first.step(T0 + 1)
    await first.step(T0 + 2)
    assert ticks_of(await drain(first.manager)) == [iso(T0 + 1), iso(T0 + 2)]
    # that server stops; another starts a minute later
    later = await make_server([entry], now=T0 + 60.5)
    assert await later.step(T0 + 60.5) == T0 + 61
    caught_up = await drain(later.manager)
    if policy == "one":
        (job,) = caught_up  # one job for the 58 missed ticks, never a burst
        assert job["custom"]["cron_tick"] == iso(T0 + 60)
        assert job["custom"]["cron_missed"] == 58
    else:
        assert caught_up == []
    await later.step(T0 + 61)
    assert ticks_of(await drain(later.manager)) == [iso(T0 + 61)]
    view = await later.cron.view("tick")
    kinds = [run.run.kind for run in view.runs]
    assert kinds == (["tick", "catch-up", "tick", "tick"] if policy == "one" else ["tick"] * 3)


async def test_a_server_restarting_right_after_a_tick_does_not_fire_it_again(
    make_server: MakeServer,
) -> None:
    first = await make_server()
    await first.step(T0)
    await first.step(T0 + 1)
    restarted = await make_server(now=T0 + 1.5)
    await restarted.step(T0 + 1.5)  # T0+1 is the latest tick: claimed already
    await restarted.step(T0 + 2)
    assert ticks_of(await drain(first.manager)) == [iso(T0 + 1), iso(T0 + 2)]


async def run_planner(server: Server, start: float, until: float) -> None:
    """What the planner does on the real clock: sleep until the time ``step`` returns."""
    now = start
    while now < until:
        now = await server.step(now)


@pytest.mark.parametrize(
    ("schedule", "start", "until", "expected"),
    [
        # spring forward (Paris, 2025-03-30 02:00 -> 03:00): 02:30 runs once, at 03:00 CEST
        (
            "30 2 * * *",
            "2025-03-29T12:00:00+01:00",
            "2025-04-01T00:00:00+02:00",
            ["2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z"],
        ),
        # fall back (2025-10-26 03:00 -> 02:00): 02:30 runs once, in the first pass
        (
            "30 2 * * *",
            "2025-10-25T12:00:00+02:00",
            "2025-10-28T00:00:00+01:00",
            ["2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z"],
        ),
        # every hour: both passes of the repeated hour, an hour of real time apart
        (
            "0 * * * *",
            "2025-10-26T01:30:00+02:00",
            "2025-10-26T03:30:00+01:00",
            [ "2025-10-26T00:00:00Z", "2025-10-26T01:00:00Z",
             "2025-10-26T02:00:00Z"],
        ),
    ],
)  # fmt: skip
async def test_dst_nights_with_a_fixed_clock(
    make_server: MakeServer, schedule: str, start: str, until: str, expected: list[str]
) -> None:
    entry = {"id": "nightly", "schedule": schedule, "tz": "Europe/Paris", "job": {"type": "N"}}
    begin, end = (
        datetime.fromisoformat(start).timestamp(),
        datetime.fromisoformat(until).timestamp(),
    )
    server = await make_server([entry], now=begin)
    await run_planner(server, begin, end)
    assert ticks_of(await drain(server.manager)) == expected


class BrokenPush(Middleware):
    """Fails the next ``failures`` pushes as a lost store connection would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("connection to the store lost")
        await call_next()


async def test_a_claim_whose_owner_died_before_pushing_is_taken_over_after_its_lease(
    make_server: MakeServer,
) -> None:
    dying = await make_server(middleware=[BrokenPush(failures=1)])
    other = await make_server()
    await dying.step(T0)
    await other.step(T0)
    await dying.step(T0 + 1)  # claims T0+1, then its push fails: as if it died right there
    await other.step(T0 + 1.01)  # too late to claim: the tick is the dying server's
    assert await drain(other.manager) == []
    other.clock.now = T0 + 1 + CLAIM_LEASE_SECONDS - 1
    await other.cron.sweep()  # the lease still runs
    assert await drain(other.manager) == []
    other.clock.now = T0 + 1 + CLAIM_LEASE_SECONDS + 0.5
    await other.cron.sweep()
    dying.clock.now = other.clock.now
    await dying.cron.sweep()  # a second sweeper finds nothing left to do
    (job,) = await drain(other.manager)
    assert job["jid"] == f"cron:tick:{iso(T0 + 1)}"  # the tick's own jid
    run = (await other.cron.view("tick")).runs[0].run
    assert (run.state, run.owner) == ("enqueued", other.cron.owner)


async def test_ticks_lost_to_a_store_outage_are_caught_up_by_the_next_one(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await make_server()
    store = server.manager.store
    claim = store.claim_record
    outage = {"left": 6}  # two ticks' worth of claims (each is tried three times)

    async def failing_claim(*args: Any, **kwargs: Any) -> bytes | None:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise StoreError("the store is unreachable")
        return await claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim_record", failing_claim)
    await server.step(T0)
    await server.step(T0 + 1)
    await server.step(T0 + 2)
    assert await drain(server.manager) == []
    await server.step(T0 + 3)  # the store is back
    (job,) = await drain(server.manager)
    assert (job["custom"]["cron_tick"], job["custom"]["cron_missed"]) == (iso(T0 + 3), 3)
    await server.step(T0 + 4)
    assert ticks_of(await drain(server.manager)) == [iso(T0 + 4)]


async def test_a_takeover_does_not_push_again_a_job_that_has_already_run(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    await server.step(T0)
    await server.step(T0 + 1)
    (job,) = await drain(server.manager)
    await server.manager.ack(job["jid"])
    # the owner pushed, the job ran, but the owner died before recording "enqueued"
    key, space = iso(T0 + 1), runs_space("tick")
    stale = Run(job["jid"], "dead-server", "claimed", lease=T0 + 2)
    await server.manager.store.put_records(space, [Record(key, encode(stale), T0 + 3600)])
    server.clock.now = T0 + 1 + CLAIM_LEASE_SECONDS + 1
    await server.cron.sweep()
    assert await drain(server.manager) == []
    (run,) = (await server.cron.view("tick")).runs
    assert (run.run.state, run.ending.state if run.ending else None) == ("enqueued", "done")


class QueueFull(Middleware):
    async def push(self, ctx: PushContext, call_next: Next) -> None:
        if ctx.job.jobtype == "Tick":
            raise Halt("queue default is full", code="FULL")
        await call_next()


async def test_a_refused_push_is_the_entrys_error_and_the_next_tick_still_fires(
    make_server: MakeServer,
) -> None:
    refusing = QueueFull()
    server = await make_server(middleware=[refusing])
    await server.step(T0)
    await server.step(T0 + 1)
    view = await server.cron.view("tick")
    assert view.last_error is not None
    assert view.last_error.run.error == "FULL queue default is full"
    assert view.to_json()["last_error"] == {
        "tick": iso(T0 + 1),
        "error": "FULL queue default is full",
    }
    assert await server.step(T0 + 2) == T0 + 3
    assert [run.run.state for run in (await server.cron.view("tick")).runs] == ["error", "error"]


async def test_how_each_job_ended_is_recorded_from_ack_and_fail(make_server: MakeServer) -> None:
    once = {"id": "once", "schedule": "* * * * * *", "job": {"type": "Once", "retry": 0}}
    server = await make_server([EVERY_SECOND, once])
    for second in range(4):
        await server.step(T0 + second)
    ticks = await drain(server.manager)
    by_id: dict[str, list[str]] = {}
    for job in ticks:
        by_id.setdefault(job["custom"]["cron_id"], []).append(job["jid"])
    done, retrying, untouched = by_id["tick"]
    await server.manager.ack(done)
    await server.manager.fail(retrying, "Timeout", "took too long")
    await server.manager.fail(by_id["once"][0], "Boom", "no retries")
    await server.manager.ack_many([by_id["once"][1], "not-a-cron-jid-123"])
    outcomes = {
        r.run.jid: r.to_json().get("outcome") for r in (await server.cron.view("tick")).runs
    }
    assert outcomes == {done: "done", retrying: "retrying", untouched: None}
    once_runs = {r.run.jid: r.to_json() for r in (await server.cron.view("once")).runs}
    assert once_runs[by_id["once"][0]]["outcome"] == "discarded"
    assert once_runs[by_id["once"][0]]["outcome_error"] == "Boom: no retries"
    assert once_runs[by_id["once"][1]]["outcome"] == "done"


async def test_run_time_entries_are_managed_and_bad_ones_refused_like_file_ones(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    cron = server.cron
    await server.step(T0)
    with pytest.raises(CronError, match=r"cron entry tz: unknown time zone 'Nowhere/X'"):
        await cron.add({"schedule": "* * * * * *", "tz": "Nowhere/X", "job": {"type": "A"}})
    with pytest.raises(CronError, match=r"cron entry job\.type: is required"):
        await cron.add({"schedule": "* * * * * *", "job": {"queue": "x"}})
    with pytest.raises(CronError, match="comes from the config file"):
        await cron.add({**EVERY_SECOND, "schedule": "*/2 * * * * *"})
    with pytest.raises(CronError, match="pause it, or remove it from the file"):
        await cron.delete("tick")
    assert [view.entry.id for view in await cron.views()] == ["tick"]  # nothing half-applied

    added = await cron.add({"id": "extra", "schedule": "*/2 * * * * *", "job": {"type": "X"}})
    assert (added.entry.source, added.next_runs[0]) == ("api", T0 + 2)
    await cron.pause("tick")
    await server.step(T0 + 1)
    await server.step(T0 + 2)
    assert [
        (job["jobtype"], job["custom"]["cron_tick"]) for job in await drain(server.manager)
    ] == [("X", iso(T0 + 2))]
    jid = await cron.run_now("tick")  # paused, and still runnable by hand
    assert [job["jid"] for job in await drain(server.manager)] == [jid]
    await cron.resume("tick")
    await server.step(T0 + 2.5)  # the ticks skipped while paused are not "missed"
    await server.step(T0 + 3)
    assert ticks_of(await drain(server.manager)) == [iso(T0 + 3)]
    await cron.delete("extra")
    await server.step(T0 + 4)
    assert ticks_of(await drain(server.manager)) == [iso(T0 + 4)]
    assert [view.entry.id for view in await cron.views()] == ["tick"]
    assert await server.manager.store.list_records(runs_space("extra"), T0 + 5) == []


async def test_registering_the_same_entry_again_changes_nothing(make_server: MakeServer) -> None:
    server = await make_server([])
    entry = {"id": "report", "schedule": "0 9 * * *", "job": {"type": "Report"}}
    await server.cron.add(entry, source="code")
    store = server.manager.store
    version = await store.get_records(SPACE_META, ["version"], T0)
    await server.cron.add(dict(entry), source="code")
    assert await store.get_records(SPACE_META, ["version"], T0) == version
    changed = await server.cron.add({**entry, "schedule": "0 10 * * *"}, source="code")
    assert changed.entry.schedule.text == "0 10 * * *"
    assert await store.get_records(SPACE_META, ["version"], T0) != version


async def test_run_time_changes_reach_the_other_servers(make_server: MakeServer) -> None:
    a, b = await make_server([]), await make_server([])
    await a.step(T0)
    await b.step(T0)
    await a.cron.add({"id": "shared", "schedule": "* * * * * *", "job": {"type": "S"}})
    await b.cron.refresh()  # what b's refresh loop does every second
    assert "shared" in b.cron.entries
    await b.step(T0 + 1)
    await a.step(T0 + 1)
    assert ticks_of(await drain(a.manager)) == [iso(T0 + 1)]
    await a.cron.delete("shared")
    # b has not refreshed yet, and still does not fire the deleted entry
    assert "shared" in b.cron.entries
    await b.step(T0 + 2)
    assert await drain(b.manager) == []
    await b.cron.refresh()
    assert "shared" not in b.cron.entries
