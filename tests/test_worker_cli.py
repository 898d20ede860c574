"""``conveyor worker`` as a real subprocess: signals, graceful shutdown, burst, bad arguments."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import Client
from conveyor.manager import ServerStats
from tests.support.server import RunningServer
from tests.support.workers import Spawn, spawner, wait_exit, wait_for, where, write_app

APP_SOURCE = """
import asyncio, os, pathlib, time
import conveyor

app = conveyor.App()
MARKS = pathlib.Path(os.environ["MARKS"])

def mark(name: str) -> None:
    (MARKS / name).write_text("")

@app.job
async def nap(seconds: float) -> None:
    jid = conveyor.current_job().jid
    mark(f"started-{jid}")
    await asyncio.sleep(seconds)
    mark(f"done-{jid}")

@app.job
def block(seconds: float) -> None:
    jid = conveyor.current_job().jid
    mark(f"started-{jid}")
    time.sleep(seconds)
    mark(f"done-{jid}")
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path, "sigapp", APP_SOURCE)


@pytest.fixture
def spawn_worker(app_dir: Path) -> Iterator[Spawn]:
    with spawner(app_dir, "sigapp:app") as spawn:
        yield spawn


async def push(url: str, jobtype: str, *args: Any) -> str:
    client = await Client.connect(url)
    try:
        return await client.push({"jobtype": jobtype, "args": list(args), "retry": 5})
    finally:
        await client.close()


def marks(app_dir: Path) -> set[str]:
    return {p.name for p in (app_dir / "marks").iterdir()}


async def test_term_finishes_short_jobs_and_fails_long_ones_for_retry(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    short = [await push(server.url, "nap", 0.5) for _ in range(2)]
    long = [await push(server.url, "nap", 60) for _ in range(2)]
    proc = spawn_worker(server.url, "--concurrency", "4", "--grace", "1.5")
    await wait_for(lambda: {f"started-{j}" for j in short + long} <= marks(app_dir))
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0
    assert {f"done-{j}" for j in short} <= marks(app_dir)
    for jid in short:
        assert await where(server, jid) == (None, None)  # acked
    for jid in long:  # not lost: FAILed, so the server retries them
        assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")


async def test_second_signal_stops_at_once(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    jid = await push(server.url, "nap", 60)
    proc = spawn_worker(server.url, "--grace", "60")
    await wait_for(lambda: f"started-{jid}" in marks(app_dir))
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    assert proc.poll() is None  # still inside its 60 s grace period
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert await wait_exit(proc, 5) == 0
    assert time.monotonic() - started < 3
    assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")


async def test_sync_handler_past_grace_is_failed_and_does_not_block_exit(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    jid = await push(server.url, "block", 30)
    proc = spawn_worker(server.url, "--grace", "0.3")
    await wait_for(lambda: f"started-{jid}" in marks(app_dir))
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, 8) == 0
    assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")


async def test_tstp_makes_the_worker_quiet(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    first = await push(server.url, "nap", 0)
    proc = spawn_worker(server.url)
    await wait_for(lambda: f"done-{first}" in marks(app_dir))
    proc.send_signal(signal.SIGTSTP)

    async def reported_quiet() -> bool:
        views = await server.manager.workers()
        return any(v.record.state == "quiet" for v in views)

    deadline = time.monotonic() + 5
    while not await reported_quiet():
        assert time.monotonic() < deadline, "the worker never reported quiet"
        await asyncio.sleep(0.05)
    second = await push(server.url, "nap", 0)
    await asyncio.sleep(0.6)
    assert proc.poll() is None  # quiet is not stop
    assert f"started-{second}" not in marks(app_dir)  # not fetched: still queued
    info = await server.manager.info(ServerStats())
    assert info["faktory"]["queues"]["default"] == 1
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0


async def test_burst_exits_when_queues_are_empty(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    jids = [await push(server.url, "nap", 0) for _ in range(5)]
    proc = spawn_worker(server.url, "--burst", "--queue", "default:2", "--queue", "other:1")
    assert await wait_exit(proc) == 0
    assert {f"done-{j}" for j in jids} <= marks(app_dir)
    output = (app_dir / "worker.log").read_text()
    assert "burst mode is done" in output
    assert "weighted default:2 other:1" in output


async def test_rate_limit_option_spaces_the_jobs_of_the_process(
    server: RunningServer, spawn_worker: Any, app_dir: Path
) -> None:
    jids = [await push(server.url, "nap", 0) for _ in range(3)]
    proc = spawn_worker(server.url, "--rate-limit", "5/s", "--concurrency", "5")
    await wait_for(lambda: {f"done-{jid}" for jid in jids} <= marks(app_dir), within=10)
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc) == 0
    assert "rate limit 5/1s" in (app_dir / "worker.log").read_text()
    sets = (await server.manager.info(ServerStats()))["faktory"]["sets"]
    assert (sets["retries"], sets["dead"]) == (0, 0)
    for jid in jids:  # ran and were acknowledged, two of them after being turned away
        assert await server.manager.locate(jid) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuchmodule:app"], "cannot import 'nosuchmodule'"),
        (["sigapp:nothing"], "has no attribute 'nothing'"),
        (["sigapp:mark"], "not a conveyor.App"),
        (["sigapp:app", "--queue", "bad name"], "invalid queue name"),
        (["sigapp:app", "--queue", "a:0"], "weights start at 1"),
        (["sigapp:app", "--concurrency", "0"], "0 is not in the range"),
        (["sigapp:app", "--rate-limit", "fast"], "invalid rate limit 'fast'"),
    ],
)
def test_bad_arguments_are_reported_clearly(app_dir: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "MARKS": str(app_dir / "marks")}
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", *args],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_worker_help_lists_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0
    for option in ("--concurrency", "--queue", "--label", "--burst", "--grace"):
        assert option in result.stdout


def test_unreachable_server_exits_1_with_a_clear_message(app_dir: Path) -> None:
    env = {**os.environ, "MARKS": str(app_dir / "marks")}
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "sigapp", "--url", "tcp://127.0.0.1:1"],
        cwd=app_dir, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot connect to tcp://127.0.0.1:1" in result.stderr
