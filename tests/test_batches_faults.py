"""Batches under faults: a job that waits for others (``custom.after``) is kept out of the
queue by the batches feature (a ``Drop``), so the PUSH's ``+OK`` must wait for the commit of
the feature's own write, as a queued job's does. SQLite on a disk that fills up (a real
8 MiB tmpfs, a real ``conveyor server``): a waiting job answered ``+OK`` is there after the
restart, one answered ``-ERR`` is not; for PUSH and for PUSHB."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.support.disks import SmallDisk
from tests.support.server import RawConnect, SpawnServer

BIG = "x" * 2000  # a few pages of WAL a job: the full disk is felt at once


def waiting_job(jid: str, dep: str) -> dict[str, object]:
    return {"jid": jid, "jobtype": "Work", "args": [BIG], "custom": {"after": [dep]}}


async def test_on_a_full_disk_a_waiting_job_is_confirmed_only_once_stored(
    small_disk: SmallDisk, spawn_server: SpawnServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    server = spawn_server(
        storage=f"sqlite:///{small_disk.path / 'conveyor.db'}", log_file=tmp_path / "server.log"
    )
    client = await raw_client(server.port)
    dep = {"jid": "dependency-1", "jobtype": "Work", "args": [BIG], "custom": {"track": 1}}
    assert await client.call(b"PUSH " + json.dumps(dep).encode()) == b"+OK\r\n"
    small_disk.fill()

    ok: list[str] = []
    refused: list[str] = []
    for n in range(100):
        jid = f"waiting-{n:04d}"
        reply = await client.call(b"PUSH " + json.dumps(waiting_job(jid, dep["jid"])).encode())
        if reply == b"+OK\r\n":
            ok.append(jid)
        else:
            assert reply.startswith(b"-ERR storage error: "), reply
            refused.append(jid)
        bulk = [waiting_job(f"bulk-{n:04d}-{k}", dep["jid"]) for k in range(3)]
        reply = await client.call(b"PUSHB " + json.dumps(bulk).encode())
        jids = [str(one["jid"]) for one in bulk]
        if reply == b"$2\r\n{}\r\n":
            ok += jids
        else:
            assert reply.startswith(b"-ERR storage error: "), reply
            refused += jids
    assert refused, "the disk never felt full"
    small_disk.free()
    await client.close()
    assert server.terminate() == 0

    with sqlite3.connect(small_disk.path / "conveyor.db") as conn:
        stored = {jid for (jid,) in conn.execute("SELECT jid FROM waiting")}
    assert set(ok) <= stored, "a waiting job answered +OK was lost"
    assert not set(refused) & stored, "a waiting job answered -ERR was stored after all"
