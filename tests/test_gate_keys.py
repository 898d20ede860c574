"""The features' gates are asked only about jobs holding what they look for: a FETCH about
jobs holding one of their marks (``Feature.fetch_marks``, ``FeatureCalls._marks_search``), a
PUSH about jobs whose ``custom`` holds one of their keys (``Feature.push_keys``,
``FeatureCalls._chosen``).

A job whose ``custom`` serves another feature (results' ``result_ttl``) costs one search or
set test instead of a call per gate. That must never hide a job a gate wants: each built-in
gate wants only jobs holding what it declares, and a job holding it (beside keys of other
features) still goes through its hook, on every store, over a real server; after a reload
the keys are read again (results' gate wants every job while it stamps a default)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.job import Job
from conveyor.manager.core import Manager
from conveyor.manager.features.base import Feature
from conveyor.manager.features.registry import build_features
from conveyor.manager.middleware import FetchContext, Middleware, Next
from conveyor.store import open_store
from tests.support.features import bulk_json
from tests.support.server import MakeServer, RawClient, RawConnect
from tests.support.stores import STORE_BACKENDS, store_url

OK = b"+OK\r\n"
NOTHING = b"$-1\r\n"


@pytest.fixture(params=STORE_BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path, request)


def _payload(custom: dict[str, Any]) -> bytes:
    job = {"jid": uuid.uuid4().hex, "jobtype": "Work", "args": [1], "queue": "q"}
    return msgspec.json.encode({**job, "custom": custom})


def test_each_gate_wants_only_jobs_holding_its_marks() -> None:
    declared = [f for f in build_features({}) if type(f).fetch_marks is not None]
    assert {type(f).__name__ for f in declared} >= {"ExpiringJobs", "UniqueJobs"}
    holding = {
        b'"expires_at":': {"expires_at": "2030-01-01T00:00:00Z"},
        b'"unique_until":"start"': {"unique_for": 60, "unique_until": "start"},
        b'"results_of":': {"results_of": ["a"]},
    }
    plain = _payload({"result_ttl": 60, "retain": 60, "note": "x"})
    for feature in declared:
        marks = type(feature).fetch_marks or ()
        assert not any(mark in plain for mark in marks)
        assert not feature.wants_fetch(plain), type(feature).__name__
        for mark in marks:
            assert feature.wants_fetch(_payload({"result_ttl": 60, **holding[mark]}))


def test_one_search_stands_for_every_gate_only_when_each_declares() -> None:
    search = Manager(open_store("memory://"))._any_mark
    assert search is not None
    assert search(_payload({"result_ttl": 60})) is None
    assert search(_payload({"expires_at": "2030-01-01T00:00:00Z"})) is not None
    assert search(_payload({"unique_for": 5})) is not None  # an ACK gate's mark

    class SeesAll(Middleware):
        async def fetch(self, ctx: FetchContext, call_next: Next) -> None:
            await call_next()

    # a fetch hook that is not a feature's wants every job: no search stands for it
    assert Manager(open_store("memory://"), middleware=[SeesAll()])._any_mark is None
    assert Feature.fetch_marks is None


async def _push(client: RawClient, queue: str, **custom: Any) -> str:
    jid = uuid.uuid4().hex
    job = {"jid": jid, "jobtype": "Work", "args": [1], "queue": queue, "custom": custom}
    assert await client.call(b"PUSH " + msgspec.json.encode(job)) == OK
    return jid


async def test_a_job_holding_a_mark_beside_other_keys_goes_through_its_hook(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    client = await raw_client(server.port)
    # expiring: discarded at FETCH once expired, though its custom also asks for a result
    await _push(client, "exp", result_ttl=60, expires_in=0.05)
    await asyncio.sleep(0.2)
    assert await client.call(b"FETCH exp") == NOTHING
    # unique until start: the lock is released by the FETCH, so the same job pushes again
    first = await _push(client, "uniq", result_ttl=60, unique_for=60, unique_until="start")
    assert bulk_json(await client.call(b"FETCH uniq"))["jid"] == first
    await _push(client, "uniq", result_ttl=60, unique_for=60, unique_until="start")
    # no mark: fetched as pushed, and its result is stored with its ACK
    jid = await _push(client, "plain", result_ttl=60, note="x")
    assert bulk_json(await client.call(b"FETCH plain"))["jid"] == jid
    ack = {"jid": jid, "result": json.dumps({"n": 1})}
    assert await client.call(b"ACK " + msgspec.json.encode(ack)) == OK
    records = await server.manager.store.get_records("results", [jid], 0.0)
    assert json.loads(records[jid].value)["result"] == {"n": 1}


def test_each_push_gate_wants_only_jobs_holding_its_keys() -> None:
    declared = [f for f in build_features({}) if f.push_keys is not None]
    names = {type(f).__name__ for f in declared}
    assert names >= {"ExpiringJobs", "UniqueJobs", "ResultsFeature", "AggregateFeature"}
    foreign = Job(jid="j1", jobtype="W", args=[], custom={"note": 1, "priority": 3})
    for feature in declared:
        assert not feature.wants_push(foreign), type(feature).__name__
    results = next(f for f in declared if type(f).__name__ == "ResultsFeature")
    for bad in (-1, None, "60", True, float("nan"), float("inf"), 10 * 366 * 86400 + 1):
        assert results.wants_push(Job(jid="j2", jobtype="W", args=[], custom={"retain": bad}))
    for good in (0, 60, 0.5, 10 * 366 * 86400):
        assert not results.wants_push(Job(jid="j3", jobtype="W", args=[], custom={"retain": good}))
    stamping = build_features({"results": {"ttl_seconds": 30}})
    assert next(f for f in stamping if type(f).__name__ == "ResultsFeature").push_keys is None


async def test_a_job_holding_a_gate_key_beside_others_goes_through_its_hook(
    url: str, make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server(url)
    client = await raw_client(server.port)
    # results' gate refuses a bad value, on PUSH and PUSHB, whatever else custom holds
    bad = {"jid": uuid.uuid4().hex, "jobtype": "W", "args": [], "queue": "keys"}
    bad["custom"] = {"result_ttl": -1, "note": "x", "expires_in": 60}
    reply = await client.call(b"PUSH " + msgspec.json.encode(bad))
    assert reply.startswith(b"-ERR custom.result_ttl must be a number of seconds"), reply
    reply = await client.call(b"PUSHB " + msgspec.json.encode([bad]))
    assert b"custom.result_ttl must be a number of seconds" in reply, reply
    # expiring's hook turns expires_in into expires_at, beside a result_ttl
    jid = await _push(client, "keys", result_ttl=60, expires_in=60, note="x")
    job = bulk_json(await client.call(b"FETCH keys"))
    assert job["jid"] == jid
    assert "expires_at" in job["custom"]
    assert job["custom"]["result_ttl"] == 60


async def test_push_keys_are_read_again_after_a_reload(
    make_server: MakeServer, raw_client: RawConnect
) -> None:
    server = await make_server()
    client = await raw_client(server.port)
    await _push(client, "stamp", note="x")
    assert bulk_json(await client.call(b"FETCH stamp"))["custom"] == {"note": "x"}
    server.manager.reconfigure(build_features({"results": {"ttl_seconds": 30}}))  # SIGHUP
    await _push(client, "stamp", note="x")  # results' gate now wants it: a default to stamp
    assert bulk_json(await client.call(b"FETCH stamp"))["custom"] == {"note": "x", "result_ttl": 30}
    server.manager.reconfigure(build_features({}))
    await _push(client, "stamp", note="x")
    assert bulk_json(await client.call(b"FETCH stamp"))["custom"] == {"note": "x"}
