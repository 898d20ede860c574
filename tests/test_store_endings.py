"""Endings, counts and deadlines (``conveyor.store.{endings,counts,deadlines}``), run against
every backend."""

from __future__ import annotations

from conveyor.store.base import QueuedJob, Store
from conveyor.store.deadlines import Deadline

NOW = 1_700_000_000.0
DAY = "2023-11-14"


async def reserve(store: Store, *jids: str) -> None:
    await store.enqueue([QueuedJob("q", jid, b'{"jid":"%s"}' % jid.encode(), 60) for jid in jids])
    assert len(await store.reserve(["q"], "w1", NOW, len(jids))) == len(jids)


async def test_ack_returning_ends_counts_and_returns_the_reservations(backend_store: Store) -> None:
    await reserve(backend_store, "jid-a", "jid-b")
    ended = (await backend_store.ack_returning(["jid-b", "nope", "jid-a"], DAY)).ended
    assert [(r.jid, r.queue, r.wid, r.payload) for r in ended] == [
        ("jid-b", "q", "w1", b'{"jid":"jid-b"}'),
        ("jid-a", "q", "w1", b'{"jid":"jid-a"}'),
    ]
    assert ended[0].reserved_at == NOW
    assert ended[0].expires_at == NOW + 60
    assert (await backend_store.counters()).processed == 2
    assert (await backend_store.daily_counters([DAY]))[DAY].processed == 2
    assert (await backend_store.ack_returning(["jid-a"], DAY)).ended == []  # a repeat ends nothing
    assert await backend_store.get_reservation("jid-a") is None


async def test_ack_returning_keeps_the_payloads_that_hold_a_mark(backend_store: Store) -> None:
    await backend_store.enqueue(
        [
            QueuedJob("q", "jid-a", b'{"jid":"jid-a","custom":{"keep":1}}', 60),
            QueuedJob("q", "jid-b", b'{"jid":"jid-b"}', 60),
        ]
    )
    await backend_store.reserve(["q"], "w1", NOW, 2)
    acked = await backend_store.ack_returning(["jid-a", "jid-b"], DAY, (), [b'"keep":'])
    ended = acked.ended
    assert [(r.jid, r.queue, r.wid) for r in ended] == [("jid-a", "q", "w1"), ("jid-b", "q", "w1")]
    assert ended[0].payload == b'{"jid":"jid-a","custom":{"keep":1}}'
    assert ended[1].payload in (b'{"jid":"jid-b"}', b"")  # a store may leave it out


async def test_discard_ends_without_counting(backend_store: Store) -> None:
    await reserve(backend_store, "jid-a")
    ended = await backend_store.discard_reservations(["jid-a", "nope"])
    assert [r.jid for r in ended] == ["jid-a"]
    assert (await backend_store.counters()).processed == 0
    assert await backend_store.get_reservation("jid-a") is None
    assert await backend_store.ack(["jid-a"], DAY) == 0


async def test_counts_add_up_per_space_and_missing_keys_count_zero(backend_store: Store) -> None:
    await backend_store.add_counts("expired", {"total": 2, DAY: 2})
    await backend_store.add_counts("expired", {"total": 1, "2023-11-15": 1})
    await backend_store.add_counts("other", {"total": 7})
    got = await backend_store.get_counts("expired", ["total", DAY, "2023-11-15", "never"])
    assert got == {"total": 3, DAY: 2, "2023-11-15": 1, "never": 0}
    await backend_store.flush()
    assert await backend_store.get_counts("other", ["total"]) == {"total": 0}


async def test_deadlines_come_due_soonest_first_and_can_be_replaced(backend_store: Store) -> None:
    await backend_store.set_deadlines(
        "exp",
        [Deadline("c", NOW + 3, b"3"), Deadline("a", NOW + 1, b"1"), Deadline("b", NOW + 1, b"")],
    )
    await backend_store.set_deadlines("other", [Deadline("a", NOW, b"x")])
    due = await backend_store.due_deadlines("exp", NOW + 2, 10)
    assert due == [Deadline("a", NOW + 1, b"1"), Deadline("b", NOW + 1, b"")]
    assert await backend_store.due_deadlines("exp", NOW + 5, 1) == [Deadline("a", NOW + 1, b"1")]
    await backend_store.set_deadlines("exp", [Deadline("a", NOW + 9, b"later")])
    assert [d.key for d in await backend_store.due_deadlines("exp", NOW + 5, 10)] == ["b", "c"]
    assert await backend_store.count_deadlines("exp") == 3
    assert await backend_store.delete_deadlines("exp", ["a", "b", "a", "zz"]) == 2
    assert await backend_store.count_deadlines("exp") == 1
    assert await backend_store.count_deadlines("other") == 1
    await backend_store.flush()
    assert await backend_store.count_deadlines("exp") == 0


async def test_take_queued_removes_and_returns_jobs_in_queue_order(backend_store: Store) -> None:
    jobs = [QueuedJob("q", f"jid-{i}", b'{"n":%d}' % i, 60 + i) for i in range(5)]
    await backend_store.enqueue(jobs)
    taken = await backend_store.take_queued("q", ["jid-3", "jid-1", "nope"])
    assert taken == [jobs[1], jobs[3]]
    assert await backend_store.queue_sizes() == {"q": 3}
    page = await backend_store.list_queue("q", 0, 10)
    assert [j.jid for j in page.items] == ["jid-0", "jid-2", "jid-4"]
    assert await backend_store.take_queued("q", ["jid-3"]) == []
    assert await backend_store.take_queued("unknown", ["jid-0"]) == []
