"""``/metrics``: what a real server counts while real clients and a real worker use it, read
back through the Prometheus text parser; the ACK/ACKB/FAIL ``duration`` extension; the caps
and the opt-in store timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import conveyor
from conveyor.client import Client
from conveyor.config import ServerConfig
from conveyor.manager import Manager, ManagerConfig
from conveyor.metrics import JobMetrics
from conveyor.metrics.server import ServerCollector
from conveyor.metrics.stats import OVERFLOW_LABEL, Counters, Histograms
from conveyor.metrics.store_timing import instrument_store
from conveyor.server import FaktoryServer
from conveyor.store import open_store
from conveyor.web import create_app
from tests.support.server import TEST_TIMINGS, RawConnect
from tests.support.services import RedisServer

BASE = "http://metrics.test"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Served:
    server: FaktoryServer
    manager: Manager
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.server.url

    async def scrape(self) -> Samples:
        response = await self.http.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        return parse(response.text)


async def serve(
    storage: str = "memory://",
    config: ManagerConfig = TEST_TIMINGS,
    *,
    timed: bool = False,
    password: str | None = None,
) -> AsyncIterator[Served]:
    store = open_store(storage)
    timings = instrument_store(store) if timed else None
    manager = Manager(store, config, metrics=JobMetrics())
    await manager.start()
    server = FaktoryServer(manager, ServerConfig(port=0, web_port=None))
    await server.start()
    collector = ServerCollector(manager, stats=server.stats, store_timings=timings)
    app = create_app(manager, stats=server.stats, collector=collector, password=password)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            yield Served(server, manager, http)
    finally:
        await server.stop()
        await manager.stop()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for running in serve():
        yield running


async def test_a_real_worker_run_shows_up_by_queue_and_jobtype(served: Served) -> None:
    app = conveyor.App(served.url)

    @app.job(queue="mail")
    async def send(seconds: float) -> None:
        await asyncio.sleep(seconds)

    @app.job(queue="mail", retry=3)
    async def flaky() -> None:
        raise RuntimeError("try again")

    @app.job(queue="imports", retry=-1)
    async def doomed() -> None:
        raise ValueError("never works")

    for _ in range(3):
        await send.push(0.05)
    await flaky.push()
    await doomed.push()
    worker = await conveyor.testing.drain(app, queues=["mail", "imports"])
    assert (worker.processed, worker.failed) == (5, 2)
    samples = await served.scrape()

    assert value(samples, "conveyor_jobs_pushed_total", queue="mail", jobtype="send") == 3
    assert value(samples, "conveyor_jobs_pushed_total", queue="imports", jobtype="doomed") == 1
    assert value(samples, "conveyor_jobs_fetched_total", queue="mail") == 4
    assert value(samples, "conveyor_jobs_fetched_total", queue="imports") == 1
    assert value(samples, "conveyor_jobs_processed_total", queue="mail", jobtype="send") == 3
    assert value(samples, "conveyor_jobs_processed_total", queue="mail", jobtype="flaky") == 1
    assert value(samples, "conveyor_jobs_failed_total", queue="mail", jobtype="flaky") == 1
    assert value(samples, "conveyor_jobs_failed_total", queue="mail", jobtype="send") == 0
    assert value(samples, "conveyor_jobs_dead_total", queue="imports", jobtype="doomed") == 1
    assert value(samples, "conveyor_jobs_dead_total", queue="mail", jobtype="flaky") == 0
    # run times, as the worker reported them with ACKB and FAIL
    runs = "conveyor_job_run_duration_seconds"
    assert value(samples, runs + "_count", queue="mail", jobtype="send") == 3
    assert value(samples, runs + "_sum", queue="mail", jobtype="send") >= 0.15
    assert value(samples, runs + "_bucket", queue="mail", jobtype="send", le="0.025") == 0
    assert value(samples, runs + "_bucket", queue="mail", jobtype="send", le="+Inf") == 3
    assert value(samples, runs + "_count", queue="imports", jobtype="doomed") == 1
    # the store's view, which INFO shows too
    assert value(samples, "conveyor_store_processed_total") == 5
    assert value(samples, "conveyor_store_failures_total") == 2
    assert value(samples, "conveyor_set_size", set="retries") == 1
    assert value(samples, "conveyor_set_size", set="dead") == 1
    assert value(samples, "conveyor_jobs_running") == 0
    assert value(samples, "conveyor_info", version=conveyor.__version__,
                 faktory_version="1.10.0", store="MemoryStore") == 1  # fmt: skip
    assert ("process_resident_memory_bytes", ()) in samples
    await app.aclose()


async def test_queues_sets_workers_and_connections_are_gauges(served: Served) -> None:
    async with await Client.connect(served.url, wid="w-gauges") as client:
        for n in range(3):
            await client.push({"jid": f"queued-{n:04}", "jobtype": "T", "args": [], "queue": "q"})
        await client.push(
            {"jid": "later-0001", "jobtype": "T", "args": [], "at": "2099-01-01T00:00:00Z"}
        )
        await client.push({"jid": "paused-001", "jobtype": "T", "args": [], "queue": "p"})
        await served.manager.pause_queues(["p"])
        await asyncio.sleep(0.02)
        samples = await served.scrape()
        assert value(samples, "conveyor_queue_size", queue="q") == 3
        assert value(samples, "conveyor_queue_latency_seconds", queue="q") >= 0.02
        assert value(samples, "conveyor_queue_paused", queue="p") == 1
        assert value(samples, "conveyor_queue_paused", queue="q") == 0
        assert value(samples, "conveyor_set_size", set="scheduled") == 1
        assert value(samples, "conveyor_workers", state="running") == 1
        assert value(samples, "conveyor_connections") == 1
        assert value(samples, "conveyor_commands_total") >= 5
        assert value(samples, "conveyor_store_ping_seconds") > 0
        await served.manager.signal_workers(["w-gauges"], "quiet")
        samples = await served.scrape()
        assert value(samples, "conveyor_workers", state="quiet") == 1
        assert value(samples, "conveyor_workers", state="running") == 0


async def test_the_duration_extension_on_the_wire(served: Served, raw_client: RawConnect) -> None:
    conn = await raw_client(served.server.port)
    for n in range(6):
        await conn.call(b'PUSH {"jid":"wire-%04d","jobtype":"W","args":[]}' % n)
    fetched = [await conn.call(b"FETCH default") for _ in range(6)]
    assert all(b"wire-" in reply for reply in fetched)
    # ACK: a string value, so Faktory's map[string]string takes it too
    assert await conn.call(b'ACK {"jid":"wire-0000","duration":"0.5"}') == b"+OK\r\n"
    # a standard ACK reports no run time and is still counted
    assert await conn.call(b'ACK {"jid":"wire-0001"}') == b"+OK\r\n"
    # a number is not a string: refused as Faktory refuses it, and nothing changes
    reply = await conn.call(b'ACK {"jid":"wire-0002","duration":1}')
    assert reply.startswith(b"-ERR invalid ACK")
    # ACKB: jids and objects mixed, a duration as a number or a string; a bad one is ignored
    reply = await conn.call(
        b'ACKB ["wire-0002",{"jid":"wire-0003","duration":2},{"jid":"wire-0004","duration":"x"}]'
    )
    assert reply == b"+OK\r\n"
    # an ACKB item without a jid fails the whole command, before anything is acknowledged
    assert (await conn.call(b'ACKB [{"duration":"1"},"wire-0005"]')).startswith(b"-ERR invalid")
    assert await served.manager.store.get_reservation("wire-0005") is not None
    reply = await conn.call(b'FAIL {"jid":"wire-0005","errtype":"E","message":"m","duration":0.25}')
    assert reply == b"+OK\r\n"
    samples = await served.scrape()
    labels = {"queue": "default", "jobtype": "W"}
    assert value(samples, "conveyor_jobs_processed_total", **labels) == 6
    assert value(samples, "conveyor_jobs_failed_total", **labels) == 1
    assert value(samples, "conveyor_job_run_duration_seconds_count", **labels) == 3
    assert value(samples, "conveyor_job_run_duration_seconds_sum", **labels) == 2.75


async def test_expired_reservations_are_counted() -> None:
    config = ManagerConfig(
        fetch_wait_seconds=0.2, reaper_interval_seconds=0.05, min_reserve_for_seconds=1
    )
    async for served in serve(config=config):
        async with await Client.connect(served.url) as client:
            await client.push({"jid": "slow-00001", "jobtype": "S", "args": [], "reserve_for": 1})
            assert (await client.fetch("default") or {})["jid"] == "slow-00001"
        for _ in range(100):
            samples = await served.scrape()
            if value(samples, "conveyor_jobs_expired_total", queue="default", jobtype="S"):
                break
            await asyncio.sleep(0.05)
        assert value(samples, "conveyor_jobs_expired_total", queue="default", jobtype="S") == 1
        assert value(samples, "conveyor_jobs_failed_total", queue="default", jobtype="S") == 1
        assert value(samples, "conveyor_set_size", set="retries") == 1


async def test_an_ack_on_another_server_sharing_the_store_is_counted_without_labels(
    redis_url: str,
) -> None:
    """Two servers over one Redis: a job fetched through one and acknowledged through the
    other is counted by the second, which cannot know its queue without a store read."""
    url = redis_url
    async for first in serve(url):
        async for second in serve(url):
            async with await Client.connect(first.url) as one:
                await one.push({"jid": "shared-001", "jobtype": "X", "args": [], "queue": "s"})
                assert (await one.fetch("s") or {})["jid"] == "shared-001"
            async with await Client.connect(second.url) as two:
                await two.ack("shared-001", duration=0.1)
            samples = await second.scrape()
            assert value(samples, "conveyor_jobs_processed_total", queue="", jobtype="") == 1
            assert value(samples, "conveyor_jobs_processed_total", queue="s", jobtype="X") == 0
            first_samples = await first.scrape()
            assert value(first_samples, "conveyor_jobs_running") == 1  # it never saw the end


async def test_metrics_need_the_dashboard_password() -> None:
    async for served in serve(password="s3cret"):
        assert (await served.http.get("/metrics")).status_code == 401
        response = await served.http.get("/metrics", auth=("prometheus", "s3cret"))
        assert response.status_code == 200
        assert "conveyor_queue_size" in response.text
        assert (await served.http.get("/health")).status_code == 200


async def test_store_timing_histograms_each_command() -> None:
    async for served in serve(timed=True):
        async with await Client.connect(served.url) as client:
            for n in range(4):
                await client.push({"jid": f"timed-{n:04}", "jobtype": "T", "args": []})
            for _ in range(4):
                job = await client.fetch("default")
                assert job is not None
                await client.ack(job["jid"])
        samples = await served.scrape()
        name = "conveyor_store_command_duration_seconds_count"
        assert value(samples, name, command="reserve") == 4
        assert value(samples, name, command="ack") == 4
        # a PUSH over an in-process store writes at once, in the step that read it
        assert value(samples, name, command="enqueue_now") == 4
        assert value(samples, name, command="counters") >= 1  # the scrape's own read


async def test_without_job_metrics_the_store_gauges_remain() -> None:
    manager = Manager(open_store("memory://"), TEST_TIMINGS)
    await manager.start()
    try:
        await manager.push(b'{"jid":"plain-0001","jobtype":"P","args":[]}')
        app = create_app(manager)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            samples = parse((await http.get("/metrics")).text)
        assert value(samples, "conveyor_queue_size", queue="default") == 1
        assert not any(name.startswith("conveyor_jobs_") for name, _ in samples)
    finally:
        await manager.stop()


def test_label_sets_are_capped() -> None:
    counters = Counters(max_series=2)
    for jobtype in ("a", "b", "c", "d"):
        counters.add(("q", jobtype))
    counters.add(("q", "a"), 5)
    assert counters.get(("q", "a")) == 6
    assert counters.get((OVERFLOW_LABEL, OVERFLOW_LABEL)) == 2
    assert counters.total() == 9
    histograms = Histograms((1.0, 2.0), max_series=1)
    histograms.observe(("x",), 1.0)  # le="1.0" takes a value equal to its bound
    histograms.observe(("y",), 3.0)
    family = histograms.family("h_seconds", "doc", ("l",))
    buckets = {(s.labels["l"], s.labels.get("le")): s.value for s in family.samples}
    assert buckets[("x", "1.0")] == 1
    assert buckets[(OVERFLOW_LABEL, "2.0")] == 0
    assert buckets[(OVERFLOW_LABEL, "+Inf")] == 1


def test_jobtypes_are_read_exactly_from_the_payload() -> None:
    from conveyor.job import Job, encode_job
    from conveyor.store.base import Reservation

    metrics = JobMetrics()
    names = ["Noop", 'say "hi"', "back\\slash", "ünïcode", "", "trailing\\"]
    for n, jobtype in enumerate(names):
        payload = encode_job(Job(jid=f"jid-{n:04}", jobtype=jobtype, args=[], queue="q"))
        metrics.on_reserve([Reservation(f"jid-{n:04}", "q", payload, "w", 0.0, 1e10)])
        metrics.on_ack([f"jid-{n:04}"], 1, {f"jid-{n:04}": 0.5})
    metrics.settle()
    for jobtype in names:
        assert metrics.processed.get(("q", jobtype)) == 1, jobtype
        assert metrics.durations.count(("q", jobtype)) == 1, jobtype
    assert metrics.running == 0


async def test_a_store_outage_is_a_gauge_not_a_failed_scrape(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        async for served in serve(redis_server.url):
            async with await Client.connect(served.url) as client:
                await client.push({"jid": "before-0001", "jobtype": "B", "args": []})
            samples = await served.scrape()
            assert value(samples, "conveyor_store_up") == 1
            assert value(samples, "conveyor_queue_size", queue="default") == 1
            redis_server.stop()
            samples = await served.scrape()
            assert value(samples, "conveyor_store_up") == 0
            # what the store would say is missing, not zero; this server's counters remain
            assert ("conveyor_queue_size", (("queue", "default"),)) not in samples
            assert value(samples, "conveyor_jobs_pushed_total", queue="default", jobtype="B") == 1
            redis_server.start()
            samples = await served.scrape()
            assert value(samples, "conveyor_store_up") == 1
    finally:
        redis_server.stop()
