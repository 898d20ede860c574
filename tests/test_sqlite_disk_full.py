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
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor.errors import StoreError
from conveyor.manager import Manager
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
    for jid in jids:
        assert await client.call(b"PUSH " + job(jid)) == b"+OK\r\n"
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
    assert fetch_errors, "the disk never felt full: every FETCH succeeded"
    for reply in fetch_errors + ack_errors:
        assert reply.startswith(b"-ERR storage error: SQLite "), reply
        assert b"disk is full" in reply, reply
    # Only what was handed out before the first failed commit was seen (its FETCH and ACK
    # were answered without waiting: at-least-once) can come again, and only once.
    assert max(handed.values()) <= 2, handed.most_common(3)
    before_first_error = set(order[:first_error_at])
    assert {jid for jid, n in handed.items() if n == 2} <= before_first_error

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
