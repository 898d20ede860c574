"""The records capability (``conveyor.store.records``), run against every backend.

Each test states one promise of records.py through the Store methods only, so memory, SQLite
and Redis must agree exactly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conveyor.store import open_store
from conveyor.store.base import QueuedJob, Store
from conveyor.store.records import Record

NOW = 1_700_000_000.0


async def test_claim_takes_a_free_key_and_refuses_another_value(backend_store: Store) -> None:
    assert await backend_store.claim_record("locks", Record("k", b"jid-1", NOW + 60), NOW) is None
    holder = await backend_store.claim_record("locks", Record("k", b"jid-2", NOW + 60), NOW)
    assert holder == b"jid-1"
    found = await backend_store.get_records("locks", ["k"], NOW)
    assert found == {"k": Record("k", b"jid-1", NOW + 60)}


async def test_claim_again_with_the_same_value_succeeds_and_refreshes(
    backend_store: Store,
) -> None:
    """A claim retried after a lost reply must not lock its own owner out."""
    await backend_store.claim_record("locks", Record("k", b"jid-1", NOW + 60), NOW)
    assert await backend_store.claim_record("locks", Record("k", b"jid-1", NOW + 90), NOW) is None
    assert (await backend_store.get_records("locks", ["k"], NOW))["k"].expires_at == NOW + 90


async def test_an_expired_record_is_gone_for_every_reader_and_can_be_claimed(
    backend_store: Store,
) -> None:
    await backend_store.claim_record("locks", Record("k", b"old", NOW + 10), NOW)
    later = NOW + 10  # expires_at <= now: expired
    assert await backend_store.get_records("locks", ["k"], later) == {}
    assert await backend_store.list_records("locks", later) == []
    assert await backend_store.count_records("locks", later) == 0
    assert await backend_store.claim_record("locks", Record("k", b"new", None), later) is None
    assert await backend_store.get_records("locks", ["k"], later + 10**6) == {
        "k": Record("k", b"new", None)
    }


async def test_spaces_do_not_see_each_others_keys(backend_store: Store) -> None:
    await backend_store.put_records("a", [Record("k", b"in a")])
    assert await backend_store.claim_record("b", Record("k", b"in b"), NOW) is None
    assert (await backend_store.get_records("a", ["k"], NOW))["k"].value == b"in a"
    assert (await backend_store.get_records("b", ["k"], NOW))["k"].value == b"in b"
    assert await backend_store.delete_records("a", ["k"]) == 1
    assert await backend_store.get_records("b", ["k"], NOW) != {}


async def test_put_replaces_and_get_leaves_out_missing_keys(backend_store: Store) -> None:
    await backend_store.put_records("t", [Record("x", b"1", NOW + 5), Record("y", b"2")])
    await backend_store.put_records("t", [Record("x", b"3")])  # an expiry can be dropped too
    found = await backend_store.get_records("t", ["x", "y", "nope"], NOW + 100)
    assert found == {"x": Record("x", b"3", None), "y": Record("y", b"2", None)}


async def test_values_are_opaque_bytes(backend_store: Store) -> None:
    value = bytes(range(256)) + b":12:\x00"
    await backend_store.put_records("bin", [Record("k:with:colons", value, NOW + 1)])
    found = await backend_store.get_records("bin", ["k:with:colons"], NOW)
    assert found["k:with:colons"].value == value


async def test_delete_with_a_value_releases_only_the_holders_record(backend_store: Store) -> None:
    await backend_store.put_records("locks", [Record("a", b"jid-1"), Record("b", b"jid-2")])
    assert await backend_store.delete_records("locks", ["a", "b"], if_value=b"jid-1") == 1
    assert set(await backend_store.get_records("locks", ["a", "b"], NOW)) == {"b"}
    assert await backend_store.delete_records("locks", ["a", "b", "b"]) == 1
    assert await backend_store.delete_records("locks", ["a", "b"]) == 0


async def test_list_pages_in_key_order_and_count_counts_live_ones(backend_store: Store) -> None:
    records = [Record(f"k{i:02d}", b"v", None if i % 2 else NOW + 50) for i in range(10)]
    await backend_store.put_records("list", records)
    first = await backend_store.list_records("list", NOW, limit=4)
    assert [r.key for r in first] == ["k00", "k01", "k02", "k03"]
    rest = await backend_store.list_records("list", NOW, after=first[-1].key, limit=100)
    assert [r.key for r in rest] == [f"k{i:02d}" for i in range(4, 10)]
    assert await backend_store.count_records("list", NOW) == 10
    # once the even ones expire, only the odd ones are listed and counted
    assert [r.key for r in await backend_store.list_records("list", NOW + 50)] == [
        f"k{i:02d}" for i in range(1, 10, 2)
    ]
    assert await backend_store.count_records("list", NOW + 50) == 5


async def test_purge_deletes_expired_records_of_every_space_up_to_the_limit(
    backend_store: Store,
) -> None:
    await backend_store.put_records("p1", [Record(f"a{i}", b"v", NOW + i) for i in range(5)])
    await backend_store.put_records("p2", [Record("b", b"v", NOW + 1), Record("keep", b"v")])
    assert await backend_store.purge_records(NOW + 3, limit=2) == 2
    assert await backend_store.purge_records(NOW + 3, limit=100) == 3  # a0..a3 and b: 5 in all
    assert await backend_store.purge_records(NOW + 3, limit=100) == 0
    # purged records are really gone: deleting them finds nothing, the live ones stay
    assert await backend_store.delete_records("p1", ["a0", "a1", "a2", "a3"]) == 0
    assert await backend_store.count_records("p1", NOW) == 1
    assert set(await backend_store.get_records("p2", ["b", "keep"], NOW)) == {"keep"}


async def test_concurrent_claims_give_the_key_to_exactly_one(backend_store: Store) -> None:
    claims = [
        backend_store.claim_record("race", Record("tick", f"server-{i}".encode(), None), NOW)
        for i in range(20)
    ]
    results = await asyncio.gather(*claims)
    winners = [i for i, holder in enumerate(results) if holder is None]
    assert len(winners) == 1
    winner = f"server-{winners[0]}".encode()
    assert all(holder == winner for holder in results if holder is not None)


async def test_flush_deletes_records_too(backend_store: Store) -> None:
    await backend_store.put_records("f", [Record("k", b"v")])
    await backend_store.enqueue([QueuedJob("default", "jid-00001", b"{}", 60)])
    await backend_store.flush()
    assert await backend_store.get_records("f", ["k"], NOW) == {}
    assert await backend_store.count_records("f", NOW) == 0
    assert await backend_store.claim_record("f", Record("k", b"other"), NOW) is None


async def test_sqlite_records_survive_a_reopen_once_durable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    store = open_store(url)
    await store.open()
    await store.claim_record("d", Record("k", b"v", NOW + 3600), NOW)
    await store.durable()
    await store.close()
    reopened = open_store(url)
    await reopened.open()
    try:
        assert await reopened.get_records("d", ["k"], NOW) == {"k": Record("k", b"v", NOW + 3600)}
    finally:
        await reopened.close()
