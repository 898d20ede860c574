"""``conveyor worker --processes N`` as a real subprocess tree against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import Client
from conveyor.manager import ServerStats
from conveyor.store.base import WorkerRecord
from tests.support.server import RunningServer
from tests.support.workers import (
    Spawn,
    children_of,
    proc_stat,
    spawner,
    wait_exit,
    wait_for,
    where,
    write_app,
)

# Each run of a job creates its marks exclusively: a second run of the same jid would fail on
# FileExistsError and show up in the retry set.
APP_SOURCE = """
import asyncio, gc, os, pathlib
import conveyor

app = conveyor.App()
MARKS = pathlib.Path(os.environ["MARKS"])

@app.job
async def nap(seconds: float) -> None:
    jid = conveyor.current_job().jid
    (MARKS / f"started-{jid}").open("x").close()
    await asyncio.sleep(seconds)
    (MARKS / f"done-{jid}-{os.getpid()}").open("x").close()

@app.job
async def count_frozen() -> None:
    (MARKS / f"frozen-{gc.get_freeze_count()}-{os.getpid()}").touch()
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path, "poolapp", APP_SOURCE)


@pytest.fixture
def spawn_pool(app_dir: Path) -> Iterator[Spawn]:
    with spawner(app_dir, "poolapp:app") as spawn:
        yield spawn


def alive(pid: int) -> bool:
    state, _ = proc_stat(pid)
    return state not in ("", "Z")  # an orphan may stay a zombie when nobody reaps it


async def live_workers(server: RunningServer, parent: int) -> dict[str, WorkerRecord]:
    """The worker records of ``parent``'s live children, by wid."""
    records = [view.record for view in await server.manager.workers()]
    return {r.wid: r for r in records if alive(r.pid) and proc_stat(r.pid)[1] == parent}


async def wait_for_workers(
    server: RunningServer, parent: int, count: int, within: float = 20.0
) -> dict[str, WorkerRecord]:
    """Until ``count`` children of ``parent`` have registered and sent a heartbeat since."""
    deadline = time.monotonic() + within
    first_seen: dict[str, float] = {}
    while True:
        workers = await live_workers(server, parent)
        for wid, record in workers.items():
            first_seen.setdefault(wid, record.last_beat)
        beating = {w: r for w, r in workers.items() if r.last_beat > first_seen[w]}
        if len(beating) >= count:
            return beating
        assert time.monotonic() < deadline, f"{len(beating)} of {count} workers beat: {workers}"
        await asyncio.sleep(0.05)


async def push(url: str, count: int, seconds: float) -> list[str]:
    client = await Client.connect(url)
    try:
        jobs = [{"jobtype": "nap", "args": [seconds], "retry": 5} for _ in range(count)]
        jids = [await client.push(job) for job in jobs]
    finally:
        await client.close()
    return jids


def marks(app_dir: Path, prefix: str) -> list[str]:
    return [p.name for p in (app_dir / "marks").iterdir() if p.name.startswith(prefix)]


async def queued(server: RunningServer) -> int:
    info = await server.manager.info(ServerStats())
    return int(info["faktory"]["queues"].get("default", 0))


async def test_two_processes_share_the_jobs_and_run_each_exactly_once(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "--processes", "2", "-c", "2")
    workers = await wait_for_workers(server, parent.pid, 2)
    assert len(workers) == 2  # two wids, each a child of the parent
    pids = {r.pid for r in workers.values()}
    assert pids == children_of(parent.pid)
    jids = await push(server.url, 40, 0.02)
    await wait_for(lambda: len(marks(app_dir, "done-")) == len(jids))
    done = marks(app_dir, "done-")
    assert sorted(name.split("-")[1] for name in done) == sorted(jids)  # each one once
    assert {int(name.split("-")[2]) for name in done} == pids  # both processes worked
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent) == 0
    assert [await where(server, jid) for jid in jids] == [(None, None)] * len(jids)  # all ACKed
    info = await server.manager.info(ServerStats())
    assert info["faktory"]["total_processed"] == len(jids)
    assert info["faktory"]["total_failures"] == 0


async def test_term_stops_every_child_gracefully_and_fails_long_jobs_for_retry(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "-p", "2", "-c", "2", "--grace", "1")
    workers = await wait_for_workers(server, parent.pid, 2)
    long = await push(server.url, 4, 60)  # two slots per process: both must hold two
    await wait_for(lambda: len(marks(app_dir, "started-")) == 4)
    busy = {view.record.wid: view.busy for view in await server.manager.workers()}
    assert [busy[wid] for wid in workers] == [2, 2]
    await push(server.url, 1, 0)  # no free slot: stays queued
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent) == 0
    assert not any(alive(r.pid) for r in workers.values())
    for jid in long:  # none lost: FAILed, so the server retries them
        assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")
    assert await queued(server) == 1
    assert marks(app_dir, "done-") == []


async def test_second_term_stops_the_children_without_waiting_for_the_grace_period(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "-p", "2", "-c", "1", "--grace", "60")
    await wait_for_workers(server, parent.pid, 2)
    long = await push(server.url, 2, 60)
    await wait_for(lambda: len(marks(app_dir, "started-")) == 2)
    parent.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert parent.poll() is None  # the children are inside their 60 s grace period
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent, 10) == 0
    for jid in long:
        assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")


