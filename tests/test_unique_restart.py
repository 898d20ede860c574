"""Unique locks on SQLite across kill -9: each lock lives in its job's own row (schema version
4, store/sqlite/claims.py), so what a restart finds must follow the job wherever it went, and
a release that was committed must stay released (docs/design/admission.md, "Unique locks on
SQLite: in the job rows")."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from tests.support.features import bulk_json, encode
from tests.support.server import RawClient, RawConnect, SpawnServer

OK = b"+OK\r\n"
NOT_UNIQUE = b"-NOTUNIQUE Job not unique\r\n"


def unique(name: str, queue: str = "uq", **custom: Any) -> dict[str, Any]:
    """A unique job whose identity is ``name`` (a new jid each time)."""
    fields = {"unique_for": 3600, **custom}
    return {"jid": uuid.uuid4().hex, "jobtype": "U", "args": [name], "queue": queue,
            "custom": fields}  # fmt: skip


async def fetch(conn: RawClient, jid: str) -> None:
    assert bulk_json(await conn.call(b"FETCH uq"))["jid"] == jid


async def fail(conn: RawClient, jid: str) -> None:
    assert await conn.call(b"FAIL " + encode({"jid": jid, "errtype": "E", "message": "x"})) == OK


def mutate(cmd: str, target: str, jid: str) -> bytes:
    return b"MUTATE " + encode({"cmd": cmd, "target": target, "filter": {"jids": [jid]}})


def sql(path: Path, query: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def queue_of(name: str) -> str:
    """The jobs left queued go to a queue of their own: the others are fetched from uq."""
    return "idle" if name.endswith("queued") else "uq"


async def leave_locks_in_every_state(conn: RawClient) -> dict[str, bool]:
    """One job per state a lock can be in; returns name -> whether it must still be held."""
    held: dict[str, bool] = {}

    async def push(name: str, at: str | None = None, **custom: Any) -> dict[str, Any]:
        pushed = unique(name, queue_of(name), **custom)
        if at is not None:
            pushed["at"] = at
        assert await conn.call(b"PUSH " + encode(pushed)) == OK
        return pushed

    await push("queued")
    held["queued"] = True
    await push("start-queued", unique_until="start")
    held["start-queued"] = True
    await push("scheduled", at="2100-01-01T00:00:00Z")
    held["scheduled"] = True  # from PUSH until at + unique_for

    working = await push("working")
    await fetch(conn, working["jid"])
    held["working"] = True
    acked = await push("acked")
    await fetch(conn, acked["jid"])
    assert await conn.call(b"ACK " + encode({"jid": acked["jid"]})) == OK
    held["acked"] = False
    started = await push("started", unique_until="start")
    await fetch(conn, started["jid"])  # released at FETCH; its reservation stays
    held["started"] = False
    started_failed = await push("started-failed", unique_until="start")
    await fetch(conn, started_failed["jid"])
    await fail(conn, started_failed["jid"])  # its retry row must not bring the lock back
    held["started-failed"] = False

    retrying = await push("retrying")
    await fetch(conn, retrying["jid"])
    await fail(conn, retrying["jid"])  # a failed job keeps its lock until its TTL
    held["retrying"] = True
    # retry -1: dead on its first failure, and keeps its lock there until its TTL
    dead_by_fail = {**unique("dead-by-fail"), "retry": -1}
    assert await conn.call(b"PUSH " + encode(dead_by_fail)) == OK
    await fetch(conn, dead_by_fail["jid"])
    await fail(conn, dead_by_fail["jid"])
    held["dead-by-fail"] = True
    killed = await push("killed")
    await fetch(conn, killed["jid"])
    await fail(conn, killed["jid"])
    assert await conn.call(mutate("kill", "retries", killed["jid"])) == OK  # killed: released
    held["killed"] = False
    discarded = await push("discarded")
    await fetch(conn, discarded["jid"])
    await fail(conn, discarded["jid"])
    assert await conn.call(mutate("discard", "retries", discarded["jid"])) == OK
    held["discarded"] = False
    requeued = await push("retried")  # (last: it stays queued in uq)
    await fetch(conn, requeued["jid"])
    await fail(conn, requeued["jid"])
    assert await conn.call(mutate("requeue", "retries", requeued["jid"])) == OK
    held["retried"] = True  # retries -> queue: the queue row carries it
    return held


async def test_every_lock_state_comes_back_as_it_was_after_kill_9(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "locks.db"
    first = spawn_server(storage=f"sqlite:///{path}")
    conn = await raw_client(first.port, hello=b'{"v":2,"wid":"w1"}')
    held = await leave_locks_in_every_state(conn)
    # a PUSH is answered once its commit is done: every write before it is committed too
    assert await conn.call(b"PUSH " + encode(unique("marker"))) == OK
    first.kill()

    # the locks are in the job rows; the claims table is left empty
    assert sql(path, "SELECT count(*) FROM claims") == [(0,)]
    in_rows = sql(path, "SELECT count(*) FROM queue_jobs WHERE ukey IS NOT NULL")
    in_rows += sql(path, "SELECT count(*) FROM set_entries WHERE ukey IS NOT NULL")
    assert sum(count for (count,) in in_rows) == sum(held.values()) + 1  # + the marker

    second = spawn_server(storage=f"sqlite:///{path}")
    again = await raw_client(second.port)
    info = bulk_json(await again.call(b"INFO"))
    assert info["features"]["unique"]["locks"] == sum(held.values()) + 1
    found = {}
    for name in held:
        reply = await again.call(b"PUSH " + encode(unique(name, queue_of(name))))
        assert reply in (OK, NOT_UNIQUE), reply
        found[name] = reply == NOT_UNIQUE
    assert found == held


async def test_a_lock_that_expired_while_the_server_was_down_is_gone(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "expiry.db"
    first = spawn_server(storage=f"sqlite:///{path}")
    conn = await raw_client(first.port)
    assert await conn.call(b"PUSH " + encode(unique("short", unique_for=1))) == OK
    assert await conn.call(b"PUSH " + encode(unique("long"))) == OK
    first.kill()
    await asyncio.sleep(1.05)  # the short lock expires while nothing runs: nothing is written

    second = spawn_server(storage=f"sqlite:///{path}")
    again = await raw_client(second.port)
    assert bulk_json(await again.call(b"INFO"))["features"]["unique"]["locks"] == 1
    # the expired lock taken over, for an hour this time (a 1 s lock could expire again
    # while the third server starts on a loaded machine)
    assert await again.call(b"PUSH " + encode(unique("short"))) == OK
    assert await again.call(b"PUSH " + encode(unique("long"))) == NOT_UNIQUE
    # after a second kill -9 the new holder has it, alone
    assert await again.call(b"PUSH " + encode(unique("marker"))) == OK
    second.kill()
    third = spawn_server(storage=f"sqlite:///{path}")
    last = await raw_client(third.port)
    assert bulk_json(await last.call(b"INFO"))["features"]["unique"]["locks"] == 3
    assert await last.call(b"PUSH " + encode(unique("short", unique_for=1))) == NOT_UNIQUE
