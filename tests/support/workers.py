"""``conveyor worker`` subprocesses for tests: an app module written to a temp dir, processes
spawned against a server and killed (with their children) at teardown, and waits on them.

The app's jobs leave marks (empty files) in ``<app_dir>/marks`` (``MARKS`` in the worker's
environment), which the tests read to see what ran where.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import conveyor.job
from tests.support.server import RunningServer

__all__ = [
    "Spawn",
    "children_of",
    "kill",
    "proc_stat",
    "spawner",
    "wait_exit",
    "wait_for",
    "where",
    "write_app",
]

Spawn = Callable[..., subprocess.Popen[bytes]]


def write_app(directory: Path, module: str, source: str) -> Path:
    """``<directory>/<module>.py`` from ``source``, and an empty ``marks`` folder beside it."""
    (directory / f"{module}.py").write_text(textwrap.dedent(source))
    (directory / "marks").mkdir()
    return directory


@contextlib.contextmanager
def spawner(app_dir: Path, app: str) -> Iterator[Spawn]:
    """``spawn(url, *args, app=app)`` runs ``conveyor worker APP --heartbeat 0.2 ARGS`` in
    ``app_dir``; every process and its children are killed when the block ends."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(url: str, *args: str, app: str = app) -> subprocess.Popen[bytes]:
        env = {**os.environ, "MARKS": str(app_dir / "marks"), "CONVEYOR_URL": url}
        command = [sys.executable, "-m", "conveyor", "worker", app, "--heartbeat", "0.2"]
        with (app_dir / "worker.log").open("ab") as log:
            proc = subprocess.Popen(
                [*command, *args], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in procs:
            for pid in children_of(proc.pid):
                kill(pid)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_stat(int(entry))[1] == pid:
            found.add(int(entry))
    return found


def proc_stat(pid: int) -> tuple[str, int]:
    """(state, parent pid) from /proc; ("", 0) once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return "", 0
    return fields[0], int(fields[1])


async def wait_for(check: Callable[[], Any], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.02)


async def wait_exit(proc: subprocess.Popen[bytes], within: float = 20.0) -> int:
    await wait_for(lambda: proc.poll() is not None, within)
    return proc.returncode


async def where(server: RunningServer, jid: str) -> tuple[str | None, str | None]:
    """Where a job is (``queue``, ``retries``, ...; None once ACKed) and its last errtype."""
    found = await server.manager.locate(jid)
    if found is None:
        return None, None
    failure = conveyor.job.decode_job(found.payload).failure or {}
    return found.where, failure.get("errtype")
