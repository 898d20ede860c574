"""A cancelled job (docs/cancellation.md) takes its admission state with it, on every store:
its unique lock is released, and the throttle slot of a job cancelled while it ran frees at
once (the FETCH waiting for it is woken)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.features import FeatureServer, encode, job
from tests.support.server import RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"
HELLO = b'{"v":2,"wid":"w1","hostname":"h","pid":1}'


async def cancel(conn: RawClient, jid: str) -> dict[str, Any]:
    reply = await conn.call(b'ADMIN job.cancel {"jids":["%s"]}' % jid.encode())
    body: dict[str, Any] = json.loads(reply.split(b"\r\n")[1])
    return body["jobs"][0]


async def test_a_cancelled_unique_job_releases_its_lock(
    backend_url: str, feature_server: FeatureServer, raw_client: RawConnect
) -> None:
    server = await feature_server(backend_url)
    conn = await raw_client(server.port)
    for where in ("queued", "scheduled", "working"):
        first = job(queue=f"uq-{where}", args=[where], custom={"unique_for": 60})
        if where == "scheduled":
            first["at"] = "2999-01-01T00:00:00Z"
        assert await conn.call(b"PUSH " + encode(first)) == OK
        duplicate = job(queue=f"uq-{where}", args=[where], custom={"unique_for": 60})
        if where == "working":
            worker = await raw_client(server.port, hello=HELLO)
            assert first["jid"].encode() in await worker.call(b"FETCH uq-working")
        assert await conn.call(b"PUSH " + encode(duplicate)) == b"-NOTUNIQUE Job not unique\r\n"
        report = await cancel(conn, first["jid"])
        assert (report["outcome"], report["was"]) == ("cancelled", where)
        assert await conn.call(b"PUSH " + encode(duplicate)) == OK


async def test_cancelling_a_running_throttled_job_frees_its_slot_at_once(
    backend_url: str, feature_server: FeatureServer, raw_client: RawConnect
) -> None:
    tables = {"throttles": {"tq": {"concurrency": 1, "timeout": 600}}}
    server: RunningServer = await feature_server(backend_url, tables, fetch_wait_seconds=5)
    conn = await raw_client(server.port)
    first, second = job(queue="tq"), job(queue="tq")
    for pushed in (first, second):
        assert await conn.call(b"PUSH " + encode(pushed)) == OK
    worker = await raw_client(server.port, hello=HELLO)
    assert first["jid"].encode() in await worker.call(b"FETCH tq")
    other = await raw_client(server.port, hello=HELLO.replace(b"w1", b"w2"))
    waiting = asyncio.create_task(other.call(b"FETCH tq"))  # the slot is taken: it waits
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert (await cancel(conn, first["jid"]))["was"] == "working"
    reply = await asyncio.wait_for(waiting, 5)
    assert second["jid"].encode() in reply
