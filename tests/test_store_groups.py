"""The groups capability (``conveyor.store.groups``), run against every backend: the
aggregating set, its due index, and the flush that turns members into one queued job."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conveyor.store import open_store
from conveyor.store.base import QueuedJob, Store
from conveyor.store.groups import GroupAdd, GroupMember, GroupSpec, due_at

NOW = 1_700_000_000.0
SPEC = GroupSpec(max_size=3, max_delay=10.0, grace=2.0)


def member(jid: str, at: float, payload: bytes | None = None) -> GroupMember:
    return GroupMember(jid, payload or b'{"jid":"%s"}' % jid.encode(), at)


def aggregate(jid: str = "agg:job-0001", queue: str = "default") -> QueuedJob:
    return QueuedJob(queue, jid, b'{"jid":"%s","args":[[1],[2]]}' % jid.encode(), 1800)


async def test_a_group_is_due_at_its_grace_then_its_max_delay_then_its_size(
    backend_store: Store,
) -> None:
    store = backend_store
    state = await store.add_to_group("g", member("job-0001", NOW), SPEC)
    assert (state.key, state.size, state.first_at, state.last_at) == ("g", 1, NOW, NOW)
    assert state.due_at == NOW + 2  # grace after the only arrival
    state = await store.add_to_group("g", member("job-0002", NOW + 1.5), SPEC)
    assert (state.size, state.first_at, state.last_at, state.due_at) == (
        2,
        NOW,
        NOW + 1.5,
        NOW + 3.5,
    )
    late = GroupSpec(max_size=3, max_delay=2.5, grace=2.0)  # the newest spec counts
    state = await store.add_to_group("g", member("job-0003", NOW + 1.6), late)
    assert state.size == 3
    assert state.due_at == NOW
    assert state.spec == late
    assert await store.next_group_due() == NOW
    assert due_at(2, NOW, NOW + 1.5, SPEC) == NOW + 3.5


async def test_due_groups_are_read_soonest_first_and_listed_with_the_others(
    backend_store: Store,
) -> None:
    store = backend_store
    assert await store.next_group_due() is None
    await store.add_to_group("late", member("job-0001", NOW + 5), SPEC)  # due NOW + 7
    await store.add_to_group("early", member("job-0002", NOW), SPEC)  # due NOW + 2
    await store.add_to_group("mid", member("job-0003", NOW + 1), SPEC)  # due NOW + 3
    assert [g.key for g in await store.due_groups(NOW + 3, 10)] == ["early", "mid"]
    assert [g.key for g in await store.due_groups(NOW + 3, 1)] == ["early"]
    assert await store.due_groups(NOW + 1, 10) == []
    assert await store.next_group_due() == NOW + 2
    page = await store.list_groups(1, 5)
    assert ([g.key for g in page.items], page.total) == (["mid", "late"], 3)
    assert (await store.list_groups(0, 0)).total == 3
    assert [g.key for g in await store.get_groups(["late", "nope", "early"])] in (
        ["late", "early"],
        ["early", "late"],
    )
    assert await store.group_counts() == (3, 3)


async def test_members_keep_their_arrival_order_and_adding_twice_changes_nothing(
    backend_store: Store,
) -> None:
    store = backend_store
    for i in range(5):
        await store.add_to_group("g", member(f"job-{i:04d}", NOW + i), SPEC)
    again = await store.add_to_group("g", member("job-0001", NOW + 9, b"changed"), SPEC)
    assert (again.size, again.last_at) == (5, NOW + 4)  # a lost reply's retry: harmless
    elsewhere = await store.add_to_group("other", member("job-0002", NOW + 9), SPEC)
    assert elsewhere.key == "g"  # a jid is a member of one group
    members = await store.group_members("g", 0, 10)
    assert [m.jid for m in members] == [f"job-{i:04d}" for i in range(5)]
    assert members[1].payload == b'{"jid":"job-0001"}'
    assert members[1].added_at == NOW + 1
    assert [m.jid for m in await store.group_members("g", 3, 10)] == ["job-0003", "job-0004"]
    assert await store.group_members("nope", 0, 10) == []
    found = await store.find_group_members(["job-0003", "job-9999"])
    assert list(found) == ["job-0003"]
    assert found["job-0003"][0] == "g"
    assert found["job-0003"][1].added_at == NOW + 3
    assert await store.group_counts() == (1, 5)


async def test_a_flush_takes_the_members_read_and_enqueues_one_job(backend_store: Store) -> None:
    store = backend_store
    woken: list[str] = []
    store.set_ready_listener(woken.append)
    for i in range(4):
        await store.add_to_group("g", member(f"job-{i:04d}", NOW + i), SPEC)
    read = await store.group_members("g", 0, 3)
    job = aggregate()
    assert await store.flush_group("g", [m.jid for m in read], job, NOW + 5)
    assert "default" in woken
    assert (await store.list_queue("default", 0, 10)).items == [job]
    left = await store.get_groups(["g"])
    assert [(g.size, g.first_at, g.last_at, g.due_at) for g in left] == [
        (1, NOW + 3, NOW + 3, NOW + 5)
    ]
    assert list(await store.find_group_members([m.jid for m in read])) == []
    assert await store.group_counts() == (1, 1)
    # the same flush again (another server, or a retry after a lost reply): nothing happens
    assert not await store.flush_group("g", [m.jid for m in read], aggregate("agg:x-2"), NOW + 5)
    assert (await store.list_queue("default", 0, 10)).total == 1
    assert await store.flush_group("g", ["job-0003"], aggregate("agg:job-0003"), NOW + 6)
    assert await store.get_groups(["g"]) == []
    assert await store.next_group_due() is None
    assert await store.group_counts() == (0, 0)


async def test_a_flush_missing_one_member_changes_nothing(backend_store: Store) -> None:
    store = backend_store
    await store.add_to_group("g", member("job-0001", NOW), SPEC)
    await store.add_to_group("g", member("job-0002", NOW + 1), SPEC)
    assert not await store.flush_group("g", ["job-0001", "job-0404"], aggregate(), NOW)
    assert not await store.flush_group("nope", ["job-0001"], aggregate(), NOW)
    assert [m.jid for m in await store.group_members("g", 0, 9)] == ["job-0001", "job-0002"]
    assert (await store.list_queue("default", 0, 10)).total == 0


async def test_concurrent_flushes_of_one_group_enqueue_once(backend_store: Store) -> None:
    store = backend_store
    for i in range(3):
        await store.add_to_group("g", member(f"job-{i:04d}", NOW + i), SPEC)
    jids = [m.jid for m in await store.group_members("g", 0, 3)]
    results = await asyncio.gather(
        *(store.flush_group("g", jids, aggregate(f"agg:try-{n:04d}"), NOW) for n in range(5))
    )
    assert sorted(results) == [False] * 4 + [True]
    assert (await store.list_queue("default", 0, 10)).total == 1


async def test_flush_forgets_every_group(backend_store: Store) -> None:
    await backend_store.add_to_group("g", member("job-0001", NOW), SPEC)
    await backend_store.add_to_group("h", member("job-0002", NOW), SPEC)
    await backend_store.flush()
    assert await backend_store.group_counts() == (0, 0)
    assert await backend_store.find_group_members(["job-0001"]) == {}
    state = await backend_store.add_to_group("g", member("job-0001", NOW + 1), SPEC)
    assert state.size == 1
    assert state.first_at == NOW + 1


@pytest.mark.parametrize("key", ['["default","Send","a b{c}"]', "ünïcode ✓"])
async def test_any_group_key_works(backend_store: Store, key: str) -> None:
    await backend_store.add_to_group(key, member("job-0001", NOW), SPEC)
    assert [g.key for g in await backend_store.due_groups(NOW + 10, 5)] == [key]
    assert await backend_store.flush_group(key, ["job-0001"], aggregate(), NOW)


async def test_sqlite_moves_a_member_whose_payload_changed_on_disk_aside(tmp_path: Path) -> None:
    """A member's payload carries its checksum (as every SQLite payload): one that no longer
    matches is never flushed into an aggregate; it goes to damaged_jobs, and its group on."""
    path = tmp_path / "groups.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        for i in range(3):
            await store.add_to_group("g", member(f"job-{i:04d}", NOW + i), SPEC)
        await store.durable()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE agg_members SET payload = 'garbled' WHERE jid = 'job-0001'")
        members = await store.group_members("g", 0, 10)
        assert [m.jid for m in members] == ["job-0000", "job-0002"]
        (group,) = await store.get_groups(["g"])
        assert group.size == 2
        assert await store.find_group_members(["job-0001"]) == {}
        await store.durable()
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT source, jid FROM damaged_jobs").fetchall()
        assert rows == [("agg_members", "job-0001")]
    finally:
        await store.close()


async def test_one_add_of_many_members_keeps_their_order_across_groups(
    backend_store: Store,
) -> None:
    store = backend_store
    big = GroupSpec(max_size=100, max_delay=10.0, grace=2.0)
    adds = [
        GroupAdd("a", member("job-0001", NOW), big),
        GroupAdd("b", member("job-0002", NOW + 0.1), big),
        GroupAdd("a", member("job-0003", NOW + 0.2), big),
        GroupAdd("a", member("job-0001", NOW + 0.3), big),  # the same jid again: nothing
        GroupAdd("b", member("job-0004", NOW + 0.4), SPEC),  # b takes its newest spec
    ]
    states = await store.add_to_groups(adds)
    assert [(s.key, s.size) for s in states] == [("a", 1), ("b", 1), ("a", 2), ("a", 2), ("b", 2)]
    assert states[-1].spec == SPEC
    assert states[-1].due_at == NOW + 0.4 + 2
    assert [m.jid for m in await store.group_members("a", 0, 9)] == ["job-0001", "job-0003"]
    assert [m.jid for m in await store.group_members("b", 0, 9)] == ["job-0002", "job-0004"]
    assert await store.add_to_groups([]) == []
