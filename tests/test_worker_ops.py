"""``conveyor worker`` for operators, as a real subprocess: its settings from a ``[worker]``
TOML table and ``CONVEYOR_WORKER_*``, one log line per job (text and JSON), ``--metrics-bind``,
``--tls-ca``, and a ``--burst`` that exits promptly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.client import Client
from conveyor.manager import ManagerConfig
from tests.support.server import MakeServer, RunningServer
from tests.support.services import free_port
from tests.support.tls import CertFiles
from tests.support.workers import Spawn, spawner, wait_exit, write_app

APP_SOURCE = """
import asyncio
import conveyor

app = conveyor.App()

@app.job
async def nap(seconds: float) -> None:
    await asyncio.sleep(seconds)

@app.job(retry=2)
async def flaky() -> None:
    raise RuntimeError("not yet")

@app.job(retry=0)
async def once() -> None:
    raise ValueError("gone")
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path, "opsapp", APP_SOURCE)


@pytest.fixture
def spawn_worker(app_dir: Path) -> Iterator[Spawn]:
    with spawner(app_dir, "opsapp:app") as spawn:
        yield spawn


async def push(url: str, jobtype: str, *args: Any, queue: str = "default", retry: int = 25) -> str:
    async with await Client.connect(url) as client:
        job = {"jid": f"{jobtype}-{time.monotonic_ns()}", "jobtype": jobtype, "args": list(args)}
        await client.push({**job, "queue": queue, "retry": retry})
        return str(job["jid"])


def log_of(app_dir: Path) -> str:
    return (app_dir / "worker.log").read_text()


def json_lines(app_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log_of(app_dir).splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_one_line_per_job_in_json(
    server: RunningServer, spawn_worker: Spawn, app_dir: Path
) -> None:
    done = await push(server.url, "nap", 0.01)
    retried = await push(server.url, "flaky", retry=2)
    dropped = await push(server.url, "once", retry=0)
    proc = spawn_worker(server.url, "--burst", "--log-format", "json")
    assert await wait_exit(proc) == 0, log_of(app_dir)
    records = json_lines(app_dir)
    assert records, log_of(app_dir)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    jobs = {r["jid"]: r for r in records if r["logger"] == "conveyor.worker.jobs"}
    assert set(jobs) == {done, retried, dropped}
    assert jobs[done]["outcome"] == "done"
    assert jobs[done]["level"] == "info"
    assert jobs[done]["jobtype"] == "nap"
    assert jobs[done]["queue"] == "default"
    assert jobs[done]["duration_ms"] >= 10
    assert jobs[retried]["outcome"] == "retry"
    assert (jobs[retried]["retry"], jobs[retried]["retries"]) == (1, 2)
    assert jobs[retried]["retry_in_seconds"] > 15
    assert jobs[retried]["level"] == "warning"
    assert "RuntimeError: not yet" in jobs[retried]["traceback"]
    assert jobs[dropped]["outcome"] == "discarded"
    assert jobs[dropped]["level"] == "error"
    assert "retry 1/2" in jobs[retried]["message"]


async def test_text_log_says_what_happened_to_each_job(
    server: RunningServer, spawn_worker: Spawn, app_dir: Path
) -> None:
    done = await push(server.url, "nap", 0)
    proc = spawn_worker(server.url, "--burst")
    assert await wait_exit(proc) == 0
    assert f"[nap {done}] done in " in log_of(app_dir)
    assert "(queue default)" in log_of(app_dir)


@pytest.mark.parametrize("batch", ["--batch", "--no-batch"])
async def test_burst_exits_promptly_after_the_last_job(
    make_server: MakeServer, spawn_worker: Spawn, app_dir: Path, batch: str
) -> None:
    """Loosely: it used to take two empty FETCHes (Faktory's 2 s wait each) after the last
    job; now the worker sees the empty queues without waiting. Timed from its own log."""
    server = await make_server(
        config=ManagerConfig(fetch_wait_seconds=2.0, scheduler_interval_seconds=0.02)
    )
    for _ in range(5):
        await push(server.url, "nap", 0.2)
    proc = spawn_worker(server.url, "--burst", "--log-format", "json", "--concurrency", "2", batch)
    assert await wait_exit(proc) == 0
    records = json_lines(app_dir)
    ends = [r["time"] for r in records if r["logger"] == "conveyor.worker.jobs"]
    stopped = [r["time"] for r in records if "stopped:" in r["message"]]
    assert len(ends) == 5
    assert len(stopped) == 1
    last_job = datetime.fromisoformat(max(ends))
    exited = datetime.fromisoformat(stopped[0])
    assert (exited - last_job).total_seconds() < 1.5


TOML = """
[server]
bind = "127.0.0.1:1"

[worker]
app = "opsapp:app"
queues = ["from-file"]
concurrency = 3
burst = true
log_format = "json"
"""


async def test_settings_from_the_worker_table_and_the_environment(
    server: RunningServer, app_dir: Path
) -> None:
    config = app_dir / "conveyor.toml"
    config.write_text(TOML)
    from_file = await push(server.url, "nap", 0, queue="from-file")
    env_queue = await push(server.url, "nap", 0, queue="from-env")
    base = {"CONVEYOR_URL": server.url, "CONVEYOR_CONFIG": str(config)}

    async def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "conveyor", "worker", *args],
            cwd=app_dir, env={**os.environ, **base, **env}, capture_output=True, text=True,
            timeout=30,
        )  # fmt: skip

    # the file's [worker] table: the app, the queue, burst and JSON logs
    result = await run({})
    assert result.returncode == 0, result.stderr
    jids = [json.loads(line).get("jid") for line in result.stderr.splitlines() if line[:1] == "{"]
    assert jids.count(from_file) == 1
    assert env_queue not in jids
    # the environment wins over the file
    env = {"CONVEYOR_WORKER_QUEUES": "from-env other", "CONVEYOR_WORKER_LOG_FORMAT": "text"}
    result = await run(env)
    assert result.returncode == 0, result.stderr
    assert f"[nap {env_queue}] done" in result.stderr
    # and a flag wins over both
    result = await run({"CONVEYOR_WORKER_CONCURRENCY": "0"}, "--concurrency", "2")
    assert result.returncode == 0, result.stderr
    result = await run({"CONVEYOR_WORKER_CONCURRENCY": "0"})
    assert result.returncode == 2
    assert "concurrency" in result.stderr.lower()
    # an unknown key is named, with the known ones
    config.write_text("[worker]\nconcurency = 3\n")
    result = await run({})
    assert result.returncode == 2
    assert "unknown key 'concurency' in [worker]" in result.stderr


