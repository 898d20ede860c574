"""Who is compared, and exactly how each one's worker is started (printed next to each row).

Configurations follow each project's docs for a 2-core machine: multi-process libraries get
one process per core (Dramatiq's and Celery's defaults are the CPU count), with each library's
default in-process concurrency; single-process libraries run one process, as their docs show.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / "bench" / ".venv-peers"
REQUIREMENTS = ROOT / "bench" / "peers" / "requirements.txt"


@dataclass(frozen=True)
class Row:
    name: str
    module: str
    python: str
    worker: tuple[str, ...]
    config: str
    concurrency: int
    processes: int = 1
    """Copies of ``worker`` to start, for a worker command with no process-pool option."""

    def worker_args(self, redis_url: str, conveyor_url: str) -> list[str]:
        subst = {"{redis}": redis_url, "{conveyor}": conveyor_url, "{python}": self.python}
        args = [subst.get(part, part) for part in self.worker]
        if self.processes == 1:
            return args
        # One shell, N background copies; the runner TERMs the whole group. The shell then
        # waits for its workers, so they stop gracefully instead of being KILLed mid-FETCH (a
        # KILLed fetcher's job stays reserved on the server until its reservation expires).
        copies = " & ".join([shlex.join(args)] * self.processes)
        return ["sh", "-c", f"trap wait TERM; {copies} & wait"]

    @property
    def is_conveyor(self) -> bool:
        return self.name.startswith("conveyor")


def _venv_bin(name: str) -> str:
    return str(PEER_VENV / "bin" / name)


def conveyor_rows(worker_available: bool, concurrency: int = 32, processes: int = 2) -> list[Row]:
    """conveyor's row: the real ``conveyor worker``, or the stand-in loop until it lands.

    Like the multi-process peers, one worker process per core by default: one
    ``conveyor worker --processes`` command, whose parent runs the worker processes.
    """
    if worker_available:
        return [
            Row(
                "conveyor",
                "bench.peers.conveyor_app",
                sys.executable,
                (
                    sys.executable,
                    "-m",
                    "conveyor",
                    "worker",
                    "bench.peers.conveyor_app:app",
                    "--url",
                    "{conveyor}",
                    "--processes",
                    str(processes),
                    "-c",
                    str(concurrency),
                    "-q",
                    "bench",
                    "--log-level",
                    "warning",
                ),
                f"`conveyor worker --processes {processes} -c {concurrency}` (one command: a "
                f"parent and {processes} worker processes); server: SQLite store",
                concurrency * processes,
            )
        ]
    return [
        Row(
            "conveyor (bench loop)",
            "bench.peers.conveyor_app",
            sys.executable,
            (sys.executable, "-m", "bench.conveyor_loop", "{conveyor}", str(concurrency)),
            f"stand-in worker: FETCHB/ACKB over 2 connections, {concurrency} slots; SQLite store",
            concurrency,
        )
    ]


def peer_rows() -> list[Row]:
    py = _venv_bin("python")
    return [
        Row("RQ SimpleWorker pool", "bench.peers.rq_app", py,
            (_venv_bin("rq"), "worker-pool", "-n", "2", "-w", "rq.worker.SimpleWorker",
             "-u", "{redis}", "-q", "bench"),
            "`rq worker-pool -n 2 -w rq.worker.SimpleWorker`", 2),
        Row("RQ (forking Worker)", "bench.peers.rq_app", py,
            (_venv_bin("rq"), "worker", "-u", "{redis}", "-q", "bench"),
            "`rq worker` (1 process, fork per job)", 1),
        Row("arq", "bench.peers.arq_app", py,
            (_venv_bin("arq"), "bench.peers.arq_app.WorkerSettings"),
            "`arq WorkerSettings` (1 process, max_jobs=10, poll_delay=0.5 s)", 10),
        Row("Dramatiq", "bench.peers.dramatiq_app", py,
            (_venv_bin("dramatiq"), "bench.peers.dramatiq_app", "-p", "2", "-t", "8",
             "-Q", "bench"),
            "`dramatiq -p 2 -t 8` (Redis broker)", 16),
        Row("Celery", "bench.peers.celery_app", py,
            (_venv_bin("celery"), "-A", "bench.peers.celery_app", "worker", "-c", "2",
             "-P", "prefork", "-Q", "bench", "-l", "warning", "--without-gossip",
             "--without-mingle", "--without-heartbeat"),
            "`celery worker -P prefork -c 2` (Redis broker, prefetch x4, no results)", 2),
        Row("SAQ", "bench.peers.saq_app", py,
            (_venv_bin("saq"), "bench.peers.saq_app.settings", "--workers", "2", "--quiet"),
            "`saq --workers 2`, concurrency 10 each", 20),
        Row("taskiq", "bench.peers.taskiq_app", py,
            (_venv_bin("taskiq"), "worker", "bench.peers.taskiq_app:broker", "--workers", "2",
             "--log-level", "WARNING"),
            "`taskiq worker --workers 2` (RedisStreamBroker, 100 async tasks each)", 200),
        Row("Huey", "bench.peers.huey_app", py,
            (_venv_bin("huey_consumer"), "bench.peers.huey_app.huey", "-k", "thread", "-w", "8",
             "-q"),
            "`huey_consumer -k thread -w 8` (RedisHuey, blocking reads)", 8),
        Row("streaQ", "bench.peers.streaq_app", py,
            (_venv_bin("streaq"), "run", "bench.peers.streaq_app:worker", "--workers", "2"),
            "`streaq run --workers 2`, concurrency 16 each", 32),
    ]  # fmt: skip


def conveyor_worker_available(src: str | None = None) -> bool:
    """``conveyor worker`` with ``--processes`` (the row runs one pool command) in this tree?"""
    probe = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--help"],
        env=subprocess_env("", "", src),
        capture_output=True,
        check=False,
        timeout=60,
    )
    return probe.returncode == 0 and b"--processes" in probe.stdout


def ensure_peer_venv() -> None:
    """Create ``bench/.venv-peers`` and install the pinned peers the first time it is needed."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    wanted = REQUIREMENTS.read_text()
    if marker.exists() and marker.read_text() == wanted:
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    marker.write_text(wanted)


def subprocess_env(redis_url: str, conveyor_url: str, src: str | None = None) -> dict[str, str]:
    """``src``: a directory holding the ``conveyor`` package to run instead of the installed one."""
    env = dict(os.environ)
    paths = [src, str(ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["BENCH_REDIS_URL"] = redis_url
    env["CONVEYOR_URL"] = conveyor_url
    return env
