"""Batches and tracking on the commands answered without a task (``manager/soon.py``).

Each command here is sent alone on an idle connection, so PUSH, FETCH and ACK try the short
way first (``push_now``, ``fetch_now``, ``ack_now``) on every store. The ACK of a job that
carries marks (a batch job, a callback, a tracked job, one another job waits for) must still
end them in the ACK's own step and fire what that sets off: ``ack_now`` does it in that step
too (``ack_returning_now`` in process, ``ack_ending_soon`` on Redis, the job's batch declared
when it was noted at FETCH), the features' ``acked`` in a task only when it has something to
do. A plain job keeps the plainest way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
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


async def test_a_marked_jobs_ack_takes_the_short_way_with_its_marks(
    wire: Wire, server: RunningServer
) -> None:
    """Routing, on the manager: the ACK of a marked job is answered by ``ack_now`` too, and
    that step ends its mark (its tracking says success before any other command runs)."""
    manager = server.manager
    plain, marked = job(), job(custom={"track": 1})
    for payload in (plain, marked):
        assert await wire.push(payload) == b"+OK\r\n"
        fetched = await wire.fetch()
        assert fetched is not None
        assert fetched["jid"] == payload["jid"]
    assert await _track_state(wire, marked["jid"]) == "working"
    assert await _settled(manager.ack_now(marked["jid"])) == 1
    assert await _reserved(manager) == {plain["jid"]}
    assert await _track_state(wire, marked["jid"]) == "success"
    assert await _settled(manager.ack_now(plain["jid"])) == 1
    assert await _reserved(manager) == set()


async def test_the_short_ack_of_a_last_batch_job_counts_it_and_calls_back(
    wire: Wire, server: RunningServer
) -> None:
    """``ack_now`` of batch jobs, the last one among them: each is counted in its batch in
    that step, and the last one's callback is scheduled and promoted before the ACK is
    answered (a short way that forgot the marks would leave the batch pending)."""
    manager = server.manager
    bid = await wire.new(**callbacks(success="Succeeded"))
    jobs = [job(custom={"bid": bid}) for _ in range(3)]
    for payload in jobs:
        assert await wire.push(payload) == b"+OK\r\n"
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    for n, payload in enumerate(jobs):
        fetched = await wire.fetch()
        assert fetched is not None
        assert fetched["jid"] == payload["jid"]
        done = manager.ack_now(payload["jid"])
        assert done is not None  # the short way, never the long one
        assert await _settled(done) == 1
        assert (await wire.states(bid))[1] == 2 - n  # pending, counted in that step
    assert await wire.states(bid) == (3, 0, 0, "", "1")
    # the callback was promoted by the last ACK, before its reply: in its queue now
    assert (await manager.store.queue_sizes()).get(CALLBACKS) == 1
    success = await wire.fetch(CALLBACKS)
    assert success is not None
    assert success["jobtype"] == "Succeeded"
    assert await _settled(manager.ack_now(success["jid"])) == 1
    assert await wire.states(bid) == (3, 0, 0, "", "2")


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


async def test_a_batch_jobs_ack_on_redis_is_one_script_run(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Redis: a batch job's batch is noted at its FETCH and declared in its ACK's script, so
    the ACK (alone, short way; or in an ACKB, long way) is one run of endings_end.lua, not
    two. A wrong note only costs the second run: the job is still counted once."""
    server = await make_server(redis_url)
    wire = Wire(await raw_client(server.port, hello=HELLO))
    store: Any = server.manager.store
    runs: list[tuple[str, ...]] = []
    end_call = store._end_call

    def counted(mode: str, jids: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(tuple(jids))
        return end_call(mode, jids, *args, **kwargs)

    store._end_call = counted  # a spy on the real store: every run of the script is built here
    bid = await wire.new(**callbacks(success="Succeeded"))
    jobs = [job(custom={"bid": bid}) for _ in range(4)]
    for payload in jobs:
        assert await wire.push(payload) == b"+OK\r\n"
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    first, second, third, fourth = (p["jid"] for p in jobs)
    for jid in (first, second, third, fourth):
        fetched = await wire.fetch()
        assert fetched is not None
        assert fetched["jid"] == jid
    runs.clear()
    await wire.ack(first)  # alone: the short way
    assert runs == [(first,)]
    runs.clear()
    reply = await wire.conn.call(b"ACKB " + f'["{second}"]'.encode())
    assert reply == b"+OK\r\n"
    assert runs == [(second,)]
    # a note lost (as for a job fetched through another server): two runs, counted once
    server.manager._batch_of.pop(third, None)
    runs.clear()
    await wire.ack(third)
    assert runs == [(third,), (third,)]
    assert await wire.states(bid) == (4, 1, 0, "", "")
    runs.clear()
    await wire.ack(fourth)
    assert runs == [(fourth,)]
    assert await wire.states(bid) == (4, 0, 0, "", "1")
    success = await wire.fetch(CALLBACKS)
    assert success is not None
    assert success["jobtype"] == "Succeeded"


async def _settled_push(done: object) -> BaseException | None:
    """What a PUSH answered later settled with: None for ``+OK``, or the error."""
    assert isinstance(done, Later), done
    failed: list[BaseException | None] = []
    event = asyncio.Event()

    def back(_value: None, error: BaseException | None) -> None:
        failed.append(error)
        event.set()

    done.when_done(back)
    await asyncio.wait_for(event.wait(), 5)
    return failed[0]


async def test_a_batch_jobs_push_on_redis_takes_the_short_way(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Redis: a batch (or tracked) job's PUSH is marked and enqueued from the replies' steps
    (``push_now`` answers with a ``Later``, no task); what the mark step does not take (an
    unknown batch, a job that waits) is said by the long way, as before."""
    server = await make_server(redis_url)
    manager = server.manager
    wire = Wire(await raw_client(server.port, hello=HELLO))
    bid = await wire.new(**callbacks(success="Succeeded"))
    batch_job, tracked = job(custom={"bid": bid}), job(custom={"track": 1})
    for payload in (batch_job, tracked):
        assert await _settled_push(manager.push_now(msgspec.json.encode(payload))) is None
    assert await wire.states(bid) == (1, 1, 0, "", "")
    assert await _track_state(wire, tracked["jid"]) == "enqueued"
    assert (await manager.store.queue_sizes()).get("work") == 2
    unknown = job(custom={"bid": "b-nosuchbatch0000"})
    error = await _settled_push(manager.push_now(msgspec.json.encode(unknown)))
    assert error is not None
    assert "no such batch b-nosuchbatch0000" in str(error)
    # a job that waits for another is not marked this way at all
    waits = job(custom={"after": [tracked["jid"]]})
    assert manager.push_now(msgspec.json.encode(waits)) is None
    assert await wire.push(waits) == b"+OK\r\n"
    assert await server.manager.store.count_waiting() == 1
    # a committed batch refuses a job: the mark step says so, the long way answers it
    assert await wire.conn.call(b"BATCH COMMIT " + bid.encode()) == b"+OK\r\n"
    late = job(custom={"bid": bid})
    error = await _settled_push(manager.push_now(msgspec.json.encode(late)))
    assert error is not None
    assert "is committed" in str(error)
    for expected in (batch_job, tracked):
        fetched = await wire.fetch()
        assert fetched is not None
        assert fetched["jid"] == expected["jid"]
        await wire.ack(expected["jid"])
    assert await wire.states(bid) == (1, 0, 0, "", "1")
