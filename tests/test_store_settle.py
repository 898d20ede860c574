"""``Store.ack_returning`` with ``settle`` (``store/endings.py``), on every backend: what an ACK
stores with each reservation it ends (a result record, a completed entry) is stored with the
ACK, exactly for the reservations that ended, and a settle that fails leaves everything as it
was. ``ack_returning_now`` (the short way's) does the same on the in-process stores; on
SQLite a reservation whose payload was damaged on disk is moved aside, never copied."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.store import open_store
from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet, Store
from conveyor.store.records import Record

NOW = 1_700_000_000.0
DAY = "2023-11-14"
SPACE = "results"


def queued(jid: str, queue: str = "default") -> QueuedJob:
    payload = b'{"jid":"%s","queue":"%s","jobtype":"Work","args":[]}' % (
        jid.encode(),
        queue.encode(),
    )
    return QueuedJob(queue, jid, payload, 60)


class Settle:
    """Stores a record for every job, and keeps those in ``keep``; raises on ``fail_on``."""

    space = SPACE

    def __init__(self, keep: tuple[str, ...] = (), fail_on: str = "") -> None:
        self.keep = keep
        self.fail_on = fail_on
        self.asked: list[str] = []

    def wants(self, jid: str) -> bool:
        return True

    def __call__(self, reservation: Reservation) -> tuple[Record | None, SetEntry | None]:
        jid = reservation.jid
        if jid == self.fail_on:
            raise RuntimeError(f"settle failed on {jid}")
        self.asked.append(jid)
        record = Record(jid, b'{"done":"%s","wid":"%s"}' % (jid.encode(), reservation.wid.encode()))
        entry = None
        if jid in self.keep:
            entry = SetEntry(NOW + 60, jid, reservation.payload, reservation.queue, "Work")
        return record, entry


async def reserve(store: Store, *jids: str) -> None:
    await store.enqueue([queued(jid) for jid in jids])
    taken = await store.reserve(["default"], "w1", NOW, len(jids))
    assert [r.jid for r in taken] == list(jids)


async def records(store: Store, *jids: str) -> dict[str, bytes]:
    found = await store.get_records(SPACE, list(jids), NOW)
    return {jid: record.value for jid, record in found.items()}


async def test_an_ack_stores_what_settle_asks_with_each_reservation_it_ends(
    backend_store: Store,
) -> None:
    await reserve(backend_store, "j1", "j2", "j3")
    settle = Settle(keep=("j2",))
    acked = await backend_store.ack_returning(["j1", "j2", "none"], DAY, settle=settle)
    assert [r.jid for r in acked.ended] == ["j1", "j2"]
    assert sorted(settle.asked) == ["j1", "j2"]  # never for a jid without a reservation
    assert await records(backend_store, "j1", "j2", "j3", "none") == {
        "j1": b'{"done":"j1","wid":"w1"}',
        "j2": b'{"done":"j2","wid":"w1"}',
    }
    kept = await backend_store.get_set_entries(SortedSet.COMPLETED, ["j1", "j2"])
    assert [(e.jid, e.payload) for e in kept] == [("j2", queued("j2").payload)]
    assert await backend_store.set_size(SortedSet.COMPLETED) == 1
    assert await backend_store.get_reservation("j3") is not None
    assert (await backend_store.counters()).processed == 2
    # resent (a lost reply): nothing ends, nothing is stored again
    again = Settle(keep=("j2",))
    assert (await backend_store.ack_returning(["j1", "j2"], DAY, settle=again)).ended == []
    assert again.asked == []
    assert (await backend_store.counters()).processed == 2


async def test_a_settle_that_fails_leaves_the_reservations_and_stores_nothing(
    backend_store: Store,
) -> None:
    await reserve(backend_store, "j1", "j2")
    with pytest.raises(RuntimeError, match="settle failed on j2"):
        await backend_store.ack_returning(["j1", "j2"], DAY, settle=Settle(("j1",), "j2"))
    assert await backend_store.get_reservation("j1") is not None
    assert await backend_store.get_reservation("j2") is not None
    assert await records(backend_store, "j1", "j2") == {}
    assert await backend_store.set_size(SortedSet.COMPLETED) == 0
    assert (await backend_store.counters()).processed == 0
    acked = await backend_store.ack_returning(["j1", "j2"], DAY, settle=Settle())
    assert [r.jid for r in acked.ended] == ["j1", "j2"]  # the ACK resent works


async def test_the_short_way_stores_with_the_ack_in_process_and_does_nothing_elsewhere(
    backend_store: Store,
) -> None:
    await reserve(backend_store, "j1")
    settle = Settle(keep=("j1",))
    acked = backend_store.ack_returning_now(["j1"], DAY, settle=settle)
    if not backend_store.in_process:  # Redis: the long way, with nothing done here
        assert acked is None
        assert settle.asked == []
        assert await backend_store.get_reservation("j1") is not None
        return
    assert acked is not None
    assert [r.jid for r in acked.ended] == ["j1"]
    assert await backend_store.get_reservation("j1") is None
    assert await records(backend_store, "j1") == {"j1": b'{"done":"j1","wid":"w1"}'}
    assert len(await backend_store.get_set_entries(SortedSet.COMPLETED, ["j1"])) == 1
    assert (await backend_store.counters()).processed == 1
    again = backend_store.ack_returning_now(["j1"], DAY, settle=Settle())
    assert again is not None
    assert again.ended == []


async def test_a_damaged_reservation_is_moved_aside_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        await reserve(store, "good", "bad")
        await store.durable()
        with sqlite3.connect(path) as conn:  # the payload changes on disk, not its crc
            conn.execute("UPDATE queue_jobs SET payload = x'7b7d' WHERE jid = 'bad'")
        settle = Settle(keep=("good", "bad"))
        acked = await store.ack_returning(["good", "bad"], DAY, settle=settle)
        assert [r.jid for r in acked.ended] == ["good"]
        assert settle.asked == ["good"]
        assert list(await records(store, "good", "bad")) == ["good"]
        kept = await store.get_set_entries(SortedSet.COMPLETED, ["good", "bad"])
        assert [e.jid for e in kept] == ["good"]
        assert await store.get_reservation("bad") is None
        await store.durable()
        with sqlite3.connect(path) as conn:
            moved = conn.execute("SELECT source, jid, payload FROM damaged_jobs").fetchall()
        assert moved == [("reservations", "bad", b"{}")]
        assert (await store.counters()).processed == 1
    finally:
        await store.close()
