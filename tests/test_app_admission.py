"""The Python library's side of unique, expiring and bounded queues: the options, and the
typed errors on push and in push_bulk, against a real server."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

import conveyor
from conveyor.errors import CommandError
from conveyor.job import decode_job
from conveyor.timefmt import parse_time
from tests.support.features import FeatureServer
from tests.support.server import RunningServer


@pytest.fixture
async def server(feature_server: FeatureServer) -> RunningServer:
    return await feature_server("memory://", {"queues": {"tiny": {"backpressure": 1}}})


@pytest.fixture
async def app(server: RunningServer) -> AsyncIterator[conveyor.App]:
    local = conveyor.App(server.url)
    yield local
    await local.aclose()


def declare(app: conveyor.App) -> tuple[conveyor.JobDef[[int], None], conveyor.JobDef[[int], None]]:
    @app.job(queue="emails", unique_for=60)
    async def send(n: int) -> None: ...

    @app.job(queue="tiny")
    async def small(n: int) -> None: ...

    return send, small


async def fetched(server: RunningServer, queue: str) -> conveyor.Job:
    payload = await server.manager.fetch([queue], wait=0)
    assert payload is not None
    return decode_job(payload)


async def test_a_duplicate_raises_not_unique(app: conveyor.App, server: RunningServer) -> None:
    send, _ = declare(app)
    await send.push(1)
    with pytest.raises(conveyor.NotUnique) as caught:
        await send.push(1)
    assert caught.value.code == "NOTUNIQUE"
    assert caught.value.message == "Job not unique"
    await send.push(2)  # other args: another job
    assert await server.manager.store.queue_sizes() == {"emails": 2}


async def test_options_set_the_enterprise_keys(app: conveyor.App, server: RunningServer) -> None:
    send, _ = declare(app)
    job = send.options(unique_for=dt.timedelta(minutes=2), unique_until="start").build(1)
    assert job.custom == {"unique_for": 120.0, "unique_until": "start"}
    await app.push_job(job)
    assert (await fetched(server, "emails")).custom == {
        "unique_for": 120.0,
        "unique_until": "start",
    }
    await send.push(1)  # released when fetched (unique_until start)


async def test_expiry_options(app: conveyor.App, server: RunningServer) -> None:
    send, _ = declare(app)
    before = dt.datetime.now(dt.UTC)
    await send.options(expires_in=30, queue="x", unique_for=1).push(1)
    custom = (await fetched(server, "x")).custom or {}
    expires = parse_time(custom["expires_at"])
    assert before.timestamp() + 30 <= expires <= before.timestamp() + 31
    at = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await send.options(expires_at=at, queue="y").push(1)
    assert (await fetched(server, "y")).custom == {
        "unique_for": 60.0,
        "expires_at": "2031-01-02T03:04:05Z",
    }
    later = send.options(expires_in=30).options(expires_at=at).build(1)
    assert later.custom == {"unique_for": 60.0, "expires_at": "2031-01-02T03:04:05Z"}


async def test_an_expired_job_is_accepted_and_never_runs(
    app: conveyor.App, server: RunningServer
) -> None:
    send, _ = declare(app)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    await send.options(expires_at=past).push(1)
    assert await server.manager.store.queue_sizes() == {}


async def test_a_full_queue_raises_queue_full(app: conveyor.App) -> None:
    _, small = declare(app)
    await small.push(1)
    with pytest.raises(conveyor.QueueFull) as caught:
        await small.push(2)
    assert str(caught.value) == "ERR queue tiny is full (1 jobs)"
    assert isinstance(caught.value, CommandError)


async def test_push_bulk_reports_each_refusal_as_its_exception(app: conveyor.App) -> None:
    send, small = declare(app)
    await send.push(1)
    jobs = [send.build(1), send.build(2), small.build(1), small.build(2)]
    results = await app.push_bulk(jobs)
    assert [r.ok for r in results] == [False, True, True, False]
    assert results[0].error == "NOTUNIQUE Job not unique"
    assert isinstance(results[0].exception, conveyor.NotUnique)
    assert results[1].exception is None
    assert isinstance(results[3].exception, conveyor.QueueFull)
    assert results[3].error == "queue tiny is full (1 jobs)"


async def test_a_bad_value_from_the_server_is_a_command_error(app: conveyor.App) -> None:
    send, _ = declare(app)
    with pytest.raises(CommandError, match='invalid unique_until "always"'):
        await send.options(custom={"unique_until": "always"}).push(1)
    result = (await app.push_bulk([send.options(custom={"unique_until": "x"}).build(1)]))[0]
    assert isinstance(result.exception, CommandError)
    assert result.exception.code == "ERR"


def test_bad_options_fail_before_anything_is_sent() -> None:
    local = conveyor.App("tcp://127.0.0.1:1")  # nothing listens: nothing is sent
    send, _ = declare(local)
    with pytest.raises(ValueError, match='unique_until must be "success" or "start"'):
        send.options(unique_until="never")
    with pytest.raises(ValueError, match="unique_for must be a number of seconds, at least 1"):
        send.options(unique_for=0)
    with pytest.raises(ValueError, match="expires_at= needs a timezone-aware datetime"):
        send.options(expires_at=dt.datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="unique_for must be a number of seconds"):

        @local.job(unique_for=dt.timedelta(0))
        def other() -> None: ...


def test_query_full_errors_map_back_from_the_wire() -> None:
    error = CommandError.from_reply("ERR queue emails is full (500 jobs)")
    assert isinstance(error, conveyor.QueueFull)
    assert not isinstance(CommandError.from_reply("ERR queue emails is fine"), conveyor.QueueFull)


async def test_the_sync_facade_raises_not_unique(server: RunningServer) -> None:
    local = conveyor.App(server.url)
    send, _ = declare(local)

    def push_twice() -> None:
        send.push_sync(7)
        send.push_sync(7)

    with pytest.raises(conveyor.NotUnique):
        await asyncio.to_thread(push_twice)
    local.close()
