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
    store: str = ""
    """For conveyor's rows, the server's store: ``sqlite`` or ``redis``."""

    def worker_args(self, redis_url: str, conveyor_url: str) -> list[str]:
        subst = {"{redis}": redis_url, "{conveyor}": conveyor_url, "{python}": self.python}
        return [subst.get(part, part) for part in self.worker]

    @property
    def is_conveyor(self) -> bool:
        return bool(self.store)


def _venv_bin(name: str) -> str:
    return str(PEER_VENV / "bin" / name)


STORE_LABELS = {"sqlite": "SQLite store", "redis": "Redis store"}


def _conveyor_row(name: str, store: str, processes: int, concurrency: int) -> Row:
    pool = ["--processes", str(processes)] if processes > 1 else []
    command = (
        sys.executable, "-m", "conveyor", "worker", "bench.peers.conveyor_app:app",
        "--url", "{conveyor}", *pool, "-c", str(concurrency), "-q", "bench",
        "--log-level", "warning",
    )  # fmt: skip
    shown = shlex.join(["conveyor", "worker", *pool, "-c", str(concurrency)])
    shape = (
        f"one command: a parent and {processes} worker processes" if processes > 1 else "1 process"
    )
    where = " on the same redis-server as the peers" if store == "redis" else ""
    return Row(
        name, "bench.peers.conveyor_app", sys.executable, command,
        f"`{shown}` ({shape}); server: {STORE_LABELS[store]}{where}",
        concurrency * processes, store,
    )  # fmt: skip


def conveyor_rows(
    stores: tuple[str, ...] = ("sqlite", "redis"),
    concurrency: int = 64,
    processes: int = 1,
    pool: bool = True,
) -> list[Row]:
    """conveyor's rows: one per server store, then (``pool``) a SQLite row with two processes.

    conveyor's server shares the machine's two cores with the workers. One worker process
    (about 6 us of CPU per job) already keeps the server busy, so that is the configuration
    we recommend for two cores and the row compared with the peers; the two-process row
    shows what a second process buys (little throughput, a process's memory).
    """
    rows = [
        _conveyor_row(
            "conveyor" if store == "sqlite" else f"conveyor ({STORE_LABELS[store]})",
            store,
            processes,
            concurrency,
        )
        for store in stores
    ]
    if pool and processes == 1 and "sqlite" in stores:
        rows.append(_conveyor_row("conveyor (2 processes)", "sqlite", 2, concurrency // 2))
    return rows


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
