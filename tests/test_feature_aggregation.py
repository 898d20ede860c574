"""Group aggregation end to end (docs/aggregation.md): each trigger (size, delay, grace) flushes
a group exactly once, on every store and with two servers over one Redis; what the aggregate
job holds; bad input refused; a cancelled member left out; the Python handler's list[T]; a
Faktory client pushing members through ``custom``.

Most tests drive ``AggregateFeature.step(now)`` with a fixed clock (the managers' loops are
not started); the last ones run real servers and workers on the real clock."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import conveyor
from conveyor.errors import InvalidJob
from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.features.aggregation import AggregateFeature
from conveyor.manager.features.cancellation import CancelFeature
from conveyor.store import Store, open_store
from tests.support.interop import client_environ, run_json
from tests.support.manager import eventually
from tests.support.server import MakeServer, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

T0 = 1_767_225_600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Server:
    manager: Manager
    feature: AggregateFeature
    clock: Clock

    async def push(self, jid: str, at: float, group: str = "g", **spec: Any) -> None:
        self.clock.now = at
        aggregate = {"max_size": 3, "max_delay": 10, "grace": 2, **spec}
        custom = {"group": group, "aggregate": aggregate, "tenant": "t-1"}
        payload = {"jid": jid, "jobtype": "Digest", "args": [jid[-1], {"n": 1}], "custom": custom}
        await self.manager.push(msgspec.json.encode(payload))

    async def step(self, now: float) -> float:
        self.clock.now = now
        return await self.feature.step(now)


MakeAggServer = Callable[..., Any]


@pytest.fixture(params=STORE_BACKENDS)
async def make_agg(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeAggServer]:
    """Servers over one store: the same store object for memory and SQLite, a client of its
    own to the same Redis for each Redis server (as separate processes would have)."""
    url = store_url(request.param, tmp_path, request)
    stores: list[Store] = []

    async def make(now: float = T0) -> Server:
        if not stores or request.param == "redis":
            store = open_store(url)
            await store.open()
            stores.append(store)
        clock = Clock(now)
        feature = AggregateFeature(clock)
        cancel = CancelFeature(clock=clock)
        manager = Manager(stores[-1], ManagerConfig(), features=[cancel, feature])
        return Server(manager, feature, clock)

    yield make
    for store in stores:
        await store.close()


async def drain(manager: Manager, queue: str = "default") -> list[dict[str, Any]]:
    jobs = []
    while (payload := await manager.fetch([queue], wait=0)) is not None:
        jobs.append(msgspec.json.decode(payload))
    return jobs


async def test_a_full_group_is_enqueued_as_one_job_at_once(make_agg: MakeAggServer) -> None:
    server = await make_agg()
    await server.push("job-0001", T0)
    await server.push("job-0002", T0 + 0.5)
    assert await drain(server.manager) == []  # members are not queued
    assert await server.step(T0 + 0.6) == T0 + 2.5  # not due: grace after the newest
    await server.push("job-0003", T0 + 0.7)
    assert await server.step(T0 + 0.7) == T0 + 0.7 + 60  # full: flushed, nothing left
    (aggregate,) = await drain(server.manager)
    assert aggregate["jid"] == "agg:job-0001"
    assert aggregate["jobtype"] == "Digest"
    assert aggregate["queue"] == "default"
    assert aggregate["args"] == [[["1", {"n": 1}], ["2", {"n": 1}], ["3", {"n": 1}]]]
    assert aggregate["retry"] == 25
    assert aggregate["custom"]["tenant"] == "t-1"  # the oldest member's custom ...
    assert "group" not in aggregate["custom"]  # ... without what would group it again
    assert "aggregate" not in aggregate["custom"]
    assert aggregate["custom"]["aggregated"] == {
        "group": "g",
        "size": 3,
        "first_at": "2026-01-01T00:00:00Z",
        "jids": ["job-0001", "job-0002", "job-0003"],
    }
    assert await server.manager.store.group_counts() == (0, 0)


async def test_a_group_is_enqueued_when_its_newest_job_is_grace_seconds_old(
    make_agg: MakeAggServer,
) -> None:
    server = await make_agg()
    await server.push("job-0001", T0)
    await server.push("job-0002", T0 + 1.5)  # within the grace: the deadline moves on
    assert await server.step(T0 + 3.0) == T0 + 3.5
    assert await drain(server.manager) == []
    await server.step(T0 + 3.5)
    (aggregate,) = await drain(server.manager)
    assert aggregate["custom"]["aggregated"]["jids"] == ["job-0001", "job-0002"]


async def test_a_group_is_enqueued_max_delay_after_its_oldest_job(
    make_agg: MakeAggServer,
) -> None:
    server = await make_agg()
    for i in range(4):  # a steady trickle, each within the grace of the one before
        await server.push(f"job-000{i}", T0 + 1.5 * i, max_size=100, max_delay=5)
    assert await server.step(T0 + 4.9) == T0 + 5
    await server.step(T0 + 5)
    (aggregate,) = await drain(server.manager)
    assert aggregate["custom"]["aggregated"]["jids"] == [f"job-000{i}" for i in range(4)]
    await server.push("job-0004", T0 + 6, max_size=100, max_delay=5)  # a group of its own
    await server.push("job-0005", T0 + 7, max_size=100, max_delay=5)
    assert await server.step(T0 + 7.1) == T0 + 9  # grace after the newest comes first
    await server.step(T0 + 9)
    (second,) = await drain(server.manager)
    assert second["custom"]["aggregated"]["jids"] == ["job-0004", "job-0005"]
    assert second["jid"] == "agg:job-0004"


async def test_more_than_max_size_jobs_make_several_aggregates(
    make_agg: MakeAggServer,
) -> None:
    server = await make_agg()
    for i in range(7):
        await server.push(f"job-000{i}", T0)
    await server.step(T0)
    jobs = await drain(server.manager)
    assert [job["custom"]["aggregated"]["size"] for job in jobs] == [3, 3]
    left = (await server.manager.store.list_groups(0, 5)).items
    assert [(group.size, group.due_at) for group in left] == [(1, T0 + 2)]


async def test_two_servers_flush_each_group_exactly_once(make_agg: MakeAggServer) -> None:
    a, b = await make_agg(), await make_agg()
    for n in range(6):
        for i in range(3 if n % 2 else 2):  # even groups hold 2 jobs, odd ones 3 (full)
            pushed_by = a if i % 2 else b
            await pushed_by.push(f"g{n}-job-{i:04d}", T0 + i * 0.1, group=f"group-{n}")
    await asyncio.gather(a.step(T0 + 5), b.step(T0 + 5), a.step(T0 + 5), b.step(T0 + 5))
    jobs = await drain(a.manager)
    assert len(jobs) == 6
    sizes = {
        job["custom"]["aggregated"]["group"]: job["custom"]["aggregated"]["size"] for job in jobs
    }
    assert sizes == {f"group-{n}": 3 if n % 2 else 2 for n in range(6)}
    assert len({job["jid"] for job in jobs}) == 6
    assert await a.manager.store.group_counts() == (0, 0)


async def test_groups_are_per_queue_and_jobtype(make_agg: MakeAggServer) -> None:
    server = await make_agg()
    await server.push("job-0001", T0)
    other = {"jid": "job-0002", "jobtype": "Other", "args": [], "queue": "q2",
             "custom": {"group": "g", "aggregate": {"grace": 1}}}  # fmt: skip
    await server.manager.push(msgspec.json.encode(other))
    assert await server.manager.store.group_counts() == (2, 2)
    await server.step(T0 + 30)
    assert [job["jid"] for job in await drain(server.manager)] == ["agg:job-0001"]
    assert [job["jid"] for job in await drain(server.manager, "q2")] == ["agg:job-0002"]


async def test_a_cancelled_member_is_left_out(make_agg: MakeAggServer) -> None:
    server = await make_agg()
    for i in range(3):
        await server.push(f"job-000{i}", T0 + i * 0.1, max_size=10)
    where = await server.manager.locate("job-0001")
    assert where is not None
    assert (where.where, where.details["group"]) == ("aggregating", "g")
    (report,) = await server.manager.feature(CancelFeature).cancel(["job-0001"])
    assert (report.outcome, report.was) == ("cancelled", "aggregating")
    await server.step(T0 + 3)
    (aggregate,) = await drain(server.manager)
    assert aggregate["custom"]["aggregated"]["jids"] == ["job-0000", "job-0002"]


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"aggregate": {}}, "custom.aggregate needs custom.group"),
        ({"aggregate": {}, "group": ""}, "custom.aggregate needs custom.group"),
        ({"aggregate": 5, "group": "g"}, "custom.aggregate must be an object"),
        ({"aggregate": {"max_size": 0}, "group": "g"}, "max_size must be an integer from 1"),
        ({"aggregate": {"max_size": 1.5}, "group": "g"}, "max_size must be an integer from 1"),
        ({"aggregate": {"grace": -1}, "group": "g"}, "grace must be a number of seconds"),
        ({"aggregate": {"max_delay": "1s"}, "group": "g"}, "max_delay must be a number"),
        ({"aggregate": {"size": 3}, "group": "g"}, "unknown key 'size'"),
    ],
)
async def test_bad_aggregate_options_are_refused_and_nothing_is_stored(
    make_agg: MakeAggServer, custom: dict[str, Any], error: str
) -> None:
    server = await make_agg()
    payload = {"jid": "job-0001", "jobtype": "Digest", "args": [], "custom": custom}
    with pytest.raises(InvalidJob, match=error):
        await server.manager.push(msgspec.json.encode(payload))
    errors = await server.manager.push_bulk(msgspec.json.encode([payload]))
    assert error in errors["job-0001"]
    assert await server.manager.store.group_counts() == (0, 0)
    assert await drain(server.manager) == []


async def test_a_job_to_aggregate_cannot_be_scheduled(make_agg: MakeAggServer) -> None:
    server = await make_agg()
    payload = {"jid": "job-0001", "jobtype": "Digest", "args": [], "at": "2099-01-01T00:00:00Z",
               "custom": {"group": "g", "aggregate": {}}}  # fmt: skip
    with pytest.raises(InvalidJob, match="cannot be scheduled"):
        await server.manager.push(msgspec.json.encode(payload))


# ---------------------------------------------------------------------------- real clock


@dataclasses.dataclass
class Item:
    user: str
    n: int


async def test_a_python_handler_gets_its_items_as_a_typed_list(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> None:
    running = await make_server(store_url("sqlite", tmp_path, request))
    app = conveyor.App(running.url)
    batches: list[list[Item]] = []

    @app.job(aggregate=conveyor.Aggregate(max_size=4, max_delay=10, grace=0.3))
    async def digest(items: list[Item]) -> None:
        batches.append(items)

    with pytest.raises(ValueError, match=r"push it with \.options"):
        await digest.push(Item("a", 0))
    with pytest.raises(TypeError, match="group= is for jobs declared with aggregate="):
        app.job(lambda: None, name="plain").options(group="x")  # type: ignore[call-overload]
    async with app.worker(concurrency=2):
        for n in range(6):
            await digest.options(group="user-a").push(Item("a", n))
        await digest.options(group="user-b").push(Item("b", 9))
        await eventually(lambda: _true(sum(len(b) for b in batches) == 7), within=10)
    assert sorted([(item.user, item.n) for item in b] for b in batches) == [
        [("a", 0), ("a", 1), ("a", 2), ("a", 3)],
        [("a", 4), ("a", 5)],
        [("b", 9)],
    ]
    assert all(isinstance(item, Item) for batch in batches for item in batch)
    digest_one = digest(Item("c", 1))  # called as a function: a batch of one
    await digest_one
    assert batches[-1] == [Item("c", 1)]
    await app.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_two_servers_over_one_redis_enqueue_each_group_once(
    redis_url: str, make_server: MakeServer
) -> None:
    """Real loops on two servers; members pushed through both; every group is due at once on
    both (grace), and each becomes exactly one job."""
    servers = [await make_server(redis_url) for _ in range(2)]
    app = conveyor.App(servers[0].url)
    other = conveyor.App(servers[1].url)
    seen: list[list[int]] = []

    @app.job(aggregate=conveyor.Aggregate(max_size=1000, max_delay=30, grace=0.3))
    async def collect(items: list[int]) -> None:
        seen.append(items)

    other.register(collect.fn, name="collect", aggregate=collect.aggregate)
    pushers = {0: app.jobs["collect"], 1: other.jobs["collect"]}
    for n in range(40):
        await pushers[n % 2].options(group=f"g-{n % 4}").push(n)
    async with app.worker():
        await eventually(lambda: _true(sum(len(items) for items in seen) == 40), within=15)
        await asyncio.sleep(1.0)  # a second flush of any group would have run by now
    assert len(seen) == 4
    assert sorted(sorted(items) for items in seen) == [
        [n for n in range(40) if n % 4 == g] for g in range(4)
    ]
    assert all(items == sorted(items) for items in seen)  # arrival order kept
    info = await servers[1].manager.info()
    assert info["features"]["aggregation"] == {"groups": 0, "aggregating": 0}
    await app.aclose()
    await other.aclose()


@pytest.mark.interop
async def test_a_faktory_client_pushes_members_through_custom(server: RunningServer) -> None:
    """cdrx's ``faktory`` (PyPI), in a process of its own: three jobs with ``custom.group``
    and ``custom.aggregate``, then its worker's FETCH gets the one job they became."""
    script = Path(__file__).parent / "interop" / "python_clients.py"
    result = await run_json(
        sys.executable, str(script), "cdrx_aggregate", env=client_environ(server.url)
    )
    assert result["queued"] == [True, True, True]
    fetched = result["fetched"]
    assert (fetched["jid"], fetched["jobtype"]) == ("agg:cdrx-sum-0", "Sum")
    assert fetched["args"] == [[[0], [1], [2]]]
    assert fetched["retry"] == 5  # cdrx's, from the oldest member
    assert result["ack"] == "OK"
    assert (await server.manager.info())["faktory"]["total_processed"] == 1


async def test_a_job_run_on_its_own_gets_a_list_of_one_item() -> None:
    """conveyor.testing.inline runs each pushed job at once, with no server to group it: the
    handler still takes its list (so does a plain Faktory server's worker)."""
    from conveyor.testing import inline

    app = conveyor.App("tcp://127.0.0.1:1")
    seen: list[list[Item]] = []

    @app.job(aggregate=conveyor.Aggregate(max_size=5))
    def digest(items: list[Item]) -> None:
        seen.append(items)

    with inline(app):
        await digest.options(group="g").push(Item("a", 1))
        await digest.options(group="g").push(Item("a", 2))
    assert seen == [[Item("a", 1)], [Item("a", 2)]]
    with pytest.raises(TypeError, match="takes one parameter"):

        @app.job(aggregate=conveyor.Aggregate())
        def two(a: int, b: int) -> None: ...

    with pytest.raises(TypeError, match=r"list\[T\]"):

        @app.job(aggregate=conveyor.Aggregate())
        def scalar(a: int) -> None: ...

    with pytest.raises(ValueError, match="max_size must be from 1 to 10000"):
        conveyor.Aggregate(max_size=0)
