"""Cron on the real clock: the planner's own loop, 1-second schedules, real stores. Exactly
one job per tick with several servers over one Redis, and jobs enqueued right after their
tick (the issue asks for 100 ms; Faktory Enterprise has minute granularity)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.features.cron import CronFeature
from conveyor.store import open_store
from conveyor.timefmt import parse_time
from tests.support.stores import STORE_BACKENDS, store_url

EVERY_SECOND = {"id": "beat", "schedule": "* * * * * *", "job": {"type": "Beat"}}


@pytest.fixture
async def start_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    managers: list[Manager] = []

    async def start(backend: str) -> Manager:
        features = [CronFeature.from_config({"cron": [EVERY_SECOND]})]
        url = store_url(backend, tmp_path, request)
        manager = Manager(open_store(url), ManagerConfig(), features=features)
        await manager.start()
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        if manager.tasks._tasks:
            await manager.stop()


async def collect(manager: Manager, until: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    """Fetch the cron jobs as they come, until ``until(jobs)``; 20 s at most."""
    jobs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while not until(jobs):
        assert time.monotonic() < deadline, f"only {len(jobs)} jobs came"
        payload = await manager.fetch(["default"], wait=0.5)
        if payload is not None:
            jobs.append(msgspec.json.decode(payload))
    return jobs


def lateness(job: dict[str, Any]) -> float:
    return parse_time(job["enqueued_at"]) - parse_time(job["custom"]["cron_tick"])


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_ticks_are_enqueued_once_and_right_after_their_time(
    start_server: Any, backend: str
) -> None:
    manager = await start_server(backend)
    jobs = await collect(manager, lambda jobs: len(jobs) >= 3)
    ticks = [parse_time(job["custom"]["cron_tick"]) for job in jobs]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1.0] * (len(ticks) - 1)
    late = [lateness(job) for job in jobs]
    assert min(late) >= 0  # never early
    assert statistics.median(late) < 0.1, late


@pytest.mark.slow
async def test_three_then_two_servers_over_one_redis_enqueue_each_tick_once(
    start_server: Any,
) -> None:
    servers = [await start_server("redis") for _ in range(3)]
    reader = servers[0]
    first_half = await collect(reader, lambda jobs: len(jobs) >= 6)
    await servers[2].stop()  # one server leaves; the other two go on
    jobs = first_half + await collect(reader, lambda jobs: len(jobs) >= 6)
    await asyncio.sleep(0.3)  # a duplicate of the last tick would have landed by now
    jobs += [msgspec.json.decode(p) for p in [await reader.fetch(["default"], wait=0)] if p]
    ticks = sorted(parse_time(job["custom"]["cron_tick"]) for job in jobs)
    assert len(ticks) >= 12
    assert len(set(ticks)) == len(ticks), "a tick was enqueued twice"
    assert ticks == [ticks[0] + n for n in range(len(ticks))], "a tick was lost"
    assert len({job["jid"] for job in jobs}) == len(jobs)
    assert statistics.median(lateness(job) for job in jobs) < 0.1


@pytest.mark.slow
async def test_a_server_restarted_after_missing_ticks_enqueues_one_catch_up_job(
    start_server: Any,
) -> None:
    first = await start_server("sqlite")
    before = await collect(first, lambda jobs: len(jobs) >= 1)
    await first.stop()
    await asyncio.sleep(3.2)  # the server is down for three ticks or more
    second = await start_server("sqlite")  # the same SQLite file, a new process's view of it
    after = await collect(second, lambda jobs: len(jobs) >= 2)
    catch_up, regular = after[0], after[1]
    assert catch_up["custom"]["cron_missed"] >= 3
    assert (
        parse_time(catch_up["custom"]["cron_tick"])
        >= parse_time(before[-1]["custom"]["cron_tick"]) + 3
    )
    assert "cron_missed" not in regular["custom"]
    assert (
        parse_time(regular["custom"]["cron_tick"])
        == parse_time(catch_up["custom"]["cron_tick"]) + 1
    )
