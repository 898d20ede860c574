"""Batches and tracking beside results, retention and admission, end to end over a real server
on every store: the ACK of a batch (or tracked) job that keeps its result or itself, in a
throttled queue, with a unique lock, does all of it at once: the job is kept and its result
recorded, its batch counts it (its callback is scheduled), its throttle slot is free and its
lock released. ``job.show`` names a batch job's batch, also once only its result is left, and
a job waiting for others is in the lifecycle state ``waiting``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.support.features import FeatureServer
from tests.support.server import RawConnect, RunningServer
from tests.test_feature_batches import CALLBACKS, HELLO, Wire, bulk_json, callbacks, job

OK = b"+OK\r\n"
TABLES = {"throttles": {"slow": {"concurrency": 1, "timeout": 60}}}
KEEPS = [{"retain": 600}, {"result_ttl": 600}, {"retain": 600, "result_ttl": 600}]


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url, TABLES)


@pytest.fixture
async def wire(server: RunningServer, raw_client: RawConnect) -> Wire:
    return Wire(await raw_client(server.port, hello=HELLO))


async def ack_result(wire: Wire, jid: str, result: Any) -> None:
    sent = {"jid": jid, "result": msgspec.json.encode(result).decode()}
    assert await wire.conn.call(b"ACK " + msgspec.json.encode(sent)) == OK


async def show(wire: Wire, jid: str) -> dict[str, Any]:
    reply = await wire.conn.call(b"ADMIN job.show " + msgspec.json.encode({"jids": [jid]}))
    (found,) = bulk_json(reply)["jobs"]
    assert found is not None, jid
    return found  # type: ignore[no-any-return]


async def outcome(wire: Wire, jid: str) -> dict[str, Any]:
    reply = await wire.conn.call(b"RESULT " + msgspec.json.encode({"jid": jid}))
    return bulk_json(reply)  # type: ignore[no-any-return]


async def completed(wire: Wire) -> list[str]:
    reply = await wire.conn.call(b'ADMIN job.list {"where":"completed"}')
    return [row["jid"] for row in bulk_json(reply)["jobs"]]


@pytest.mark.parametrize("keeps", KEEPS)
async def test_a_kept_batch_job_counts_frees_its_slot_and_lock_in_its_ack(
    wire: Wire, keeps: dict[str, int]
) -> None:
    bid = await wire.new(**callbacks(complete="Done"))
    custom = {"bid": bid, "unique_for": 600, **keeps}
    first = job(queue="slow", args=["a"], custom=custom)
    second = job(queue="slow", args=["b"], custom=custom)
    for pushed in (first, second):
        assert await wire.push(pushed) == OK
    twin = job(queue="slow", args=["a"], custom={"unique_for": 600})  # the same unique key
    assert (await wire.push(twin)).startswith(b"-NOTUNIQUE")  # its lock is held
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == OK
    fetched = await wire.fetch("slow")
    assert fetched is not None
    assert fetched["jid"] == first["jid"]
    assert await wire.fetch("slow") is None  # the throttle holds the second one back

    await ack_result(wire, first["jid"], {"rows": 3})

    assert await wire.states(bid) == (2, 1, 0, "", "")  # counted in its batch
    assert await wire.fetch("slow") is not None  # its slot is free
    assert await wire.push(twin) == OK  # its lock is released
    found = await outcome(wire, first["jid"])
    assert (found["state"], found["result"]) == ("succeeded", {"rows": 3})
    assert (first["jid"] in await completed(wire)) == ("retain" in keeps)


async def test_the_last_kept_job_of_a_batch_schedules_its_callback(wire: Wire) -> None:
    bid = await wire.new(**callbacks(complete="Done"))
    pushed = job(custom={"bid": bid, "retain": 600})
    assert await wire.push(pushed) == OK
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == OK
    fetched = await wire.fetch()
    assert fetched is not None
    await ack_result(wire, pushed["jid"], "ok")
    assert await wire.states(bid) == (1, 0, 0, "1", "")
    callback = await wire.fetch(CALLBACKS)  # promoted at once by the ACK's feature
    assert callback is not None
    assert callback["jobtype"] == "Done"
    assert await completed(wire) == [pushed["jid"]]


async def test_one_ackb_of_kept_plain_and_batch_jobs_ends_them_all(wire: Wire) -> None:
    bid = await wire.new(**callbacks(complete="Done"))
    batch_kept = job(custom={"bid": bid, "retain": 600})
    batch_plain = job(custom={"bid": bid})
    tracked_kept = job(custom={"track": 1, "retain": 600})
    plain = job()
    jobs = [batch_kept, batch_plain, tracked_kept, plain]
    for pushed in jobs:
        assert await wire.push(pushed) == OK
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == OK
    for _ in jobs:
        assert await wire.fetch() is not None
    items = [{"jid": j["jid"], "result": '"r"'} for j in jobs]
    assert await wire.conn.call(b"ACKB " + msgspec.json.encode(items)) == OK
    assert await wire.states(bid) == (2, 0, 0, "1", "")
    assert sorted(await completed(wire)) == sorted([batch_kept["jid"], tracked_kept["jid"]])
    tracked = bulk_json(await wire.conn.call(b"TRACK GET " + tracked_kept["jid"].encode()))
    assert tracked["state"] == "success"


async def test_a_kept_tracked_job_shows_its_tracking_and_completion(wire: Wire) -> None:
    pushed = job(custom={"track": 1, "retain": 600})
    assert await wire.push(pushed) == OK
    assert await wire.fetch() is not None
    await ack_result(wire, pushed["jid"], [1])
    found = await show(wire, pushed["jid"])
    assert (found["where"], found["state"], found["result"]) == ("completed", "completed", [1])
    assert found["tracking"]["state"] == "success"


async def test_job_show_names_the_batch_of_a_job_known_only_by_its_result(wire: Wire) -> None:
    bid = await wire.new(**callbacks(success="Done"))
    pushed = job(custom={"bid": bid, "result_ttl": 600})
    assert await wire.push(pushed) == OK
    running = await show(wire, pushed["jid"])
    assert (running["state"], running["batch"]) == ("queued", bid)
    assert await wire.fetch() is not None
    await ack_result(wire, pushed["jid"], 42)
    found = await show(wire, pushed["jid"])
    assert (found["where"], found["state"], found["result"]) == ("", "done", 42)
    assert found["batch"] == bid  # from its mark: the payload is gone
    assert found["tracking"]["state"] == "success"


async def test_a_job_waiting_for_others_is_in_state_waiting(wire: Wire) -> None:
    first = job(custom={"track": 1, "result_ttl": 600})
    assert await wire.push(first) == OK
    waiting = job(custom={"after": [first["jid"]]})
    assert await wire.push(waiting) == OK
    found = await show(wire, waiting["jid"])
    assert (found["where"], found["state"], found["asynq_state"]) == (
        "waiting",
        "waiting",
        "waiting",
    )
    assert found["after"] == [first["jid"]]
    assert await wire.fetch() is not None
    await ack_result(wire, first["jid"], "done")
    released = await show(wire, waiting["jid"])
    assert released["state"] in ("scheduled", "queued")  # due now: promoted at once, or soon
