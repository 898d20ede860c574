"""The results ACK's own steps. On SQLite, the ACK of one job without a savepoint
(``SQLiteEndings._settle_one``): the reservation's DELETE, then the record's and the completed
entry's inserts. A failure after the DELETE held (a real SQLite error from a temporary
trigger, or ``settle`` raising) rolls the whole open transaction back as a failed commit is:
the reservation stays, nothing is stored, nothing counted, on disk too; once commits work
again the ACK sent again ends it once. On Redis, one script run ends the reservations and
writes the records (and the completed entries): only for the reservations it ends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from conveyor.errors import StoreError, StoreUnavailable
from conveyor.store import open_store
from conveyor.store.base import QueuedJob, Reservation, SortedSet
from conveyor.store.endings import Acked
from conveyor.store.redis.store import RedisStore
from conveyor.store.sqlite import SQLiteStore
from tests.test_store_settle import DAY, NOW, Settle, queued, records, reserve


async def _open(path: Path) -> SQLiteStore:
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    await store.open()
    return store


def _fail_on(store: SQLiteStore, event: str, table: str) -> None:
    """A real SQLite error from the next ``event`` on ``table`` (a temporary trigger)."""
    store._db.conn.execute(
        f"CREATE TEMP TRIGGER injected BEFORE {event} ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    )


async def _writable_again(store: SQLiteStore) -> None:
    deadline = time.monotonic() + 5
    while not store._db.writable:  # the outage probe commits again
        assert time.monotonic() < deadline, "commits never worked again"
        await asyncio.sleep(0.02)


async def _unchanged(store: SQLiteStore, jid: str) -> None:
    assert await store.get_reservation(jid) is not None
    assert await records(store, jid) == {}
    assert await store.get_set_entries(SortedSet.COMPLETED, [jid]) == []
    assert await store.set_size(SortedSet.COMPLETED) == 0
    assert (await store.counters()).processed == 0


@pytest.mark.parametrize(
    ("table", "keep"), [("records", ()), ("set_entries", ("j1",))], ids=["record", "entry"]
)
async def test_a_failing_insert_after_the_delete_leaves_the_ack_undone(
    tmp_path: Path, table: str, keep: tuple[str, ...]
) -> None:
    path = tmp_path / "ack.db"
    store = await _open(path)
    await reserve(store, "j1", "j2")
    await store.durable()
    _fail_on(store, "INSERT", table)
    for way in ("now", "long"):
        settle = Settle(keep=keep)
        if way == "now":
            with pytest.raises(StoreUnavailable):
                store.ack_returning_now(["j1"], DAY, settle=settle)
        else:
            with pytest.raises(StoreUnavailable):
                await store.ack_returning(["j1"], DAY, settle=settle)
        assert settle.asked == ["j1"]  # the DELETE held, then the insert failed
        await _unchanged(store, "j1")
        with pytest.raises(StoreError):  # an outage: writes are refused until a probe commits
            await store.ack_returning(["j1"], DAY, settle=Settle(keep=keep))
        store._db.conn.execute("DROP TRIGGER injected")
        await _writable_again(store)
        await _unchanged(store, "j1")
        if way == "now":
            _fail_on(store, "INSERT", table)
    acked = await store.ack_returning(["j1"], DAY, settle=Settle(keep=keep))
    assert [r.jid for r in acked.ended] == ["j1"]
    again = await store.ack_returning(["j1"], DAY, settle=Settle(keep=keep))
    assert again.ended == []
    assert (await store.counters()).processed == 1
    await store.close()
    store = await _open(path)  # what was committed
    assert await store.get_reservation("j1") is None
    assert await store.get_reservation("j2") is not None
    assert await records(store, "j1") == {"j1": b'{"done":"j1","wid":"w1"}'}
    kept = await store.get_set_entries(SortedSet.COMPLETED, ["j1"])
    assert [e.jid for e in kept] == list(keep)
    assert (await store.counters()).processed == 1
    await store.close()


async def test_a_settle_raising_after_the_delete_leaves_the_ack_undone(tmp_path: Path) -> None:
    path = tmp_path / "settle.db"
    store = await _open(path)
    await reserve(store, "j1")
    await store.durable()
    with pytest.raises(StoreUnavailable):
        store.ack_returning_now(["j1"], DAY, settle=Settle(fail_on="j1"))
    await _writable_again(store)
    await _unchanged(store, "j1")
    assert store.ack_returning_now(["j1"], DAY, settle=Settle()) is None  # careful for a while
    acked = await store.ack_returning(["j1"], DAY, settle=Settle())  # waits for its commit
    assert [r.jid for r in acked.ended] == ["j1"]
    await store.close()
    store = await _open(path)
    assert await store.get_reservation("j1") is None
    assert list(await records(store, "j1")) == ["j1"]
    assert (await store.counters()).processed == 1
    await store.close()


async def test_a_one_job_ack_without_a_reservation_stores_nothing(tmp_path: Path) -> None:
    store = await _open(tmp_path / "none.db")
    settle = Settle(keep=("gone",))
    acked = store.ack_returning_now(["gone"], DAY, settle=settle)
    assert acked is not None
    assert acked.ended == []
    assert settle.asked == []
    assert await records(store, "gone") == {}
    assert store._db.writable
    await store.close()


# ----------------------------------------------------------------------- Redis: one script


async def test_a_redis_results_ack_that_loses_the_race_stores_nothing(redis_url: str) -> None:
    """On Redis the reservations are read first, then one run of endings_end.lua ends them
    and writes the records: a record is written only for a reservation that run ends. Here
    another ACK ends the job between the read and the run (a late ACK racing the first):
    the late one stores nothing and counts nothing."""
    store = RedisStore.from_url(redis_url)
    await store.open()
    try:
        await reserve(store, "j1", "j2")
        read = store.reservations_of

        async def read_then_lose_the_race(jids: Sequence[str]) -> list[Reservation]:
            found = await read(jids)
            assert await store.ack(["j1"], DAY) == 1  # the other ACK wins
            return found

        store.reservations_of = read_then_lose_the_race  # type: ignore[method-assign]
        settle = Settle(keep=("j1", "j2"))
        acked = await store.ack_returning(["j1", "j2"], DAY, settle=settle)
        assert sorted(settle.asked) == ["j1", "j2"]  # both were read, and settled
        assert [r.jid for r in acked.ended] == ["j2"]
        assert await records(store, "j1", "j2") == {"j2": b'{"done":"j2","wid":"w1"}'}
        kept = await store.get_set_entries(SortedSet.COMPLETED, ["j1", "j2"])
        assert [e.jid for e in kept] == ["j2"]
        assert (await store.counters()).processed == 2  # the other ACK's and this one's
    finally:
        await store.close()


def _asking(jid: str) -> QueuedJob:
    payload = b'{"jid":"%s","jobtype":"Work","args":[],"custom":{"result_ttl":60}}' % jid.encode()
    return QueuedJob("default", jid, payload, 60)


async def test_a_redis_results_ack_uses_the_reservation_noted_at_fetch(redis_url: str) -> None:
    """A job whose payload holds a ``settle_marks`` mark is noted when reserved: its ACK
    reads nothing before its one script run."""
    store = RedisStore.from_url(redis_url)
    store.settle_marks = (b'"result_ttl"',)
    await store.open()
    try:
        await store.enqueue([_asking("j1"), queued("plain")])
        assert len(await store.reserve(["default"], "w1", NOW, 2)) == 2
        read: list[Sequence[str]] = []
        reservations_of = store.reservations_of

        async def counted(jids: Sequence[str]) -> list[Reservation]:
            read.append(list(jids))
            return await reservations_of(jids)

        store.reservations_of = counted  # type: ignore[method-assign]
        acked = await store.ack_returning(["j1", "plain"], DAY, settle=Settle())
        assert [r.jid for r in acked.ended] == ["j1", "plain"]
        assert read == [["plain"]]  # only the job not noted was read
        assert await records(store, "j1", "plain") == {
            "j1": b'{"done":"j1","wid":"w1"}',
            "plain": b'{"done":"plain","wid":"w1"}',
        }
        assert (await store.counters()).processed == 2
    finally:
        await store.close()


async def test_a_redis_results_ack_whose_note_is_stale_stores_the_reservation_found(
    redis_url: str,
) -> None:
    """The job was reserved again elsewhere since this server noted it (its reservation
    ended and the job was pushed and reserved by another worker): the script leaves it
    (another worker, another reservation time), and the ACK reads it and runs again, so the
    record tells the reservation the ACK ended, and the job counts once."""
    async with _stale_note(redis_url) as store:
        acked = await store.ack_returning(["j1"], DAY, settle=Settle())
        await _ended_by_w2(store, acked)


@contextlib.asynccontextmanager
async def _stale_note(redis_url: str) -> AsyncIterator[RedisStore]:
    """A store whose note of j1 is stale: j1 reserved by w1 through it (which notes it), then
    its reservation ended, the job pushed again and reserved by w2 through another store."""
    store = RedisStore.from_url(redis_url)
    store.settle_marks = (b'"result_ttl"',)
    other = RedisStore.from_url(redis_url)
    await store.open()
    await other.open()
    try:
        await store.enqueue([_asking("j1")])
        assert len(await store.reserve(["default"], "w1", NOW, 1)) == 1
        assert [r.jid for r in await other.discard_reservations(["j1"])] == ["j1"]
        await other.enqueue([_asking("j1")])
        assert len(await other.reserve(["default"], "w2", NOW + 1, 1)) == 1
        yield store
    finally:
        await other.close()
        await store.close()


async def _ended_by_w2(store: RedisStore, acked: Acked) -> None:
    """The ACK ended w2's reservation (the one found), recorded it, and counted it once."""
    assert [(r.jid, r.wid) for r in acked.ended] == [("j1", "w2")]
    assert await records(store, "j1") == {"j1": b'{"done":"j1","wid":"w2"}'}
    assert (await store.counters()).processed == 1
    assert await store.get_reservation("j1") is None


