"""Results and admission together, on every backend: the ACK that keeps a job (``retain``) or
records its result ends it as any ACK does for the admission features, so a unique job's lock
is released and a throttle's slot is freed with it (``Store.complete`` returns what it ended)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.store.base import SortedSet
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"
HELLO = b'{"v":2,"hostname":"box","pid":1,"wid":"w-admit","labels":[]}'


@pytest.fixture
async def server(backend_url: str, make_server: MakeServer) -> RunningServer:
    return await make_server(backend_url, features={"throttles": {"api": {"concurrency": 1}}})


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=HELLO)


def push(jid: str, queue: str = "default", **custom: Any) -> bytes:
    job = {"jid": jid, "jobtype": "Work", "args": [7], "queue": queue, "custom": custom}
    return b"PUSH " + json.dumps(job).encode()


def body(reply: bytes) -> Any:
    assert reply.startswith(b"$"), reply
    return json.loads(reply.split(b"\r\n", 1)[1])


def ack_with_result(jid: str) -> bytes:
    return b'ACK {"jid":"%s","result":"[1,2]"}' % jid.encode()


@pytest.mark.parametrize(
    "keeps", [{"retain": 600}, {"result_ttl": 60}, {"retain": 600, "result_ttl": 60}]
)
async def test_a_unique_job_that_keeps_its_result_releases_its_lock_on_ack(
    conn: RawClient, keeps: dict[str, int]
) -> None:
    assert await conn.call(push("jid-uniq-0001", unique_for=600, **keeps)) == OK
    refused = await conn.call(push("jid-uniq-0002", unique_for=600, **keeps))
    assert refused.startswith(b"-NOTUNIQUE"), refused  # the lock is held while it is pending
    assert body(await conn.call(b"FETCH default"))["jid"] == "jid-uniq-0001"
    assert await conn.call(ack_with_result("jid-uniq-0001")) == OK
    # it succeeded: the lock went with the ACK that kept its result
    assert await conn.call(push("jid-uniq-0003", unique_for=600, **keeps)) == OK
    outcome = body(await conn.call(b'RESULT {"jid":"jid-uniq-0001"}'))
    assert (outcome["state"], outcome["result"]) == ("succeeded", [1, 2])


async def test_a_kept_job_of_a_throttled_queue_frees_its_slot_on_ack(
    server: RunningServer, conn: RawClient
) -> None:
    for jid in ("jid-thr-0001", "jid-thr-0002"):
        assert await conn.call(push(jid, "api", retain=600)) == OK
    assert body(await conn.call(b"FETCH api"))["jid"] == "jid-thr-0001"
    assert await conn.call(b"FETCH api") == b"$-1\r\n"  # concurrency 1: the slot is taken
    assert await conn.call(ack_with_result("jid-thr-0001")) == OK
    assert body(await conn.call(b"FETCH api"))["jid"] == "jid-thr-0002"
    kept = await server.manager.store.get_set_entries(SortedSet.COMPLETED, ["jid-thr-0001"])
    assert [entry.jid for entry in kept] == ["jid-thr-0001"]
