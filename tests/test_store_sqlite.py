"""SQLite-only promises: restart, kill -9, group commit, memory, URLs.

The shared behaviour is in test_store_contract.py; these tests cover what only a durable,
single-file backend promises (docs/design/sqlite.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from conveyor.errors import StoreError
from conveyor.store import open_store
from conveyor.store.base import (
    Counters,
    FailOutcome,
    JobFilter,
    QueuedJob,
    SetEntry,
    SortedSet,
)
from conveyor.store.sqlite import SQLiteStore
from conveyor.store.sqlite.checkpoint import Checkpointer
from conveyor.store.sqlite.db import SQLiteOptions
from conveyor.store.sqlite.schema import SCHEMA_VERSION

NOW = 1_700_000_000.0
DAY = "2023-11-14"


def job(jid: str, queue: str = "default", reserve_for: int = 60) -> QueuedJob:
    body = json.dumps({"jid": jid, "queue": queue, "jobtype": "Work", "args": [1, "two"]})
    return QueuedJob(queue, jid, body.encode(), reserve_for)


def entry(jid: str, score: float) -> SetEntry:
    return SetEntry(score, jid, json.dumps({"jid": jid}).encode(), "default", "Work")


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the file through a separate connection: sees only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    return store


async def test_restart_restores_everything(tmp_path: Path) -> None:
    path = tmp_path / "restart.db"
    store = await opened(path)
    await store.enqueue([job("a1", "a"), job("a2", "a"), job("a3", "a"), job("b1", "b")])
    await store.set_paused(["b"], True)
    taken = await store.reserve(["a"], "w1", NOW, count=3)
    assert await store.ack(["a1"], DAY) == 1
    assert await store.fail("a2", FailOutcome(SortedSet.RETRIES, NOW + 9, b"{}", "a", "W"), DAY)
    await store.add_to_set(SortedSet.SCHEDULED, [entry("s1", NOW + 60)])
    await store.add_to_set(SortedSet.DEAD, [entry("d1", NOW + 3600)])
    await store.close()  # ack and fail did not wait for a commit: close must flush them

    store = await opened(path)
    try:
        assert await store.queue_sizes() == {"a": 0, "b": 1}
        assert await store.paused_queues() == {"b"}
        assert await store.get_reservation("a3") == taken[2]
        assert (await store.list_reservations(0, 10)).total == 1
        assert [e.jid for e in await store.due_entries(SortedSet.RETRIES, NOW + 10, 5)] == ["a2"]
        assert await store.get_set_entries(SortedSet.SCHEDULED, ["s1"]) == [entry("s1", NOW + 60)]
        assert await store.set_size(SortedSet.DEAD) == 1
        assert await store.counters() == Counters(2, 1)
        assert await store.daily_counters([DAY]) == {DAY: Counters(2, 1)}
        await store.set_paused(["b"], False)
        await store.enqueue([job("b2", "b")])
        assert [r.jid for r in await store.reserve(["b"], "w", NOW, count=5)] == ["b1", "b2"]
    finally:
        await store.close()


async def test_durable_calls_are_committed_when_they_return(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    store = await opened(path)
    try:
        await store.enqueue([job("j1"), job("j2")])
        assert rows(path, "SELECT jid FROM queue_jobs ORDER BY seq") == [("j1",), ("j2",)]
        await store.add_to_set(SortedSet.RETRIES, [entry("r1", NOW)])
        assert rows(path, "SELECT jid FROM set_entries") == [("r1",)]
        await store.set_paused(["default"], True)
        assert rows(path, "SELECT name, paused FROM queues") == [("default", 1)]
    finally:
        await store.close()


async def test_concurrent_writes_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "group.db"
    store = await opened(path)
    try:
        before = store.commit_count
        calls = [store.enqueue([job(f"j{i}", f"q{i % 7}")]) for i in range(200)]
        calls += [store.add_to_set(SortedSet.DEAD, [entry(f"d{i}", NOW)]) for i in range(50)]
        await asyncio.gather(*calls)
        commits = store.commit_count - before
        assert 1 <= commits <= 2, commits
        assert rows(path, "SELECT count(*) FROM queue_jobs") == [(200,)]
        assert rows(path, "SELECT count(*) FROM set_entries") == [(50,)]
    finally:
        await store.close()


def jobs_in_the_file_alone(path: Path, copy: Path) -> int | None:
    """How many queued jobs the database file holds without its WAL: a copy of the file
    alone, opened on its own. None while the file is not a whole database yet: until the
    first checkpoint even the schema is only in the WAL ("no such table"), and a copy taken
    while the checkpointer writes can be torn ("malformed")."""
    copy.write_bytes(path.read_bytes())
    try:
        ((count,),) = rows(copy, "SELECT count(*) FROM queue_jobs")
    except sqlite3.DatabaseError:
        return None
    finally:
        for leftover in (copy, copy.with_name(copy.name + "-wal")):
            leftover.unlink(missing_ok=True)
    assert isinstance(count, int)
    return count


async def test_checkpoints_run_on_their_own_thread_not_in_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpoint thread starts late, as on a loaded machine: the file alone then has no
    # tables for a while (they are in the WAL), which the test once took for a failure.
    run = Checkpointer._run

    def late_run(self: Checkpointer) -> None:
        time.sleep(0.3)
        run(self)

    monkeypatch.setattr(Checkpointer, "_run", late_run)
    path = tmp_path / "checkpoint.db"
    store = await opened(path)
    try:
        # The event loop's connection never checkpoints (that stalled every client for
        # 5-25 ms once per 4 MiB of WAL): the Checkpointer thread does, without being asked.
        assert store._db.conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        checkpointer = store._db.checkpointer
        assert checkpointer is not None
        for batch in range(5):  # ~1 MiB of WAL: SQLite's own autocheckpoint would wait for 4
            await store.enqueue([job(f"j{batch}-{n}") for n in range(1000)])
        # Soon the database file alone (no WAL) holds every job: they were copied into it.
        copy = tmp_path / "copy.db"
        seen: list[int | None] = []
        for _ in range(250):
            seen.append(jobs_in_the_file_alone(path, copy))
            # the thread counts a checkpoint once SQLite has returned from it, a moment
            # after the file holds its pages
            if seen[-1] == 5000 and checkpointer.checkpoints >= 1:
                break
            await asyncio.sleep(0.02)
        assert seen[-1] == 5000, f"the file alone held {seen[-1]} jobs"
        assert seen[0] is None  # the late checkpointer had not copied even the schema yet
        assert checkpointer.checkpoints >= 1
    finally:
        await store.close()
    assert not any(t.name.startswith("conveyor-checkpoint") for t in threading.enumerate())
    wal = path.with_name(path.name + "-wal")
    assert not await asyncio.to_thread(wal.exists)  # the last connection to close folded it in


async def test_queued_jobs_do_not_live_in_python_memory(tmp_path: Path) -> None:
    store = await opened(tmp_path / "memory.db")
    try:
        batch = 1000
        payload = b'{"jid":"%d","queue":"default","jobtype":"Work","args":[1,2,3]}'

        async def push(start: int, stop: int) -> None:
            for base in range(start, stop, batch):
                await store.enqueue(
                    [
                        QueuedJob("default", str(i), payload % i, 60)
                        for i in range(base, base + batch)
                    ]
                )

        await push(0, 10_000)  # warm caches and statement objects up
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            await push(10_000, 200_000)
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (await store.queue_sizes())["default"] == 200_000
        # 190,000 QueuedJob objects would take > 20 MB; allow a little for caches.
        assert after - before < 512 * 1024, after - before
    finally:
        await store.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from conveyor.store.base import QueuedJob, SetEntry, SortedSet
    from conveyor.store.sqlite import SQLiteStore

    async def main(url):
        store = SQLiteStore.from_url(url)
        await store.open()
        await store.enqueue([QueuedJob("paused", "p0", b"{}", 60)])
        await store.set_paused(["paused"], True)
        print("paused", flush=True)
        for i in range(100_000):
            jobs = [QueuedJob("default", f"j{i}-{k}", b'{"n":%d}' % k, 60) for k in range(50)]
            await store.enqueue(jobs)
            await store.add_to_set(SortedSet.SCHEDULED, [SetEntry(float(i), f"s{i}", b"{}")])
            print(i, flush=True)
            # keep non-durable work in flight too: it may be lost, the durable work may not
            taken = await store.reserve(["default"], "w", 0.0, count=10)
            await store.ack([r.jid for r in taken[:5]], "2024-01-01")

    asyncio.run(main(sys.argv[1]))
    """
)