async def _settled_soon(store: RedisStore, jid: str, settle: Settle) -> Acked:
    """``ack_settled_soon``, awaited: what its callback got (it must have sent)."""
    answer: asyncio.Future[Acked] = asyncio.get_running_loop().create_future()

    def done(acked: Acked | None, error: BaseException | None) -> None:
        if error is not None:
            answer.set_exception(error)
        else:
            assert acked is not None
            answer.set_result(acked)

    assert store.ack_settled_soon(jid, DAY, settle, done)
    return await asyncio.wait_for(answer, 5)


async def test_a_redis_results_ack_with_a_callback_ends_the_noted_reservation(
    redis_url: str,
) -> None:
    """The ACK answered without a task (``ack_settled_soon``) settles the reservation noted
    at its FETCH and ends it with its record and completed entry in one script run; a job
    not noted (here: its note already used) is left to the long way, with nothing asked or
    done."""
    store = RedisStore.from_url(redis_url)
    store.settle_marks = (b'"result_ttl"',)
    await store.open()
    try:
        await store.enqueue([_asking("j1"), _asking("j2")])
        assert len(await store.reserve(["default"], "w1", NOW, 2)) == 2
        settle = Settle(keep=("j1",))
        acked = await _settled_soon(store, "j1", settle)
        assert [(r.jid, r.wid) for r in acked.ended] == [("j1", "w1")]
        assert settle.asked == ["j1"]
        assert await records(store, "j1") == {"j1": b'{"done":"j1","wid":"w1"}'}
        kept = await store.get_set_entries(SortedSet.COMPLETED, ["j1"])
        assert [entry.jid for entry in kept] == ["j1"]
        assert await store.get_reservation("j1") is None
        assert await store.get_reservation("j2") is not None
        assert (await store.counters()).processed == 1
        late = Settle()
        assert not store.ack_settled_soon("j1", DAY, late, lambda _a, _e: None)
        assert late.asked == []  # nothing asked, nothing sent: the long way's to do
        assert (await store.counters()).processed == 1
    finally:
        await store.close()


