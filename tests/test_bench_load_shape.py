"""The load-shape bench: fwp_load is built with the C compiler and drives a real conveyor server.

No timings are checked: these tests prove that the driver speaks Faktory's load tool's
protocol to a real server (the jobs it pushes, fetches, ACKs and FAILs land where they
should, with the tool's job bytes) and that the harness reports what it ran, without a ratio
against a server it did not run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench._harness import start_server
from bench.load_shape import build_driver

from conveyor.client import Client
from conveyor.store import open_store
from conveyor.store.base import JobFilter, SortedSet
from tests.support.services import require_binary

ROOT = Path(__file__).resolve().parent.parent
QUEUES = [f"queue{i}" for i in range(5)]
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")  # Go's


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("gcc")
    return build_driver(tmp_path_factory.mktemp("fwp"))


async def _info(url: str) -> dict[str, Any]:
    client = await Client.connect(url)
    try:
        return await client.info()
    finally:
        await client.close()


async def _retries(db: Path) -> list[dict[str, Any]]:
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        page = await store.list_set(SortedSet.RETRIES, JobFilter(), 0, 1000)
        return [json.loads(entry.payload) for entry in page.items]
    finally:
        await store.close()


def _run(driver: Path, port: int, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(driver), "--port", str(port), "--timeout", "30", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.timeout(90)
def test_every_fetched_job_is_failed_into_the_retry_set_with_the_tools_bytes(
    driver: Path, tmp_path: Path
) -> None:
    db = tmp_path / "load.db"
    with start_server(f"sqlite:///{db}") as server:
        report = _run(driver, server.port, "--jobs", "60", "--connections", "4",
                      "--fail-percent", "100")  # fmt: skip
        info = asyncio.run(_info(server.url))["faktory"]
    fetched = report["fetches"] - report["empty_fetches"]
    assert report["errors"] == 0
    assert report["pushes"] >= 60  # each pusher stops once the count is reached
    assert report["fetches"] >= 60
    assert report["acks"] == 0
    assert report["fails"] == fetched
    # every push is either still queued or was fetched and failed into the retry set
    assert sum(info["queues"].get(q, 0) for q in QUEUES) == report["pushes"] - fetched
    assert info["sets"]["retries"] == fetched
    assert info["sets"]["working"] == 0
    jobs = asyncio.run(_retries(db))
    assert len(jobs) == fetched
    for job in jobs:
        assert job["jobtype"] == "SomeJob"
        assert job["args"] == [[1, "string", 3]]  # the tool hands NewJob one slice
        assert job["retry"] == 25
        assert job["queue"] in QUEUES
        assert len(base64.urlsafe_b64decode(job["jid"] + "==")) == 12
        assert RFC3339_NANO.fullmatch(job["created_at"]), job["created_at"]
        assert job["failure"]["message"] == "file already closed"
        assert job["failure"]["errtype"] == "unknown"
    assert len({job["jid"] for job in jobs}) == len(jobs)


async def _results(db: Path) -> dict[str, dict[str, Any]]:
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        records = await store.list_records("results", time.time(), limit=10_000)
        return {record.key: json.loads(record.value) for record in records}
    finally:
        await store.close()


@pytest.mark.timeout(90)
def test_with_results_every_acked_job_has_its_result_stored(driver: Path, tmp_path: Path) -> None:
    db = tmp_path / "results.db"
    with start_server(f"sqlite:///{db}") as server:
        report = _run(driver, server.port, "--jobs", "100", "--fail-percent", "0", "--results")
        info = asyncio.run(_info(server.url))["faktory"]
    assert report["errors"] == 0
    assert report["acks"] == report["fetches"] - report["empty_fetches"] > 0
    assert info["total_processed"] == report["acks"]
    outcomes = asyncio.run(_results(db))
    assert len(outcomes) == report["acks"]  # one result per ACK: the server accepted each
    for outcome in outcomes.values():
        assert outcome["result"] == {"n": 1, "ok": True}


@pytest.mark.timeout(90)
def test_acked_jobs_leave_the_server_and_flush_empties_it_first(
    driver: Path, tmp_path: Path
) -> None:
    with start_server() as server:
        first = _run(driver, server.port, "--jobs", "200", "--fail-percent", "0")
        second = _run(driver, server.port, "--jobs", "200", "--fail-percent", "0")
        info = asyncio.run(_info(server.url))["faktory"]
    for report in (first, second):
        assert report["errors"] == 0
        assert report["fails"] == 0
        assert report["acks"] == report["fetches"] - report["empty_fetches"]
        assert report["jobs_per_s"] > 0
        assert report["cpu_user_s"] + report["cpu_sys_s"] > 0
    # FLUSH at the start of the second run dropped the first run's leftovers
    assert sum(info["queues"].get(q, 0) for q in QUEUES) == second["pushes"] - second["acks"]
    assert info["total_processed"] == second["acks"]
    assert info["sets"]["retries"] == 0


def test_the_driver_refuses_bad_arguments(driver: Path) -> None:
    for args in (["--jobs", "0"], ["--connections", "1"], ["--fail-percent", "101"], ["--x"]):
        done = subprocess.run([str(driver), *args], capture_output=True, text=True, check=False)
        assert done.returncode == 2, args
        assert "usage: fwp_load" in done.stderr


def test_the_driver_says_so_when_nothing_listens(driver: Path) -> None:
    from tests.support.services import free_port

    done = subprocess.run(
        [str(driver), "--port", str(free_port()), "--timeout", "5"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no HI from the server" in done.stderr


@pytest.mark.timeout(150)
def test_the_harness_runs_both_stores_and_gives_no_ratio_without_faktory(
    driver: Path, tmp_path: Path
) -> None:
    require_binary("redis-server")
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nhand-written\n")
    args = [sys.executable, "-m", "bench.load_shape", "--tree", "working", "--jobs", "300",
            "--rounds", "2", "--doc", str(page), "--json", str(tmp_path / "load.json")]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "load.json").read_text())
    runs = [(s["round"], s["target"], s["driver"]) for s in data["samples"]]
    assert runs == [
        (1, "conveyor-sqlite", "fwp_load"),
        (1, "conveyor-redis", "fwp_load"),
        (2, "conveyor-redis", "fwp_load"),  # the order rotates each round
        (2, "conveyor-sqlite", "fwp_load"),
    ]
    for sample in data["samples"]:
        assert sample["error"] is None
        assert sample["jobs_per_s"] > 0
        assert sample["server_cpu_s"] > 0
        assert sample["driver_cpu_s"] > 0
        assert (sample["store_cpu_s"] is None) == (sample["target"] == "conveyor-sqlite")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n")
    assert "<!-- load-shape:start -->" in text
    assert "| conveyor, Redis store | fwp_load |" in text
    assert "Real Faktory was not run here" in text
    assert "÷ Faktory" not in text


@pytest.mark.timeout(120)
def test_the_floor_and_redis_through_its_socket_run_as_rows(driver: Path, tmp_path: Path) -> None:
    require_binary("redis-server")
    args = [sys.executable, "-m", "bench.load_shape", "--tree", "working", "--jobs", "300",
            "--rounds", "1", "--stores", "floor,redis-unix",
            "--json", str(tmp_path / "load.json")]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    samples = {s["target"]: s for s in json.loads((tmp_path / "load.json").read_text())["samples"]}
    assert set(samples) == {"conveyor-floor", "conveyor-redis-unix"}
    for sample in samples.values():
        detail = sample["detail"]
        assert sample["error"] is None, sample
        # every job pushed was fetched once and then ACKed or FAILed: the floor answers it all
        assert detail["pushes"] >= 300
        assert detail["errors"] == 0
        assert detail["acks"] + detail["fails"] == detail["fetches"] - detail["empty_fetches"]
    assert samples["conveyor-floor"]["store_cpu_s"] is None
    assert samples["conveyor-redis-unix"]["store_cpu_s"] > 0  # its redis-server did the work
    assert "| Python floor (bench/fwp_floor.py" in done.stdout
    assert "| conveyor, Redis store (Unix socket) | fwp_load |" in done.stdout