def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, f"sqlite:///{path}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "paused"
        last = -1
        while last < 300:
            last = int(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    async def check() -> None:
        store = await opened(path)
        try:
            assert await store.paused_queues() == {"paused"}
            scheduled = await store.list_set(SortedSet.SCHEDULED, JobFilter(), 0, 1_000_000)
            assert {f"s{i}" for i in range(last + 1)} <= {e.jid for e in scheduled.items}
            queued = await store.list_queue("default", 0, 10_000_000)
            reserved = await store.list_reservations(0, 10_000_000)
            present = {q.jid for q in queued.items} | {r.jid for r in reserved.items}
            acked = (await store.counters()).processed
            expected = {f"j{i}-{k}" for i in range(last + 1) for k in range(50)}
            assert len(expected - present) <= acked
            assert (await store.queue_sizes())["default"] == len(queued.items)
        finally:
            await store.close()

    asyncio.run(check())


def test_urls_name_the_file_and_sync_mode() -> None:
    assert SQLiteOptions.from_url("sqlite:///data/c.db") == SQLiteOptions("data/c.db", "NORMAL")
    assert SQLiteOptions.from_url("sqlite:////var/c.db?sync=full") == SQLiteOptions(
        "/var/c.db", "FULL"
    )
    assert SQLiteOptions.from_url("sqlite:///:memory:").path == ":memory:"
    for bad in ("sqlite://host/c.db", "sqlite:///", "sqlite:///c.db?sync=off", "sqlite:///c?x=1"):
        with pytest.raises(ValueError, match="sqlite"):
            SQLiteOptions.from_url(bad)


async def test_in_memory_database_and_full_sync_work(tmp_path: Path) -> None:
    for url in ("sqlite:///:memory:", f"sqlite:///{tmp_path / 'full.db'}?sync=full"):
        store = open_store(url)
        await store.open()
        try:
            await store.enqueue([job("j1")])
            assert [r.jid for r in await store.reserve(["default"], "w", NOW)] == ["j1"]
        finally:
            await store.close()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="cannot open SQLite database"):
        await store.open()
    assert path.read_bytes().startswith(b"these are not")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="newer conveyor"):
        await store.open()
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
