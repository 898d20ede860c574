"""Cancellation and aggregation under faults: kill -9 of a ``conveyor server`` over SQLite
while members are pushed into a group and while jobs are cancelled; every confirmed member
is still there after the restart and flushed exactly once, every confirmed cancel holds, and
a running job cancelled before the crash still reaches its worker after it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from pathlib import Path

from conveyor.client import Client
from tests.support.disks import SmallDisk
from tests.support.server import RawConnect, SpawnServer

CONNECTIONS = 4
AGGREGATE = {"max_size": 10_000, "max_delay": 3600, "grace": 3600}


async def push_members(url: str, confirmed: list[str], stop: asyncio.Event) -> None:
    """Push members of one group until the server dies; record the jids that got +OK."""
    try:
        client = await Client.connect(url)
    except OSError:
        return
    try:
        while not stop.is_set():
            jid = uuid.uuid4().hex
            custom = {"group": "g", "aggregate": AGGREGATE}
            await client.push({"jid": jid, "jobtype": "Sum", "args": [jid], "custom": custom})
            confirmed.append(jid)
    except Exception:  # the server was killed mid-PUSH
        return
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def test_kill_9_loses_no_confirmed_member_and_flushes_them_once(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'groups.db'}"
    first = spawn_server(storage=storage)
    confirmed: list[str] = []
    stop = asyncio.Event()
    pushers = [push_members(first.url, confirmed, stop) for _ in range(CONNECTIONS)]
    tasks = [asyncio.create_task(pusher) for pusher in pushers]
    deadline = time.monotonic() + 10
    while len(confirmed) < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    first.kill()  # SIGKILL while every connection has a PUSH in flight
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert len(confirmed) >= 200

    second = spawn_server(storage=storage)
    client = await Client.connect(second.url)
    try:
        (group,) = (await client.admin("group.list"))["groups"]
        assert group["size"] >= len(confirmed)
        assert group["size"] <= len(confirmed) + CONNECTIONS  # unconfirmed ones in flight
        members = await client.admin("group.show", {"key": group["key"], "limit": 1000})
        kept = {m["jid"] for m in members["members"]}
        assert not set(confirmed) - kept, "a confirmed member was lost"
        # a last member with a short grace (the group takes the newest spec): all of them
        # become one job
        custom = {"group": "g", "aggregate": {**AGGREGATE, "grace": 0.2}}
        await client.push({"jid": "last-member-1", "jobtype": "Sum", "args": [0], "custom": custom})
        job = await client.fetch("default")
        for _ in range(50):
            if job is not None:
                break
            job = await client.fetch("default")
        assert job is not None
        flushed = job["custom"]["aggregated"]["jids"]
        assert len(flushed) == len(set(flushed)) == group["size"] + 1
        assert await client.fetch("default") is None  # once
    finally:
        await client.close()


async def test_confirmed_cancels_survive_kill_9_and_still_reach_the_worker(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'cancels.db'}"
    first = spawn_server(storage=storage)
    client = await Client.connect(first.url)
    worker = await Client.connect(first.url, wid="w-crash")
    jids = [await client.push({"jobtype": "Work", "args": [n]}) for n in range(20)]
    running = await worker.fetch("default")
    assert running is not None
    reports = await client.cancel([running["jid"], *jids[10:]])
    assert {r["outcome"] for r in reports} == {"cancelled"}
    first.kill()
    await client.close()
    await worker.close()

    second = spawn_server(storage=storage)
    client = await Client.connect(second.url)
    watcher = await Client.connect(second.url, wid="w-crash")
    try:
        info = await client.info()
        assert info["faktory"]["queues"]["default"] == 9  # 20 - the running one - 10 cancelled
        assert info["faktory"]["sets"]["working"] == 0
        assert info["features"]["cancellation"]["cancelled"] == 11
        # the worker of the running job reconnects after the crash: it is still told
        assert await watcher.cancels(0) == [running["jid"]]
        again = await client.cancel(jids[10:12])
        assert [r["outcome"] for r in again] == ["already", "already"]
    finally:
        await client.close()
        await watcher.close()


async def test_on_a_full_disk_a_member_or_cancel_is_confirmed_only_once_stored(
    small_disk: SmallDisk, spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    """SQLite on a disk that fills up: a member answered +OK is in its group after the
    restart and one answered -ERR is not; a cancel answered with a report holds, and a job
    whose cancel was refused is where it was."""
    server = spawn_server(
        storage=f"sqlite:///{small_disk.path / 'conveyor.db'}", log_file=tmp_path / "server.log"
    )
    client = await raw_client(server.port)
    big = "x" * 2000
    queued = [f"queued-{n:04d}" for n in range(60)]
    bulk = [{"jid": jid, "jobtype": "Work", "args": [big]} for jid in queued]
    assert await client.call(b"PUSHB " + json.dumps(bulk).encode()) == b"$2\r\n{}\r\n"
    small_disk.fill()

    custom = {"group": "g", "aggregate": AGGREGATE}
    ok: list[str] = []
    refused: list[str] = []
    for n in range(200):
        jid = f"member-{n:04d}"
        line = {"jid": jid, "jobtype": "Sum", "args": [big], "custom": custom}
        reply = await client.call(b"PUSH " + json.dumps(line).encode())
        if reply == b"+OK\r\n":
            ok.append(jid)
        else:
            assert reply.startswith(b"-ERR storage error: "), reply
            refused.append(jid)
    assert refused, "the disk never felt full"
    cancelled: list[str] = []
    kept: list[str] = []
    for jid in queued:
        reply = await client.call(b'ADMIN job.cancel {"jids":["%s"]}' % jid.encode())
        if reply.startswith(b"$"):
            assert b'"outcome":"cancelled"' in reply, reply
            cancelled.append(jid)
        else:
            assert reply.startswith(b"-ERR storage error: "), reply
            kept.append(jid)
    assert kept, "no cancel was refused"
    small_disk.free()
    await client.close()
    assert server.terminate() == 0

    with sqlite3.connect(small_disk.path / "conveyor.db") as conn:
        members = {jid for (jid,) in conn.execute("SELECT jid FROM agg_members")}
        waiting = {jid for (jid,) in conn.execute("SELECT jid FROM queue_jobs")}
        records = {k for (k,) in conn.execute("SELECT key FROM records WHERE space='cancelled'")}
    assert set(ok) <= members, "a member answered +OK was lost"
    assert not set(refused) & members, "a member answered -ERR was stored after all"
    assert not set(cancelled) & waiting, "a confirmed cancel did not hold"
    assert set(cancelled) <= records
    assert set(kept) <= waiting, "a refused cancel took the job away"
    assert not set(kept) & records
