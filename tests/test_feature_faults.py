"""Admission under faults: a unique lock is durable with its job (kill -9), rolls back with it
(a failed commit), and a throttle still holds after a restart (its slots come back from the
reservations)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager.features.unique import SPACE
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import RawConnect, ServerProcess, SpawnServer

OK = b"+OK\r\n"


async def open_fwp(port: int, wid: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**26)
    assert (await reader.readline()).startswith(b"+HI")
    hello = {"v": 2, "wid": wid} if wid else {"v": 2}
    writer.write(b"HELLO " + msgspec.json.encode(hello) + b"\r\n")
    assert await reader.readline() == b"+OK\r\n"
    return reader, writer


def unique_job(key: str) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "U", "args": [key], "custom": {"unique_for": 600}}


async def pusher(port: int, confirmed: list[str], stop: asyncio.Event) -> None:
    reader, writer = await open_fwp(port)
    try:
        while not stop.is_set():
            key = uuid.uuid4().hex
            writer.write(b"PUSH " + encode(unique_job(key)) + b"\r\n")
            await writer.drain()
            if await reader.readline() != OK:
                return
            confirmed.append(key)
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_kill_9_keeps_every_confirmed_unique_job_and_its_lock(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'crash.db'}"
    first: ServerProcess = spawn_server(storage=storage)
    confirmed: list[str] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(pusher(first.port, confirmed, stop)) for _ in range(4)]
    deadline = time.monotonic() + 10
    while len(confirmed) < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    first.kill()
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert len(confirmed) >= 200

    second = spawn_server(storage=storage)
    reader, writer = await open_fwp(second.port)
    refused = 0
    for key in confirmed:  # every confirmed job still holds its lock: a duplicate is refused
        writer.write(b"PUSH " + encode(unique_job(key)) + b"\r\n")
        await writer.drain()
        refused += await reader.readline() == b"-NOTUNIQUE Job not unique\r\n"
    assert refused == len(confirmed)
    writer.write(b"INFO\r\n")
    header = await reader.readline()
    info = msgspec.json.decode((await reader.readexactly(int(header[1:]) + 2))[:-2])
    queued = info["faktory"]["queues"]["default"]
    assert len(confirmed) <= queued <= len(confirmed) + 4  # + at most one unconfirmed each
    assert info["features"]["unique"]["locks"] == queued  # no lock without its job
    writer.close()
    second.terminate()


async def test_a_failed_commit_rolls_the_lock_back_with_the_job(
    feature_server: FeatureServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    server = await feature_server(f"sqlite:///{tmp_path / 'f.db'}")
    conn = await raw_client(server.port)
    db = server.manager.store._db  # type: ignore[attr-defined]

    def disk_full(_conn: sqlite3.Connection) -> None:
        db.before_commit = original
        raise sqlite3.OperationalError("database or disk is full")

    original = db.before_commit
    db.before_commit = disk_full
    pushed = unique_job("k")
    reply = await conn.call(b"PUSH " + encode(pushed))
    assert reply.startswith(b"-ERR storage error: SQLite commit failed")
    assert await server.manager.store.count_records(SPACE, time.time()) == 0
    assert await server.manager.store.queue_sizes() in ({}, {"default": 0})
    for _ in range(100):  # the store refuses writes until its probe commits again
        retried = await conn.call(b"PUSH " + encode(pushed))
        if retried == OK:
            break
        assert retried.startswith(b"-ERR storage error: SQLite cannot commit")
        await asyncio.sleep(0.05)
    assert retried == OK  # the producer's retry succeeds: its own lock was rolled back
    assert await conn.call(b"PUSH " + encode(unique_job("k"))) == b"-NOTUNIQUE Job not unique\r\n"


@pytest.mark.parametrize("throttle", ["{ concurrency = 2 }", "{ worker = 2 }"])
async def test_a_throttle_holds_across_a_restart(
    spawn_server: SpawnServer, tmp_path: Path, raw_client: RawConnect, throttle: str
) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text(f"[throttles]\napi = {throttle}\n")
    storage = f"sqlite:///{tmp_path / 'restart.db'}"
    first = spawn_server(storage=storage, args=["--config", str(config)])
    holder = await raw_client(first.port, hello=b'{"v":2,"wid":"w1"}')
    jobs = [job(queue="api") for _ in range(4)]
    assert bulk_json(await holder.call(b"PUSHB " + encode(jobs))) == {}
    for _ in range(2):
        assert (await holder.call(b"FETCH api")).startswith(b"$")
    await asyncio.sleep(0.1)  # reservations are committed lazily (a crash before: redelivered)
    first.kill()  # the two jobs stay reserved: their worker may still be running them

    second = spawn_server(storage=storage, args=["--config", str(config)])
    again = await raw_client(second.port, hello=b'{"v":2,"wid":"w1"}')
    beat = await again.call(b'BEAT {"wid":"w1"}')
    assert beat == OK
    assert await again.call(b"FETCH api") == b"$-1\r\n"  # both slots are still taken
    assert await again.call(b"ACK " + encode({"jid": jobs[0]["jid"]})) == OK
    reply = await again.call(b"FETCH api")
    assert bulk_json(reply)["jid"] == jobs[2]["jid"]
