"""Hand-off: a PUSH gives its job straight to a FETCH waiting for the queue.

The job is reserved without being queued and the waiting FETCH is answered in the step that
read the PUSH (docs/design/hand-off.md). These tests pin down what must not change with it:
queue order, FETCHB counts, paused queues, fetch middleware, bad input, and the order of
replies on both connections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from conveyor.manager import Manager
from conveyor.manager.middleware import FetchContext, Middleware, Next
from conveyor.store import open_store
from tests.support.manager import FAST, decode, encode, job
from tests.support.server import MakeServer, RawConnect, RunningServer


class Fetch:
    """A FETCH waiting in the manager, answered either way: handed off, or returned."""

    def __init__(self, manager: Manager, queues: list[str], count: int = 1, wait: float = 2):
        self.delivered: list[list[bytes]] = []
        self.task = asyncio.create_task(
            manager.fetch_many(queues, "wid-1", count, wait, deliver=self.deliver)
        )

    def deliver(self, payloads: list[bytes]) -> bool:
        self.delivered.append(payloads)
        return True

    async def jids(self) -> tuple[list[str], list[str]]:
        """(jids handed off, jids returned by the FETCH itself)"""
        returned = await self.task
        handed = [decode(p)["jid"] for batch in self.delivered for p in batch]
        return handed, [decode(p)["jid"] for p in returned]


async def waiting(manager: Manager, count: int = 1) -> None:
    for _ in range(100):
        if manager.waiters.waiting() >= count:
            return
        await asyncio.sleep(0.005)
    pytest.fail("the FETCH never started waiting")


async def test_a_push_hands_its_job_to_the_waiting_fetch(manager: Manager) -> None:
    fetch = Fetch(manager, ["other", "default"])
    await waiting(manager)
    pushed = job()
    await manager.push(encode(pushed))
    assert fetch.delivered, "answered in the PUSH's own step, before the PUSH returned"
    assert await fetch.jids() == ([pushed["jid"]], [])
    # reserved for the waiting worker, never queued; the queue is known as after any push
    [reservation] = (await manager.busy(0, 10)).items
    assert (reservation.jid, reservation.wid, reservation.queue) == (
        pushed["jid"],
        "wid-1",
        "default",
    )
    assert await manager.store.queue_sizes() == {"default": 0}
    assert decode(reservation.payload)["enqueued_at"].endswith("Z")


async def test_push_now_answers_the_fetch_before_the_commit(manager: Manager) -> None:
    fetch = Fetch(manager, ["default"])
    await waiting(manager)
    pushed = job()
    rest = manager.push_now(encode(pushed))
    assert rest is not None
    try:
        assert [decode(p)["jid"] for p in fetch.delivered[0]] == [pushed["jid"]]
    finally:
        await rest
    assert await fetch.jids() == ([pushed["jid"]], [])


async def test_fetchb_takes_its_count_and_the_rest_stays_queued_in_order(
    manager: Manager,
) -> None:
    fetch = Fetch(manager, ["default"], count=3)
    await waiting(manager)
    jobs = [job("J", n) for n in range(5)]
    assert await manager.push_bulk(encode(jobs)) == {}
    handed, returned = await fetch.jids()
    assert (handed, returned) == ([j["jid"] for j in jobs[:3]], [])
    rest = await manager.fetch_many(["default"], "wid-2", 10, wait=0)
    assert [decode(p)["jid"] for p in rest] == [j["jid"] for j in jobs[3:]]


async def test_two_waiters_newest_first_then_the_queue(manager: Manager) -> None:
    older = Fetch(manager, ["default"])
    await waiting(manager, 1)
    newer = Fetch(manager, ["default"])
    await waiting(manager, 2)
    jobs = [job("J", n) for n in range(3)]
    await manager.push_bulk(encode(jobs))
    assert await newer.jids() == ([jobs[0]["jid"]], [])
    assert await older.jids() == ([jobs[1]["jid"]], [])
    assert await manager.store.queue_sizes() == {"default": 1}


async def test_a_fetch_handed_a_job_as_its_wait_runs_out_takes_nothing_more(
    manager: Manager,
) -> None:
    """The hand-off resolves the FETCH's future and, in the same loop iteration, its timeout
    fires: the FETCH must return the hand-off, not reserve another job on top."""
    loop = asyncio.get_running_loop()
    fetch = Fetch(manager, ["default"], wait=0.05)
    await waiting(manager)  # it waits now, its timeout due in about 50 ms
    first, second = job(), job()
    rests: list[Any] = []

    def hand_off_then_queue() -> None:
        rests.append(manager.push_now(encode(first)))  # to the waiting FETCH
        rests.append(manager.push_now(encode(second)))  # to the queue: that FETCH is served

    loop.call_at(loop.time() + 0.01, hand_off_then_queue)
    time.sleep(0.1)  # noqa: ASYNC251 - blocks the loop: both timers are due when it next looks
    handed, returned = await fetch.jids()
    for rest in rests:
        await rest
    assert (handed, returned) == ([first["jid"]], [])
    assert await manager.store.queue_sizes() == {"default": 1}


async def test_a_paused_queue_is_not_handed_off(manager: Manager) -> None:
    await manager.push(encode(job(queue="held")))
    await manager.fetch(["held"], wait=0)
    await manager.pause_queues(["held"])
    fetch = Fetch(manager, ["held"], wait=0.2)
    await waiting(manager)
    await manager.push(encode(job(queue="held")))
    assert await fetch.jids() == ([], [])
    assert await manager.store.queue_sizes() == {"held": 1}


async def test_bad_jobs_are_refused_at_once_and_change_nothing(manager: Manager) -> None:
    fetch = Fetch(manager, ["default"], wait=0.2)
    await waiting(manager)
    with pytest.raises(Exception, match="jobs must have a jobtype parameter"):
        manager.push_now(encode({**job(), "jobtype": ""}))
    assert await fetch.jids() == ([], [])
    assert await manager.store.queue_sizes() == {}
    assert (await manager.busy(0, 10)).items == []


async def test_scheduled_jobs_take_the_long_way(manager: Manager) -> None:
    assert manager.push_now(encode(job(at="2099-01-01T00:00:00Z"))) is None
    assert await manager.store.queue_sizes() == {}


class Seen(Middleware):
    def __init__(self) -> None:
        self.jids: list[str] = []

    async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
        self.jids.append(ctx.job.jid)
        await call_next()


@pytest.mark.parametrize("storage", ["memory://", "sqlite"])
async def test_fetch_middleware_sees_every_job_so_nothing_is_handed_off(
    storage: str, tmp_path: Any
) -> None:
    seen = Seen()
    url = f"sqlite:///{tmp_path}/m.db" if storage == "sqlite" else storage
    manager = Manager(open_store(url), FAST, middleware=[seen])
    await manager.start()
    try:
        fetch = Fetch(manager, ["default"])
        await waiting(manager)
        pushed = job()
        await manager.push(encode(pushed))
        assert await fetch.jids() == ([], [pushed["jid"]])
        assert seen.jids == [pushed["jid"]]
    finally:
        await manager.stop()


async def test_a_store_that_is_not_in_process_keeps_the_wake_up_path(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Redis does: its writes wait for I/O, so the flag turns both fast paths off."""
    monkeypatch.setattr(type(manager.store), "in_process", False)
    slow = Manager(manager.store, FAST)
    pushed = job()
    assert slow.push_now(encode(pushed)) is None
    fetch = Fetch(slow, ["default"])
    await waiting(slow)
    await slow.push(encode(pushed))
    assert await fetch.jids() == ([], [pushed["jid"]])


