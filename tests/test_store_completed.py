"""The completions and signals capabilities (``store/completed.py``, ``store/signals.py``),
run against every backend; and signals between two Redis stores (two servers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence

import redis

from conveyor.store.base import JobFilter, QueuedJob, Reservation, SetEntry, SortedSet, Store
from conveyor.store.limits import QueueLimit
from conveyor.store.redis import RedisStore

NOW = 1_700_000_000.0
DAY = "2023-11-14"


def queued(jid: str, queue: str = "default") -> QueuedJob:
    payload = b'{"jid":"%s","queue":"%s","jobtype":"Work","args":[]}' % (
        jid.encode(),
        queue.encode(),
    )
    return QueuedJob(queue, jid, payload, 60)


def kept(jid: str, score: float = NOW + 3600, queue: str = "default") -> SetEntry:
    payload = b'{"jid":"%s","jobtype":"Work","completed":{"result":[1]}}' % jid.encode()
    return SetEntry(score, jid, payload, queue, "Work")


async def complete(
    store: Store,
    entries: Sequence[SetEntry],
    day: str,
    throttled: Collection[str] = (),
    marks: Sequence[bytes] | None = None,
) -> list[Reservation]:
    """The ACK that keeps every job it acknowledges (``ack_returning`` with ``keep``)."""
    jids = [entry.jid for entry in entries]
    return (await store.ack_returning(jids, day, throttled, marks, keep=entries)).ended


async def reserve(store: Store, *jids: str) -> None:
    await store.enqueue([queued(jid) for jid in jids])
    taken = await store.reserve(["default"], "w1", NOW, len(jids))
    assert [r.jid for r in taken] == list(jids)


async def test_complete_ends_the_reservation_counts_it_and_keeps_the_entry(
    backend_store: Store,
) -> None:
    await reserve(backend_store, "j1", "j2")
    ended = await complete(backend_store, [kept("j1")], DAY)
    assert [(r.jid, r.queue, r.wid, r.payload) for r in ended] == [
        ("j1", "default", "w1", queued("j1").payload)
    ]
    assert ended[0].reserved_at == NOW
    assert await backend_store.get_reservation("j1") is None
    assert await backend_store.get_reservation("j2") is not None
    assert await backend_store.get_set_entries(SortedSet.COMPLETED, ["j1"]) == [kept("j1")]
    assert await backend_store.set_size(SortedSet.COMPLETED) == 1
    assert (await backend_store.counters()).processed == 1
    assert (await backend_store.daily_counters([DAY]))[DAY].processed == 1
    # the reaper can no longer fail it: it is not working any more
    expired = await backend_store.expired_reservations(NOW + 10_000, 10)
    assert [r.jid for r in expired] == ["j2"]


async def test_complete_without_a_reservation_changes_nothing(backend_store: Store) -> None:
    await reserve(backend_store, "j1")
    assert await backend_store.ack(["j1"], DAY) == 1
    assert await complete(backend_store, [kept("j1"), kept("never")], DAY) == []
    assert await backend_store.set_size(SortedSet.COMPLETED) == 0
    assert (await backend_store.counters()).processed == 1


async def test_completed_entries_list_filter_and_purge_like_any_set(backend_store: Store) -> None:
    await reserve(backend_store, "a1", "b2", "c3")
    entries = [kept("a1", NOW + 10), kept("b2", NOW + 20), kept("c3", NOW + 30)]
    ended = await complete(backend_store, entries[::-1], DAY)
    assert [r.jid for r in ended] == ["c3", "b2", "a1"]  # in the entries' order
    page = await backend_store.list_set(SortedSet.COMPLETED, _text("b2"), 0, 10)
    assert [e.jid for e in page.items] == ["b2"]
    assert await backend_store.purge_set(SortedSet.COMPLETED, NOW + 20, 100) == 2
    left = await backend_store.list_set(SortedSet.COMPLETED, _text(None), 0, 10)
    assert [e.jid for e in left.items] == ["c3"]


async def test_complete_frees_a_throttle_slot_in_the_same_step(backend_store: Store) -> None:
    """A kept job's ACK ends its reservation as any ACK does: its throttle slot is free and its
    queue announced, so the next job of the queue can be reserved."""
    await backend_store.enqueue([queued("t1", "q"), queued("t2", "q")])
    limits = {"q": QueueLimit(concurrency=1)}
    first = await backend_store.reserve_limited(["q"], "w1", time.time(), 2, limits)
    assert [r.jid for r in first.reservations] == ["t1"]
    woken: list[str] = []
    backend_store.set_ready_listener(woken.append)
    ended = await complete(backend_store, [kept("t1", queue="q")], DAY, {"q"}, [b'"keep":'])
    assert [(r.jid, r.queue) for r in ended] == [("t1", "q")]
    assert ended[0].payload in (queued("t1", "q").payload, b"")  # no mark: may be left out
    assert woken == ["q"]
    assert (await backend_store.limit_usage(limits, time.time()))["q"].in_use == 0
    assert await backend_store.get_set_entries(SortedSet.COMPLETED, ["t1"]) == [
        kept("t1", queue="q")
    ]
    again = await backend_store.reserve_limited(["q"], "w1", time.time(), 2, limits)
    assert [r.jid for r in again.reservations] == ["t2"]


async def test_one_ack_keeps_some_jobs_and_ends_the_others(backend_store: Store) -> None:
    """An ACKB of kept and plain jobs is one step: each reservation ends, only the entries of
    the jobs asked to be kept are written, all are counted, in the jids' order."""
    await reserve(backend_store, "p1", "k2", "p3")
    acked = await backend_store.ack_returning(
        ["p3", "k2", "p1", "gone"], DAY, keep=[kept("k2"), kept("gone")]
    )
    assert [r.jid for r in acked.ended] == ["p3", "k2", "p1"]
    assert await backend_store.get_set_entries(SortedSet.COMPLETED, ["k2", "p1", "gone"]) == [
        kept("k2")
    ]
    assert await backend_store.set_size(SortedSet.COMPLETED) == 1
    assert (await backend_store.counters()).processed == 3


