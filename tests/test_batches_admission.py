"""Batches beside the admission features and the removals they report, end to end over a real
server on every store: a job refused by an earlier push hook (NOTUNIQUE) never joins its
batch; a unique job its batch refuses gives its lock back; the ACK of a throttled batch job
frees its slot and counts in its batch in one step; a batch or tracked job removed for good
(deleted, cancelled, killed) counts dead, and the jobs waiting for it die."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from conveyor.store.base import SortedSet
from tests.support.features import FeatureServer
from tests.support.server import RawConnect, RunningServer
from tests.test_feature_batches import HELLO, Wire, bulk_json, callbacks, job

OK = b"+OK\r\n"
NOT_UNIQUE = b"-NOTUNIQUE Job not unique\r\n"
TABLES = {"throttles": {"slow": {"concurrency": 1, "timeout": 60}}}


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url, TABLES)


@pytest.fixture
async def wire(server: RunningServer, raw_client: RawConnect) -> Wire:
    return Wire(await raw_client(server.port, hello=HELLO))


def unique(bid: str, *args: Any, **fields: Any) -> dict[str, Any]:
    return job(args=list(args), custom={"bid": bid, "unique_for": 60}, **fields)


async def pushb(wire: Wire, jobs: list[dict[str, Any]]) -> dict[str, str]:
    return bulk_json(await wire.conn.call(b"PUSHB " + msgspec.json.encode(jobs)))  # type: ignore[no-any-return]


async def admin(wire: Wire, op: str, jids: list[str]) -> Any:
    reply = await wire.conn.call(f"ADMIN {op} ".encode() + msgspec.json.encode({"jids": jids}))
    return bulk_json(reply)


async def test_a_job_refused_as_not_unique_never_joins_its_batch(wire: Wire) -> None:
    bid = await wire.new(**callbacks(success="Done"))
    assert await wire.push(unique(bid, "same")) == OK
    assert await wire.push(unique(bid, "same")) == NOT_UNIQUE
    assert (await wire.status(bid))["total"] == 1
    twin, other = unique(bid, "same"), unique(bid, "other")
    assert await pushb(wire, [twin, other]) == {twin["jid"]: "NOTUNIQUE Job not unique"}
    assert (await wire.status(bid))["total"] == 2


async def test_a_unique_job_its_batch_refuses_gives_its_lock_back(wire: Wire) -> None:
    assert await wire.push(unique("b-nope", "x")) == b"-ERR no such batch b-nope\r\n"
    bid = await wire.new(**callbacks(success="Done"))
    assert await wire.push(unique(bid, "x")) == OK  # the lock went with the refused job
    refused = unique("b-nope", "y")
    assert await pushb(wire, [refused]) == {refused["jid"]: "no such batch b-nope"}
    assert await wire.push(unique(bid, "y")) == OK
    assert (await wire.status(bid))["total"] == 2


async def test_the_ack_of_a_throttled_batch_job_frees_its_slot_and_counts(wire: Wire) -> None:
    bid = await wire.new(**callbacks(complete="Done"))
    for _ in range(2):
        assert await wire.push(job(queue="slow", custom={"bid": bid})) == OK
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == OK
    first = await wire.fetch("slow")
    assert first is not None
    assert await wire.fetch("slow") is None  # the throttle holds the second one back
    await wire.ack(first["jid"])
    assert await wire.states(bid) == (2, 1, 0, "", "")
    second = await wire.fetch("slow")  # the ACK freed the slot
    assert second is not None
    await wire.ack(second["jid"])
    assert await wire.states(bid) == (2, 0, 0, "1", "")
    assert (await wire.run("callbacks"))["jobtype"] == "Done"
    assert await wire.states(bid) == (2, 0, 0, "2", "")


async def test_batch_and_tracked_jobs_removed_for_good_count_dead(
    wire: Wire, server: RunningServer
) -> None:
    dependency = job(custom={"track": 1})
    assert await wire.push(dependency) == OK
    waiting = job(custom={"after": [dependency["jid"]]})
    assert await wire.push(waiting) == OK
    bid = await wire.new(**callbacks(complete="Done", success="Never"))
    deleted, cancelled = job(custom={"bid": bid}), job(custom={"bid": bid})
    assert await pushb(wire, [deleted, cancelled]) == {}
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == OK

    assert (await admin(wire, "job.delete", [deleted["jid"]]))["changed"] == 1
    assert (await admin(wire, "job.cancel", [cancelled["jid"]]))["cancelled"] == 1
    assert await wire.states(bid) == (2, 2, 2, "1", "")  # every job ran or died: complete
    assert (await wire.run("callbacks"))["jobtype"] == "Done"
    assert (await wire.status(bid))["success_st"] == ""  # and never success

    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == dependency["jid"]
    await wire.fail(dependency["jid"])  # to the retries: the job waiting for it still waits
    store = server.manager.store
    assert list(await store.get_waiting([waiting["jid"]])) == [waiting["jid"]]
    assert (await admin(wire, "job.kill", [dependency["jid"]]))["changed"] == 1
    assert await store.get_waiting([waiting["jid"]]) == {}
    (buried,) = await store.get_set_entries(SortedSet.DEAD, [waiting["jid"]])
    assert b"DependencyDied" in buried.payload
    marks = await store.get_marks([dependency["jid"], deleted["jid"]], time.time())
    assert {m.state for m in marks.values()} == {"dead"}
