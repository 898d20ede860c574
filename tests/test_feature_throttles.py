"""Throttles and rate limits at FETCH, over the wire, on every backend: the limit holds, a
limited queue is skipped for the next one, and a held-back FETCH is woken (not polled) when a
slot frees or a token is due."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conveyor.manager import ManagerConfig
from conveyor.manager.features.registry import build_features
from tests.support.features import Connect, FeatureServer, bulk_json, encode, push
from tests.support.server import TEST_TIMINGS, RawClient, RunningServer

OK = b"+OK\r\n"
WAIT = 2.0  # each FETCH waits this long for a job
WOKEN = WAIT - 0.4
"""A FETCH nobody wakes answers (with the job, after a last look) only when its wait ends:
one answered before ``WOKEN`` was woken (the margin is for a loaded machine)."""
TABLES = {
    "throttles": {
        "api": {"concurrency": 2, "timeout": 60},
        "short": {"concurrency": 1, "timeout": 0.3},
        "mine": {"worker": 1},
    },
    "queues": {"paced": {"rate_limit": 10, "burst": 2}},
}
CONFIG = ManagerConfig(
    fetch_wait_seconds=WAIT, scheduler_interval_seconds=0.02, reaper_interval_seconds=0.05
)


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url, TABLES, CONFIG, min_reserve_for_seconds=1)


async def fetch(client: RawClient, *queues: str) -> str | None:
    reply = await client.call(b"FETCH " + " ".join(queues).encode(), within=WAIT + 2)
    return None if reply == b"$-1\r\n" else str(bulk_json(reply)["jid"])


async def timed_fetch(client: RawClient, *queues: str) -> tuple[str | None, float]:
    started = time.monotonic()
    jid = await fetch(client, *queues)
    return jid, time.monotonic() - started


async def test_a_throttle_holds_and_a_full_queue_is_skipped_for_the_next(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    api = await push(a, "api", 3)
    other = await push(a, "other", 1)
    assert await fetch(a, "api") == api[0]
    assert await fetch(b, "api") == api[1]
    assert await fetch(c, "api", "other") == other[0]  # api is full: the next queue
    usage = bulk_json(await a.call(b"INFO"))["features"]["throttles"]["api"]
    assert usage["in_use"] == 2
    assert usage["queued"] == 1
    assert usage["concurrency"] == 2


async def test_an_ack_wakes_the_fetch_a_throttle_holds_back(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    api = await push(a, "api", 3)
    assert await fetch(a, "api") == api[0]
    assert await fetch(b, "api") == api[1]
    waiting = asyncio.create_task(timed_fetch(c, "api"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # held back: the queue has a job but no slot
    assert await a.call(b"ACK " + encode({"jid": api[0]})) == OK
    jid, seconds = await waiting
    assert jid == api[2]
    assert seconds < WOKEN  # woken by the ACK, not by the end of its wait


async def test_a_fail_frees_a_slot_too(server: RunningServer, worker: Connect) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    api = await push(a, "api", 3)
    await fetch(a, "api")
    await fetch(b, "api")
    waiting = asyncio.create_task(timed_fetch(c, "api"))
    await asyncio.sleep(0.1)
    failed = encode({"jid": api[0], "errtype": "E", "message": "x"})
    assert await a.call(b"FAIL " + failed) == OK
    jid, seconds = await waiting
    assert jid == api[2]
    assert seconds < WOKEN


async def test_a_slot_is_freed_by_its_timeout(server: RunningServer, worker: Connect) -> None:
    a, b = await worker("wa"), await worker("wb")
    short = await push(a, "short", 2)
    assert await fetch(a, "short") == short[0]  # never acked
    jid, seconds = await timed_fetch(b, "short")
    assert jid == short[1]
    assert 0.2 < seconds < WOKEN  # after the 0.3 s lease, by a timer


async def test_a_slot_is_freed_by_reservation_expiry(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    await push(a, "api", 2, reserve_for=1)
    await push(a, "api", 1)
    await fetch(a, "api")
    await fetch(b, "api")
    jid, seconds = await timed_fetch(c, "api")  # the reaper fails the 1 s reservations
    assert jid is not None
    assert 0.8 < seconds < WAIT


async def test_a_worker_gone_frees_its_slots(server: RunningServer, worker: Connect) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    api = await push(c, "api", 3)
    await fetch(a, "api")
    await fetch(b, "api")
    waiting = asyncio.create_task(timed_fetch(c, "api"))
    await asyncio.sleep(0.1)
    await a.send(b"END")  # its last connection: the worker is gone
    jid, seconds = await waiting
    assert jid == api[2]
    assert seconds < WOKEN


async def test_a_per_worker_throttle_counts_each_worker(
    server: RunningServer, worker: Connect
) -> None:
    a, a_again, b = await worker("wa"), await worker("wa"), await worker("wb")
    mine = await push(a, "mine", 3)
    assert await fetch(a, "mine") == mine[0]
    assert await fetch(b, "mine") == mine[1]
    assert await a_again.call(b"FETCH mine other", within=WAIT + 2) == b"$-1\r\n"


async def test_a_held_back_fetch_is_not_polled(server: RunningServer, worker: Connect) -> None:
    store = server.manager.store
    calls = 0
    original = store.reserve_limited

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    store.reserve_limited = counting  # type: ignore[method-assign]
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    await push(a, "api", 3)
    await fetch(a, "api")
    await fetch(b, "api")
    before = calls
    assert await fetch(c, "api") is None  # held back for its whole 3 s wait
    assert calls - before <= 3  # look, register, look again, a last look: no polling


async def test_raising_a_limit_on_reload_wakes_the_fetches_it_held_back(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    api = await push(a, "api", 3)
    await fetch(a, "api")
    await fetch(b, "api")
    waiting = asyncio.create_task(timed_fetch(c, "api"))
    await asyncio.sleep(0.1)
    raised = {**TABLES, "throttles": {**TABLES["throttles"], "api": {"concurrency": 3}}}
    server.manager.reconfigure(build_features(raised))
    jid, seconds = await waiting
    assert jid == api[2]
    assert seconds < WOKEN


async def test_a_job_pushed_to_a_waiting_fetch_of_a_throttled_queue_takes_a_slot(
    server: RunningServer, worker: Connect
) -> None:
    a, b, c = await worker("wa"), await worker("wb"), await worker("wc")
    waiting = asyncio.create_task(fetch(a, "api"))
    await asyncio.sleep(0.1)
    api = await push(c, "api", 3)
    assert await waiting == api[0]
    assert await fetch(b, "api") == api[1]
    assert await c.call(b"FETCH api", within=WAIT + 2) == b"$-1\r\n"  # 2 taken: full


# ------------------------------------------------------------------ rate limits


async def test_a_rate_limit_gives_the_burst_then_one_job_per_period(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    paced = await push(a, "paced", 6)
    started = time.monotonic()
    got = [await fetch(a, "paced") for _ in range(6)]
    elapsed = time.monotonic() - started
    assert got == paced
    assert elapsed >= 0.35  # 2 at once, then 4 more at 10/s: the limit held


async def test_an_empty_bucket_serves_the_next_queue_and_a_timer_wakes_the_wait(
    server: RunningServer, worker: Connect
) -> None:
    a = await worker("wa")
    paced = await push(a, "paced", 3)
    other = await push(a, "other", 1)
    assert [await fetch(a, "paced"), await fetch(a, "paced")] == paced[:2]
    assert await fetch(a, "paced", "other") == other[0]  # bucket empty: the next queue
    jid, seconds = await timed_fetch(a, "paced")
    assert jid == paced[2]
    assert seconds < WOKEN
    usage = bulk_json(await a.call(b"INFO"))["features"]["rate_limits"]["paced"]
    assert usage["rate"] == 10
    assert usage["burst"] == 2
    assert usage["tokens"] < 1


def test_throttle_config_errors_name_the_throttle_and_key() -> None:
    from conveyor.config import ConfigError

    bad = [
        ({"q": {"concurrency": 0}}, r"\[throttles\] q concurrency: expected a whole number"),
        ({"q": {"timeout": 60}}, r"\[throttles\] q: needs concurrency"),
        ({"q": {"concurency": 3}}, r"\[throttles\] q: unknown key 'concurency'"),
        ({"q": {"concurrency": 3, "timeout": "1m"}}, r"\[throttles\] q timeout: expected a num"),
        ({"q": 3}, r"\[throttles\] q: expected a table"),
        ({"bad name": {"worker": 1}}, r"\[throttles\] bad name: queue names must match"),
    ]
    for throttles, message in bad:
        with pytest.raises(ConfigError, match=message):
            build_features({"throttles": throttles})


def test_unlimited_queues_keep_the_plain_paths() -> None:
    from conveyor.manager import Manager
    from conveyor.store import open_store

    manager = Manager(open_store("memory://"), TEST_TIMINGS, features=build_features(TABLES))
    assert manager.flow.limits_for(["default", "other"]) is None
    assert manager.flow.limits_for(["default", "api"]) is not None
    assert not manager.flow.bounding
