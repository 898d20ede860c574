"""BATCH end to end over a real server on every store: Faktory Enterprise's exact replies,
callback ordering, failures and retries, nesting, reopening, PUSHB into a batch."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

HELLO = b'{"v":2,"wid":"w1","hostname":"h","pid":1}'
CALLBACKS = "callbacks"


def job(**fields: Any) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "T", "args": [1], "queue": "work", **fields}


def bulk_json(reply: bytes) -> Any:
    header, _, body = reply.partition(b"\r\n")
    assert header.startswith(b"$"), reply
    assert int(header[1:]) == len(body) - 2
    return msgspec.json.decode(body[:-2])


def bulk_text(reply: bytes) -> str:
    header, _, body = reply.partition(b"\r\n")
    assert header.startswith(b"$"), reply
    return body[:-2].decode()


@pytest.fixture(params=STORE_BACKENDS)
async def server(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> RunningServer:
    return await make_server(storage_url=store_url(request.param, tmp_path, request))


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=HELLO)


class Wire:
    """BATCH and job commands over one raw connection."""

    def __init__(self, conn: RawClient) -> None:
        self.conn = conn

    async def new(self, **fields: Any) -> str:
        reply = await self.conn.call(b"BATCH NEW " + msgspec.json.encode(fields))
        bid = bulk_text(reply)
        assert re.fullmatch(r"b-[A-Za-z0-9_-]{16}", bid), bid
        return bid

    async def status(self, bid: str) -> dict[str, Any]:
        return bulk_json(await self.conn.call(b"BATCH STATUS " + bid.encode()))  # type: ignore[no-any-return]

    async def states(self, bid: str) -> tuple[int, int, int, str, str]:
        s = await self.status(bid)
        return s["total"], s["pending"], s["failed"], s["complete_st"], s["success_st"]

    async def push(self, payload: dict[str, Any]) -> bytes:
        return await self.conn.call(b"PUSH " + msgspec.json.encode(payload))

    async def fetch(self, queue: str = "work") -> dict[str, Any] | None:
        reply = await self.conn.call(b"FETCH " + queue.encode())
        return None if reply == b"$-1\r\n" else bulk_json(reply)

    async def ack(self, jid: str) -> None:
        assert await self.conn.call(b'ACK {"jid":"' + jid.encode() + b'"}') == b"+OK\r\n"

    async def fail(self, jid: str) -> None:
        payload = msgspec.json.encode({"jid": jid, "errtype": "E", "message": "boom"})
        assert await self.conn.call(b"FAIL " + payload) == b"+OK\r\n"

    async def run(self, queue: str = "work") -> dict[str, Any]:
        fetched = await self.fetch(queue)
        assert fetched is not None, f"nothing in {queue}"
        await self.ack(fetched["jid"])
        return fetched


@pytest.fixture
def wire(conn: RawClient) -> Wire:
    return Wire(conn)


def callbacks(**which: str) -> dict[str, Any]:
    return {kind: job(jobtype=jobtype, queue=CALLBACKS) for kind, jobtype in which.items()}


async def test_exact_replies_and_errors(wire: Wire, conn: RawClient) -> None:
    assert await conn.call(b"BATCH NEW {}") == (
        b"-ERR a batch needs a success or a complete callback job\r\n"
    )
    assert await conn.call(b"BATCH STATUS b-nope") == b"-ERR no such batch b-nope\r\n"
    assert await conn.call(b"BATCH OPEN b-nope") == b"-ERR no such batch b-nope\r\n"
    assert await conn.call(b"BATCH COMMIT b-nope") == b"-ERR no such batch b-nope\r\n"
    assert await conn.call(b"BATCH") == (
        b"-ERR BATCH needs a subcommand: NEW, OPEN, COMMIT, STATUS or CHILD\r\n"
    )
    assert await conn.call(b"BATCH FROB x") == b"-ERR no such BATCH subcommand: FROB\r\n"
    assert await conn.call(b"BATCH NEW {nope") == (
        b"-ERR invalid BATCH NEW: JSON is malformed: object keys must be strings (byte 1)\r\n"
    )
    bad_callback = msgspec.json.encode({"success": {"jid": "x" * 12, "args": []}})
    assert await conn.call(b"BATCH NEW " + bad_callback) == (
        b"-ERR invalid success callback: jobs must have a jobtype parameter\r\n"
    )
    # Go's client sends "bid":"" and the callbacks as whole jobs
    bid = await wire.new(bid="", description="Images", **callbacks(success="Done"))
    assert await conn.call(b"BATCH OPEN " + bid.encode()) == b"$%d\r\n%s\r\n" % (
        len(bid),
        bid.encode(),
    )
    status = await wire.status(bid)
    created = status.pop("created_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created)
    assert status == {
        "bid": bid,
        "description": "Images",
        "total": 0,
        "pending": 0,
        "failed": 0,
        "complete_st": "",
        "success_st": "",
    }
    raw = await conn.call(b"BATCH STATUS " + bid.encode())
    assert raw.index(b'"bid"') < raw.index(b'"description"') < raw.index(b'"created_at"')
    assert raw.index(b'"total"') < raw.index(b'"pending"') < raw.index(b'"failed"')
    assert raw.index(b'"failed"') < raw.index(b'"complete_st"') < raw.index(b'"success_st"')
    assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"


async def test_callbacks_fire_after_commit_complete_then_success(wire: Wire) -> None:
    bid = await wire.new(**callbacks(complete="Finished", success="Succeeded"))
    jobs = [job(custom={"bid": bid}) for _ in range(2)]
    for payload in jobs:
        assert await wire.push(payload) == b"+OK\r\n"
    assert await wire.states(bid) == (2, 2, 0, "", "")
    await wire.run()
    assert await wire.states(bid) == (2, 1, 0, "", "")
    await wire.run()
    assert await wire.states(bid) == (2, 0, 0, "", "")
    assert await wire.fetch(CALLBACKS) is None  # not committed: no callback
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert await wire.states(bid) == (2, 0, 0, "1", "")
    complete = await wire.fetch(CALLBACKS)
    assert complete is not None
    assert complete["jobtype"] == "Finished"
    assert complete["custom"] == {"_bid": bid, "_cb": "complete"}
    assert await wire.fetch(CALLBACKS) is None  # success waits for the complete callback
    await wire.ack(complete["jid"])
    assert await wire.states(bid) == (2, 0, 0, "2", "1")
    success = await wire.run(CALLBACKS)
    assert (success["jobtype"], success["custom"]["_cb"]) == ("Succeeded", "success")
    assert await wire.states(bid) == (2, 0, 0, "2", "2")
    assert await wire.fetch(CALLBACKS) is None


async def test_an_empty_batch_fires_on_commit(wire: Wire) -> None:
    bid = await wire.new(**callbacks(complete="C", success="S"))
    await wire.conn.call(b"BATCH COMMIT " + bid.encode())
    assert await wire.states(bid) == (0, 0, 0, "1", "")
    complete = await wire.fetch(CALLBACKS)
    assert complete is not None
    assert complete["jobtype"] == "C"
    # the complete callback fails: the success callback never comes
    await wire.fail(complete["jid"])
    assert await wire.states(bid) == (0, 0, 0, "1", "")
    assert await wire.fetch(CALLBACKS) is None


async def test_failures_count_until_a_retry_succeeds(wire: Wire, server: RunningServer) -> None:
    bid = await wire.new(**callbacks(complete="C", success="S"))
    failing, passing = job(custom={"bid": bid}), job(custom={"bid": bid})
    await wire.push(failing)
    await wire.push(passing)
    await wire.conn.call(b"BATCH COMMIT " + bid.encode())
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == failing["jid"]
    await wire.fail(failing["jid"])
    assert await wire.states(bid) == (2, 2, 1, "", "")
    await wire.run()
    assert await wire.states(bid) == (2, 1, 1, "1", "")  # every job ran once: complete
    await wire.run(CALLBACKS)
    assert await wire.states(bid) == (2, 1, 1, "2", "")  # one still failing: no success
    report = await server.manager.act_on_jobs("retry", [failing["jid"]])  # retry it now
    assert report.changed == 1
    retried = await wire.run()
    assert retried["jid"] == failing["jid"]
    assert await wire.states(bid) == (2, 0, 0, "2", "1")


async def test_pushes_into_a_batch_are_checked(wire: Wire, conn: RawClient) -> None:
    bid = await wire.new(**callbacks(success="S"))
    assert await wire.push(job(custom={"bid": "b-nope"})) == b"-ERR no such batch b-nope\r\n"
    assert await wire.push(job(custom={"bid": 7})) == (
        b"-ERR custom.bid must be a batch id (a string), not 7\r\n"
    )
    same = job(custom={"bid": bid})
    assert await wire.push(same) == b"+OK\r\n"
    assert await wire.push(same) == b"+OK\r\n"  # sent again (a lost reply): joins once
    assert (await wire.states(bid))[0] == 1
    bulk = [job(custom={"bid": bid}), job(custom={"bid": "b-nope"}), job(custom={"bid": bid})]
    reply = await conn.call(b"PUSHB " + msgspec.json.encode(bulk))
    assert bulk_json(reply) == {bulk[1]["jid"]: "no such batch b-nope"}
    assert (await wire.states(bid))[:2] == (3, 3)
    await conn.call(b"BATCH COMMIT " + bid.encode())
    assert await wire.push(job(custom={"bid": bid})) == (
        f"-ERR batch {bid} is committed: BATCH OPEN it to add jobs\r\n".encode()
    )


async def test_reopen_after_the_callbacks_fired(wire: Wire, conn: RawClient) -> None:
    """As faktory-rs observed on Enterprise: an outsider may reopen a committed batch, also
    after its complete callback was enqueued, and add jobs; no callback fires twice."""
    bid = await wire.new(**callbacks(complete="C", success="S"))
    await conn.call(b"BATCH COMMIT " + bid.encode())
    assert await wire.states(bid) == (0, 0, 0, "1", "")
    assert bulk_text(await conn.call(b"BATCH OPEN " + bid.encode())) == bid
    await wire.push(job(custom={"bid": bid}))
    await wire.push(job(custom={"bid": bid}))
    assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert await wire.states(bid) == (2, 2, 0, "1", "")
    await wire.run()
    await wire.run()
    complete = await wire.run(CALLBACKS)
    assert complete["jobtype"] == "C"
    assert await wire.states(bid) == (2, 0, 0, "2", "1")
    assert (await wire.run(CALLBACKS))["jobtype"] == "S"
    assert await wire.fetch(CALLBACKS) is None


async def test_nested_batches_wait_for_their_children(wire: Wire, conn: RawClient) -> None:
    parent = await wire.new(description="parent", **callbacks(success="ParentDone"))
    child = await wire.new(parent_bid=parent, **callbacks(success="ChildDone"))
    grandchild = await wire.new(parent_bid=child, **callbacks(complete="GrandchildComplete"))
    assert (await wire.status(child))["parent_bid"] == parent
    await wire.push(job(custom={"bid": parent}))
    await wire.push(job(custom={"bid": child}))
    await wire.push(job(custom={"bid": grandchild}))
    for bid in (grandchild, child, parent):
        assert await conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    for _ in range(3):
        await wire.run()
    assert (await wire.run(CALLBACKS))["jobtype"] == "GrandchildComplete"
    assert (await wire.run(CALLBACKS))["jobtype"] == "ChildDone"
    assert (await wire.run(CALLBACKS))["jobtype"] == "ParentDone"
    assert await wire.fetch(CALLBACKS) is None
    assert (await wire.status(parent))["total"] == 1


async def test_child_links_an_existing_batch(wire: Wire, conn: RawClient) -> None:
    parent = await wire.new(**callbacks(success="ParentDone"))
    child = await wire.new(**callbacks(success="ChildDone"))
    assert await conn.call(b"BATCH CHILD " + parent.encode()) == (
        b"-ERR BATCH CHILD takes <bid> <child_bid>\r\n"
    )
    assert await conn.call(f"BATCH CHILD {parent} {child}".encode()) == b"+OK\r\n"
    assert await conn.call(f"BATCH CHILD {child} {parent}".encode()) == (
        f"-ERR batch {parent} is an ancestor of {child}: no cycles\r\n".encode()
    )
    await conn.call(b"BATCH COMMIT " + parent.encode())
    assert await wire.fetch(CALLBACKS) is None  # the child is not committed yet
    await conn.call(b"BATCH COMMIT " + child.encode())
    assert (await wire.run(CALLBACKS))["jobtype"] == "ChildDone"
    assert (await wire.run(CALLBACKS))["jobtype"] == "ParentDone"
