"""Batches beside cancellation and aggregation, end to end over a real server on every store.

One PUSHB may hold a batch job, a job waiting for another, a job to aggregate, a plain job
and bad ones: the batches feature marks its jobs in one step, aggregation keeps its member
in its group, and each is answered as a PUSH alone would be. A job to aggregate cannot join a
batch, be tracked or wait (it never runs itself); a waiting job's cancel is refused, and it
still runs once released."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.store.base import SortedSet
from tests.support.server import MakeServer, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url
from tests.test_feature_batches import HELLO, Wire, bulk_json, callbacks, job

AGGREGATE = {"max_size": 5, "max_delay": 3600, "grace": 3600}
NOT_AGGREGATED = (
    "a job to aggregate (custom.aggregate) cannot join a batch, be tracked or wait for other"
    " jobs: it never runs itself, its group's job does"
)


@pytest.fixture(params=STORE_BACKENDS)
async def server(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> RunningServer:
    return await make_server(storage_url=store_url(request.param, tmp_path, request))


@pytest.fixture
async def wire(server: RunningServer, raw_client: RawConnect) -> Wire:
    return Wire(await raw_client(server.port, hello=HELLO))


def member(**custom: Any) -> dict[str, Any]:
    return job(jobtype="Sum", custom={"group": "g", "aggregate": AGGREGATE, **custom})


async def admin(wire: Wire, op: str, args: dict[str, Any]) -> Any:
    return bulk_json(await wire.conn.call(f"ADMIN {op} ".encode() + msgspec.json.encode(args)))


async def group_members(wire: Wire) -> list[str]:
    groups = (await admin(wire, "group.list", {}))["groups"]
    if not groups:
        return []
    (group,) = groups
    shown = await admin(wire, "group.show", {"key": group["key"]})
    return [m["jid"] for m in shown["members"]]


async def test_one_pushb_puts_each_job_where_it_belongs(wire: Wire, server: RunningServer) -> None:
    dependency = job(custom={"track": 1})
    assert await wire.push(dependency) == b"+OK\r\n"
    bid = await wire.new(description="mixed", **callbacks(success="Done"))
    in_batch = job(custom={"bid": bid})
    waiting = job(custom={"after": [dependency["jid"]]})
    grouped = member()
    plain = job()
    no_jid = {"jobtype": "T", "args": [], "queue": "work"}
    doomed = member(bid=bid)
    pushed = [in_batch, waiting, grouped, plain, no_jid, doomed]
    errors = bulk_json(await wire.conn.call(b"PUSHB " + msgspec.json.encode(pushed)))
    assert set(errors) == {"#4", doomed["jid"]}
    assert errors[doomed["jid"]] == NOT_AGGREGATED
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"

    assert (await wire.status(bid))["total"] == 1  # the refused member did not join it
    assert list(await server.manager.store.get_waiting([waiting["jid"]])) == [waiting["jid"]]
    assert await group_members(wire) == [grouped["jid"]]
    assert (await wire.run())["jid"] == dependency["jid"]
    assert (await wire.run())["jid"] == in_batch["jid"]
    assert (await wire.run())["jid"] == plain["jid"]
    # the dependency succeeded: the waiting job is released (through the scheduled set)
    released = await wire.fetch()
    for _ in range(50):
        if released is not None:
            break
        released = await wire.fetch()
    assert released is not None
    assert released["jid"] == waiting["jid"]
    assert await wire.fetch() is None
    assert (await wire.status(bid))["pending"] == 0


async def test_a_job_to_aggregate_cannot_be_followed(wire: Wire, server: RunningServer) -> None:
    dependency = job(custom={"track": 1})
    assert await wire.push(dependency) == b"+OK\r\n"
    bid = await wire.new(**callbacks(success="Done"))
    for custom in ({"bid": bid}, {"track": 1}, {"after": [dependency["jid"]]}):
        refused = member(**custom)
        assert await wire.push(refused) == f"-ERR {NOT_AGGREGATED}\r\n".encode()
    assert (await wire.push(member(track=0))) == b"+OK\r\n"  # not tracked: a plain member
    assert len(await group_members(wire)) == 1
    assert (await wire.status(bid))["total"] == 0
    assert await server.manager.store.count_waiting() == 0


async def test_a_waiting_job_is_not_cancelled_and_still_runs(
    wire: Wire, server: RunningServer
) -> None:
    dependency = job(custom={"track": 1})
    assert await wire.push(dependency) == b"+OK\r\n"
    waiting = job(custom={"after": [dependency["jid"]]})
    assert await wire.push(waiting) == b"+OK\r\n"
    tracked = job(custom={"track": 1})
    assert await wire.push(tracked) == b"+OK\r\n"

    reply = await admin(wire, "job.cancel", {"jids": [waiting["jid"], tracked["jid"]]})
    first, second = reply["jobs"]
    assert reply["cancelled"] == 1
    assert (first["outcome"], first["was"]) == ("refused", "waiting")
    assert "custom.after" in first["message"]
    assert (second["outcome"], second["was"]) == ("cancelled", "queued")
    assert list(await server.manager.store.get_waiting([waiting["jid"]])) == [waiting["jid"]]

    assert (await wire.run())["jid"] == dependency["jid"]
    released = await wire.fetch()
    for _ in range(50):
        if released is not None:
            break
        released = await wire.fetch()
    assert released is not None
    assert released["jid"] == waiting["jid"]
    assert await wire.fetch() is None  # the tracked job was cancelled
    assert not await server.manager.store.get_set_entries(SortedSet.DEAD, [waiting["jid"]])
