"""The ``ADMIN`` extension (docs/protocol.md), byte by byte over a real loopback server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager import Manager
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url


def bulk_json(reply: bytes) -> Any:
    header, _, body = reply.partition(b"\r\n")
    assert header.startswith(b"$"), reply
    assert int(header[1:]) == len(body) - 2
    return msgspec.json.decode(body[:-2])


def job(jid: str, jobtype: str = "Mail", **fields: Any) -> bytes:
    return msgspec.json.encode({"jid": jid, "jobtype": jobtype, "args": [jid], **fields})


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port)


async def admin(conn: RawClient, line: bytes) -> Any:
    return bulk_json(await conn.call(b"ADMIN " + line))


async def fail_one(conn: RawClient, queue: str, retry: int = 25) -> str:
    """Fetch the next job of ``queue`` and FAIL it; returns its jid."""
    fetched = bulk_json(await conn.call(b"FETCH " + queue.encode()))
    payload = {"jid": fetched["jid"], "errtype": "E", "message": "boom"}
    assert await conn.call(b"FAIL " + msgspec.json.encode(payload)) == b"+OK\r\n"
    return str(fetched["jid"])


async def test_ops_lists_the_operations(conn: RawClient) -> None:
    reply = await conn.call(b"ADMIN ops")
    assert reply.startswith(b"$")
    body = bulk_json(reply)
    assert body["version"] == 1
    assert {"queue.list", "job.list", "job.show", "job.retry", "worker.list"} <= set(body["ops"])


async def test_queue_list_inspect_and_clear(conn: RawClient) -> None:
    for n in range(3):
        assert await conn.call(b"PUSH " + job(f"mail-000{n}", queue="mail")) == b"+OK\r\n"
    assert await conn.call(b"PUSH " + job("other-0001", queue="other", retry=0)) == b"+OK\r\n"
    assert await conn.call(b"QUEUE PAUSE mail") == b"+OK\r\n"
    queues = (await admin(conn, b"queue.list"))["queues"]
    assert [(q["name"], q["size"], q["paused"]) for q in queues] == [
        ("mail", 3, True),
        ("other", 1, False),
    ]
    await fail_one(conn, "other")  # retry 0: discarded
    inspected = await admin(conn, b'queue.inspect {"queue":"mail"}')
    assert {k: inspected[k] for k in ("name", "size", "paused", "busy", "retries", "dead")} == {
        "name": "mail",
        "size": 3,
        "paused": True,
        "busy": 0,
        "retries": 0,
        "dead": 0,
    }
    assert await conn.call(b'ADMIN queue.clear {"queue":"mail"}') == b'$13\r\n{"deleted":3}\r\n'
    after = (await admin(conn, b"queue.list"))["queues"]
    assert [(q["name"], q["size"], q["paused"]) for q in after] == [
        ("mail", 0, True),  # the queue and its pause flag stay
        ("other", 0, False),
    ]
    assert (
        await conn.call(b'ADMIN queue.inspect {"queue":"nope"}') == b"-ERR no queue named nope\r\n"
    )


async def test_job_list_filters_and_pages(conn: RawClient) -> None:
    for n in range(6):
        kind = "Mail" if n % 2 else "Sms"
        assert await conn.call(b"PUSH " + job(f"list-000{n}", kind, queue="q")) == b"+OK\r\n"
    page = await admin(conn, b'job.list {"where":"q","offset":1,"limit":2}')
    assert (page["total"], [j["jid"] for j in page["jobs"]]) == (6, ["list-0001", "list-0002"])
    mails = await admin(conn, b'job.list {"where":"q","jobtype":"Mail","offset":1,"limit":5}')
    assert mails["total"] is None  # a filtered queue is scanned, not counted
    assert [j["jid"] for j in mails["jobs"]] == ["list-0003", "list-0005"]
    search = await admin(conn, b'job.list {"where":"q","search":"LIST-0004"}')
    assert [j["jid"] for j in search["jobs"]] == ["list-0004"]
    for _ in range(2):
        await fail_one(conn, "q")
    retries = await admin(conn, b'job.list {"where":"retries","jobtype":"Sms"}')
    assert (retries["total"], [j["jid"] for j in retries["jobs"]]) == (1, ["list-0000"])
    assert retries["jobs"][0]["error"] == "E: boom"
    bulk_json(await conn.call(b"FETCH q"))
    busy = await admin(conn, b'job.list {"where":"busy"}')
    assert [j["jid"] for j in busy["jobs"]] == ["list-0002"]


async def test_job_show_finds_jobs_wherever_they_are(conn: RawClient) -> None:
    for jid in ("show-0001", "show-0002", "show-0003"):
        assert await conn.call(b"PUSH " + job(jid)) == b"+OK\r\n"
    failed = await fail_one(conn, "default")
    working = bulk_json(await conn.call(b"FETCH default"))["jid"]
    shown = await admin(conn, b'job.show {"jids":["show-0003","show-0001","show-0002","nope"]}')
    where = [(j["jid"], j["where"]) if j else None for j in shown["jobs"]]
    assert where == [("show-0003", "queued"), (failed, "retries"), (working, "working"), None]


async def test_job_actions_report_what_they_did(conn: RawClient) -> None:
    for jid in ("act-00001", "act-00002", "act-00003", "act-00004"):
        assert await conn.call(b"PUSH " + job(jid)) == b"+OK\r\n"
    first, second = await fail_one(conn, "default"), await fail_one(conn, "default")
    retried = await admin(conn, b'job.retry {"jids":["act-00001","act-00003","gone-0001"]}')
    assert retried == {
        "changed": 1,
        "where": {"act-00001": "retries", "act-00003": "queued"},
        "refused": {"act-00003": "already waiting in queue default", "gone-0001": "not found"},
    }
    killed = await admin(conn, b'job.kill {"jids":["act-00002"]}')
    assert (killed["changed"], killed["where"]) == (1, {second: "retries"})
    dead = await admin(conn, b'job.list {"where":"dead"}')
    assert [j["jid"] for j in dead["jobs"]] == ["act-00002"]
    deleted = await admin(conn, b'job.delete {"jids":["act-00002","act-00004"]}')
    assert (deleted["changed"], deleted["refused"]) == (2, {})
    remaining = await admin(conn, b'job.list {"where":"default"}')
    assert [j["jid"] for j in remaining["jobs"]] == ["act-00003", first]


async def test_worker_list_quiet_and_stop(
    server: RunningServer, raw_client: RawConnect, conn: RawClient
) -> None:
    worker = await raw_client(server.port, hello=b'{"v":2,"wid":"w-admin","hostname":"h","pid":7}')
    listed = (await admin(conn, b"worker.list"))["workers"]
    assert [(w["wid"], w["hostname"], w["pid"], w["state"]) for w in listed] == [
        ("w-admin", "h", 7, "running")
    ]
    assert await admin(conn, b'worker.quiet {"wids":["w-admin","gone"]}') == {"signalled": 1}
    assert await worker.call(b'BEAT {"wid":"w-admin"}') == b'$17\r\n{"state":"quiet"}\r\n'
    assert await admin(conn, b'worker.stop {"all":true}') == {"signalled": 1}
    assert await worker.call(b'BEAT {"wid":"w-admin"}') == b'$21\r\n{"state":"terminate"}\r\n'


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"ADMIN", b"-ERR ADMIN needs an operation: ADMIN <op> [{json}]; ADMIN ops lists them"),
        (b"ADMIN nope", b"-ERR unknown ADMIN operation nope; ADMIN ops lists them"),
        (
            b"ADMIN job.list {}",
            b"-ERR invalid ADMIN job.list arguments: Object missing required field `where`",
        ),
        (
            b'ADMIN job.list {"where":"default","x":1}',
            b"-ERR invalid ADMIN job.list arguments: Object contains unknown field `x`",
        ),
        (
            b'ADMIN job.show {"jids":',
            b"-ERR invalid ADMIN job.show arguments: Input data was truncated",
        ),
        (
            b'ADMIN job.list {"where":"retries","limit":1001}',
            b"-ERR job.list limit must be from 0 to 1000",
        ),
        (b'ADMIN job.show {"jids":[]}', b"-ERR job.show takes from 1 to 1000 jids"),
        (b"ADMIN worker.quiet {}", b"-ERR worker.quiet takes either wids or all"),
        (b'ADMIN history {"days":0}', b"-ERR history days must be from 1 to 366"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_change_nothing(
    conn: RawClient, server: RunningServer, line: bytes, error: bytes
) -> None:
    assert await conn.call(b"PUSH " + job("keep-0001")) == b"+OK\r\n"
    assert await conn.call(line) == error + b"\r\n"
    assert await conn.call(b"INFO") != b""  # the connection lives on
    assert (await server.manager.list_queue("default", 0, 10)).total == 1


@pytest.mark.parametrize("backend", STORE_BACKENDS)
async def test_admin_works_on_every_store(
    make_server: MakeServer,
    raw_client: RawConnect,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    server = await make_server(store_url(backend, tmp_path, request))
    conn = await raw_client(server.port)
    assert await conn.call(b"PUSH " + job("store-001", queue="s")) == b"+OK\r\n"
    shown = await admin(conn, b'job.show {"jids":["store-001"]}')
    assert (shown["jobs"][0]["where"], shown["jobs"][0]["queue"]) == ("queued", "s")
    assert (await admin(conn, b'job.delete {"jids":["store-001"]}'))["changed"] == 1
    manager: Manager = server.manager
    assert (await manager.list_queue("s", 0, 10)).total == 0
