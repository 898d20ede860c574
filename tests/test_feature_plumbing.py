"""How the manager calls the features beyond the middleware chains (``manager/feature_calls.py``,
``manager/flow.py``): the push chain run at once on an in-process store, fetch gates that keep
the hand-off for the jobs no feature wants, and the ACKs that go through the returning path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from conveyor.job import Job
from conveyor.manager import Manager, ManagerConfig, PushContext
from conveyor.manager.features import Feature
from conveyor.manager.features.registry import build_features
from conveyor.manager.features.unique import SPACE
from conveyor.manager.middleware import Next
from conveyor.store import open_store
from tests.support.manager import decode, encode, job


class Waits(Feature):
    """A feature whose push hook suspends: the PUSH must take the long way."""

    name = "waits"

    def __init__(self) -> None:
        self.runs = 0

    def wants_push(self, job: Job) -> bool:
        return bool(job.custom and "wait" in job.custom)

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        await call_next()


async def test_a_hook_that_waits_sends_the_push_the_long_way(tmp_path: Path) -> None:
    waits = Waits()
    manager = Manager(open_store("memory://"), ManagerConfig(), features=[waits])
    await manager.start()
    try:
        waiting = job(custom={"wait": 1})
        assert manager.push_now(encode(waiting)) is None
        await manager.push(encode(waiting))
        assert waits.runs == 2  # tried at once, then again the long way: hooks are idempotent
        assert await manager.store.queue_sizes() == {"default": 1}
    finally:
        await manager.stop()


async def test_jobs_a_fetch_gate_wants_are_not_handed_off_and_the_others_are() -> None:
    manager = Manager(open_store("memory://"), ManagerConfig(fetch_wait_seconds=1))
    await manager.start()
    handed: list[str] = []
    original = manager.store.hand_off

    def spy(jobs: Any, wid: str, now: float) -> Any:
        handed.extend(j.jid for j in jobs)
        return original(jobs, wid, now)

    manager.store.hand_off = spy  # type: ignore[method-assign]
    delivered: list[bytes] = []

    def deliver(payloads: list[bytes]) -> bool:
        delivered.extend(payloads)
        return True

    try:
        for custom in (None, {"unique_for": 60, "unique_until": "start"}):
            pushed = job(custom=custom) if custom else job()
            fetch = asyncio.create_task(manager.fetch_many(["default"], "w", 1, deliver=deliver))
            await asyncio.sleep(0.02)
            durable = manager.push_now(encode(pushed))
            assert durable is not None
            await durable
            got = await fetch
            payload = delivered[-1] if not got else got[0]
            assert decode(payload)["jid"] == pushed["jid"]
            assert (pushed["jid"] in handed) is (custom is None)
        # the gated job went through the fetch hook: its start lock is released
        assert await manager.store.count_records(SPACE, 0) == 0
    finally:
        await manager.stop()


async def test_an_ack_after_a_restart_still_releases_the_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    first = Manager(open_store(url), ManagerConfig())
    await first.start()
    unique = job(custom={"unique_for": 600})
    await first.push(encode(unique))
    assert await first.fetch(["default"], wait=0) is not None
    await first.stop()
    second = Manager(open_store(url), ManagerConfig())
    await second.start()
    try:
        assert await second.store.count_records(SPACE, 0) == 1
        await second.ack(unique["jid"])
        assert await second.store.count_records(SPACE, 0) == 0
    finally:
        await second.stop()


async def test_plain_acks_keep_the_plain_store_ack(tmp_path: Path) -> None:
    manager = Manager(
        open_store(f"sqlite:///{tmp_path / 'a.db'}"), ManagerConfig(), features=build_features({})
    )
    await manager.start()
    calls: list[str] = []
    for name in ("ack", "ack_returning"):
        original = getattr(manager.store, name)

        def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(*args)

        setattr(manager.store, name, spy)
    try:
        plain, unique = job(), job(custom={"unique_for": 60})
        for pushed in (plain, unique):
            await manager.push(encode(pushed))
            assert await manager.fetch(["default"], wait=0) is not None
            await manager.ack(pushed["jid"])
        assert calls == ["ack", "ack_returning"]
    finally:
        await manager.stop()


async def test_a_shared_store_decodes_at_fetch_only_the_jobs_a_gate_wants(
    redis_url: str, monkeypatch: Any
) -> None:
    from conveyor.manager import feature_calls

    decoded: list[bytes] = []
    original = feature_calls.decode_job

    def counting(payload: bytes) -> Job:
        decoded.append(payload)
        return original(payload)

    monkeypatch.setattr(feature_calls, "decode_job", counting)
    manager = Manager(open_store(redis_url), ManagerConfig())
    await manager.start()
    try:
        await manager.push(encode(job()))
        assert await manager.fetch(["default"], wait=0) is not None
        assert decoded == []
        await manager.push(encode(job(custom={"expires_in": 60})))
        assert await manager.fetch(["default"], wait=0) is not None
        assert len(decoded) == 1
    finally:
        await manager.stop()


async def test_job_metrics_count_what_was_stored_and_forget_what_was_dropped() -> None:
    """``/metrics``: a PUSH refused (full queue, duplicate) is not a job pushed; a job dropped
    at FETCH (expired) is not left running."""
    from conveyor.errors import NotUnique, QueueFull
    from conveyor.job import decode_job
    from conveyor.metrics import JobMetrics

    metrics = JobMetrics()
    features = build_features({"queues": {"bounded": {"backpressure": 1}}})
    manager = Manager(open_store("memory://"), ManagerConfig(), features=features, metrics=metrics)
    await manager.start()
    try:
        await manager.push(encode(job(queue="bounded")))
        try:
            await manager.push(encode(job(queue="bounded")))
        except QueueFull:
            pass
        else:
            raise AssertionError("the second job fit")
        unique = job(custom={"unique_for": 60})
        await manager.push(encode(unique))
        try:
            await manager.push(encode({**unique, "jid": "another-jid-0001"}))
        except NotUnique:
            pass
        else:
            raise AssertionError("the duplicate was taken")
        gone = job(queue="late", custom={"expires_at": "2000-01-01T00:00:00Z"})
        await manager.store.enqueue([manager.queued(decode_job(encode(gone)))])
        kept = job(queue="late")
        await manager.push(encode(kept))
        assert metrics.pushed.values == {
            ("bounded", "Thing"): 1,
            ("default", "Thing"): 1,
            ("late", "Thing"): 1,
        }
        got = await manager.fetch_many(["late"], "w", 1)
        assert [decode(p)["jid"] for p in got] == [kept["jid"]]
        assert gone["jid"] not in metrics._running
        assert kept["jid"] in metrics._running
    finally:
        await manager.stop()
