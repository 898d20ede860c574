"""The records capability (``conveyor.store.records``), run against every backend.

Each test states one promise of records.py through the Store methods only, so memory, SQLite
and Redis must agree exactly.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from conveyor.store import open_store
from conveyor.store.base import QueuedJob, Store
from conveyor.store.records import Record

NOW = 1_700_000_000.0


@pytest.fixture(params=["locks", "unique"])
def space(request: pytest.FixtureRequest) -> str:
    """Each promise on an ordinary space and on a lock space (``unique``: SQLite keeps those
    apart, in memory over an append-only table, store/sqlite/claims.py)."""
    return str(request.param)


async def test_claim_takes_a_free_key_and_refuses_another_value(
    backend_store: Store, space: str
) -> None:
    assert await backend_store.claim_record(space, Record("k", b"jid-1", NOW + 60), NOW) is None
    holder = await backend_store.claim_record(space, Record("k", b"jid-2", NOW + 60), NOW)
    assert holder == b"jid-1"
    found = await backend_store.get_records(space, ["k"], NOW)
    assert found == {"k": Record("k", b"jid-1", NOW + 60)}


async def test_claim_again_with_the_same_value_succeeds_and_refreshes(
    backend_store: Store, space: str
) -> None:
    """A claim retried after a lost reply must not lock its own owner out."""
    await backend_store.claim_record(space, Record("k", b"jid-1", NOW + 60), NOW)
    assert await backend_store.claim_record(space, Record("k", b"jid-1", NOW + 90), NOW) is None
    assert (await backend_store.get_records(space, ["k"], NOW))["k"].expires_at == NOW + 90


async def test_an_expired_record_is_gone_for_every_reader_and_can_be_claimed(
    backend_store: Store, space: str
) -> None:
    await backend_store.claim_record(space, Record("k", b"old", NOW + 10), NOW)
    later = NOW + 10  # expires_at <= now: expired
    assert await backend_store.get_records(space, ["k"], later) == {}
    assert await backend_store.list_records(space, later) == []
    assert await backend_store.count_records(space, later) == 0
    assert await backend_store.claim_record(space, Record("k", b"new", None), later) is None
    assert await backend_store.get_records(space, ["k"], later + 10**6) == {
        "k": Record("k", b"new", None)
    }


async def test_spaces_do_not_see_each_others_keys(backend_store: Store, space: str) -> None:
    await backend_store.put_records(space, [Record("k", b"in a")])
    assert await backend_store.claim_record("b", Record("k", b"in b"), NOW) is None
    assert (await backend_store.get_records(space, ["k"], NOW))["k"].value == b"in a"
    assert (await backend_store.get_records("b", ["k"], NOW))["k"].value == b"in b"
    assert await backend_store.delete_records(space, ["k"]) == 1
    assert await backend_store.get_records("b", ["k"], NOW) != {}


async def test_put_replaces_and_get_leaves_out_missing_keys(
    backend_store: Store, space: str
) -> None:
    await backend_store.put_records(space, [Record("x", b"1", NOW + 5), Record("y", b"2")])
    await backend_store.put_records(space, [Record("x", b"3")])  # an expiry can be dropped too
    found = await backend_store.get_records(space, ["x", "y", "nope"], NOW + 100)
    assert found == {"x": Record("x", b"3", None), "y": Record("y", b"2", None)}


async def test_values_are_opaque_bytes(backend_store: Store, space: str) -> None:
    value = bytes(range(256)) + b":12:\x00"
    await backend_store.put_records(space, [Record("k:with:colons", value, NOW + 1)])
    found = await backend_store.get_records(space, ["k:with:colons"], NOW)
    assert found["k:with:colons"].value == value


async def test_delete_with_a_value_releases_only_the_holders_record(
    backend_store: Store, space: str
) -> None:
    await backend_store.put_records(space, [Record("a", b"jid-1"), Record("b", b"jid-2")])
    assert await backend_store.delete_records(space, ["a", "b"], if_value=b"jid-1") == 1
    assert set(await backend_store.get_records(space, ["a", "b"], NOW)) == {"b"}
    assert await backend_store.delete_records(space, ["a", "b", "b"]) == 1
    assert await backend_store.delete_records(space, ["a", "b"]) == 0


async def test_list_pages_in_key_order_and_count_counts_live_ones(
    backend_store: Store, space: str
) -> None:
    records = [Record(f"k{i:02d}", b"v", None if i % 2 else NOW + 50) for i in range(10)]
    await backend_store.put_records(space, records)
    first = await backend_store.list_records(space, NOW, limit=4)
    assert [r.key for r in first] == ["k00", "k01", "k02", "k03"]
    rest = await backend_store.list_records(space, NOW, after=first[-1].key, limit=100)
    assert [r.key for r in rest] == [f"k{i:02d}" for i in range(4, 10)]
    assert await backend_store.count_records(space, NOW) == 10
    # once the even ones expire, only the odd ones are listed and counted
    assert [r.key for r in await backend_store.list_records(space, NOW + 50)] == [
        f"k{i:02d}" for i in range(1, 10, 2)
    ]
    assert await backend_store.count_records(space, NOW + 50) == 5


async def test_purge_deletes_expired_records_of_every_space_up_to_the_limit(
    backend_store: Store, space: str
) -> None:
    await backend_store.put_records(space, [Record(f"a{i}", b"v", NOW + i) for i in range(5)])
    await backend_store.put_records("p2", [Record("b", b"v", NOW + 1), Record("keep", b"v")])
    assert await backend_store.purge_records(NOW + 3, limit=2) == 2
    assert await backend_store.purge_records(NOW + 3, limit=100) == 3  # a0..a3 and b: 5 in all
    assert await backend_store.purge_records(NOW + 3, limit=100) == 0
    # purged records are really gone: deleting them finds nothing, the live ones stay
    assert await backend_store.delete_records(space, ["a0", "a1", "a2", "a3"]) == 0
    assert await backend_store.count_records(space, NOW) == 1
    assert set(await backend_store.get_records("p2", ["b", "keep"], NOW)) == {"keep"}


async def test_purge_follows_each_record_as_it_is_now_not_as_it_was_written(
    backend_store: Store, space: str
) -> None:
    """A record rewritten with a later expiry, or none, outlives its first expiry; one deleted
    or rewritten with the same expiry is purged once, counted once (memory notes every
    expiry written in a heap, and pops the notes of records that changed since)."""
    await backend_store.put_records(
        space, [Record(k, b"v1", NOW + 1) for k in ("later", "never", "gone", "twice")]
    )
    await backend_store.put_records(
        space,
        [Record("later", b"v2", NOW + 10), Record("never", b"v2"), Record("twice", b"v2", NOW + 1)],
    )
    assert await backend_store.claim_record(space, Record("later", b"v2", NOW + 20), NOW) is None
    assert await backend_store.delete_records(space, ["gone"]) == 1
    assert await backend_store.purge_records(NOW + 5, limit=100) == 1  # "twice", once
    found = await backend_store.get_records(space, ["later", "never", "twice"], NOW + 5)
    assert found == {"later": Record("later", b"v2", NOW + 20), "never": Record("never", b"v2")}
    assert await backend_store.purge_records(NOW + 15, limit=100) == 0  # refreshed to NOW + 20
    assert await backend_store.purge_records(NOW + 25, limit=100) == 1
    assert await backend_store.count_records(space, NOW + 25) == 1  # "never"


async def test_concurrent_claims_give_the_key_to_exactly_one(
    backend_store: Store, space: str
) -> None:
    claims = [
        backend_store.claim_record(space, Record("tick", f"server-{i}".encode(), None), NOW)
        for i in range(20)
    ]
    results = await asyncio.gather(*claims)
    winners = [i for i, holder in enumerate(results) if holder is None]
    assert len(winners) == 1
    winner = f"server-{winners[0]}".encode()
    assert all(holder == winner for holder in results if holder is not None)


async def test_flush_deletes_records_too(backend_store: Store, space: str) -> None:
    await backend_store.put_records(space, [Record("k", b"v")])
    await backend_store.enqueue([QueuedJob("default", "jid-00001", b"{}", 60)])
    await backend_store.flush()
    assert await backend_store.get_records(space, ["k"], NOW) == {}
    assert await backend_store.count_records(space, NOW) == 0
    assert await backend_store.claim_record(space, Record("k", b"other"), NOW) is None


async def test_sqlite_records_survive_a_reopen_once_durable(tmp_path: Path, space: str) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    store = open_store(url)
    await store.open()
    await store.claim_record(space, Record("k", b"v", NOW + 3600), NOW)
    await store.durable()
    await store.close()
    reopened = open_store(url)
    await reopened.open()
    try:
        assert await reopened.get_records(space, ["k"], NOW) == {"k": Record("k", b"v", NOW + 3600)}
    finally:
        await reopened.close()


async def test_sqlite_locks_come_back_from_the_file_as_they_were_left(tmp_path: Path) -> None:
    """The lock space is answered from memory: what a reopen reads back must be what was
    claimed, refreshed, taken over, released and purged, nothing more."""
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    store = open_store(url)
    await store.open()

    async def claim(*keys: str) -> None:
        for key in keys:
            assert await store.claim_record("unique", Record(key, b"j1", NOW + 10), NOW) is None

    await claim("held", "purged", "refreshed-later", "released-later", "taken-later")
    await store.durable()  # those rows written: changed in the next commit, the others in theirs
    await claim("refreshed", "released", "taken")
    for suffix in ("", "-later"):
        await store.claim_record("unique", Record(f"refreshed{suffix}", b"j1", NOW + 99), NOW)
        await store.claim_record("unique", Record(f"taken{suffix}", b"j2", NOW + 50), NOW + 20)
        released = await store.delete_records("unique", [f"released{suffix}"], if_value=b"j1")
        assert released == 1
    assert await store.delete_records("unique", ["held"], if_value=b"other") == 0
    assert await store.purge_records(NOW + 11, 1) == 1  # "held" or "purged"
    await store.durable()
    await store.close()
    reopened = open_store(url)
    await reopened.open()
    try:
        for suffix in ("", "-later"):
            found = await reopened.get_records(
                "unique", [f"refreshed{suffix}", f"taken{suffix}", f"released{suffix}"], NOW
            )
            assert found == {
                f"refreshed{suffix}": Record(f"refreshed{suffix}", b"j1", NOW + 99),
                f"taken{suffix}": Record(f"taken{suffix}", b"j2", NOW + 50),
            }
        assert await reopened.purge_records(NOW + 11, 10) == 1  # the other expired one
        assert await reopened.count_records("unique", NOW + 11) == 4
    finally:
        await reopened.close()


async def test_sqlite_locks_a_file_kept_in_records_are_moved_at_open(tmp_path: Path) -> None:
    """A file written before the lock space had a table of its own kept its unique locks in
    ``records``: they hold after the upgrade, and leave ``records``."""
    path = tmp_path / "old.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO records (space, key, expires_at, value) VALUES (?, ?, ?, ?)",
            ("unique", "old-lock", NOW + 60, b"jid-old"),
        )
        conn.execute("INSERT INTO records (space, key, value) VALUES ('other', 'k', x'01')")
    conn.close()
    reopened = open_store(f"sqlite:///{path}")
    await reopened.open()
    try:
        holder = await reopened.claim_record("unique", Record("old-lock", b"jid-new"), NOW)
        assert holder == b"jid-old"
        assert await reopened.get_records("other", ["k"], NOW) == {"k": Record("k", b"\x01")}
    finally:
        await reopened.close()
    with sqlite3.connect(path) as conn:
        spaces = [row[0] for row in conn.execute("SELECT space FROM records")]
    conn.close()
    assert spaces == ["other"]
