"""TRACK and ``custom.after`` end to end over a real server on every store: Faktory
Enterprise's exact replies, states through retries and death, ``reserve_until`` keeping a job
from being reaped, jobs waiting for others released, or killed with them."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager import ManagerConfig
from conveyor.store.base import SortedSet
from conveyor.timefmt import format_time
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url
from tests.test_feature_batches import HELLO, Wire, bulk_json, job

SHORT_RESERVATIONS = ManagerConfig(
    fetch_wait_seconds=0.2,
    scheduler_interval_seconds=0.02,
    reaper_interval_seconds=0.1,
    min_reserve_for_seconds=1,
)


@pytest.fixture(params=STORE_BACKENDS)
async def server(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> RunningServer:
    url = store_url(request.param, tmp_path, request)
    return await make_server(storage_url=url, config=SHORT_RESERVATIONS)


@pytest.fixture
async def wire(server: RunningServer, raw_client: RawConnect) -> Wire:
    return Wire(await raw_client(server.port, hello=HELLO))


async def track(conn: RawClient, jid: str) -> dict[str, Any]:
    return bulk_json(await conn.call(b"TRACK GET " + jid.encode()))  # type: ignore[no-any-return]


async def track_set(conn: RawClient, **fields: Any) -> bytes:
    return await conn.call(b"TRACK SET " + msgspec.json.encode(fields))


async def test_unknown_jobs_and_bad_requests(wire: Wire) -> None:
    conn = wire.conn
    assert await conn.call(b"TRACK GET f7APFzrS2RZi9eaA") == (
        b'$60\r\n{"jid":"f7APFzrS2RZi9eaA","state":"unknown","updated_at":""}\r\n'
    )
    plain = job()
    await wire.push(plain)  # not tracked
    assert (await track(conn, plain["jid"]))["state"] == "unknown"
    assert (
        await conn.call(b"TRACK") == b"-ERR TRACK needs a subcommand: GET <jid> or SET {json}\r\n"
    )
    assert await track_set(conn, percent=5) == b"-ERR TRACK SET needs a jid\r\n"
    assert await track_set(conn, jid="x" * 8, percent=101) == (
        b"-ERR percent must be an integer from 0 to 100, not 101\r\n"
    )
    past = format_time(time.time() - 10)
    assert await track_set(conn, jid="x" * 8, reserve_until=past) == (
        f"-ERR reserve_until {past} is in the past\r\n".encode()
    )
    far = format_time(time.time() + 2 * 86_400)
    assert await track_set(conn, jid="x" * 8, reserve_until=far) == (
        f"-ERR reserve_until {far} is more than 24 hours ahead\r\n".encode()
    )
    assert (await conn.call(b"TRACK SET {nope")).startswith(b"-ERR invalid TRACK SET: ")
    assert (await track(conn, "x" * 8))["state"] == "unknown"  # the bad SETs stored nothing


async def test_a_tracked_job_from_push_to_success(wire: Wire) -> None:
    conn = wire.conn
    payload = job(custom={"track": 1})
    await wire.push(payload)
    jid = payload["jid"]
    first = await track(conn, jid)
    assert (first["state"], list(first)) == ("enqueued", ["jid", "state", "updated_at"])
    assert await track_set(conn, jid=jid, percent=10, desc="queued still") == b"+OK\r\n"
    fetched = await wire.fetch()
    assert fetched is not None
    assert await track_set(conn, jid=jid, percent=33) == b"+OK\r\n"
    working = await track(conn, jid)
    assert working == {
        "jid": jid,
        "state": "working",
        "updated_at": working["updated_at"],
        "percent": 33,
        "desc": "queued still",
    }
    await wire.ack(jid)
    done = await track(conn, jid)
    assert (done["state"], done["percent"]) == ("success", 33)


async def test_tracking_through_retries_and_death(wire: Wire, server: RunningServer) -> None:
    conn = wire.conn
    payload = job(retry=1, custom={"track": 1})
    jid = payload["jid"]
    await wire.push(payload)
    await wire.fetch()
    await wire.fail(jid)
    assert (await track(conn, jid))["state"] == "failed"
    await server.manager.act_on_jobs("retry", [jid])
    await wire.fetch()
    assert (await track(conn, jid))["state"] == "working"
    await wire.fail(jid)
    assert (await track(conn, jid))["state"] == "dead"
    # jobs of a batch are tracked without custom.track
    bid = await wire.new(success=job(jobtype="S", queue="callbacks"))
    member = job(custom={"bid": bid})
    await wire.push(member)
    assert (await track(conn, member["jid"]))["state"] == "enqueued"


async def test_reserve_until_keeps_a_job_from_being_reaped(
    wire: Wire, server: RunningServer
) -> None:
    kept, reaped = job(reserve_for=1), job(reserve_for=1)
    await wire.push(kept)
    await wire.push(reaped)
    await wire.fetch()
    await wire.fetch()
    until = format_time(time.time() + 3600)
    assert await track_set(wire.conn, jid=kept["jid"], reserve_until=until) == b"+OK\r\n"
    deadline = time.monotonic() + 10
    while not await server.manager.store.get_set_entries(SortedSet.RETRIES, [reaped["jid"]]):
        assert time.monotonic() < deadline, "the other job was never reaped"
        await asyncio.sleep(0.05)
    reservation = await server.manager.store.get_reservation(kept["jid"])
    assert reservation is not None
    assert reservation.expires_at > time.time() + 3000
    # never shortens: an earlier reserve_until changes nothing
    sooner = format_time(time.time() + 600)
    assert await track_set(wire.conn, jid=kept["jid"], reserve_until=sooner) == b"+OK\r\n"
    again = await server.manager.store.get_reservation(kept["jid"])
    assert again is not None
    assert again.expires_at == reservation.expires_at


async def test_after_waits_for_its_dependencies(wire: Wire, server: RunningServer) -> None:
    first, second = job(custom={"track": 1}), job(custom={"track": 1})
    await wire.push(first)
    await wire.push(second)
    waiting = job(custom={"after": [first["jid"], second["jid"]]})
    assert await wire.push(waiting) == b"+OK\r\n"
    assert (await track(wire.conn, waiting["jid"]))["state"] == "enqueued"
    found = await server.manager.store.get_waiting([waiting["jid"]])
    assert found[waiting["jid"]].remaining == 2
    assert (await wire.run())["jid"] == first["jid"]
    assert (await wire.run())["jid"] == second["jid"]
    released = await wire.fetch()
    assert released is not None
    assert released["jid"] == waiting["jid"]
    assert released["custom"] == {"after": [first["jid"], second["jid"]]}
    assert await server.manager.store.count_waiting() == 0


async def test_a_dead_dependency_kills_the_jobs_waiting_for_it(
    wire: Wire, server: RunningServer
) -> None:
    doomed = job(retry=-1, custom={"track": 1})
    await wire.push(doomed)
    child = job(custom={"after": [doomed["jid"]]})
    grandchild = job(custom={"after": [child["jid"]]})
    await wire.push(child)
    await wire.push(grandchild)
    await wire.fetch()
    await wire.fail(doomed["jid"])
    dead = await server.manager.store.get_set_entries(
        SortedSet.DEAD, [child["jid"], grandchild["jid"]]
    )
    assert len(dead) == 2
    for entry in dead:
        failure = msgspec.json.decode(entry.payload)["failure"]
        assert failure["errtype"] == "DependencyDied"
        assert failure["message"] == f"job {doomed['jid']}, which this job waits for, died"
    late = job(custom={"after": [doomed["jid"]]})
    assert await wire.push(late) == b"+OK\r\n"  # goes straight to the dead set
    assert await server.manager.store.get_set_entries(SortedSet.DEAD, [late["jid"]])
    assert await wire.fetch() is None


async def test_after_refuses_what_it_cannot_wait_for(wire: Wire) -> None:
    nobody = uuid.uuid4().hex
    assert await wire.push(job(custom={"after": [nobody]})) == (
        f"-ERR after: no tracked job {nobody}\r\n".encode()
    )
    assert await wire.push(job(custom={"after": "x"})) == (
        b"-ERR custom.after must be a list of jids (strings)\r\n"
    )
    itself = job()
    itself["custom"] = {"after": [itself["jid"]]}
    assert (
        await wire.push(itself) == f"-ERR job {itself['jid']} cannot wait for itself\r\n".encode()
    )
    assert await wire.fetch() is None
