"""Redis: the short ways that save idle and busy workers a script run or a round trip.

A PUSH for a queue a FETCH waits on sends that FETCH's reserve right behind its
enqueue (manager/soon.py ``_reserve_behind``), so the FETCH is answered from the reserve's
reply, one round trip sooner than after a wake-up. These tests pin down that it happens, and
that a FETCH whose wait runs out, or whose connection goes away, while that reserve is on its
way neither gets a second answer nor keeps a job it never got."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.manager import Manager
from conveyor.manager.later import Later
from conveyor.store import open_store
from tests.support.manager import FAST, decode, encode, job
from tests.support.server import MakeServer, RawConnect


@pytest.fixture
async def manager(redis_url: str) -> AsyncIterator[Manager]:
    manager = Manager(open_store(redis_url), FAST)
    await manager.start()
    # Redis learns each script at its first EVAL (after a NOSCRIPT): until then an enqueue
    # goes on in a task and may run after the reserve sent behind it, which then finds
    # nothing and wakes the FETCH, as before. One job through first.
    await manager.push(encode(job()))
    [first] = await manager.fetch_many(["default"], "warm-up", 1, 0)
    await manager.ack(decode(first)["jid"])
    yield manager
    await manager.stop()


class Fetch:
    """A FETCH waiting in the manager, answered by a reserve sent behind a push (``deliver``)
    or by its own reserve (the returned jobs). ``takes``: whether its connection still takes
    a reply (False: one the server is closing)."""

    def __init__(self, manager: Manager, wait: float = 2.0, takes: bool = True) -> None:
        self.takes = takes
        self.delivered: list[bytes] = []
        self.replies = 0
        self.task = asyncio.create_task(
            manager.fetch_many(["default"], "wid-1", 1, wait, deliver=self.deliver)
        )

    def deliver(self, payloads: list[bytes]) -> bool:
        if not self.takes:
            return False
        self.replies += 1
        self.delivered.extend(payloads)
        return True

    async def jids(self) -> tuple[list[str], list[str]]:
        """(jids delivered, jids the FETCH returned itself)"""
        returned = await self.task
        if returned:
            self.replies += 1
        return [decode(p)["jid"] for p in self.delivered], [decode(p)["jid"] for p in returned]


async def waiting(manager: Manager) -> None:
    for _ in range(200):
        if manager.waiters.waiting():
            return
        await asyncio.sleep(0.005)
    pytest.fail("the FETCH never started waiting")


async def pushed(manager: Manager, payload: bytes) -> None:
    """PUSH the way the server does for a command on an idle connection."""
    later = manager.push_now(payload)
    assert isinstance(later, Later), "a plain PUSH on Redis is answered without a task"
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settled(_value: object, error: BaseException | None) -> bool:
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
        return True

    later.when_done(settled)
    await done


async def test_the_waiting_fetch_is_answered_by_the_reserve_sent_behind_the_push(
    manager: Manager,
) -> None:
    fetch = Fetch(manager)
    await waiting(manager)
    sent = job()
    await pushed(manager, encode(sent))
    # Without the reserve behind the push, the enqueue's reply wakes the FETCH, whose own
    # reserve returns the job: ([], [jid]).
    assert await fetch.jids() == ([sent["jid"]], [])
    [reservation] = (await manager.busy(0, 10)).items
    assert (reservation.jid, reservation.wid) == (sent["jid"], "wid-1")
    assert await manager.store.queue_sizes() == {"default": 0}
    await manager.ack(sent["jid"])
    assert (await manager.busy(0, 0)).total == 0


async def test_a_fetch_whose_connection_is_closing_gets_nothing_and_the_job_goes_back(
    manager: Manager,
) -> None:
    closing = Fetch(manager, wait=0.3, takes=False)
    await waiting(manager)
    sent = job()
    await pushed(manager, encode(sent))
    # The reserve behind the push took the job, the FETCH's connection would not take it:
    # it goes back to its queue (release.lua), and the FETCH, woken, finds it there.
    delivered, returned = await closing.jids()
    assert delivered == []
    assert returned in ([sent["jid"]], [])
    if not returned:  # given back after the FETCH looked: it waits in the queue
        deadline = time.monotonic() + 5
        while await manager.store.queue_sizes() != {"default": 1}:
            assert time.monotonic() < deadline, "the job reserved for nobody never came back"
            await asyncio.sleep(0.01)
        assert [decode(p)["jid"] for p in await manager.fetch_many(["default"], "w2", 5, 0)] == [
            sent["jid"]
        ]


async def test_waits_running_out_around_the_push_answer_once_and_lose_no_job(
    manager: Manager,
) -> None:
    """FETCHes whose wait ends at about the moment the reserve behind a push is on its way,
    some on connections that take no reply: every FETCH is answered at most once and every
    job is run once: by the FETCH it was reserved for, or, given back, by a later one."""
    rng = random.Random(7)
    sent: list[str] = []
    got: list[str] = []
    for _ in range(120):
        fetch = Fetch(manager, wait=rng.uniform(0.0, 0.006), takes=rng.random() < 0.8)
        await asyncio.sleep(rng.uniform(0.0, 0.006))
        payload = job()
        sent.append(payload["jid"])
        await pushed(manager, encode(payload))
        delivered, returned = await fetch.jids()
        assert fetch.replies <= 1, "a FETCH answered twice"
        got += delivered + returned
    for jid in got:  # run: ACK them
        await manager.ack(jid)
    # The rest were given back or never reserved: they are all in the queue, once each.
    deadline = time.monotonic() + 5
    while (await manager.busy(0, 0)).total or await manager.store.queue_sizes() != {
        "default": len(sent) - len(got)
    }:
        assert time.monotonic() < deadline, "a job stayed reserved for a FETCH that never got it"
        await asyncio.sleep(0.02)
    rest = await manager.fetch_many(["default"], "w2", 1000, 0)
    assert sorted(got + [decode(p)["jid"] for p in rest]) == sorted(sent)


async def test_a_fetch_gone_while_its_reserve_is_on_its_way_is_not_answered(
    manager: Manager,
) -> None:
    """The FETCH's task ends (its client went away) after the PUSH sent the reserve behind
    its enqueue and before Redis answered: nothing is delivered to it, and the job it would
    have got goes back to its queue instead of staying reserved for nobody."""
    fetch = Fetch(manager)
    await waiting(manager)
    sent = job()
    later = manager.push_now(encode(sent))
    assert isinstance(later, Later)
    assert manager.waiters.newest("default") is None, "claimed by the reserve behind the push"
    fetch.task.cancel()  # the reserve is on its way: Redis has not answered yet
    with pytest.raises(asyncio.CancelledError):
        await fetch.task
    deadline = time.monotonic() + 5
    while await manager.store.queue_sizes() != {"default": 1}:
        assert time.monotonic() < deadline, "the job reserved for nobody never came back"
        await asyncio.sleep(0.01)
    assert fetch.delivered == []
    assert (await manager.busy(0, 0)).total == 0
    [again] = await manager.fetch_many(["default"], "w2", 5, 0)
    assert decode(again)["jid"] == sent["jid"]


async def test_a_plain_jobs_ack_is_a_plain_ack_and_a_marked_ones_is_not(
    make_server: MakeServer, raw_client: RawConnect, redis_url: str
) -> None:
    """Redis with the default features (unique, expiring, batches watch ACKs): a job this
    server saw at FETCH carry none of their marks, in a queue without a throttle, is ACKed by
    ``ack.lua`` (a count back), alone or in an ACKB; a unique job's ACK still ends through
    ``endings_end`` and releases its lock."""
    server = await make_server(redis_url)
    store: Any = server.manager.store
    ended: list[tuple[str, ...]] = []
    end_call = store._end_call

    def spied(mode: str, jids: Any, *args: Any, **kwargs: Any) -> Any:
        ended.append(tuple(jids))
        return end_call(mode, jids, *args, **kwargs)

    store._end_call = spied  # every run of endings_end.lua is built here
    conn = await raw_client(server.port)
    plain = [job() for _ in range(3)]
    unique = job(custom={"unique_for": 60})
    for payload in [*plain, unique]:
        assert await conn.call(b"PUSH " + encode(payload)) == b"+OK\r\n"
    fetched = []
    for _ in range(4):
        reply = await conn.call(b"FETCH default")
        fetched.append(decode(reply.split(b"\r\n")[1])["jid"])
    assert fetched == [p["jid"] for p in [*plain, unique]]
    assert await conn.call(b'ACK {"jid":"' + plain[0]["jid"].encode() + b'"}') == b"+OK\r\n"
    acks = json.dumps([plain[1]["jid"], plain[2]["jid"]]).encode()
    assert await conn.call(b"ACKB " + acks) == b"+OK\r\n"
    assert ended == [], "plain jobs: ack.lua, not endings_end"
    assert await conn.call(b'ACK {"jid":"' + unique["jid"].encode() + b'"}') == b"+OK\r\n"
    assert ended == [(unique["jid"],)]
    assert (await server.manager.busy(0, 0)).total == 0
    assert (await server.manager.store.counters()).processed == 4
    # the unique lock went with the ACK: the same job may be pushed again at once
    again = {**unique, "jid": "another-jid-00001"}
    assert await conn.call(b"PUSH " + encode(again)) == b"+OK\r\n"
