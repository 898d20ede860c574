"""Results and completed jobs on the commands answered without a task (``manager/soon.py``).

A single ACK on an idle connection takes the short way on every store; one that carries a
result, or any ACK while a ``[results]`` default is on, must reach the results feature (the
long way), which stores the outcome and keeps the job in the same step as the ACK, and wakes
the ``RESULT`` waiting for it. These tests send exactly one command at a time, so each is
offered to the short way first, and check what the long way does: the record, the completed
entry, the wake-up, the result refused with nothing changed. A short way that forgot the
result would end the reservation and answer ``+OK`` with nothing stored.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.errors import InvalidJob
from conveyor.job import Job
from conveyor.manager import validation
from conveyor.manager.core import Manager
from conveyor.manager.features.registry import build_features
from conveyor.manager.features.results import ResultsFeature
from conveyor.store.base import SortedSet
from tests.support.features import bulk_json
from tests.support.server import MakeServer, RawClient, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

OK = b"+OK\r\n"
HELLO = b'{"v":2,"wid":"w-now","hostname":"h","pid":1}'


@pytest.fixture(params=STORE_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path, request)


async def _fetched(client: RawClient, queue: str, **custom: object) -> str:
    """Push one job (one PUSH), fetch it (one FETCH); its jid."""
    jid = uuid.uuid4().hex
    job: dict[str, Any] = {"jid": jid, "jobtype": "Work", "args": [1], "queue": queue}
    if custom:
        job["custom"] = custom
    assert await client.call(b"PUSH " + msgspec.json.encode(job)) == OK
    assert bulk_json(await client.call(b"FETCH " + queue.encode()))["jid"] == jid
    return jid


def _ack(jid: str, result: object = None) -> bytes:
    fields: dict[str, str] = {"jid": jid}
    if result is not None:
        fields["result"] = json.dumps(result)
    return b"ACK " + msgspec.json.encode(fields)


async def _state(server: RunningServer, jid: str) -> tuple[bool, Any, Any]:
    """(still reserved, the result record's value or None, the completed entry or None)."""
    store = server.manager.store
    reserved = await store.get_reservation(jid) is not None
    records = await store.get_records("results", [jid], 0.0)
    record = json.loads(records[jid].value) if jid in records else None
    entries = await store.get_set_entries(SortedSet.COMPLETED, [jid])
    entry = json.loads(entries[0].payload) if entries else None
    return reserved, record, entry


async def test_an_ack_with_a_result_stores_it_and_wakes_the_waiting_result(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    waiter = await raw_client(server.port)
    jid = await _fetched(worker, "res", result_ttl=60)
    await waiter.send(b'RESULT {"jid":"%s","wait":10}' % jid.encode())
    await asyncio.sleep(0.1)  # the RESULT waits
    assert server.manager.results is not None
    assert server.manager.results.waiting == 1
    assert await worker.call(_ack(jid, {"sum": 3})) == OK
    woken = bulk_json(await waiter.reply(within=5))
    assert (woken["jid"], woken["state"], woken["result"]) == (jid, "succeeded", {"sum": 3})
    reserved, record, entry = await _state(server, jid)
    assert not reserved
    assert record is not None
    assert record["result"] == {"sum": 3}
    assert record["wid"] == "w-now"
    assert entry is None  # it asked for its result only
    assert (await server.manager.store.counters()).processed == 1


async def test_an_ack_of_a_kept_job_moves_it_to_the_completed_set(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    jid = await _fetched(worker, "kept", retain=600)
    assert await worker.call(_ack(jid, [1, "a"])) == OK
    reserved, record, entry = await _state(server, jid)
    assert not reserved
    assert record is None  # no result_ttl: the completed entry holds the result
    assert entry is not None
    assert (entry["jid"], entry["queue"], entry["args"]) == (jid, "kept", [1])
    assert entry["completed"]["result"] == [1, "a"]
    assert entry["completed"]["wid"] == "w-now"
    outcome = bulk_json(await worker.call(b'RESULT {"jid":"%s"}' % jid.encode()))
    assert (outcome["state"], outcome["result"]) == ("succeeded", [1, "a"])
    assert (await server.manager.store.counters()).processed == 1
    assert await server.manager.store.set_size(SortedSet.COMPLETED) == 1


async def test_the_server_defaults_keep_what_a_plain_ack_ended(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    """A Faktory client's ACK carries no result: with a default on, it is still read."""
    server = await make_server(
        url, features={"results": {"ttl_seconds": 60, "retain_seconds": 600}}
    )
    worker = await raw_client(server.port, hello=HELLO)
    jid = await _fetched(worker, "dflt")
    waiter = await raw_client(server.port)
    await waiter.send(b'RESULT {"jid":"%s","wait":10}' % jid.encode())
    await asyncio.sleep(0.1)
    assert await worker.call(_ack(jid)) == OK
    assert bulk_json(await waiter.reply(within=5))["state"] == "succeeded"
    reserved, record, entry = await _state(server, jid)
    assert not reserved
    assert record is not None
    assert record["state"] == "succeeded"
    assert record["result"] is None
    assert entry is not None
    assert entry["custom"] == {"result_ttl": 60, "retain": 600}


async def test_defaults_turned_on_while_running_reach_the_next_plain_ack(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    results = server.manager.results
    assert results is not None
    worker = await raw_client(server.port, hello=HELLO)
    before = await _fetched(worker, "later")
    assert await worker.call(_ack(before)) == OK  # no default yet: nothing kept
    assert await _state(server, before) == (False, None, None)
    server.manager.reconfigure(build_features({"results": {"retain_seconds": 600}}))  # SIGHUP
    assert results.every_ack
    after = await _fetched(worker, "later")
    assert await worker.call(_ack(after)) == OK
    reserved, record, entry = await _state(server, after)
    assert (reserved, record) == (False, None)
    assert entry is not None
    assert entry["custom"] == {"retain": 600}  # stamped at PUSH: a plain job's gate is asked
    assert entry["completed"]["result"] is None


async def test_a_bad_result_is_refused_and_the_job_stays_reserved(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url, features={"results": {"max_bytes": 64}})
    worker = await raw_client(server.port, hello=HELLO)
    jid = await _fetched(worker, "bad", result_ttl=60)
    not_json = b'ACK {"jid":"%s","result":"{nope"}' % jid.encode()
    assert (await worker.call(not_json)).startswith(b"-ERR result of %s is not JSON" % jid.encode())
    too_big = _ack(jid, "x" * 100)
    assert (await worker.call(too_big)).startswith(b"-ERR result of %s is 102 bytes" % jid.encode())
    assert await _state(server, jid) == (True, None, None)
    assert (await server.manager.store.counters()).processed == 0
    assert await worker.call(_ack(jid, 5)) == OK  # the connection goes on; the ACK works now
    reserved, record, entry = await _state(server, jid)
    assert (reserved, record is not None and record["result"], entry) == (False, 5, None)


async def test_a_push_with_a_bad_result_ttl_is_refused_with_nothing_stored(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    client = await raw_client(server.port)
    line = b'PUSH {"jid":"jid-badttl01","jobtype":"W","args":[],"queue":"q","custom":{"%s":-1}}'
    for key in (b"result_ttl", b"retain"):
        reply = await client.call(line % key)
        assert reply.startswith(b"-ERR custom.%s must be a number of seconds" % key), reply
    assert await server.manager.store.queue_sizes() == {}


async def test_a_job_without_custom_asks_no_push_gate_unless_a_default_is_on(
    make_server: MakeServer,
) -> None:
    """The plain PUSH skips every feature's gate with one test (``gates_on_custom``); the
    results feature wants such a job only while it stamps a default into it."""
    server = await make_server()
    manager = server.manager
    plain = validation.decode_pushed(
        b'{"jid":"jid-plain01","jobtype":"W","args":[]}', manager.config
    )
    assert manager._push_on_custom
    assert not manager._admits(plain)
    assert _hooks_for(manager, plain) == []
    manager.reconfigure(build_features({"results": {"ttl_seconds": 30}}))
    assert not manager._push_on_custom
    assert manager._admits(plain)
    assert len(_hooks_for(manager, plain)) == 1  # the results feature's, to stamp result_ttl
    manager.reconfigure(build_features({}))
    assert manager._push_on_custom
    assert not manager._admits(plain)
    assert _hooks_for(manager, plain) == []


async def test_a_job_asking_for_its_result_skips_the_push_chain(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose ``custom`` holds only the results feature's keys is wanted by its gate
    alone (``_push_sole``): a valid ``result_ttl`` is wanted by none, and no segment's hooks
    are looked at (``_chosen``); an invalid one still runs the chain, which refuses it."""
    server = await make_server()
    manager = server.manager
    chosen: list[str] = []
    original = Manager._chosen

    def counted(self: Manager, job: Job, segment: Any) -> list[Any]:
        chosen.append(job.jid)
        return original(self, job, segment)

    monkeypatch.setattr(Manager, "_chosen", counted)
    asking = b'{"jid":"jid-asking01","jobtype":"W","args":[],"custom":{"result_ttl":60}}'
    job = validation.decode_pushed(asking, manager.config)
    assert manager._admit_now(job) == (False, None)
    assert not manager._admits(job)
    bad_line = asking.replace(b"60", b"-1").replace(b"asking01", b"asking02")
    bad = validation.decode_pushed(bad_line, manager.config)
    assert manager._admits(bad)
    with pytest.raises(InvalidJob, match=r"custom\.result_ttl must be a number of seconds"):
        manager._admit_now(bad)
    assert set(chosen) == {bad.jid}  # the valid job's PUSH looked at no segment
    assert _hooks_for(manager, job) == []  # what the chain would have chosen: nothing
    chosen.clear()
    errors: dict[str, str] = {}
    alive, _kept = await manager._admit_many([(job, None), (bad, None)], errors)  # PUSHB
    assert [admitted.jid for admitted, _due in alive] == [job.jid]
    assert errors[bad.jid].startswith("custom.result_ttl must be a number of seconds")
    assert set(chosen) == {bad.jid}


def _hooks_for(manager: Manager, job: Job) -> list[object]:
    """The push hooks (and ``push_many`` features) that ``job`` goes through."""
    if job.custom is None and manager._push_on_custom:
        return []
    hooks: list[object] = []
    for segment in manager._segments:
        hooks += manager._chosen(job, segment)
        if segment.bulk is not None and segment.bulk.wants_push(job):
            hooks.append(segment.bulk)
    return hooks


@pytest.fixture
def long_way(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The jids of each ACK that reached the results feature the long way (a task)."""
    calls: list[list[str]] = []
    original = ResultsFeature.acknowledge

    async def acknowledge(
        self: ResultsFeature, jids: Sequence[str], results: Mapping[str, bytes]
    ) -> int:
        calls.append(list(jids))
        return await original(self, jids, results)

    monkeypatch.setattr(ResultsFeature, "acknowledge", acknowledge)
    return calls


async def test_an_ack_with_a_result_takes_the_short_way_in_process(
    url: str, make_server: MakeServer, raw_client: RawConnect, long_way: list[list[str]]
) -> None:
    """On memory and SQLite the ACK ends the reservation and stores the outcome and the
    completed entry in the step that read it (``soon.ack_settled``); on Redis, from the reply
    of its one script run, without a task (``soon._ack_settled_soon``: the reservation was
    noted at its FETCH). What it stores is what the long way stores, and the waiting RESULT
    is woken from that step."""
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    waiter = await raw_client(server.port)
    jid = await _fetched(worker, "short", result_ttl=60, retain=600)
    await waiter.send(b'RESULT {"jid":"%s","wait":10}' % jid.encode())
    await asyncio.sleep(0.1)
    assert await worker.call(_ack(jid, {"k": [1, 2]})) == OK
    woken = bulk_json(await waiter.reply(within=5))
    assert (woken["jid"], woken["state"], woken["result"]) == (jid, "succeeded", {"k": [1, 2]})
    assert long_way == []
    reserved, record, entry = await _state(server, jid)
    assert not reserved
    assert record is not None
    assert (record["result"], record["wid"], record["queue"]) == ({"k": [1, 2]}, "w-now", "short")
    assert entry is not None
    assert (entry["completed"]["result"], entry["completed"]["wid"]) == ({"k": [1, 2]}, "w-now")
    assert (await server.manager.store.counters()).processed == 1
    # resent after a lost reply: nothing ends, the outcome stays
    assert await worker.call(_ack(jid, {"k": "other"})) == OK
    assert (await _state(server, jid))[1]["result"] == {"k": [1, 2]}
    assert (await server.manager.store.counters()).processed == 1


async def test_a_result_stored_on_the_short_way_expires_after_its_ttl(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    jid = await _fetched(worker, "ttl", result_ttl=0.5)
    assert await worker.call(_ack(jid, 7)) == OK
    outcome = bulk_json(await worker.call(b'RESULT {"jid":"%s"}' % jid.encode()))
    assert (outcome["state"], outcome["result"]) == ("succeeded", 7)
    records = await server.manager.store.get_records("results", [jid], 0.0)
    assert records[jid].expires_at is not None
    assert 0.3 < records[jid].expires_at - time.time() <= 0.5
    await asyncio.sleep(0.6)
    assert await worker.call(b'RESULT {"jid":"%s"}' % jid.encode()) == b"$-1\r\n"


async def test_a_results_job_of_a_throttled_queue_frees_its_slot(
    url: str, make_server: MakeServer, raw_client: RawConnect, long_way: list[list[str]]
) -> None:
    """A job whose ACK a feature must hear of (a throttle's slot) takes the long way, where
    the slot is freed and the outcome stored in one step."""
    server = await make_server(url, features={"throttles": {"thr": {"concurrency": 1}}})
    worker = await raw_client(server.port, hello=HELLO)
    first = await _fetched(worker, "thr", result_ttl=60)
    second = uuid.uuid4().hex
    pushed = {"jid": second, "jobtype": "Work", "args": [], "queue": "thr"}
    assert await worker.call(b"PUSH " + msgspec.json.encode(pushed)) == OK
    assert await worker.call(b"FETCH thr") == b"$-1\r\n"  # the one slot is taken
    assert await worker.call(_ack(first, "one")) == OK
    assert long_way == [[first]]
    assert bulk_json(await worker.call(b"FETCH thr"))["jid"] == second  # the slot is free
    record = (await _state(server, first))[1]
    assert record is not None
    assert record["result"] == "one"


async def test_a_waiting_result_gets_exactly_one_reply_from_the_ack(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    """The ACK's step answers a waiting RESULT with the outcome it stored (no task, no read);
    the RESULT of a job kept without a record is woken to read the completed set. Either way
    the waiter's connection gets one reply per command, in order."""
    server = await make_server(url)
    worker = await raw_client(server.port, hello=HELLO)
    waiter = await raw_client(server.port)
    with_record = await _fetched(worker, "once", result_ttl=60)
    kept_only = await _fetched(worker, "once", retain=60)
    for jid, value in ((with_record, "r"), (kept_only, "k")):
        await waiter.send(b'RESULT {"jid":"%s","wait":10}' % jid.encode())
        await asyncio.sleep(0.1)
        assert await worker.call(_ack(jid, value)) == OK
        outcome = bulk_json(await waiter.reply(within=5))
        assert (outcome["jid"], outcome["state"], outcome["result"]) == (jid, "succeeded", value)
        assert await waiter.call(b'RESULT {"jid":"none-00000000"}') == b"$-1\r\n"
    assert server.manager.results is not None
    assert server.manager.results.waiting == 0
