"""The Redis store beyond the shared contract: many stores over one Redis.

Two ``RedisStore`` instances over one Redis stand for two conveyor servers: they must never
hand out a job twice, conditional moves must happen once, and an enqueue on one must wake the
other within milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from conveyor.store.base import (
    JobFilter,
    QueuedJob,
    SetEntry,
    SetMove,
    SortedSet,
    WorkerRecord,
)
from conveyor.store.redis import RedisStore
from conveyor.store.redis.codec import parse_url
from tests.support.services import RedisServer

NOW = 1_700_000_000.0
DAY = "2023-11-14"


def job(jid: str, queue: str = "default", size: int = 0) -> QueuedJob:
    body = b'{"jid":"%s","queue":"%s","jobtype":"Work","args":["%s"]}' % (
        jid.encode(),
        queue.encode(),
        b"x" * size,
    )
    return QueuedJob(queue, jid, body, 60)


@pytest.fixture
async def pair(kv_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores over one Redis: two servers."""
    a, b = RedisStore.from_url(kv_url), RedisStore.from_url(kv_url)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def test_two_stores_never_reserve_the_same_job(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    total = 3000
    await a.enqueue([job(f"j{i}", f"q{i % 3}") for i in range(total)])
    seen: list[str] = []

    async def worker(store: RedisStore, wid: str) -> None:
        while True:
            got = await store.reserve(["q0", "q1", "q2"], wid, NOW, count=7)
            if not got:
                return
            seen.extend(r.jid for r in got)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(s, f"w{i}") for i in range(4) for s in (a, b)))
    assert len(seen) == total
    assert len(set(seen)) == total
    assert (await a.list_reservations(0, 0)).total == total
    assert await b.ack(seen, DAY) == total
    assert await a.ack(seen, DAY) == 0
    assert (await a.counters()).processed == total