NAP = (("jobtype", "nap"), ("queue", "default"))


async def test_metrics_bind_serves_the_workers_own_metrics(
    server: RunningServer, spawn_worker: Spawn, app_dir: Path
) -> None:
    port = free_port()
    proc = spawn_worker(server.url, "--metrics-bind", f"127.0.0.1:{port}", "--concurrency", "4")
    # asyncio may wake a sleep up to its clock's resolution early: 2 x 15 ms runs stay clear of
    # the 20 ms the sum is checked against (two 10 ms naps once summed to 0.0199999999968)
    await push(server.url, "nap", 0.015)
    await push(server.url, "nap", 0.015)
    await push(server.url, "flaky")
    await push(server.url, "nap", 30)  # still running when scraped

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    async def scraped() -> bool:
        nonlocal samples
        try:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return False
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        succeeded = ("conveyor_worker_jobs_succeeded_total", NAP)
        return samples.get(("conveyor_worker_busy", ())) == 1 and samples.get(succeeded) == 2

    deadline = time.monotonic() + 15
    while not await scraped():
        assert time.monotonic() < deadline, (samples, log_of(app_dir))
        assert proc.poll() is None, log_of(app_dir)
        await asyncio.sleep(0.05)
    labels = (("jobtype", "flaky"), ("queue", "default"))
    assert samples[("conveyor_worker_jobs_failed_total", labels)] == 1
    assert samples[("conveyor_worker_job_run_duration_seconds_count", NAP)] == 2
    assert samples[("conveyor_worker_job_run_duration_seconds_sum", NAP)] >= 0.02
    assert samples[("conveyor_worker_concurrency", ())] == 4
    assert ("process_cpu_seconds_total", ()) in samples


async def test_tls_ca_lets_the_worker_verify_the_server(
    make_server: MakeServer,
    spawn_worker: Spawn,
    app_dir: Path,
    self_signed_cert: CertFiles,
) -> None:
    server = await make_server(tls_cert=self_signed_cert.cert, tls_key=self_signed_cert.key)
    url = f"tcp://127.0.0.1:{server.port}"
    tls_url = f"tcp+tls://127.0.0.1:{server.port}"
    import ssl

    context = ssl.create_default_context(cafile=str(self_signed_cert.cert))
    async with await Client.connect(url, tls=context) as client:
        await client.push({"jid": "tls-job-0001", "jobtype": "nap", "args": [0]})
    # without the CA the certificate cannot be verified: the worker says so and exits
    proc = spawn_worker(tls_url, "--burst")
    assert await wait_exit(proc) != 0
    assert "certificate verify failed" in log_of(app_dir).lower()
    proc = spawn_worker(url, "--burst", "--tls-ca", str(self_signed_cert.cert))
    assert await wait_exit(proc) == 0, log_of(app_dir)
    assert "[nap tls-job-0001] done" in log_of(app_dir)