async def test_a_child_killed_with_sigkill_is_replaced(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "-p", "2", "-c", "2")
    first = await wait_for_workers(server, parent.pid, 2)
    victim, survivor = sorted(r.pid for r in first.values())
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: not alive(victim))
    workers = await wait_for_workers(server, parent.pid, 2)
    replacement = {r.pid for r in workers.values()} - {survivor}
    assert len(replacement) == 1
    assert replacement != {victim}
    assert set(workers) - set(first)  # the new process registered under a new wid
    jids = await push(server.url, 6, 0)
    await wait_for(lambda: len(marks(app_dir, "done-")) == len(jids))
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent) == 0  # a replaced process is not a failure
    output = (app_dir / "worker.log").read_text()
    assert f"worker process {victim} was killed by SIGKILL; starting another" in output


async def test_tstp_makes_every_child_quiet(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "-p", "2")
    workers = await wait_for_workers(server, parent.pid, 2)
    parent.send_signal(signal.SIGTSTP)

    async def states() -> set[str]:
        views = await server.manager.workers()
        return {v.record.state for v in views if v.record.wid in workers}

    deadline = time.monotonic() + 10
    while await states() != {"quiet"}:
        assert time.monotonic() < deadline, "not every worker process reported quiet"
        await asyncio.sleep(0.05)
    await push(server.url, 1, 0)
    await asyncio.sleep(0.6)  # three fetch waits: a fetching process would have taken it
    assert parent.poll() is None  # quiet is not stop
    assert await queued(server) == 1
    assert marks(app_dir, "started-") == []
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent) == 0


async def test_children_stop_gracefully_when_the_parent_is_killed(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    parent = spawn_pool(server.url, "-p", "2", "-c", "1", "--grace", "0.5")
    workers = await wait_for_workers(server, parent.pid, 2)
    long = await push(server.url, 2, 60)
    await wait_for(lambda: len(marks(app_dir, "started-")) == 2)
    parent.kill()
    parent.wait()
    pids = [record.pid for record in workers.values()]
    await wait_for(lambda: not any(alive(pid) for pid in pids))
    for jid in long:  # FAILed by the orphans on their way out, not left reserved
        assert await where(server, jid) == ("retries", "conveyor.WorkerShutdown")


async def test_burst_pool_exits_0_once_the_queues_are_empty(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    jids = await push(server.url, 10, 0)
    parent = spawn_pool(server.url, "-p", "2", "--burst")
    assert await wait_exit(parent) == 0
    assert sorted(name.split("-")[1] for name in marks(app_dir, "done-")) == sorted(jids)


async def test_every_worker_process_freezes_what_start_up_built(
    server: RunningServer, spawn_pool: Spawn, app_dir: Path
) -> None:
    client = await Client.connect(server.url)
    try:
        for _ in range(8):
            await client.push({"jobtype": "count_frozen", "args": []})
    finally:
        await client.close()
    parent = spawn_pool(server.url, "-p", "2", "-c", "1", "--burst")
    assert await wait_exit(parent) == 0
    frozen = marks(app_dir, "frozen-")
    assert frozen
    assert all(int(name.split("-")[1]) > 1000 for name in frozen)  # modules, the app, ...


async def test_the_parent_loads_neither_asyncio_nor_the_worker_runtime(
    server: RunningServer, spawn_pool: Spawn
) -> None:
    parent = spawn_pool(server.url, "-p", "2")
    workers = await wait_for_workers(server, parent.pid, 2)
    heavy = ("/_asyncio.", "/_ssl.", "/msgspec/")  # extension modules: they show in the maps
    for record in workers.values():
        assert all(path in mapped_files(record.pid) for path in heavy)
    assert [path for path in heavy if path in mapped_files(parent.pid)] == []
    parent.send_signal(signal.SIGTERM)
    assert await wait_exit(parent) == 0


def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


PARENT_IMPORTS = """
import sys
import conveyor.worker.cli
print(*[m for m in ("asyncio", "conveyor.app", "conveyor.worker.runtime") if m in sys.modules])
import conveyor
from conveyor import Worker
print(conveyor.App.__module__, Worker.__module__)
import conveyor.worker as w
print(*[n for n in w.__all__ if n not in dir(w) or not hasattr(w, n)])
"""


def test_the_parents_imports_leave_out_asyncio_and_the_app_yet_the_names_resolve() -> None:
    # Only extension modules show in a process's maps; a fresh interpreter shows the rest.
    result = subprocess.run(
        [sys.executable, "-c", PARENT_IMPORTS],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.splitlines() == ["", "conveyor.app.core conveyor.worker.runtime", ""]


@pytest.mark.parametrize(
    ("app", "url", "status", "message"),
    [
        ("nosuchmodule:app", None, 2, "cannot import 'nosuchmodule'"),
        ("poolapp:app", "tcp://127.0.0.1:1", 1, "cannot connect to tcp://127.0.0.1:1"),
    ],
)
async def test_a_child_that_cannot_start_ends_the_pool_with_its_status(
    server: RunningServer,
    spawn_pool: Spawn,
    app_dir: Path,
    app: str,
    url: str | None,
    status: int,
    message: str,
) -> None:
    parent = spawn_pool(url or server.url, "-p", "2", app=app)
    assert await wait_exit(parent) == status
    output = (app_dir / "worker.log").read_text()
    assert message in output
    assert "while starting" in output
    assert "starting another" not in output  # no restart loop


def test_processes_is_in_the_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--help"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0
    assert "-p, --processes" in result.stdout