async def test_reservations_of_many_jids_in_order(backend_store: Store) -> None:
    await reserve(backend_store, "j1", "j2", "j3")
    found = await backend_store.reservations_of(["j3", "nope", "j1", "j3"])
    assert [(r.jid, r.wid, r.queue) for r in found] == [
        ("j3", "w1", "default"),
        ("j1", "w1", "default"),
    ]
    assert found[0].payload == queued("j3").payload
    assert await backend_store.reservations_of([]) == []


async def test_flush_empties_the_completed_set(backend_store: Store) -> None:
    await reserve(backend_store, "j1")
    await complete(backend_store, [kept("j1")], DAY)
    await backend_store.flush()
    assert await backend_store.set_size(SortedSet.COMPLETED) == 0
    assert await backend_store.get_set_entries(SortedSet.COMPLETED, ["j1"]) == []


async def test_a_signal_reaches_the_listener_before_it_returns(backend_store: Store) -> None:
    heard: list[tuple[str, Sequence[str] | None]] = []
    backend_store.set_signal_listener(lambda topic, keys: heard.append((topic, keys)))
    await backend_store.signal("result", ["j 1", "j2"])
    assert ("result", ["j 1", "j2"]) in [(t, list(k) if k else k) for t, k in heard]
    heard.clear()
    await backend_store.signal("result", [])
    assert heard == []


async def test_signals_reach_the_other_redis_store_and_not_the_sender_twice(
    redis_url: str,
) -> None:
    a, b = RedisStore.from_url(redis_url), RedisStore.from_url(redis_url)
    await a.open()
    await b.open()
    try:
        at_a: list[tuple[str, list[str] | None]] = []
        at_b: list[tuple[str, list[str] | None]] = []
        a.set_signal_listener(lambda t, k: at_a.append((t, None if k is None else list(k))))
        b.set_signal_listener(lambda t, k: at_b.append((t, None if k is None else list(k))))
        await a.wait_subscribed()
        await b.wait_subscribed()
        await asyncio.sleep(0.02)
        at_a.clear()
        at_b.clear()
        await a.signal("result", ["jid with spaces", 'q"uote'])
        await _until(lambda: bool(at_b))
        assert at_b == [("result", ["jid with spaces", 'q"uote'])]
        await asyncio.sleep(0.05)
        assert at_a == [("result", ["jid with spaces", 'q"uote'])]  # once: its echo is skipped

        # a lost subscription: after it comes back, the listener is told to look at everything
        at_b.clear()
        client = redis.Redis.from_url(redis_url)
        assert client.client_kill_filter(_type="pubsub") >= 2
        client.close()
        await _until(lambda: ("", None) in at_b)
        await b.wait_subscribed()
        await a.signal("cancel", ["j9"])
        await _until(lambda: ("cancel", ["j9"]) in at_b)
    finally:
        await a.close()
        await b.close()


def _text(needle: str | None) -> JobFilter:
    return JobFilter(text=needle)


async def _until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)
