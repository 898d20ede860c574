"""``conveyor backup``: an online copy of a serving SQLite database, taken while producers keep
pushing, that a new server then serves with every job acknowledged before the backup began."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from conveyor.client import Client
from tests.support.server import SpawnServer


async def backup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "conveyor", "backup", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


async def test_backup_while_serving_then_restore(spawn_server: SpawnServer, tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    server = spawn_server(f"sqlite:///{db}")
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def produce() -> None:
        async with await Client.connect(server.url) as client:
            n = 0
            while not stop.is_set():
                jid = f"job-{n:08d}"
                await client.push({"jid": jid, "jobtype": "Work", "args": [n], "queue": "q"})
                acknowledged.append(jid)
                n += 1

    producer = asyncio.create_task(produce())
    while len(acknowledged) < 500:
        await asyncio.sleep(0.01)
    before = len(acknowledged)
    target = tmp_path / "copies" / "conveyor-backup.db"
    target.parent.mkdir()
    result = await backup(str(target), "--storage", f"sqlite:///{db}")
    during = len(acknowledged)
    stop.set()
    await producer
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout
    assert during > before  # the server kept answering +OK while the copy was taken

    # one self-contained, sound file
    assert not (target.parent / "conveyor-backup.db-wal").exists()
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)

    # restore: a server on the copy has every job acknowledged before the backup began,
    # and none twice
    server.terminate()
    restored = spawn_server(f"sqlite:///{target}")
    async with await Client.connect(restored.url) as client:
        size = (await client.info())["faktory"]["queues"]["q"]
        assert before <= size <= len(acknowledged)
        fetched = [job["jid"] for job in await client.fetch_many(1000, "q")]
    assert fetched == acknowledged[: len(fetched)]


async def test_backup_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    missing = await backup(str(tmp_path / "out.db"), "--storage", f"sqlite:///{tmp_path}/no.db")
    assert missing.returncode == 1
    assert "no database at" in missing.stderr
    assert not (tmp_path / "no.db").exists()  # not created by trying
    redis = await backup(str(tmp_path / "out.db"), "--storage", "redis://127.0.0.1:1/0")
    assert redis.returncode == 2
    assert "BGSAVE or AOF" in redis.stderr
    db = tmp_path / "a.db"
    sqlite3.connect(db).close()
    (tmp_path / "exists.db").write_text("keep me")
    exists = await backup(str(tmp_path / "exists.db"), "--storage", f"sqlite:///{db}")
    assert exists.returncode == 1
    assert "--force" in exists.stderr
    assert (tmp_path / "exists.db").read_text() == "keep me"
    # the storage comes from the same places as the server's: here CONVEYOR_STORAGE
    forced = await backup(
        str(tmp_path / "exists.db"), "--force", env={"CONVEYOR_STORAGE": f"sqlite:///{db}"}
    )
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "exists.db").read_bytes().startswith(b"SQLite format 3")