async def test_conditional_moves_happen_once_across_stores(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    entries = [
        SetEntry(NOW + i, f"r{i}", b'{"jid":"r%d"}' % i, "default", "Work") for i in range(300)
    ]
    await a.add_to_set(SortedSet.RETRIES, entries)
    moves = [SetMove(e, job(e.jid)) for e in entries]
    moved = await asyncio.gather(
        *(s.move_to_queue(SortedSet.RETRIES, moves[i::3]) for s in (a, b) for i in range(3))
    )
    assert sum(moved) == 300
    assert (await b.queue_sizes()) == {"default": 300}
    assert await a.set_size(SortedSet.RETRIES) == 0

    await a.add_to_set(SortedSet.DEAD, entries)
    killed = await asyncio.gather(
        a.move_to_set(SortedSet.DEAD, entries, SortedSet.SCHEDULED, NOW),
        b.move_to_set(SortedSet.DEAD, entries, SortedSet.SCHEDULED, NOW),
    )
    assert sorted(killed) == [0, 300]
    removed = await asyncio.gather(
        a.remove_from_set(SortedSet.SCHEDULED, [SetEntry(NOW, e.jid, b"") for e in entries]),
        b.remove_from_set(SortedSet.SCHEDULED, [SetEntry(NOW, e.jid, b"") for e in entries]),
    )
    assert sorted(removed) == [0, 300]


async def test_a_stale_score_does_not_move(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    old = SetEntry(NOW, "j1", b"{}", "default", "Work")
    await a.add_to_set(SortedSet.SCHEDULED, [old])
    await b.add_to_set(SortedSet.SCHEDULED, [SetEntry(NOW + 5, "j1", b"{}", "default", "Work")])
    assert await a.move_to_queue(SortedSet.SCHEDULED, [SetMove(old, job("j1"))]) == 0
    assert await a.queue_sizes() == {}


async def test_enqueue_on_one_store_wakes_the_other_within_milliseconds(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    woken: list[tuple[str, float]] = []
    b.set_ready_listener(lambda name: woken.append((name, time.monotonic())))
    await b.wait_subscribed()
    await asyncio.sleep(0.01)
    woken.clear()
    delays = []
    for i in range(20):
        start = time.monotonic()
        await a.enqueue([job(f"j{i}", f"q{i}")])
        await eventually(lambda i=i: any(name == f"q{i}" for name, _ in woken))  # type: ignore[misc]
        delays.append(next(t for name, t in woken if name == f"q{i}") - start)
    delays.sort()
    assert delays[len(delays) // 2] < 0.02, delays
    assert delays[-1] < 0.2, delays

    woken.clear()
    entry = SetEntry(NOW, "m1", b"{}", "moved", "Work")
    await a.add_to_set(SortedSet.SCHEDULED, [entry])
    await a.move_to_queue(SortedSet.SCHEDULED, [SetMove(entry, job("m1", "moved"))])
    await a.set_paused(["q1"], True)
    await a.set_paused(["q1"], False)
    await eventually(lambda: {"moved", "q1"} <= {name for name, _ in woken})


async def test_wakeups_resume_after_the_subscription_is_killed(
    pair: tuple[RedisStore, RedisStore], kv_url: str
) -> None:
    a, b = pair
    await a.enqueue([job("j0", "early")])
    woken: list[str] = []
    b.set_ready_listener(woken.append)
    await b.wait_subscribed()
    client = redis.Redis.from_url(kv_url)
    assert client.client_kill_filter(_type="pubsub") >= 2
    client.close()
    # After re-subscribing, every known queue is woken: a message lost meanwhile is not missed.
    await eventually(lambda: "early" in woken)
    woken.clear()
    await b.wait_subscribed()
    await a.enqueue([job("j1", "later")])
    await eventually(lambda: "later" in woken)


async def test_workers_are_shared_and_expire(kv_url: str) -> None:
    a = RedisStore.from_url(kv_url + "?worker_ttl=1")
    b = RedisStore.from_url(kv_url + "?worker_ttl=1")
    await a.open()
    await b.open()
    try:
        await a.save_worker(WorkerRecord("w1", hostname="h", pid=7, labels=["x"], state="quiet"))
        seen = await b.get_worker("w1")
        assert seen is not None
        assert (seen.hostname, seen.pid, seen.labels, seen.state) == (
            "h",
            7,
            ["x"],
            "quiet",
        )
        assert [w.wid for w in await b.list_workers()] == ["w1"]
        await asyncio.sleep(1.2)
        assert await b.list_workers() == []
        assert await a.get_worker("w1") is None
        assert await a.delete_worker("w1") is False
    finally:
        await a.close()
        await b.close()


async def test_update_worker_refreshes_the_ttl_and_keeps_json_readable(kv_url: str) -> None:
    short = RedisStore.from_url(kv_url + "?worker_ttl=1&namespace=ttl")
    long = RedisStore.from_url(kv_url + "?worker_ttl=300&namespace=ttl")
    await short.open()
    await long.open()
    client = redis.Redis.from_url(kv_url)
    try:
        await short.save_worker(WorkerRecord("w1", hostname="h", labels=[], connections=1))
        assert client.ttl("{ttl}:w:w1") <= 1
        await long.update_worker("w1", rss_kb=3, last_beat=NOW + 0.25)
        assert client.ttl("{ttl}:w:w1") > 200
        # cjson would write empty labels as {}: the script leaves them out instead.
        raw = json.loads(client.get("{ttl}:w:w1") or b"")
        assert raw.get("labels", []) == []
        assert (raw["rss_kb"], raw["last_beat"], raw["connections"]) == (3, NOW + 0.25, 1)
        assert await short.get_worker("w1") == WorkerRecord(
            "w1", hostname="h", last_beat=NOW + 0.25, rss_kb=3, connections=1
        )
    finally:
        client.close()
        await short.close()
        await long.close()


async def test_concurrent_worker_updates_from_two_stores_all_land(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    await a.save_worker(WorkerRecord("w1", connections=1))
    for _ in range(5):  # a few rounds, each within the client's connection pool
        beats = [a.update_worker("w1", rss_kb=i, state="running") for i in range(20)]
        counts = [b.update_worker("w1", connections_delta=1) for _ in range(10)]
        quiet = b.update_worker("w1", state="quiet")
        await asyncio.gather(*beats[:10], quiet, *beats[10:], *counts)
    record = await a.get_worker("w1")
    assert record is not None
    assert (record.state, record.connections) == ("quiet", 51)


async def test_namespaces_are_isolated(kv_url: str) -> None:
    one = RedisStore.from_url(kv_url + "?namespace=one")
    two = RedisStore.from_url(kv_url + "?namespace=two")
    await one.open()
    await two.open()
    try:
        await one.enqueue([job("j1")])
        assert await two.queue_sizes() == {}
        await two.flush()
        assert await one.queue_sizes() == {"default": 1}
    finally:
        await one.close()
        await two.close()
    client = redis.Redis.from_url(kv_url)
    # Only tokens of two's own write calls are left of two, and they expire (calls.py).
    left = [key for key in client.keys("*") if not key.startswith(b"{one}:")]
    assert left
    assert all(key.startswith(b"{two}:op:") and 0 < client.ttl(key) <= 30 for key in left)
    client.close()


async def test_filtered_listing_scans_past_one_chunk(kv_url: str) -> None:
    store = RedisStore.from_url(kv_url)
    await store.open()
    try:
        entries = [
            SetEntry(NOW + i, f"d{i:05}", b'{"n":%d}' % i, "q", "Even" if i % 2 else "Odd")
            for i in range(2500)
        ]
        await store.add_to_set(SortedSet.DEAD, entries)
        page = await store.list_set(SortedSet.DEAD, JobFilter(jobtype="Even"), 1200, 5)
        assert page.total == 1250
        assert [e.jid for e in page.items] == [f"d{i:05}" for i in range(2401, 2410, 2)]
    finally:
        await store.close()


def entries_read(client: redis.Redis) -> int:
    """How many set entries Redis has handed out since the stats were reset: ``set_read``
    fetches each entry's data with one HGET."""
    stats = client.info("commandstats").get("cmdstat_hget", {})
    return int(stats.get("calls", 0))


@pytest.mark.parametrize("descending", [False, True])
async def test_paging_through_a_filtered_set_reads_it_about_once(
    kv_server: RedisServer, descending: bool
) -> None:
    # 5,000 entries, every other one a match, 500 a page: 6 pages. Reading the whole set for
    # every page (as MUTATE's listing did) hands out 30,000 entries; resuming after the last
    # page's entry, 5,000 for the first page's count and about one chunk per page after.
    store = RedisStore.from_url(kv_server.url)
    await store.open()
    client = redis.Redis(port=kv_server.port)
    try:
        entries = [
            SetEntry(NOW + i // 3, f"d{i:05}", b'{"n":%d}' % i, "q", "Even" if i % 2 else "Odd")
            for i in range(5000)
        ]  # three entries a score: the order within one is the jid's
        await store.add_to_set(SortedSet.DEAD, entries)
        flt = JobFilter(jobtype="Even")
        client.config_resetstat()
        listed: list[str] = []
        totals: set[int] = set()
        while True:
            page = await store.list_set(
                SortedSet.DEAD, flt, len(listed), 500, descending=descending
            )
            listed += [e.jid for e in page.items]
            totals.add(page.total)
            if len(page.items) < 500:
                break
        expected = [e.jid for e in entries if e.jobtype == "Even"]
        assert listed == (expected[::-1] if descending else expected)
        assert totals == {2500}
        assert entries_read(client) <= 5000 + 6 * 1000
        # a change at or before where the last page ended is followed, as by a full scan
        client.config_resetstat()
        first = await store.list_set(SortedSet.DEAD, flt, 0, 500, descending=descending)
        gone = first.items[10]
        await store.remove_from_set(SortedSet.DEAD, [gone])
        second = await store.list_set(SortedSet.DEAD, flt, 500, 500, descending=descending)
        assert second.total == 2499
        assert second.items[0].jid == listed[501]  # one earlier match fewer: one further on
        assert entries_read(client) == 5000 + 4999  # the second page was a full scan again
    finally:
        client.close()
        await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost", "not a Redis URL"),
        ("redis://a:1,b:2", r"redis\+cluster"),
        ("redis+cluster://a:1/3", "database 0"),
        ("redis://localhost?namespace={x}", "braces"),
        ("redis://localhost:port", "bad port"),
        ("redis://localhost?worker_ttl=soon", "worker_ttl"),
        ("redis+unix://localhost/tmp/redis.sock", "no host"),
        ("redis+unix://", "socket path"),
        ("redis+unix:///tmp/redis.sock?db=two", "bad database number"),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore.from_url(url)


def test_url_forms() -> None:
    plain = parse_url("redis://:secret@db.example:6380/2?namespace=shop&socket_timeout=3")
    assert (plain.cluster, plain.tls, plain.nodes, plain.namespace) == (
        False, False, [("db.example", 6380)], "shop",
    )  # fmt: skip
    assert plain.password == "secret"
    assert plain.client_url == "redis://:secret@db.example:6380/2?socket_timeout=3"
    unix = parse_url("redis+unix://:secret@/run/redis/redis.sock?db=3&namespace=shop")
    assert (unix.socket, unix.db, unix.nodes, unix.namespace) == (
        "/run/redis/redis.sock", 3, [], "shop",
    )  # fmt: skip
    assert (unix.where, unix.password) == ("/run/redis/redis.sock", "secret")
    # redis-py's spelling, for its clients (the Pipe and the wake-up channel open the socket)
    assert unix.client_url == "unix://:secret@/run/redis/redis.sock?db=3"
    cluster = parse_url("rediss+cluster://u:p@h1:7000,h2:7001,[::1]:7002")
    assert (cluster.cluster, cluster.tls, cluster.username) == (True, True, "u")
    assert cluster.nodes == [("h1", 7000), ("h2", 7001), ("::1", 7002)]
