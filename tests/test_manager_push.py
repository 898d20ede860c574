"""PUSH / PUSHB rules: validation in Faktory's order, defaults, scheduling, bad input."""

from __future__ import annotations

import time

import pytest

from conveyor.errors import InvalidJob
from conveyor.manager import Manager
from conveyor.store.base import JobFilter, SortedSet
from conveyor.timefmt import format_time
from tests.support.manager import MakeManager, decode, encode, eventually, job


async def test_push_then_fetch_returns_canonical_job(manager: Manager) -> None:
    pushed = job("Email", "a@b.c", 3, priority=5, blargh=True)
    await manager.push(encode(pushed))
    fetched = decode(await manager.fetch(["default"], wait=0))
    assert list(fetched) == [
        "retry",
        "jid",
        "queue",
        "jobtype",
        "created_at",
        "enqueued_at",
        "args",
    ]  # canonical key order; unknown top-level keys dropped as Faktory does
    assert fetched["retry"] == 25
    assert fetched["queue"] == "default"
    assert fetched["args"] == ["a@b.c", 3]
    assert fetched["created_at"].endswith("Z")


def _deep(levels: int) -> dict[str, object]:
    """``levels`` objects, one inside the other."""
    value: dict[str, object] = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"jid": "short"}, "jobs must have a reasonable jid parameter"),
        ({"jobtype": ""}, "jobs must have a jobtype parameter"),
        ({"args": None}, "jobs must have an args parameter"),
        ({"reserve_for": 86401}, "jobs cannot be reserved for more than one day"),
        ({"queue": "no spaces"}, 'cannot get "no spaces" queue: queue names must match'),
        ({"at": "2030-01-01T00:00:00"}, "invalid timestamp for 'at': \"2030-01-01T00:00:00\""),
        ({"retry": "x"}, "invalid JSON: Expected `int | null`, got `str`"),
        ({"args": {"a": 1}}, "invalid JSON: Expected `array | null`, got `object`"),
        ({"at": "٢٠٢٤-01-01T00:00:00Z"}, "invalid timestamp for 'at': "),
        # the job is the first level: a value in it may nest 63
        ({"args": [1, [2]], "custom": _deep(64)}, "jobs cannot nest arrays and objects more"),
        ({"failure": _deep(64)}, "jobs cannot nest arrays and objects more than 64 levels deep"),
    ],
)
async def test_invalid_jobs_are_refused_and_change_nothing(
    manager: Manager, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJob) as raised:
        await manager.push(encode({**job(), **fields}))
    assert raised.value.code == "ERR"
    assert raised.value.message.startswith(message)
    assert await manager.store.queue_sizes() == {}
    assert await manager.store.set_size(SortedSet.SCHEDULED) == 0


async def test_bad_json_is_refused(manager: Manager) -> None:
    with pytest.raises(InvalidJob, match="invalid JSON"):
        await manager.push(b'{"jid": "abcdefgh", ')
    big = encode(job("Big", "x" * (manager.config.max_payload_bytes + 1)))
    with pytest.raises(InvalidJob, match=r"bytes; the limit is"):
        await manager.push(big)
    assert await manager.store.queue_sizes() == {}


async def test_retry_default_is_not_process_wide(manager: Manager) -> None:
    """Faktory 1.10 bug (faktory.md §2.4): one job's retry became everyone's default."""
    await manager.push(encode(job(retry=3)))
    await manager.push(encode(job(retry=-1)))
    await manager.push(encode(job()))
    await manager.push(encode(job(retry=None)))
    retries = [decode(await manager.fetch(["default"], wait=0))["retry"] for _ in range(4)]
    assert retries == [3, -1, 25, 25]


async def test_push_bulk_reports_each_bad_job_and_keeps_the_good(manager: Manager) -> None:
    good = [job("Good", n) for n in range(3)]
    bad = job("Bad")
    bad["args"] = None
    no_type = job("")
    errors = await manager.push_bulk(encode([good[0], bad, good[1], no_type, good[2]]))
    assert errors == {
        bad["jid"]: "jobs must have an args parameter",
        no_type["jid"]: "jobs must have a jobtype parameter",
    }
    assert await manager.store.queue_sizes() == {"default": 3}
    assert await manager.push_bulk(encode([job()])) == {}
    with pytest.raises(InvalidJob, match="invalid JSON"):
        await manager.push_bulk(b"[{")
    # elements with no jid to name them are reported under their index
    nameless = {"jobtype": "T", "args": []}
    errors = await manager.push_bulk(encode([nameless, 5, job("Good"), nameless]))
    assert errors == {
        "#0": "jobs must have a reasonable jid parameter",
        "#1": "invalid JSON: Expected `object`, got `int`",
        "#3": "jobs must have a reasonable jid parameter",
    }
    assert await manager.store.queue_sizes() == {"default": 5}


async def test_future_at_is_scheduled_and_promoted_quickly(manager: Manager) -> None:
    due = time.time() + 0.3
    pushed = job("Later", at=format_time(due))
    await manager.push(encode(pushed))
    assert await manager.fetch(["default"], wait=0) is None
    page = await manager.list_set(SortedSet.SCHEDULED, JobFilter(), 0, 10)
    assert [e.jid for e in page.items] == [pushed["jid"]]
    fetched = decode(await manager.fetch(["default"], wait=2.0))
    late = time.time() - due
    assert fetched["jid"] == pushed["jid"]
    assert fetched["enqueued_at"]  # set when it entered the queue
    assert 0 <= late < 0.1, f"promoted {late * 1000:.0f} ms after it was due"


async def test_past_at_is_enqueued_at_once(manager: Manager) -> None:
    await manager.push(encode(job(at="2001-01-01T00:00:00.5+02:00")))
    assert await manager.store.queue_sizes() == {"default": 1}


async def test_scheduled_promotion_is_not_doubled_by_two_managers(
    make_manager: MakeManager,
) -> None:
    """Two managers over one store promote each due job exactly once (conditional moves)."""
    first = await make_manager("memory://")
    second = Manager(first.store, first.config)  # a second server's loops, same store
    second.tasks.start()
    try:
        due = format_time(time.time() + 0.05)
        for _ in range(200):
            await first.push(encode(job("Due", at=due)))
        await _wait_promoted(first, 200)
        sizes = await first.store.queue_sizes()
        assert sizes == {"default": 200}
        assert await first.store.set_size(SortedSet.SCHEDULED) == 0
    finally:
        await second.tasks.stop()


async def _wait_promoted(manager: Manager, count: int) -> None:
    async def done() -> bool:
        return (await manager.store.queue_sizes()).get("default", 0) >= count

    await eventually(done)
