"""The batch feature's loops and settings, on every store, with a fixed clock: expiry of
uncommitted and committed batches, the sweep that finishes what a dead server left half done
(a child's milestone not yet counted in its parent, waiting jobs doomed by a dead
dependency), and the ``[batch]``/``[tracking]`` tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.errors import CommandError, ConfigError
from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.features.batches import BatchFeature, BatchSettings
from conveyor.manager.features.registry import FEATURE_TABLES
from conveyor.store import open_store
from conveyor.store.base import SortedSet
from conveyor.store.batches import EndContext, JobEnd, Outcome
from tests.support.stores import STORE_BACKENDS, store_url

T0 = 1_767_225_600.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=STORE_BACKENDS)
async def feature(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BatchFeature]:
    settings = BatchSettings(uncommitted_seconds=60, committed_seconds=600, tracking_seconds=30)
    batches = BatchFeature(settings)
    batches.clock = Clock()
    manager = Manager(open_store(store_url(request.param, tmp_path, request)), ManagerConfig(),
                      features=[batches])  # fmt: skip
    await manager.start()  # the loops are not run: the tests call them
    await manager.tasks.stop()
    try:
        yield batches
    finally:
        await manager.stop()


def spec(**fields: Any) -> bytes:
    return msgspec.json.encode(fields)


def callback(jobtype: str) -> dict[str, Any]:
    return {"jobtype": jobtype, "args": [], "queue": "callbacks"}


async def test_uncommitted_and_committed_batches_expire(feature: BatchFeature) -> None:
    clock: Any = feature.clock
    open_one = await feature.new_batch(spec(success=callback("A")))
    kept = await feature.new_batch(spec(success=callback("B")))
    await feature.manager.push(
        msgspec.json.encode(
            {"jid": "job-00001", "jobtype": "T", "args": [], "custom": {"bid": kept}}
        )
    )
    await feature.commit(kept)
    clock.now = T0 + 61
    await feature.expire()
    with pytest.raises(CommandError, match=f"no such batch {open_one}"):
        await feature.status(open_one)
    assert (await feature.status(kept))["total"] == 1  # committed: 600 s from its commit
    shown = await feature.show(kept)
    assert shown["expires_at"] == "2026-01-01T00:10:00Z"
    clock.now = T0 + 601
    await feature.expire()
    with pytest.raises(CommandError, match="no such batch"):
        await feature.status(kept)
    tracked = await feature.track_get("job-00001")
    assert tracked["state"] == "unknown"  # a batch job's tracking goes with its batch


async def test_the_sweep_counts_a_childs_milestone_its_server_did_not(
    feature: BatchFeature,
) -> None:
    """A server ended the child's last job and died before counting it in the parent."""
    store = feature.manager.store
    parent = await feature.new_batch(spec(success=callback("ParentDone")))
    child = await feature.new_batch(spec(parent_bid=parent, complete=callback("ChildDone")))
    payload = msgspec.json.encode({"jid": "child-job1", "jobtype": "T", "args": [],
                                   "queue": "work", "custom": {"bid": child}})  # fmt: skip
    await feature.manager.push(payload)
    await feature.commit(parent)
    await feature.commit(child)
    await store.reserve(["work"], "w", T0)
    ctx = EndContext("2026-01-01", T0, 30, T0 + 100)
    fired = await store.end_jobs([JobEnd("child-job1", Outcome.SUCCESS, child)], ctx)
    assert len(fired.scheduled) == 1  # ChildDone; the child's milestone waits for it
    assert fired.propagate == []
    await feature.finish(fired)
    child_done = (await store.list_queue("callbacks", 0, 10)).items[0]
    await store.reserve(["callbacks"], "w", T0)
    fired = await store.end_jobs([JobEnd(child_done.jid, Outcome.SUCCESS, child)], ctx)
    assert fired.propagate == [child]  # ... and the server dies here
    assert await store.pending_propagations(10) == [child]
    await feature.sweep()
    assert await store.pending_propagations(10) == []
    queued = (await store.list_queue("callbacks", 0, 10)).items
    assert [msgspec.json.decode(q.payload)["jobtype"] for q in queued] == ["ParentDone"]


async def test_the_sweep_kills_waiting_jobs_a_dead_dependency_doomed(
    feature: BatchFeature,
) -> None:
    """On Redis a waiting job in a batch is killed in a second step; the sweep does it when
    the server that should have died first. Every store ends in the same state."""
    store = feature.manager.store
    bid = await feature.new_batch(spec(complete=callback("Complete")))
    dep = {"jid": "dep-00001", "jobtype": "T", "args": [], "queue": "work", "custom": {"track": 1}}
    await feature.manager.push(msgspec.json.encode(dep))
    waiter = {"jid": "wait-0001", "jobtype": "T", "args": [], "queue": "work",
              "custom": {"bid": bid, "after": ["dep-00001"]}}  # fmt: skip
    await feature.manager.push(msgspec.json.encode(waiter))
    await feature.commit(bid)
    await store.reserve(["work"], "w", T0)
    ctx = EndContext("2026-01-01", T0, 30, T0 + 100)
    await store.end_jobs([JobEnd("dep-00001", Outcome.DEAD)], ctx)  # ... and the server dies
    await feature.sweep()
    assert await store.count_waiting() == 0
    assert await store.get_set_entries(SortedSet.DEAD, ["wait-0001"])
    assert (await feature.status(bid))["failed"] == 1
    assert (await feature.status(bid))["complete_st"] == "1"


def test_the_tables_and_their_errors() -> None:
    assert {"batch", "tracking"} <= FEATURE_TABLES
    configured = BatchFeature.from_config(
        {"batch": {"uncommitted_timeout_minutes": 5, "committed_timeout_days": 0.5},
         "tracking": {"ttl_minutes": 2}}
    )  # fmt: skip
    assert configured.settings == BatchSettings(300.0, 43_200.0, 120.0)
    assert BatchFeature.from_config({}).settings == BatchSettings()
    for tables, message in (
        ({"batch": {"committed_timeout_days": 0}}, "must be a positive number"),
        ({"batch": {"uncommitted_timeout_minutes": "30m"}}, "must be a positive number"),
        ({"tracking": {"ttl": 5}}, "has no setting 'ttl'"),
        ({"batch": []}, "must be a table"),
    ):
        with pytest.raises(ConfigError, match=message):
            BatchFeature.from_config(tables)


def test_a_reload_changes_the_settings() -> None:
    feature = BatchFeature()
    feature.reconfigure(BatchFeature.from_config({"tracking": {"ttl_minutes": 1}}))
    assert feature.settings.tracking_seconds == 60.0


def test_the_server_reads_the_tables_from_its_config_file(tmp_path: Path) -> None:
    from conveyor.config import load_config

    config_file = tmp_path / "conveyor.toml"
    config_file.write_text("[batch]\ncommitted_timeout_days = 7\n\n[tracking]\nttl_minutes = 5\n")
    features = load_config({"config": str(config_file)}, environ={}).build_features()
    (batches,) = [f for f in features if isinstance(f, BatchFeature)]
    assert batches.settings == BatchSettings(1800.0, 7 * 86_400.0, 300.0)
    config_file.write_text("[batch]\ncommitted_timeout_days = -1\n")
    with pytest.raises(ConfigError, match=r"\[batch\] committed_timeout_days must be a positive"):
        load_config({"config": str(config_file)}, environ={})
