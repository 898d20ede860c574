"""Batches and tracking on the commands answered without a task (``manager/soon.py``).

Each command here is sent alone on an idle connection, so PUSH, FETCH and ACK try the short
way first (``push_now``, ``fetch_now``, ``ack_now``) on every store. The ACK of a job that
carries marks (a batch job, a callback, a tracked job, one another job waits for) must still
end them in the ACK's own step and fire what that sets off: ``ack_now`` sends it the long way
(None) unless the job was noted at FETCH as carrying none. A plain job keeps the short way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conveyor.manager.core import Manager
from conveyor.manager.later import Later
from tests.support.server import MakeServer, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url
from tests.test_feature_batches import CALLBACKS, HELLO, Wire, bulk_json, callbacks, job


@pytest.fixture(params=STORE_BACKENDS)
async def server(
    request: pytest.FixtureRequest, tmp_path: Path, make_server: MakeServer
) -> RunningServer:
    return await make_server(storage_url=store_url(request.param, tmp_path, request))


@pytest.fixture
async def wire(server: RunningServer, raw_client: RawConnect) -> Wire:
    return Wire(await raw_client(server.port, hello=HELLO))


async def _reserved(manager: Manager) -> set[str]:
    return {r.jid for r in (await manager.store.list_reservations(0, 100)).items}


async def _track_state(wire: Wire, jid: str) -> str:
    state = bulk_json(await wire.conn.call(b"TRACK GET " + jid.encode()))["state"]
    assert isinstance(state, str)
    return state


async def test_a_batch_jobs_ack_alone_ends_its_mark_and_fires_the_callbacks(
    wire: Wire, server: RunningServer
) -> None:
    bid = await wire.new(**callbacks(complete="Finished", success="Succeeded"))
    payload = job(custom={"bid": bid})
    assert await wire.push(payload) == b"+OK\r\n"
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    assert await wire.states(bid) == (1, 1, 0, "", "")
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == payload["jid"]
    await wire.ack(payload["jid"])
    assert payload["jid"] not in await _reserved(server.manager)
    assert await wire.states(bid) == (1, 0, 0, "1", "")
    complete = await wire.fetch(CALLBACKS)
    assert complete is not None
    assert (complete["jobtype"], complete["custom"]) == (
        "Finished",
        {"_bid": bid, "_cb": "complete"},
    )
    # the complete callback's own ACK, alone too, moves the batch on to its success callback
    await wire.ack(complete["jid"])
    assert await wire.states(bid) == (1, 0, 0, "2", "1")
    success = await wire.fetch(CALLBACKS)
    assert success is not None
    assert (success["jobtype"], success["custom"]["_cb"]) == ("Succeeded", "success")
    await wire.ack(success["jid"])
    assert await wire.states(bid) == (1, 0, 0, "2", "2")
    assert await _reserved(server.manager) == set()


async def test_a_tracked_jobs_ack_alone_ends_its_mark_and_releases_its_waiter(
    wire: Wire, server: RunningServer
) -> None:
    tracked = job(custom={"track": 1})
    assert await wire.push(tracked) == b"+OK\r\n"
    waiting = job(queue="later", custom={"after": [tracked["jid"]]})
    assert await wire.push(waiting) == b"+OK\r\n"
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == tracked["jid"]
    assert await _track_state(wire, tracked["jid"]) == "working"
    await wire.ack(tracked["jid"])
    assert await _track_state(wire, tracked["jid"]) == "success"
    assert tracked["jid"] not in await _reserved(server.manager)
    released = await wire.fetch("later")
    assert released is not None
    assert released["jid"] == waiting["jid"]
    assert await server.manager.store.count_waiting() == 0
    # the released job waited on a mark of its own (after): its ACK alone ends that too
    await wire.ack(waiting["jid"])
    assert await _track_state(wire, waiting["jid"]) == "success"


async def _settled(done: int | Later[int] | None) -> int | None:
    if not isinstance(done, Later):
        return done
    result: list[int | None] = []
    failed: list[BaseException] = []
    event = asyncio.Event()

    def back(value: int | None, error: BaseException | None) -> None:
        result.append(value)
        if error is not None:
            failed.append(error)
        event.set()

    done.when_done(back)
    await asyncio.wait_for(event.wait(), 5)
    assert not failed, failed
    return result[0]


async def test_a_plain_job_keeps_the_short_way_and_a_marked_one_takes_the_long_way(
    wire: Wire, server: RunningServer
) -> None:
    """Routing, on the manager: a job noted at FETCH as plain is ACKed by ``ack_now``; one
    with marks is left alone (None, nothing done) for the long way's one step."""
    manager = server.manager
    plain, marked = job(), job(custom={"track": 1})
    for payload in (plain, marked):
        assert await wire.push(payload) == b"+OK\r\n"
        fetched = await wire.fetch()
        assert fetched is not None
        assert fetched["jid"] == payload["jid"]
    assert manager.ack_now(marked["jid"]) is None
    assert marked["jid"] in await _reserved(manager)
    assert await _track_state(wire, marked["jid"]) == "working"
    assert await _settled(manager.ack_now(plain["jid"])) == 1
    assert await _reserved(manager) == {marked["jid"]}
    await wire.ack(marked["jid"])
    assert await _track_state(wire, marked["jid"]) == "success"


async def test_a_batch_job_fetched_from_another_server_is_acked_with_its_marks(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Redis, two servers: a jid this server never reserved may carry marks (it was not
    noted at FETCH), so its ACK alone takes the long way here too."""
    first, second = await make_server(redis_url), await make_server(redis_url)
    one = Wire(await raw_client(first.port, hello=HELLO))
    other = Wire(await raw_client(second.port, hello=HELLO.replace(b"w1", b"w2")))
    bid = await one.new(**callbacks(success="Succeeded"))
    payload = job(custom={"bid": bid})
    assert await one.push(payload) == b"+OK\r\n"
    assert await one.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    fetched: dict[str, Any] | None = await one.fetch()
    assert fetched is not None
    assert fetched["jid"] == payload["jid"]
    await other.ack(payload["jid"])
    assert await other.states(bid) == (1, 0, 0, "", "1")
    success = await one.fetch(CALLBACKS)
    assert success is not None
    assert success["jobtype"] == "Succeeded"
