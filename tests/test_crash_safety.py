"""kill -9 during a PUSH load: every job that got +OK is there after a restart, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import msgspec

from tests.support.server import ServerProcess, SpawnServer

CONNECTIONS = 6


async def open_fwp(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**26)
    assert (await reader.readline()).startswith(b"+HI")
    writer.write(b'HELLO {"v":2}\r\n')
    assert await reader.readline() == b"+OK\r\n"
    return reader, writer


async def pusher(port: int, confirmed: list[str], stop: asyncio.Event) -> None:
    """Push jobs one by one until the server dies; record the jids that got +OK."""
    reader, writer = await open_fwp(port)
    try:
        while not stop.is_set():
            jid = uuid.uuid4().hex
            payload = msgspec.json.encode({"jid": jid, "jobtype": "Crash", "args": [jid]})
            writer.write(b"PUSH " + payload + b"\r\n")
            await writer.drain()
            reply = await reader.readline()
            if reply != b"+OK\r\n":
                return  # EOF: the server was killed
            confirmed.append(jid)
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def drain_all(port: int) -> list[str]:
    reader, writer = await open_fwp(port)
    jids: list[str] = []
    while True:
        writer.write(b"FETCHB 1000 default\r\n")
        header = await reader.readline()
        if header == b"$-1\r\n":
            break
        body = await reader.readexactly(int(header[1:]) + 2)
        jids += [job["jid"] for job in msgspec.json.decode(body[:-2])]
    writer.close()
    return jids


async def test_kill_9_loses_no_confirmed_push(spawn_server: SpawnServer, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'crash.db'}"
    first: ServerProcess = spawn_server(storage=storage)
    confirmed: list[str] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(pusher(first.port, confirmed, stop)) for _ in range(CONNECTIONS)]
    deadline = time.monotonic() + 10
    while len(confirmed) < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    first.kill()  # SIGKILL while every connection has a PUSH in flight
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert len(confirmed) >= 300

    second = spawn_server(storage=storage)
    fetched = await drain_all(second.port)
    assert len(fetched) == len(set(fetched)), "a job was stored twice"
    missing = set(confirmed) - set(fetched)
    assert not missing, f"{len(missing)} confirmed jobs lost"
    # at most one unconfirmed push per connection can have been committed before the kill
    assert len(fetched) - len(confirmed) <= CONNECTIONS
    second.terminate()
