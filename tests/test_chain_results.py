"""Chains pass results (issue 12): each step of ``conveyor.chain`` gets the previous step's
result first in its args, put there by the server at FETCH from the result records, on every
store. A step whose predecessor returned None gets None; one whose predecessor stored nothing
(results off for it, a worker that sends no result) runs with its own args; a chain goes on
after a server restart between its steps (SQLite file); a failing step stops the chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import conveyor
import conveyor.testing
from conveyor.job import decode_job
from conveyor.manager import Manager
from conveyor.store.base import SetMove, SortedSet
from tests.support.features import FeatureServer
from tests.support.server import MakeServer, RawConnect, RunningServer, SpawnServer
from tests.test_batches_servers import connect
from tests.test_feature_batches import HELLO, Wire, bulk_json, job


class Steps:
    """An app whose jobs record the args they ran with."""

    def __init__(self, url: str) -> None:
        self.app = conveyor.App(url)
        self.ran: list[tuple[str, tuple[Any, ...]]] = []

    def job(self, name: str, returns: Any = None, fail: bool = False) -> conveyor.JobDef[Any, Any]:
        async def handler(*args: Any) -> Any:
            self.ran.append((name, args))
            if fail:
                raise RuntimeError(f"{name} fails")
            return returns(*args) if callable(returns) else returns

        handler.__name__ = name
        return self.app.register(handler, retry=-1)  # a failure: to the dead set at once

    async def drain(self, manager: Manager) -> None:
        """Run the jobs until none is left waiting: a burst worker stops at an empty queue,
        which it may find while its last ACK (which releases the next step) is on the way."""
        for _ in range(20):
            await conveyor.testing.drain(self.app, queues=["default"], concurrency=1)
            if not await manager.store.count_waiting() and not await _queued(manager):
                return
        raise AssertionError("the chain did not finish")


async def _queued(manager: Manager) -> int:
    sizes = await manager.store.queue_sizes()
    scheduled = await manager.store.set_size(SortedSet.SCHEDULED)
    return sum(sizes.values()) + scheduled


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url)


@pytest.fixture
async def steps(server: RunningServer) -> Any:
    made = Steps(server.url)
    yield made
    await made.app.aclose()


async def test_each_step_gets_the_previous_result_first(
    steps: Steps, server: RunningServer
) -> None:
    add = steps.job("add", returns=lambda *xs: sum(xs))
    label = steps.job("label", returns=lambda total, unit: f"{total} {unit}")
    flow = conveyor.chain(add.s(2, 2), add.s(10), add.s(), label.s("kg"))
    jids = await flow.push()
    await steps.drain(server.manager)
    # Celery's partial call: the result goes before the step's own args
    assert steps.ran == [("add", (2, 2)), ("add", (4, 10)), ("add", (14,)), ("label", (14, "kg"))]
    # the steps before the last stored their results for the chain; the last one nothing
    first = await steps.app.job_info(jids[0][0])
    assert first is not None
    assert (first.state, first.result) == ("done", 4)
    assert await steps.app.job_info(jids[-1][0]) is None


async def test_a_predecessor_that_returned_none_passes_none(
    steps: Steps, server: RunningServer
) -> None:
    nothing = steps.job("nothing", returns=None)
    after = steps.job("after", returns="done")
    await conveyor.chain(nothing.s(1), after.s("own")).push()
    await steps.drain(server.manager)
    assert steps.ran == [("nothing", (1,)), ("after", (None, "own"))]


async def test_a_predecessor_without_a_result_leaves_the_own_args(
    steps: Steps, server: RunningServer
) -> None:
    quiet = steps.job("quiet", returns=41)
    after = steps.job("after", returns="done")
    # result_ttl=0 on the step itself: it stores nothing, whatever the chain asks
    await conveyor.chain(quiet.options(result_ttl=0).s(), after.s("own")).push()
    await steps.drain(server.manager)
    assert steps.ran == [("quiet", ()), ("after", ("own",))]


async def test_an_immutable_step_and_a_group_between_steps(
    steps: Steps, server: RunningServer
) -> None:
    double = steps.job("double", returns=lambda x: x * 2)
    total = steps.job("total", returns=lambda xs: sum(xs))
    fixed = steps.job("fixed", returns="fixed")
    start = steps.job("start", returns=5)
    flow = conveyor.chain(
        start.s(), conveyor.group([double.s(), double.s()]), total.s(), fixed.si("mine")
    )
    await flow.push()
    await steps.drain(server.manager)
    assert steps.ran == [
        ("start", ()),
        ("double", (5,)),
        ("double", (5,)),
        ("total", ([10, 10],)),
        ("fixed", ("mine",)),
    ]


async def test_a_group_callback_gets_the_list_of_results(
    steps: Steps, server: RunningServer
) -> None:
    square = steps.job("square", returns=lambda x: x * x)
    report = steps.job("report", returns=None)
    await conveyor.group([square.s(i) for i in (1, 2, 3)]).then(report.s("sq")).push()
    await steps.drain(server.manager)
    assert steps.ran[-1] == ("report", ([1, 4, 9], "sq"))


async def test_a_failing_step_stops_the_chain(steps: Steps, server: RunningServer) -> None:
    first = steps.job("first", returns=1)
    broken = steps.job("broken", fail=True)
    never = steps.job("never", returns=None)
    jids = await conveyor.chain(first.s(), broken.s(), never.s(), never.s()).push()
    await steps.drain(server.manager)
    # the broken step got the result (it ran with it), died, and nothing after it ran
    assert steps.ran == [("first", ()), ("broken", (1,))]
    later = [jids[2][0], jids[3][0]]
    dead = await server.manager.store.get_set_entries(SortedSet.DEAD, [jids[1][0], *later])
    assert {entry.jid for entry in dead} == {jids[1][0], *later}
    for entry in dead:
        if entry.jid in later:
            assert b'"errtype":"DependencyDied"' in entry.payload
        else:  # the dead entry holds the job as pushed: its own args
            assert msgspec.json.decode(entry.payload)["args"] == []
    assert await server.manager.store.count_waiting() == 0


async def test_a_worker_in_another_language_sees_the_args(
    server: RunningServer, raw_client: RawConnect
) -> None:
    """Over the wire: a worker that sends the result gets it passed on; the next step's
    FETCH carries it first in ``args`` (again after a failure, at its retry), and a worker
    that sends no result (a plain Faktory client) leaves the next step its own args."""
    wire = Wire(await raw_client(server.port, hello=HELLO))
    a = job(args=[1], custom={"track": 1, "result_ttl": 60})
    b = job(args=["own"], custom={"after": [a["jid"]], "results_of": [a["jid"]], "track": 1})
    c = job(args=["c"], custom={"after": [b["jid"]], "results_of": [b["jid"]]})
    for pushed in (a, b, c):
        assert await wire.push(pushed) == b"+OK\r\n"
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["args"] == [1]
    sent = {"jid": a["jid"], "result": msgspec.json.encode({"n": 2}).decode()}
    assert await wire.conn.call(b"ACK " + msgspec.json.encode(sent)) == b"+OK\r\n"
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == b["jid"]
    assert fetched["args"] == [{"n": 2}, "own"]
    assert fetched["custom"]["results_of"] == [a["jid"]]
    # a failure: the retry is stored as pushed, and its next FETCH gets the result again
    await wire.fail(b["jid"])
    (entry,) = await server.manager.store.get_set_entries(SortedSet.RETRIES, [b["jid"]])
    assert msgspec.json.decode(entry.payload)["args"] == ["own"]
    retry = SetMove(entry, server.manager.queued(decode_job(entry.payload)))
    assert await server.manager.store.move_to_queue(SortedSet.RETRIES, [retry]) == 1
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["args"] == [{"n": 2}, "own"]
    await wire.ack(b["jid"])  # no result sent: b stores nothing although it asked for none
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == c["jid"]
    assert fetched["args"] == ["c"]


async def test_a_chain_passes_results_across_a_server_restart(
    make_server: MakeServer, raw_client: RawConnect, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'chain.db'}"
    first = await make_server(storage_url=url)
    steps = Steps(first.url)
    inc = steps.job("inc", returns=lambda x, *rest: x + 1)
    jids = await conveyor.chain(inc.s(1), inc.s(), inc.s()).push()
    # the first step runs (a worker sends its result), then the server stops: the second
    # step's input is only in the file
    wire = Wire(await raw_client(first.port, hello=HELLO))
    fetched = await wire.fetch("default")
    assert fetched is not None
    assert fetched["jid"] == jids[0][0]
    sent = {"jid": jids[0][0], "result": "2"}
    assert await wire.conn.call(b"ACK " + msgspec.json.encode(sent)) == b"+OK\r\n"
    await first.stop()
    await steps.app.aclose()
    second = await make_server(storage_url=url)
    steps.app.url = second.url
    await steps.drain(second.manager)
    assert steps.ran == [("inc", (2,)), ("inc", (3,))]
    await steps.app.aclose()


@pytest.mark.slow
async def test_a_chain_passes_results_across_a_kill_9(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    """The server is killed (SIGKILL) right after the first step's ACK: after a restart the
    second step still gets its result (from the file), whether that ACK was committed or the
    first step runs again (its reservation expires) and stores it again."""
    storage = f"sqlite:///{tmp_path / 'chain.db'}"
    env = {"CONVEYOR_MIN_RESERVE_FOR_SECONDS": "1"}
    server = spawn_server(storage=storage, env=env)
    conn = await connect(server.port)
    wire = Wire(conn)
    a = job(args=[1], reserve_for=1, custom={"track": 1, "result_ttl": 600})
    b = job(args=["own"], custom={"after": [a["jid"]], "results_of": [a["jid"]]})
    for pushed in (a, b):
        assert await wire.push(pushed) == b"+OK\r\n"
    fetched = await wire.fetch()
    assert fetched is not None
    assert fetched["jid"] == a["jid"]
    sent = {"jid": a["jid"], "result": "2"}
    assert await conn.call(b"ACK " + msgspec.json.encode(sent)) == b"+OK\r\n"
    server.kill()
    await conn.close()
    server = spawn_server(storage=storage, env=env, port=server.port)
    conn = await connect(server.port)
    wire = Wire(conn)
    for _ in range(20):  # a lost ACK: the first step comes back once its reservation expired
        fetched = await wire.fetch()
        if fetched is not None and fetched["jid"] == a["jid"]:
            assert await conn.call(b"ACK " + msgspec.json.encode(sent)) == b"+OK\r\n"
        elif fetched is not None:
            break
        retries = bulk_json(await conn.call(b'ADMIN job.list {"where":"retries"}'))["jobs"]
        if retries:
            jids = [entry["jid"] for entry in retries]
            await conn.call(b"ADMIN job.retry " + msgspec.json.encode({"jids": jids}))
    assert fetched is not None
    assert fetched["jid"] == b["jid"]
    assert fetched["args"] == [2, "own"]
    server.kill()
    await conn.close()
