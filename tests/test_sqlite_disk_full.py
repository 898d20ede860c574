"""SQLite on a disk that fills up: a real 8 MiB tmpfs, a real ``conveyor server``, real FWP.

Every commit that needs a new block fails with SQLITE_FULL (ENOSPC). What must hold
(docs/operations.md, "When things fail"):

* ``+OK`` to a PUSH means the job is stored: it is there after a restart; ``-ERR`` means it
  is not, and the producer knows;
* while the store cannot commit, FETCH hands out nothing (a clear ``-ERR``), ACK and FAIL say
  so, and the server says it once in its log, not once per command;
* when space returns, the server recovers by itself, with no restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor.errors import StoreError, StoreUnavailable
from conveyor.manager import Manager
from conveyor.store.base import FailOutcome, QueuedJob, SetEntry, SortedSet
from conveyor.store.records import Record
from conveyor.store.sqlite import SQLiteStore
from tests.support.disks import SmallDisk
from tests.support.server import TEST_TIMINGS, RawConnect, ServerProcess, SpawnServer

BIG_ARG = "x" * 2000  # each job a few pages of WAL: a full disk is felt at once


def job(jid: str, arg: str = BIG_ARG) -> bytes:
    return json.dumps({"jid": jid, "jobtype": "Work", "args": [arg]}).encode()


def stored_jids(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT jid FROM queue_jobs UNION SELECT jid FROM reservations")
        return {jid for (jid,) in rows}


def serve(spawn_server: SpawnServer, disk: SmallDisk, log: Path) -> ServerProcess:
    return spawn_server(storage=f"sqlite:///{disk.path / 'conveyor.db'}", log_file=log)


async def until_ok(call: object, line: bytes, within: float = 10.0) -> bytes:
    """Send ``line`` until the reply is not an error (the server recovered), or give up."""
    assert callable(call)
    deadline = time.monotonic() + within
    while True:
        reply: bytes = await call(line)
        if not reply.startswith(b"-ERR") or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.05)


async def test_a_push_answered_ok_on_a_full_disk_is_stored(
    small_disk: SmallDisk, spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    server = serve(spawn_server, small_disk, tmp_path / "server.log")
    client = await raw_client(server.port)
    for n in range(20):
        assert await client.call(b"PUSH " + job(f"before-{n:04d}")) == b"+OK\r\n"
    small_disk.fill()

    ok: list[str] = []
    refused: list[str] = []
    for n in range(300):
        jid = f"full-{n:04d}"
        reply = await client.call(b"PUSH " + job(jid))
        if reply == b"+OK\r\n":
            ok.append(jid)
        else:
            assert reply.startswith(b"-ERR storage error: "), reply
            refused.append(jid)
    assert refused, "the disk never felt full: no PUSH was refused"

    small_disk.free()
    # no restart: the server finds out by itself that it can commit again
    assert await until_ok(client.call, b"PUSH " + job("after-0000")) == b"+OK\r\n"
    ok.append("after-0000")
    await client.close()
    assert server.terminate() == 0

    present = stored_jids(small_disk.path / "conveyor.db")
    assert set(ok) <= present, f"{len(set(ok) - present)} jobs answered +OK were lost"
    assert not set(refused) & present, "a PUSH answered -ERR was stored after all"
    assert {f"before-{n:04d}" for n in range(20)} <= present


async def test_fetch_and_ack_while_commits_fail_hand_out_nothing_twice(
    small_disk: SmallDisk, spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = serve(spawn_server, small_disk, log)
    client = await raw_client(server.port)
    jids = [f"job-{n:04d}" for n in range(40)]
    # one commit, so the WAL stays small: the 40 FETCH+ACK commits below cannot all fit in it
    bulk = b"[" + b",".join(job(jid) for jid in jids) + b"]"
    assert await client.call(b"PUSHB " + bulk) == b"$2\r\n{}\r\n"
    small_disk.fill()

    handed: Counter[str] = Counter()
    order: list[str] = []
    first_error_at: int | None = None  # how many jobs were handed out before it
    fetch_errors: list[bytes] = []
    ack_errors: list[bytes] = []
    for _ in range(300):
        reply = await client.call(b"FETCH default")
        if reply.startswith(b"$") and reply != b"$-1\r\n":
            jid = json.loads(reply.split(b"\r\n")[1])["jid"]
            handed[jid] += 1
            order.append(jid)
            ack = await client.call(b'ACK {"jid":"%s"}' % jid.encode())
            if ack != b"+OK\r\n":
                ack_errors.append(ack)
        elif reply.startswith(b"-"):
            fetch_errors.append(reply)
        if (fetch_errors or ack_errors) and first_error_at is None:
            first_error_at = len(order)
    # Only what was handed out before the first failed commit was seen (its FETCH and ACK
    # were answered without waiting: at-least-once) can come again, and only once.
    assert max(handed.values(), default=0) <= 2, handed.most_common(3)
    before_first_error = set(order[:first_error_at])
    assert {jid for jid, n in handed.items() if n == 2} <= before_first_error
    assert fetch_errors, "the disk never felt full: every FETCH succeeded"
    for reply in fetch_errors + ack_errors:
        assert reply.startswith(b"-ERR storage error: SQLite "), reply
        assert b"disk is full" in reply, reply

    small_disk.free()
    reply = await until_ok(client.call, b"FETCH default")
    assert reply.startswith(b"$"), reply  # recovered, no restart
    assert reply != b"$-1\r\n"
    assert json.loads(reply.split(b"\r\n")[1])["jid"] in jids
    await client.close()
    assert server.terminate() == 0

    lines = server.output().splitlines()
    outage = [line for line in lines if "cannot commit" in line and " ERROR " in line]
    assert len(outage) == 1, "\n".join(lines[:20])
    assert not [line for line in lines if "storage failed during" in line], lines[:5]
    assert any("commits to" in line and "again" in line for line in lines), lines[-5:]


async def test_a_push_whose_commit_failed_before_its_wait_began_is_refused(
    small_disk: SmallDisk,
) -> None:
    # The PUSH read in data_received (Manager.push_now) waits for durability one step later;
    # the lazy commit may run first and fail. That failure belongs to this PUSH.
    path = small_disk.path / "conveyor.db"
    manager = Manager(SQLiteStore.from_url(f"sqlite:///{path}"), TEST_TIMINGS)
    await manager.start()
    try:
        small_disk.fill()
        rest = manager.push_now(job("lost-0001", "y" * 1_000_000))
        assert rest is not None
        await asyncio.sleep(0.1)  # the lazy commit timer (5 ms) runs, and fails
        with pytest.raises(StoreError, match="disk is full"):
            await rest
    finally:
        small_disk.free()
        await manager.stop()
    assert "lost-0001" not in stored_jids(path)


# ---------------------------------------------------------------- the store under the server

NOW = 1_700_000_000.0
DAY = "2023-11-14"


def queued(jid: str, queue: str = "default", size: int = 100) -> QueuedJob:
    return QueuedJob(queue, jid, job(jid, "z" * size), 60)


async def open_on(disk: SmallDisk) -> SQLiteStore:
    store = SQLiteStore.from_url(f"sqlite:///{disk.path / 'store.db'}")
    await store.open()
    return store


async def until_writable(store: SQLiteStore, within: float = 5.0) -> None:
    """Enqueue a marker job until it is accepted: the probe has found the disk writable."""
    deadline = time.monotonic() + within
    while True:
        try:
            await store.enqueue([queued("marker")])
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_each_write_learns_the_fate_of_the_commit_that_held_it(
    small_disk: SmallDisk,
) -> None:
    store = await open_on(small_disk)
    try:
        kept = store.enqueue_now([queued("kept")])
        await kept
        small_disk.fill()
        lost = store.enqueue_now([queued("lost", size=1_000_000)])
        # the lazy commit (5 ms) runs, and fails, before anyone waits; the checks below run
        # before the first probe (50 ms after the failure) can find the disk writable again
        await asyncio.sleep(0.02)
        for _ in range(2):  # whoever asks, whenever: the same answer
            with pytest.raises(StoreUnavailable, match="disk is full"):
                await lost
        await kept  # a committed write stays committed
        # while commits fail, every change is refused at once, FETCH included
        with pytest.raises(StoreUnavailable, match="cannot commit since"):
            store.enqueue_now([queued("refused")])
        with pytest.raises(StoreUnavailable):
            await store.reserve(["default"], "w1", NOW)
        with pytest.raises(StoreUnavailable):
            await store.ack(["kept"], DAY)
        assert not store.takes_hand_off("default")
        small_disk.free()
        await until_writable(store)  # no reopen: the store found out by itself
    finally:
        await store.close()
    assert stored_jids(small_disk.path / "store.db") == {"kept", "marker"}


async def test_the_mirrors_follow_a_failed_commit_back(small_disk: SmallDisk) -> None:
    store = await open_on(small_disk)

    async def mirrors() -> tuple[object, ...]:
        return (
            await store.queue_sizes(),
            await store.paused_queues(),
            {name: await store.set_size(name) for name in SortedSet},
            await store.counters(),
            (await store.list_reservations(0, 100)).total,
        )

    try:
        await store.enqueue([queued(f"a{n}", "a") for n in range(5)] + [queued("b0", "b")])
        await store.add_to_set(SortedSet.DEAD, [SetEntry(NOW, "d0", b"{}", "a", "Work")])
        [first] = await store.reserve(["a"], "w1", NOW)
        await store.ack([first.jid], DAY)
        await store.enqueue([queued("sync")])  # commits the ack too
        before = await mirrors()
        small_disk.fill()
        # one transaction holding every kind of change, then one that cannot fit
        taken = await store.reserve(["a"], "w1", NOW, count=2)
        assert len(taken) == 2
        assert await store.ack([taken[0].jid], DAY) == 1
        outcome = FailOutcome(SortedSet.RETRIES, NOW + 60, b"{}", "a", "Work")
        assert await store.fail(taken[1].jid, outcome, DAY)
        store.enqueue_now([queued("big", "c", size=1_000_000)])
        with pytest.raises(StoreUnavailable):
            await store.set_paused(["b"], True)
        assert await mirrors() == before
        small_disk.free()
        await until_writable(store)
        after = await mirrors()
    finally:
        await store.close()
    reopened = await open_on(small_disk)
    try:
        assert (
            await reopened.queue_sizes(),
            await reopened.paused_queues(),
            {name: await reopened.set_size(name) for name in SortedSet},
            await reopened.counters(),
            (await reopened.list_reservations(0, 100)).total,
        ) == after
    finally:
        await reopened.close()
    sizes = before[0]
    assert isinstance(sizes, dict)
    assert after[0] == {**sizes, "default": sizes["default"] + 1}  # + the marker job


async def test_a_handed_off_job_whose_reservation_is_lost_fails_its_push(
    small_disk: SmallDisk,
) -> None:
    config = dataclasses.replace(TEST_TIMINGS, fetch_wait_seconds=5.0)
    manager = Manager(SQLiteStore.from_url(f"sqlite:///{small_disk.path / 'c.db'}"), config)
    await manager.start()
    delivered: list[list[bytes]] = []

    def deliver(payloads: list[bytes]) -> bool:
        delivered.append(payloads)
        return True

    try:
        fetch = asyncio.create_task(manager.fetch_many(["fresh"], "w1", 1, deliver=deliver))
        while not manager.waiters.waiting():
            await asyncio.sleep(0.005)
        small_disk.fill()
        big = {"jid": "handed-1", "jobtype": "W", "queue": "fresh", "args": ["h" * 1_000_000]}
        payload = json.dumps(big)
        rest = manager.push_now(payload.encode())
        assert rest is not None
        # the reply went to the worker first (docs/design/hand-off.md) ...
        assert [json.loads(p)["jid"] for p in delivered[0]] == ["handed-1"]
        assert await fetch == []
        # ... and the PUSH learns that the reservation was lost: the producer pushes again
        with pytest.raises(StoreUnavailable):
            await rest
        assert await manager.store.queue_sizes() == {}  # the new queue went with it
        assert (await manager.store.list_reservations(0, 10)).total == 0
        small_disk.free()
        deadline = time.monotonic() + 5
        while True:  # the producer's retry, once the disk takes writes again
            try:
                await manager.push(payload.encode())
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert await manager.store.queue_sizes() == {"fresh": 1}
    finally:
        small_disk.free()
        await manager.stop()
    assert stored_jids(small_disk.path / "c.db") == {"handed-1"}


async def test_durable_after_a_record_write_reports_its_lost_commit(small_disk: SmallDisk) -> None:
    store = await open_on(small_disk)
    try:
        small_disk.fill()
        await store.put_records("lock", [Record("k", b"v" * 1_000_000)])
        written = store.durable()  # bound now, to the transaction holding the record
        await asyncio.sleep(0.02)  # that transaction is committed, and fails, meanwhile
        with pytest.raises(StoreUnavailable, match="disk is full"):
            await written
    finally:
        small_disk.free()
        await store.close()
