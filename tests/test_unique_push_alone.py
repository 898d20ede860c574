"""A unique job's PUSH on an in-process store calls the unique feature's hook alone, without
the push chain (``PushCalls._admit_alone``), only when no other hook may want the job: every
gate declares its keys (``Feature.push_keys``), the job holds keys of that one feature only,
and no other feature declares them. Each test breaks one of those conditions and checks that
the other hook still sees the job, with every unique rule kept; on memory and SQLite.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.errors import InvalidJob, NotUnique
from conveyor.job import Job, decode_job
from conveyor.manager import Manager
from conveyor.manager.features.base import Feature
from conveyor.manager.features.registry import build_features
from conveyor.manager.later import Later
from conveyor.manager.middleware import Middleware, Next, PushContext
from conveyor.store import open_store
from tests.support.server import TEST_TIMINGS


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/jobs.db"


def _payload(args: list[Any], **custom: Any) -> bytes:
    job = {"jid": uuid.uuid4().hex, "jobtype": "Work", "args": args, "queue": "q"}
    return msgspec.json.encode({**job, "custom": custom})


async def _push(manager: Manager, payload: bytes) -> None:
    """A PUSH as the server answers it: at once where it can, else the long way."""
    rest = manager.push_now(payload)
    assert not isinstance(rest, Later)  # an in-process store's PUSH is done in this step
    await (rest if rest is not None else manager.push(payload))


async def _fetched(manager: Manager) -> Job:
    payload = await manager.fetch(["q"], "w1", wait=0)
    assert payload is not None
    return decode_job(payload)


class Seen:
    """The jids a push hook saw."""

    def __init__(self) -> None:
        self.jids: list[str] = []


class SeesAll(Feature):
    """A feature's push hook whose gate cannot say which keys it wants (no ``push_keys``)."""

    name = "sees-all"

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        self.seen.jids.append(ctx.job.jid)
        await call_next()


class AlsoUnique(SeesAll):
    """A second feature declaring one of the unique feature's keys."""

    name = "also-unique"
    push_keys = frozenset(("unique_for",))

    def wants_push(self, job: Job) -> bool:
        return job.custom is not None and "unique_for" in job.custom


class SeesAllMiddleware(Middleware):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        self.seen.jids.append(ctx.job.jid)
        await call_next()


async def _refused_twice(manager: Manager, args: list[Any], **custom: Any) -> str:
    """Push a unique job, then one of the same identity (refused); the first's jid."""
    first = _payload(args, unique_for=60, **custom)
    await _push(manager, first)
    with pytest.raises(NotUnique):
        await _push(manager, _payload(args, unique_for=60, **custom))
    return str(msgspec.json.decode(first)["jid"])


async def test_a_unique_job_alone_skips_the_chain_and_keeps_its_rules(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = Manager(open_store(url), TEST_TIMINGS, features=build_features({}))
    await manager.start()
    try:
        chains: list[Job] = []
        chain_now = manager._push_chain_now

        def counted(job: Job, hooks: Any) -> bool:
            chains.append(job)
            return chain_now(job, hooks)

        monkeypatch.setattr(manager, "_push_chain_now", counted)
        jid = await _refused_twice(manager, [1, "a"])
        assert chains == []  # the unique hook was called directly
        assert (await _fetched(manager)).jid == jid
        # a bad value still refused, nothing stored
        with pytest.raises(InvalidJob, match="invalid unique_for"):
            await _push(manager, _payload([2], unique_for="sixty"))
        assert (await manager.store.queue_sizes()).get("q", 0) == 0
        # keys of another feature beside: the chain runs, and both hooks with it
        await _refused_twice(manager, [3], expires_in=60)
        assert len(chains) == 2  # the job and the one refused
        job = await _fetched(manager)
        assert job.custom is not None
        assert "expires_at" in job.custom  # expiring's hook ran
    finally:
        await manager.stop()


async def test_a_gate_that_cannot_say_its_keys_sees_unique_jobs(url: str) -> None:
    seen = Seen()
    features = [*build_features({}), SeesAll(seen)]
    manager = Manager(open_store(url), TEST_TIMINGS, features=features)
    await manager.start()
    try:
        jid = await _refused_twice(manager, [1])
        assert seen.jids == [jid]  # the refused one was stopped by unique, before it
    finally:
        await manager.stop()


async def test_a_second_feature_declaring_a_unique_key_sees_unique_jobs(url: str) -> None:
    seen = Seen()
    features = [*build_features({}), AlsoUnique(seen)]
    manager = Manager(open_store(url), TEST_TIMINGS, features=features)
    await manager.start()
    try:
        jid = await _refused_twice(manager, [1])
        assert seen.jids == [jid]
    finally:
        await manager.stop()


async def test_a_push_middleware_that_is_not_a_feature_sees_unique_jobs(url: str) -> None:
    seen = Seen()
    middleware = [SeesAllMiddleware(seen)]
    features = build_features({})
    manager = Manager(open_store(url), TEST_TIMINGS, middleware=middleware, features=features)
    await manager.start()
    try:
        jid = await _refused_twice(manager, [1])
        assert jid in seen.jids
    finally:
        await manager.stop()


async def test_unique_jobs_get_results_defaults_after_a_reload(url: str) -> None:
    manager = Manager(open_store(url), TEST_TIMINGS, features=build_features({}))
    await manager.start()
    try:
        manager.reconfigure(build_features({"results": {"ttl_seconds": 30}}))  # SIGHUP
        await _refused_twice(manager, [1])
        custom = (await _fetched(manager)).custom
        assert custom == {"unique_for": 60, "result_ttl": 30}  # results' hook stamped it
        manager.reconfigure(build_features({}))
        await _refused_twice(manager, [2])
        assert (await _fetched(manager)).custom == {"unique_for": 60}
    finally:
        await manager.stop()
