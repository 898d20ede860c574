"""Limits changed by editing the TOML and sending SIGHUP to a running ``conveyor server``: no
restart, and a bad file keeps the limits in force."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.support.features import encode, job
from tests.support.server import RawConnect

OK = b"+OK\r\n"


async def test_sighup_changes_throttles_and_backpressure_without_a_restart(
    tmp_path: Path, spawn_server: object, raw_client: RawConnect
) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text("[throttles]\napi = { concurrency = 1 }\n[queues.small]\nbackpressure = 1\n")
    server = spawn_server(args=["--config", str(config)])  # type: ignore[operator]
    conn = await raw_client(server.port, hello=b'{"v":2,"wid":"w1"}')
    other = await raw_client(server.port, hello=b'{"v":2,"wid":"w2"}')
    for _ in range(2):
        assert await conn.call(b"PUSH " + encode(job(queue="api"))) == OK
    assert (await conn.call(b"FETCH api")).startswith(b"$")
    assert await other.call(b"FETCH api") == b"$-1\r\n"  # the throttle of 1 holds it back
    assert await conn.call(b"PUSH " + encode(job(queue="small"))) == OK
    assert await conn.call(b"PUSH " + encode(job(queue="small"))) == (
        b"-ERR queue small is full (1 jobs)\r\n"
    )

    config.write_text("[throttles]\napi = { concurrency = 2 }\n[queues.small]\nbackpressure = 5\n")
    server.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    reply = await other.call(b"FETCH api")
    assert reply.startswith(b"$")
    assert reply != b"$-1\r\n"
    assert await conn.call(b"PUSH " + encode(job(queue="small"))) == OK

    config.write_text("[throttles]\napi = { concurrency = 0 }\n")  # invalid: ignored
    server.process.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert server.process.poll() is None
    for _ in range(3):
        assert await conn.call(b"PUSH " + encode(job(queue="small"))) == OK
    assert await conn.call(b"PUSH " + encode(job(queue="small"))) == (
        b"-ERR queue small is full (5 jobs)\r\n"
    )
