"""Queue backpressure (``[queues] backpressure``) over the wire, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import ConfigError, load_config
from tests.support.features import FeatureServer, bulk_json, encode, job
from tests.support.server import RawClient, RawConnect, RunningServer

OK = b"+OK\r\n"
TABLES = {"queues": {"backpressure": 3, "big": {"backpressure": 5}, "free": {"backpressure": 0}}}


@pytest.fixture
async def server(backend_url: str, feature_server: FeatureServer) -> RunningServer:
    return await feature_server(backend_url, TABLES)


@pytest.fixture
async def conn(server: RunningServer, raw_client: RawConnect) -> RawClient:
    return await raw_client(server.port, hello=b'{"v":2,"wid":"w1","hostname":"h","pid":1}')


async def push(conn: RawClient, queue: str) -> bytes:
    return await conn.call(b"PUSH " + encode(job(queue=queue)))


async def test_a_full_queue_refuses_pushes_until_it_drains(
    conn: RawClient, server: RunningServer
) -> None:
    for _ in range(3):
        assert await push(conn, "default") == OK
    assert await push(conn, "default") == b"-ERR queue default is full (3 jobs)\r\n"
    assert await server.manager.store.queue_sizes() == {"default": 3}
    assert (await conn.call(b"FETCH default")).startswith(b"$")
    assert await push(conn, "default") == OK  # below the bound again
    assert await push(conn, "default") == b"-ERR queue default is full (3 jobs)\r\n"


async def test_a_queue_has_its_own_bound_or_none(conn: RawClient, server: RunningServer) -> None:
    for _ in range(5):
        assert await push(conn, "big") == OK
    assert await push(conn, "big") == b"-ERR queue big is full (5 jobs)\r\n"
    for _ in range(10):
        assert await push(conn, "free") == OK
    assert await server.manager.store.queue_sizes() == {"big": 5, "free": 10}


async def test_pushb_refuses_each_job_that_does_not_fit(
    conn: RawClient, server: RunningServer
) -> None:
    assert await push(conn, "default") == OK
    jobs = [job(queue="default") for _ in range(4)] + [job(queue="free")]
    reply = bulk_json(await conn.call(b"PUSHB " + encode(jobs)))
    full = "queue default is full (3 jobs)"
    assert reply == {jobs[2]["jid"]: full, jobs[3]["jid"]: full}
    assert await server.manager.store.queue_sizes() == {"default": 3, "free": 1}


async def test_scheduled_jobs_are_not_refused(conn: RawClient, server: RunningServer) -> None:
    for _ in range(3):
        await push(conn, "default")
    later = job(queue="default", at="2099-01-01T00:00:00Z")
    assert await conn.call(b"PUSH " + encode(later)) == OK


async def test_a_refused_unique_job_leaves_no_lock(conn: RawClient, server: RunningServer) -> None:
    for _ in range(3):
        await push(conn, "default")
    unique = job(queue="default", custom={"unique_for": 60})
    assert await conn.call(b"PUSH " + encode(unique)) == b"-ERR queue default is full (3 jobs)\r\n"
    assert await server.manager.store.count_records("unique", 0) == 0
    assert (await conn.call(b"FETCH default")).startswith(b"$")
    assert await conn.call(b"PUSH " + encode(unique)) == OK


async def test_info_shows_the_bounds(conn: RawClient) -> None:
    info = bulk_json(await conn.call(b"INFO"))
    assert info["features"]["backpressure"] == {"default": 3, "queues": {"big": 5, "free": 0}}


async def test_the_default_comes_from_a_flag_or_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text("[queues]\nbackpressure = 10\n[queues.q]\nbackpressure = 2\n")
    flags = {"config": str(config_file), "storage": "memory://"}
    from_file = load_config(flags, environ={})
    assert from_file.features["queues"]["backpressure"] == 10
    env = load_config(flags, environ={"CONVEYOR_BACKPRESSURE": "20"})
    assert env.features["queues"] == {"backpressure": 20, "q": {"backpressure": 2}}
    flag = load_config({**flags, "backpressure": 30}, environ={"CONVEYOR_BACKPRESSURE": "20"})
    assert flag.features["queues"]["backpressure"] == 30
    with pytest.raises(ConfigError, match="CONVEYOR_BACKPRESSURE: expected an integer"):
        load_config({"storage": "memory://"}, environ={"CONVEYOR_BACKPRESSURE": "lots"})
    with pytest.raises(ConfigError, match=r"\[queues\] backpressure: expected a whole number"):
        load_config({"storage": "memory://", "backpressure": -1}, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[queues]\nbackpressure = "lots"\n', r"\[queues\] backpressure: expected a whole number"),
        ("[queues]\nbackpresure = 5\n", r"\[queues\] backpresure: unknown key"),
        ("[queues.q]\nbackpresure = 5\n", r"\[queues.q\] backpresure: unknown key \(known:"),
        ('[queues."bad name"]\nbackpressure = 5\n', r"\[queues.bad name\]: queue names must"),
        ("[queues.q]\nburst = 5\n", r"\[queues.q\] burst: needs a rate_limit"),
        ("[queues.q]\nrate_limit = 0\n", r"\[queues.q\] rate_limit: expected a number above 0"),
        ("[queues.q]\nrate_limit = 5\nburst = 0.5\n", r"burst: expected a number at least 1"),
    ],
)
def test_bad_queue_settings_stop_the_server_with_a_clear_message(
    tmp_path: Path, toml: str, message: str
) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config({"config": str(config_file), "storage": "memory://"}, environ={})
