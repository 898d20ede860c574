"""The short ways of a batch or tracked job on SQLite (store/sqlite/batches.py: ``_mark_now``,
``_ack_one``): the PUSH's mark in one statement and the batch's counters in memory until the
commit, the ACK's mark then its reservation without a savepoint. What they must keep: counters
in the same transaction as the rows they count (a real ``conveyor server`` killed with
SIGKILL, a real file), a retry that finally succeeds counted once, and a statement failing
in the middle of an ACK or in a PUSH (a real SQLite error, raised by a trigger) leaving no
commit with half of it, on disk or in memory."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.errors import StoreError, StoreUnavailable
from conveyor.store import open_store
from conveyor.store.base import QueuedJob
from conveyor.store.batches import EndContext, MarkResult, MarkState, NewBatch, NewMark
from conveyor.store.sqlite import SQLiteStore
from tests.support.server import SpawnServer
from tests.test_batches_servers import CALLBACKS, connect, drain, new_batch
from tests.test_feature_batches import bulk_json, job


def _push(one: dict[str, Any]) -> bytes:
    return b"PUSH " + msgspec.json.encode(one)


def _ack(jid: str) -> bytes:
    return b'ACK {"jid":"' + jid.encode() + b'"}'


async def test_batch_jobs_pushed_before_a_kill_9_count_once_and_end_their_batch(
    tmp_path: Path, spawn_server: SpawnServer
) -> None:
    """Jobs pushed one by one into a batch (one sent twice), then SIGKILL: after the restart
    the batch counts each job once, the fetched one's reservation is acknowledged after the
    restart, and the callbacks come once each."""
    storage = f"sqlite:///{tmp_path / 'rows.db'}"
    server = spawn_server(storage=storage)
    conn = await connect(server.port)
    bid = await new_batch(conn)
    jobs = [job(custom={"bid": bid}) for _ in range(3)]
    for one in jobs:
        assert await conn.call(_push(one)) == b"+OK\r\n"
    fetched = bulk_json(await conn.call(b"FETCH work"))
    # the second job pushed again (counted once); its +OK also means the FETCH is committed
    assert await conn.call(_push(jobs[1])) == b"+OK\r\n"
    server.kill()  # every +OK was committed, with the counters it moved
    await conn.close()

    server = spawn_server(storage=storage, port=server.port)
    conn = await connect(server.port)
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["total"], status["pending"], status["failed"]) == (3, 3, 0)
    assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert await conn.call(_ack(fetched["jid"])) == b"+OK\r\n"  # reserved before the kill
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["total"], status["pending"]) == (3, 2)
    track = bulk_json(await conn.call(b"TRACK GET " + fetched["jid"].encode()))
    assert track["state"] == "success"
    ran = await drain([conn], "work", within=0.3)  # the other two, and the one sent twice
    assert len(ran) == 3
    assert await drain([conn], CALLBACKS, within=0.3) == ["Complete", "Success"]
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["total"], status["pending"], status["failed"]) == (3, 0, 0)
    assert (status["complete_st"], status["success_st"]) == ("2", "2")
    server.kill()
    await conn.close()


async def test_a_retry_that_finally_succeeds_counts_once_across_a_kill_9(
    tmp_path: Path, spawn_server: SpawnServer
) -> None:
    """A batch job fails (the batch is then complete: every job ran once), the server is
    killed, and after the restart its retry succeeds: failed goes back to 0, pending to 0,
    and each callback comes once."""
    storage = f"sqlite:///{tmp_path / 'rows.db'}"
    server = spawn_server(storage=storage)
    conn = await connect(server.port)
    bid = await new_batch(conn)
    flaky = job(custom={"bid": bid}, retry=3)
    steady = job(custom={"bid": bid})
    for one in (flaky, steady):
        assert await conn.call(_push(one)) == b"+OK\r\n"
    assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    first = bulk_json(await conn.call(b"FETCH work"))
    second = bulk_json(await conn.call(b"FETCH work"))
    by_jid = {first["jid"]: first, second["jid"]: second}
    assert await conn.call(_ack(steady["jid"])) == b"+OK\r\n"
    failure = {"jid": flaky["jid"], "errtype": "E", "message": "no"}
    assert await conn.call(b"FAIL " + msgspec.json.encode(failure)) == b"+OK\r\n"
    assert set(by_jid) == {flaky["jid"], steady["jid"]}
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["pending"], status["failed"]) == (1, 1)
    assert await drain([conn], CALLBACKS, within=0.3) == ["Complete"]
    server.kill()
    await conn.close()

    server = spawn_server(storage=storage, port=server.port)
    conn = await connect(server.port)
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["pending"], status["failed"], status["complete_st"]) == (1, 1, "2")
    track = bulk_json(await conn.call(b"TRACK GET " + flaky["jid"].encode()))
    assert track["state"] == "failed"
    retried = msgspec.json.encode({"jids": [flaky["jid"]]})
    assert (await conn.call(b"ADMIN job.retry " + retried)).startswith(b"$")
    assert await drain([conn], "work", within=0.3) == ["T"]
    assert await drain([conn], CALLBACKS, within=0.3) == ["Success"]
    status = bulk_json(await conn.call(b"BATCH STATUS " + bid.encode()))
    assert (status["total"], status["pending"], status["failed"]) == (2, 0, 0)
    assert status["success_st"] == "2"
    track = bulk_json(await conn.call(b"TRACK GET " + flaky["jid"].encode()))
    assert track["state"] == "success"
    server.kill()
    await conn.close()


# ----------------------------------------------------------------------- a statement fails


def _ends(now: float) -> EndContext:
    return EndContext("d", now, 60.0, now + 60.0)


async def _store_with_batch(path: Path, jobs: int) -> tuple[SQLiteStore, list[str]]:
    """An open SQLite store with batch ``b1`` holding ``jobs`` jobs pushed and reserved."""
    store = open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    await store.open()
    now = time.time()
    assert await store.create_batch(NewBatch("b1", now, now + 600)) is None
    jids = [f"job-{n}" for n in range(jobs)]
    for jid in jids:
        assert store.mark_jobs_now([NewMark(jid, "b1", None)], now) == {jid: (MarkResult.READY, "")}
        payload = msgspec.json.encode(job(jid=jid, custom={"bid": "b1"}))
        await store.enqueue([QueuedJob("work", jid, payload, 60)])
    assert len(await store.reserve(["work"], "w", now, count=jobs)) == jobs
    return store, jids


def _fail_on(store: SQLiteStore, event: str, table: str) -> None:
    """A real SQLite error from the next ``event`` on ``table`` (a temporary trigger)."""
    store._db.conn.execute(
        f"CREATE TEMP TRIGGER injected BEFORE {event} ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
    )


async def test_an_ack_failing_between_its_two_statements_commits_neither(
    tmp_path: Path,
) -> None:
    """The ACK moves the mark first, then deletes the reservation, without a savepoint: when
    the delete fails, the open transaction is rolled back as a failed commit is (an outage),
    so the mark, the reservation and the batch's counters are as before, on disk and in
    memory; once commits work again the ACK sent again counts once."""
    path = tmp_path / "ack.db"
    store, jids = await _store_with_batch(path, 2)
    await store.durable()
    _fail_on(store, "DELETE", "queue_jobs")
    with pytest.raises(StoreUnavailable):
        store.ack_returning_now([jids[0]], "d", ends=_ends(time.time()))
    store._db.conn.execute("DROP TRIGGER injected")
    deadline = time.monotonic() + 5
    while not store._db.writable:  # the probe commits again
        assert time.monotonic() < deadline, "commits never worked again"
        await asyncio.sleep(0.02)
    marks = await store.get_marks(jids, time.time())
    assert marks[jids[0]].state == MarkState.ENQUEUED
    assert (await store.get_batches(["b1"]))["b1"].pending == 2
    assert {r.jid for r in (await store.list_reservations(0, 10)).items} == set(jids)

    acked = await store.ack_returning([jids[0]], "d", ends=_ends(time.time()))
    assert [r.jid for r in acked.ended] == [jids[0]]
    again = await store.ack_returning([jids[0]], "d", ends=_ends(time.time()))
    assert again.ended == []
    assert (await store.get_batches(["b1"]))["b1"].pending == 1
    await store.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    assert (await store.get_batches(["b1"]))["b1"].pending == 1  # written with the commit
    assert (await store.get_marks([jids[0]], time.time()))[jids[0]].state == MarkState.SUCCESS
    assert [r.jid for r in (await store.list_reservations(0, 10)).items] == [jids[1]]
    await store.close()


async def test_a_push_whose_mark_fails_counts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "push.db"
    store, jids = await _store_with_batch(path, 1)
    _fail_on(store, "INSERT", "marks")
    with pytest.raises(StoreError, match="injected fault"):
        store.mark_jobs_now([NewMark("job-new", "b1", None)], time.time())
    batch = (await store.get_batches(["b1"]))["b1"]
    assert (batch.total, batch.pending) == (1, 1)
    store._db.conn.execute("DROP TRIGGER injected")
    result = store.mark_jobs_now([NewMark("job-new", "b1", None)], time.time())
    assert result == {"job-new": (MarkResult.READY, "")}
    await store.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    batch = (await store.get_batches(["b1"]))["b1"]
    assert (batch.total, batch.pending) == (2, 2)
    assert [m.jid for m in (await store.batch_jobs("b1", 0, 10)).items] == [jids[0], "job-new"]
    await store.close()


async def test_a_tracked_jid_pushed_again_after_its_mark_expired_is_tracked_anew(
    tmp_path: Path,
) -> None:
    """The one-statement PUSH leaves a live mark alone (a PUSH sent again); an expired mark
    not purged yet is written over, as the engine does."""
    store = open_store(f"sqlite:///{tmp_path / 'track.db'}")
    await store.open()
    now = time.time()
    assert store.mark_jobs_now([NewMark("t1", "", now + 1)], now) == {"t1": (MarkResult.READY, "")}
    assert store.mark_jobs_now([NewMark("t1", "", now + 1)], now) == {"t1": (MarkResult.READY, "")}
    assert (await store.get_marks(["t1"], now + 2)) == {}  # expired
    later = now + 2
    assert store.mark_jobs_now([NewMark("t1", "", later + 60)], later) == {
        "t1": (MarkResult.READY, "")
    }
    mark = (await store.get_marks(["t1"], later))["t1"]
    assert (mark.state, mark.updated_at, mark.expires_at) == (MarkState.ENQUEUED, later, later + 60)
    await store.close()


async def test_a_commit_writes_the_batch_expiry_its_counters_keep(tmp_path: Path) -> None:
    """Counters are written at each commit without touching the expiry index; a commit of
    the batch (a new expiry) writes both, and expiry then finds the batch by it."""
    path = tmp_path / "expiry.db"
    store, _jids = await _store_with_batch(path, 2)
    await store.durable()
    now = time.time()
    assert await store.commit_batch("b1", now, now + 5) is not None
    acked = store.ack_returning_now(["job-0"], "d", ends=_ends(now))
    assert acked is not None
    await store.durable()
    with sqlite3.connect(path) as conn:
        (expires_at,) = conn.execute("SELECT expires_at FROM batches WHERE bid = 'b1'").fetchone()
    assert expires_at == now + 5
    await store.close()
    store = open_store(f"sqlite:///{path}")
    await store.open()
    batch = (await store.get_batches(["b1"]))["b1"]
    assert (batch.total, batch.pending, batch.expires_at) == (2, 1, now + 5)
    assert await store.expire_batches(now + 4, 10) == 0
    assert await store.expire_batches(now + 6, 10) == 1
    assert await store.get_batches(["b1"]) == {}
    await store.close()


async def test_an_ack_without_a_reservation_leaves_the_mark_enqueued(tmp_path: Path) -> None:
    """A late ACK (the reservation ended meanwhile, the attempt failed by the reaper): the
    mark's UPDATE checks the reservation, so nothing moves and the job still counts as
    pending."""
    path = tmp_path / "late.db"
    store, jids = await _store_with_batch(path, 1)
    assert [r.jid for r in await store.discard_reservations(jids)] == jids
    acked = store.ack_returning_now(jids, "d", ends=_ends(time.time()))
    assert acked is not None
    assert acked.ended == []
    assert (await store.get_marks(jids, time.time()))[jids[0]].state == MarkState.ENQUEUED
    assert (await store.get_batches(["b1"]))["b1"].pending == 1
    await store.close()
