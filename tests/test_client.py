"""conveyor.client.Client against a real conveyor server on a loopback port: every command."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from conveyor.client import Client
from conveyor.errors import CommandError, ConnectError, JobNotFound, UnknownWorker
from conveyor.job import Job
from conveyor.protocol import ReplyKind
from tests.support.server import TEST_TIMINGS, MakeServer, RunningServer
from tests.support.services import free_port


@pytest.fixture
async def client(server: RunningServer) -> Any:
    connection = await Client.connect(server.url)
    yield connection
    await connection.close()


def job(jobtype: str = "Thing", *args: Any, **fields: Any) -> dict[str, Any]:
    return {"jobtype": jobtype, "args": list(args), **fields}


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def sizes(client: Client) -> dict[str, int]:
    info = await client.info()
    return dict(info["faktory"]["sets"])


# -- push / fetch / ack / fail ------------------------------------------------------------------


async def test_push_fetch_ack_roundtrip(client: Client) -> None:
    jid = await client.push(job("Add", 1, 2, queue="math", custom={"k": "v"}))
    assert re.fullmatch(r"[0-9a-f]{32}", jid)
    fetched = await client.fetch("math")
    assert fetched is not None
    assert fetched["jid"] == jid
    assert fetched["jobtype"] == "Add"
    assert fetched["args"] == [1, 2]
    assert fetched["custom"] == {"k": "v"}
    assert fetched["retry"] == 25
    assert fetched["enqueued_at"]
    assert (await sizes(client))["working"] == 1
    await client.ack(jid)
    assert (await sizes(client))["working"] == 0
    assert (await client.info())["faktory"]["total_processed"] == 1


async def test_push_keeps_the_given_jid_and_accepts_a_job_struct(client: Client) -> None:
    assert await client.push(job("A", jid="given-jid-1")) == "given-jid-1"
    assert await client.push(Job(jid="struct-jid-1", jobtype="B", args=[[1]])) == "struct-jid-1"
    first, second = await client.fetch("default"), await client.fetch("default")
    assert first is not None
    assert second is not None
    assert (first["jid"], second["jid"]) == ("given-jid-1", "struct-jid-1")
    assert second["args"] == [[1]]


async def test_push_accepts_any_mapping_and_refuses_what_json_cannot_hold(client: Client) -> None:
    jid = await client.push(MappingProxyType({"jobtype": "Ro", "args": [{"n": 1}]}))
    with pytest.raises(TypeError, match="cannot encode object"):
        await client.push({"jobtype": "Bad", "args": [object()]})
    fetched = await client.fetch("default")
    assert fetched is not None
    assert fetched["jid"] == jid
    assert await client.fetch("default") is None  # the bad job was never sent


async def test_push_error_raises_command_error_and_connection_lives_on(client: Client) -> None:
    with pytest.raises(CommandError) as info:
        await client.push({"jid": "abcdefgh12", "args": []})
    assert info.value.code == "ERR"
    assert "jobtype" in info.value.message
    assert not client.closed
    assert await client.push(job("Fine")) is not None


async def test_push_bulk_reports_only_failures(client: Client) -> None:
    good = [job("Bulk", n, jid=f"bulk-jid-{n}") for n in range(3)]
    assert await client.push_bulk(good) == {}
    errors = await client.push_bulk([job("Ok", jid="bulk-ok-1"), job("", jid="bulk-bad-1")])
    assert list(errors) == ["bulk-bad-1"]
    assert "jobtype" in errors["bulk-bad-1"]
    assert (await client.info())["faktory"]["queues"]["default"] == 4


async def test_push_bulk_chunks_pipelines_in_order_and_reports_each_chunk(
    make_server: MakeServer,
) -> None:
    # A PUSHB is one line: chunk 2 is over the server's line limit, refused whole, and the
    # server closes the connection after it; `outcomes` tells which chunks were answered.
    server = await make_server(max_line_bytes=20_000)
    chunks = [
        [job("A", n, jid=f"chunk-a-{n}") for n in range(3)],
        [job("C", 0, jid="chunk-c-0"), job("C", 1, jid="chunk-c-1", queue="bad queue!")],
        [job("B", "x" * 25_000, jid="chunk-b-0")],
        [job("D", n, jid=f"chunk-d-{n}") for n in range(2)],
    ]
    async with await Client.connect(server.url) as client:
        outcomes: list[dict[str, str] | CommandError] = []
        with pytest.raises(ConnectError):
            await client.push_bulk_chunks(chunks, outcomes, in_flight=3)
        assert outcomes[0] == {}
        assert list(outcomes[1]) == ["chunk-c-1"]  # type: ignore[arg-type]
        assert "queue" in outcomes[1]["chunk-c-1"]  # type: ignore[index]
        assert isinstance(outcomes[2], CommandError)
        assert outcomes[2].message == "line too long (max 20000 bytes)"
        assert len(outcomes) == 3
        assert client.closed
    async with await Client.connect(server.url) as client:  # the rest, as App does
        await client.push_bulk_chunks(chunks[len(outcomes) :], outcomes)
        assert outcomes[3] == {}
        fetched = [(await client.fetch("default") or {}).get("jid") for _ in range(6)]
    assert fetched == [
        "chunk-a-0", "chunk-a-1", "chunk-a-2", "chunk-c-0", "chunk-d-0", "chunk-d-1"
    ]  # fmt: skip


async def test_push_bulk_chunks_refuses_nonsense_depth(client: Client) -> None:
    with pytest.raises(ValueError, match="in_flight"):
        await client.push_bulk_chunks([[job("A")]], [], in_flight=0)
    assert (await client.info())["faktory"]["queues"] == {}


async def test_fetch_follows_queue_order_and_returns_none_when_empty(client: Client) -> None:
    await client.push(job("Low", queue="low"))
    await client.push(job("High", queue="high"))
    first = await client.fetch("high", "low")
    second = await client.fetch("high", "low")
    assert first is not None
    assert second is not None
    assert [first["jobtype"], second["jobtype"]] == ["High", "Low"]
    started = asyncio.get_running_loop().time()
    assert await client.fetch("high", "low") is None
    waited = asyncio.get_running_loop().time() - started
    assert waited >= TEST_TIMINGS.fetch_wait_seconds * 0.9  # the server waited for a job


async def test_fetch_needs_a_queue(client: Client) -> None:
    with pytest.raises(ValueError, match="at least one queue"):
        await client.fetch()
    with pytest.raises(ValueError, match="whitespace"):
        await client.fetch("two words")
    assert await client.push(job("StillUsable"))


async def test_fail_moves_the_job_to_retries_with_the_error(
    client: Client, server: RunningServer
) -> None:
    jid = await client.push(job("Flaky", retry=3))
    assert await client.fetch("default") is not None
    await client.fail(jid, "ValueError", "bad value", ["line 1", "line 2"])
    assert (await sizes(client))["retries"] == 1
    location = await server.manager.locate(jid)
    assert location is not None
    assert location.where == "retries"
    assert b'"errtype":"ValueError"' in location.payload
    assert b'"message":"bad value"' in location.payload


async def test_fail_without_reservation_raises_job_not_found(client: Client) -> None:
    with pytest.raises(JobNotFound) as info:
        await client.fail("never-fetched-1", "E", "m")
    assert info.value.message == "Job not found never-fetched-1"


async def test_ack_of_unknown_jid_is_fine(client: Client) -> None:
    await client.ack("unknown-jid-123")
    assert (await client.info())["faktory"]["total_processed"] == 0


async def test_fetch_many_and_ack_many(client: Client) -> None:
    jids = [await client.push(job("Batch", n)) for n in range(5)]
    fetched = await client.fetch_many(3, "default")
    assert [j["jid"] for j in fetched] == jids[:3]
    rest = await client.fetch_many(10, "default")
    assert [j["jid"] for j in rest] == jids[3:]
    assert (await sizes(client))["working"] == 5
    await client.ack_many(jids)
    assert (await sizes(client))["working"] == 0
    assert (await client.info())["faktory"]["total_processed"] == 5
    assert await client.fetch_many(2, "default") == []
    with pytest.raises(ValueError, match="at least 1"):
        await client.fetch_many(0, "default")


# -- workers ------------------------------------------------------------------------------------


async def test_hello_registers_the_worker_and_beat_follows_server_state(
    server: RunningServer,
) -> None:
    async with await Client.connect(
        server.url, wid="wid-test-1", hostname="box-1", pid=4242, labels=("py", "blue")
    ) as worker:
        records = {view.record.wid: view.record for view in await server.manager.workers()}
        assert records["wid-test-1"].hostname == "box-1"
        assert records["wid-test-1"].pid == 4242
        assert records["wid-test-1"].labels == ["py", "blue"]
        assert await worker.beat(rss_kb=1234) == "running"
        records = {view.record.wid: view.record for view in await server.manager.workers()}
        assert records["wid-test-1"].rss_kb == 1234
        await server.manager.signal_workers(["wid-test-1"], "quiet")
        assert await worker.beat() == "quiet"
        assert await worker.beat(state="terminate") == "terminate"


async def test_beat_needs_a_wid_and_unknown_workers_map_to_their_class(client: Client) -> None:
    with pytest.raises(ValueError, match="wid"):
        await client.beat()
    reply = await client.raw(b'BEAT {"wid":"ghost-worker"}')
    assert reply.kind is ReplyKind.ERROR
    assert isinstance(CommandError.from_reply(reply.text), UnknownWorker)


# -- administration -----------------------------------------------------------------------------


async def test_info_and_flush(client: Client) -> None:
    await client.push(job("One", queue="q1"))
    info = await client.info()
    assert info["faktory"]["queues"] == {"q1": 1}
    assert info["server"]["faktory_version"]
    assert info["server"]["connections"] >= 1
    await client.flush()
    assert (await client.info())["faktory"]["queues"].get("q1", 0) == 0


async def test_mutate_kill_requeue_discard_clear(client: Client) -> None:
    at = in_an_hour()
    keep = await client.push(job("Keep", at=at))
    kill = await client.push(job("Kill Me", at=at))  # a space: must survive MUTATE's framing
    await client.push(job("Other", at=at))
    assert (await sizes(client))["scheduled"] == 3
    await client.mutate("kill", "scheduled", {"jobtype": "Kill Me"})
    assert (await sizes(client))["scheduled"] == 2
    assert (await sizes(client))["dead"] == 1
    await client.mutate("requeue", "dead", {"jids": [kill]})
    assert (await sizes(client))["dead"] == 0
    requeued = await client.fetch("default")
    assert requeued is not None
    assert requeued["jid"] == kill
    await client.mutate("discard", "scheduled", {"jids": [keep]})
    assert (await sizes(client))["scheduled"] == 1
    await client.mutate("clear", "scheduled")
    assert (await sizes(client))["scheduled"] == 0


async def test_mutate_rejects_bad_target(client: Client) -> None:
    with pytest.raises(CommandError, match="invalid target"):
        await client.mutate("kill", "working")


async def test_queue_pause_resume_latency_remove(client: Client) -> None:
    jid = await client.push(job("Q", queue="jobs"))
    await client.queue_pause("jobs")
    assert await client.fetch("jobs") is None
    latency = await client.queue_latency("jobs", "empty")
    assert latency["empty"] == 0
    assert 0 <= latency["jobs"] < 60
    await client.queue_resume("*")
    fetched = await client.fetch("jobs")
    assert fetched is not None
    assert fetched["jid"] == jid
    await client.push(job("Doomed", queue="jobs"))
    await client.queue_remove("jobs")
    assert "jobs" not in (await client.info())["faktory"]["queues"]
    with pytest.raises(CommandError, match="wildcard"):
        await client.queue_latency("*")
    with pytest.raises(ValueError, match="at least one queue"):
        await client.queue_pause()


async def test_raw_returns_error_replies_instead_of_raising(client: Client) -> None:
    reply = await client.raw(b"NOPE")
    assert reply.kind is ReplyKind.ERROR
    assert reply.text == "ERR unknown command NOPE"
    assert (await client.raw(b"FLUSH")).kind is ReplyKind.OK


# -- connection handling --------------------------------------------------------------------------


async def test_close_sends_end_and_is_idempotent(server: RunningServer) -> None:
    observer = await Client.connect(server.url)
    other = await Client.connect(server.url)
    assert (await observer.info())["server"]["connections"] == 2
    await other.close()
    await other.close()
    assert other.closed
    for _ in range(100):
        if (await observer.info())["server"]["connections"] == 1:
            break
        await asyncio.sleep(0.01)
    assert (await observer.info())["server"]["connections"] == 1
    with pytest.raises(ConnectError, match="closed"):
        await other.info()
    await observer.close()


async def test_connect_to_nothing_raises_connect_error() -> None:
    with pytest.raises(ConnectError, match="cannot connect"):
        await Client.connect(f"tcp://127.0.0.1:{free_port()}", timeout=2)


async def test_server_going_away_raises_connect_error(make_server: MakeServer) -> None:
    running = await make_server()
    client = await Client.connect(running.url)
    await running.stop()
    with pytest.raises(ConnectError):
        await client.info()
    assert client.closed
    await client.close()


async def test_reply_timeout_closes_the_connection(make_server: MakeServer) -> None:
    slow_fetch = dataclasses.replace(TEST_TIMINGS, fetch_wait_seconds=0.6)
    running = await make_server(config=slow_fetch)
    client = await Client.connect(running.url)  # a loaded machine may take 0.1 s to greet
    client.timeout = 0.1
    with pytest.raises(ConnectError, match=r"timed out after 0\.1s waiting for the reply"):
        await client.fetch("default")
    assert client.closed
    await client.close()


async def test_one_command_at_a_time(client: Client) -> None:
    waiting = asyncio.ensure_future(client.fetch("empty"))
    await asyncio.sleep(0.02)
    with pytest.raises(RuntimeError, match="one command at a time"):
        await client.info()
    assert await waiting is None
    assert (await client.info())["faktory"]["total_processed"] == 0


async def test_cancelled_command_closes_the_connection(client: Client) -> None:
    waiting = asyncio.ensure_future(client.fetch("empty"))
    await asyncio.sleep(0.02)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert client.closed  # its reply would have been read as the next command's