async def test_a_redis_results_ack_with_a_callback_whose_note_is_stale(redis_url: str) -> None:
    """As ``ack_returning`` with a stale note: the run leaves the job reserved again
    elsewhere, and the rest goes on in a task that reads it and runs again; the callback
    gets the reservation that ended, whose worker the record tells, counted once."""
    async with _stale_note(redis_url) as store:
        acked = await _settled_soon(store, "j1", Settle())
        await _ended_by_w2(store, acked)


async def test_a_redis_results_ack_with_a_callback_whose_reservation_is_gone(
    redis_url: str,
) -> None:
    """The reservation noted at FETCH ended meanwhile (another server's ACK, the reaper):
    the one run of endings_settle.lua ends nothing, stores nothing and counts nothing."""
    store = RedisStore.from_url(redis_url)
    store.settle_marks = (b'"result_ttl"',)
    await store.open()
    try:
        await store.enqueue([_asking("j1")])
        assert len(await store.reserve(["default"], "w1", NOW, 1)) == 1
        assert await store.ack(["j1"], DAY) == 1  # ended elsewhere; the note stays here
        acked = await _settled_soon(store, "j1", Settle(keep=("j1",)))
        assert acked.ended == []
        assert await records(store, "j1") == {}
        assert await store.get_set_entries(SortedSet.COMPLETED, ["j1"]) == []
        assert (await store.counters()).processed == 1  # the other ACK's only
    finally:
        await store.close()