# -- over the wire ------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory://", "sqlite"])
async def test_a_waiting_fetchb_is_answered_once_and_its_connection_goes_on(
    storage: str, make_server: MakeServer, raw_client: RawConnect, tmp_path: Any
) -> None:
    url = f"sqlite:///{tmp_path}/s.db" if storage == "sqlite" else storage
    running = await make_server(url)
    worker = await raw_client(running.port, hello=b'{"v":2,"wid":"w-1"}')
    await worker.send(b"FETCHB 5 handed")
    await waiting(running.manager)
    producer = await raw_client(running.port)
    pushed = b'{"jid":"handed-0001","jobtype":"T","args":[1],"queue":"handed"}'
    assert await producer.call(b"PUSH " + pushed) == b"+OK\r\n"
    reply = await worker.reply()
    [fetched] = msgspec.json.decode(reply.split(b"\r\n", 1)[1].rstrip(b"\r\n"))
    assert (fetched["jid"], fetched["args"]) == ("handed-0001", [1])
    # exactly one reply: the next command's answer is the next thing on the wire
    assert await worker.call(b'ACK {"jid":"handed-0001"}') == b"+OK\r\n"
    assert (await running.manager.store.counters()).processed == 1


async def test_pipelined_pushes_are_answered_in_order(
    server: RunningServer, raw_client: RawConnect
) -> None:
    worker = await raw_client(server.port)
    await worker.send(b"FETCH order")
    await waiting(server.manager)
    producer = await raw_client(server.port)
    producer.writer.write(
        b'PUSH {"jid":"x","jobtype":"T","args":[]}\r\n'
        b'PUSH {"jid":"order-0001","jobtype":"T","args":[],"queue":"order"}\r\n'
        b"PUSH not json\r\n"
        b'PUSH {"jid":"order-0002","jobtype":"T","args":[],"queue":"order"}\r\n'
    )
    assert (await producer.reply()).startswith(b"-ERR jobs must have a reasonable jid")
    assert await producer.reply() == b"+OK\r\n"
    assert (await producer.reply()).startswith(b"-ERR invalid JSON")
    assert await producer.reply() == b"+OK\r\n"
    assert b'"jid":"order-0001"' in await worker.reply()
    assert await server.manager.store.queue_sizes() == {"order": 1}


async def test_a_push_whose_client_leaves_at_once_is_still_stored(
    server: RunningServer, raw_client: RawConnect
) -> None:
    producer = await raw_client(server.port)
    producer.writer.write(b'PUSH {"jid":"left-0001","jobtype":"T","args":[],"queue":"left"}\r\n')
    await producer.close()
    for _ in range(100):
        if await server.manager.store.queue_sizes() == {"left": 1}:
            break
        await asyncio.sleep(0.01)
    assert await server.manager.store.queue_sizes() == {"left": 1}


async def test_a_fetch_whose_connection_the_server_is_closing_is_not_handed_jobs(
    server: RunningServer, raw_client: RawConnect
) -> None:
    """The reaper closes a silent worker's connections; until the loss reaches its waiting
    FETCH, a PUSH must not reserve a job for it (nobody would ever get that job)."""
    worker = await raw_client(server.port, hello=b'{"v":2,"wid":"silent-1"}')
    await worker.send(b"FETCHB 5 closing")
    await waiting(server.manager)
    [conn] = [c for c in server.server.connections if c.client.wid == "silent-1"]
    conn.close()  # as the reaper does; connection_lost comes later
    await server.manager.push(encode(job(queue="closing")))
    assert await server.manager.store.queue_sizes() == {"closing": 1}
    assert (await server.manager.busy(0, 10)).items == []
    assert await worker.closed_by_server()
