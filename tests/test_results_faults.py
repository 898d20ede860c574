"""Results and completed jobs under faults, on a real ``conveyor server`` over SQLite: kill -9
after ACKs that carry results, and ACKs while the disk is full. What must hold: a job's
result and its completed entry exist exactly when its reservation ended (the ACK and what it
keeps are one transaction), and an ACK answered ``-ERR`` changed nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.support.disks import SmallDisk
from tests.support.server import RawClient, RawConnect, SpawnServer

HELLO = b'{"v":2,"hostname":"box","pid":1,"wid":"w-faults","labels":[]}'
BIG = "x" * 2000  # each job a few pages of WAL: a full disk is felt at once


def job(jid: str) -> bytes:
    custom = {"result_ttl": 3600, "retain": 3600}
    return json.dumps({"jid": jid, "jobtype": "Work", "args": [BIG], "custom": custom}).encode()


def ack(jid: str) -> bytes:
    return b'ACK {"jid":"%s","result":"{\\"n\\":\\"%s\\"}"}' % (jid.encode(), jid.encode())


async def fetch_all(client: RawClient, count: int) -> list[str]:
    reply = await client.call(b"FETCHB %d default" % count)
    return [j["jid"] for j in json.loads(reply.split(b"\r\n")[1])]


def state(path: Path) -> dict[str, tuple[bool, bool, bool]]:
    """jid -> (reserved, has a result record, in the completed set), read from the file."""
    with sqlite3.connect(path) as conn:
        reserved = {jid for (jid,) in conn.execute("SELECT jid FROM reservations")}
        recorded = {
            key for (key,) in conn.execute("SELECT key FROM records WHERE space = 'results'")
        }
        kept = {
            jid for (jid,) in conn.execute("SELECT jid FROM set_entries WHERE name = 'completed'")
        }
    jids = reserved | recorded | kept
    return {jid: (jid in reserved, jid in recorded, jid in kept) for jid in jids}


async def test_kill_9_after_acks_keeps_results_and_completed_jobs_with_the_ack(
    spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = tmp_path / "crash.db"
    first = spawn_server(storage=f"sqlite:///{path}")
    client = await raw_client(first.port, hello=HELLO)
    jids = [f"jid-kill{n:04d}" for n in range(40)]
    bulk = b"[" + b",".join(job(jid) for jid in jids) + b"]"
    assert await client.call(b"PUSHB " + bulk) == b"$2\r\n{}\r\n"
    assert sorted(await fetch_all(client, 40)) == jids
    for jid in jids[:20]:
        assert await client.call(ack(jid)) == b"+OK\r\n"
    # a RESULT is answered once the ACK's write is done; its commit follows within 5 ms
    assert json.loads((await client.call(b'RESULT {"jid":"jid-kill0019"}')).split(b"\r\n")[1])
    await asyncio.sleep(0.2)
    for jid in jids[20:]:
        await client.send(ack(jid))  # in flight when the server dies
    first.kill()

    after = state(path)
    for jid in jids:
        reserved, recorded, kept = after[jid]
        assert recorded == kept, jid  # one transaction
        assert reserved != kept, jid  # the reservation ended exactly when the job was kept
    assert all(after[jid] == (False, True, True) for jid in jids[:20])

    second = spawn_server(storage=f"sqlite:///{path}")
    again = await raw_client(second.port)
    reply = await again.call(b'RESULT {"jid":"jid-kill0003"}')
    assert json.loads(reply.split(b"\r\n")[1])["result"] == {"n": "jid-kill0003"}
    shown = await again.call(b'ADMIN job.show {"jids":["jid-kill0003"]}')
    assert json.loads(shown.split(b"\r\n")[1])["jobs"][0]["state"] == "completed"


async def test_acks_on_a_full_disk_keep_nothing_without_ending_the_reservation(
    small_disk: SmallDisk, spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    path = small_disk.path / "conveyor.db"
    server = spawn_server(storage=f"sqlite:///{path}", log_file=tmp_path / "server.log")
    client = await raw_client(server.port, hello=HELLO)
    jids = [f"jid-full{n:04d}" for n in range(40)]
    bulk = b"[" + b",".join(job(jid) for jid in jids) + b"]"
    assert await client.call(b"PUSHB " + bulk) == b"$2\r\n{}\r\n"
    assert sorted(await fetch_all(client, 40)) == jids
    await asyncio.sleep(0.1)  # the reservations are committed
    small_disk.fill()
    refused = []
    for jid in jids:
        reply = await client.call(ack(jid))
        if reply != b"+OK\r\n":
            assert reply.startswith(b"-ERR storage error: SQLite "), reply
            refused.append(jid)
    assert refused, "the disk never felt full"
    small_disk.free()
    for _ in range(200):  # recovers by itself
        if await client.call(b'ACK {"jid":"none-00000000"}') == b"+OK\r\n":
            break
        await asyncio.sleep(0.05)
    server.terminate()

    after = state(path)
    for jid in jids:
        reserved, recorded, kept = after.get(jid, (False, False, False))
        assert recorded == kept, jid
        assert reserved != kept, jid
    for jid in refused:
        assert after[jid] == (True, False, False), jid  # -ERR: nothing changed
