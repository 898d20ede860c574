"""Runs the workloads against one row (conveyor or a peer) and collects the samples.

Every library runs the same job body (``bench.peers._common``), whose last step is an INCR of
a Redis counter; the driver polls that counter, so "done" means the same thing for every row.
Producers and workers are subprocesses in the library's own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench._harness import percentile
from bench.peers._common import DONE_KEY, LATENCY_KEY
from bench.rows import ROOT, Row, subprocess_env

POLL_SECONDS = 0.01
RSS_EVERY_SECONDS = 0.1


@dataclass
class Settings:
    jobs: int = 20_000
    sleep_jobs: int = 2_000
    latency_jobs: int = 500
    repeat: int = 3
    timeout: float = 20.0
    """Longest a processing run may take; slower rows report the rate reached so far."""
    sleep_timeout: float = 10.0
    """The same for a sleep run (its rate is taken from the first to the last job done)."""


@dataclass
class RowResult:
    name: str
    config: str
    bulk_api: str | None
    store: str = ""  # conveyor's rows: the server's store
    enqueue: list[float] = field(default_factory=list)  # jobs/s, one by one
    bulk: list[float] = field(default_factory=list)  # jobs/s, bulk API
    process: list[float] = field(default_factory=list)  # jobs/s, worker start -> last done
    steady: list[float] = field(default_factory=list)  # jobs/s, first done -> last done
    sleep: list[float] = field(default_factory=list)  # jobs/s of 10 ms jobs, first -> last
    p50: list[float] = field(default_factory=list)  # ms, enqueue -> start
    p95: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # peak, all worker processes
    pss_mb: list[float] = field(default_factory=list)  # peak PSS, all worker processes
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class TreeMemory:
    rss_kb: int = 0
    """Sum of the processes' RSS: pages shared between them (libraries, copy-on-write pages
    of forked children) are counted once per process."""
    pss_kb: int = 0
    """Sum of their PSS: each shared page split between the processes that map it, so the
    sum is the memory the pool really holds."""

    def peak(self, other: TreeMemory) -> TreeMemory:
        return TreeMemory(max(self.rss_kb, other.rss_kb), max(self.pss_kb, other.pss_kb))


def tree_memory(root: int) -> TreeMemory:
    """Memory of ``root`` and all its descendants (worker pools start children)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{entry}/stat") as stat,
        ):
            parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
    family = {root}
    changed = True
    while changed:
        before = len(family)
        family |= {pid for pid, parent in parents.items() if parent in family}
        changed = len(family) != before
    rss = pss = 0
    for pid in family:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return TreeMemory(rss, pss)


@dataclass
class Progress:
    seconds: float
    done: int
    first_done_at: float | None
    last_done_at: float | None
    peak: TreeMemory

    @property
    def steady_rate(self) -> float:
        if self.first_done_at is None or self.last_done_at is None:
            return 0.0
        span = self.last_done_at - self.first_done_at
        if span <= POLL_SECONDS:  # all done within one poll (a tiny run): use start -> last
            return self.done / self.seconds if self.seconds > 0 else 0.0
        return (self.done - 1) / span


class Runner:
    def __init__(
        self,
        redis_url: str,
        conveyor_urls: dict[str, str],
        settings: Settings,
        log_dir: Path,
        src: str | None = None,
    ):
        """``conveyor_urls``: the server for each store conveyor's rows run on."""
        self.redis = redis.Redis.from_url(redis_url)
        self.conveyor_urls = conveyor_urls
        self.redis_url = redis_url
        self.settings = settings
        self.src = src
        self.log_dir = log_dir

    def conveyor_url(self, row: Row) -> str:
        return self.conveyor_urls.get(row.store, "tcp://127.0.0.1:1")

    def env(self, row: Row) -> dict[str, str]:
        return subprocess_env(self.redis_url, self.conveyor_url(row), self.src)

    # -- plumbing --------------------------------------------------------------------------------

    def client(self, row: Row, op: str, count: int) -> float:
        """Run one producer operation in the row's environment; seconds spent pushing."""
        args = [row.python, "-m", "bench.peers.client", row.module, op, str(count)]
        done = subprocess.run(
            args,
            env=self.env(row),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{op} failed: {done.stderr.strip().splitlines()[-3:]}")
        import json

        return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])

    def reset(self, row: Row) -> None:
        """Empty the peers' Redis database and, for conveyor, its server (no worker runs).

        FLUSHDB, not FLUSHALL: conveyor's Redis store lives in another database of the same
        redis-server, and is emptied through its server (FLUSH), as a user would.
        """
        self.redis.flushdb()
        if row.is_conveyor:
            asyncio.run(_conveyor_flush(self.conveyor_url(row)))

    def clear_counters(self) -> None:
        self.redis.delete(DONE_KEY, LATENCY_KEY)

    @contextlib.contextmanager
    def worker(self, row: Row) -> Iterator[subprocess.Popen[bytes]]:
        log = open(self.log_dir / f"{_slug(row.name)}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            row.worker_args(self.redis_url, self.conveyor_url(row)),
            env=self.env(row),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: pools are stopped as a whole
        )
        try:
            yield process
        finally:
            _stop_group(process)
            log.close()

    def wait_done(
        self,
        target: int,
        process: subprocess.Popen[bytes],
        started: float,
        timeout: float | None = None,
    ) -> Progress:
        limit = self.settings.timeout if timeout is None else timeout
        peak = TreeMemory()
        first = last = None
        next_rss = started
        done = 0
        while True:
            now = time.perf_counter()
            done = int(self.redis.get(DONE_KEY) or 0)
            if done and first is None:
                first = now
            if done >= target:
                last = now
                break
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode} after {done} jobs")
            if now - started > limit:
                last = now
                _say(f"  timed out at {done}/{target} jobs after {now - started:.1f} s")
                break
            if now >= next_rss:
                peak = peak.peak(tree_memory(process.pid))
                next_rss = now + RSS_EVERY_SECONDS
            time.sleep(POLL_SECONDS)
        peak = peak.peak(tree_memory(process.pid))
        return Progress(last - started, done, first, last, peak)

    # -- workloads -------------------------------------------------------------------------------

    def enqueue_and_process(self, row: Row, result: RowResult, bulk: str | None) -> None:
        jobs = self.settings.jobs
        self.reset(row)
        result.enqueue.append(jobs / self.client(row, "enqueue", jobs))
        started = time.perf_counter()
        with self.worker(row) as process:
            progress = self.wait_done(jobs, process, started)
        result.process.append(progress.done / progress.seconds)
        result.steady.append(progress.steady_rate)
        _say(f"  enqueue {result.enqueue[-1]:,.0f}/s, process {result.process[-1]:,.0f}/s")
        result.rss_mb.append(progress.peak.rss_kb / 1024)
        result.pss_mb.append(progress.peak.pss_kb / 1024)
        if progress.done < jobs:
            result.notes.append(f"processing stopped at {self.settings.timeout:.0f} s")
        if bulk:
            self.reset(row)
            result.bulk.append(jobs / self.client(row, "bulk", jobs))

    def latency(self, row: Row, result: RowResult) -> None:
        self.reset(row)
        with self.worker(row) as process:
            self.client(row, "warm", 1)
            self.wait_done(1, process, time.perf_counter())
            time.sleep(1.0)  # let every pool process come up before probing
            for _ in range(self.settings.repeat):
                self.clear_counters()
                count = self.settings.latency_jobs
                self.client(row, "latency", count)
                self.wait_done(count, process, time.perf_counter())
                samples = [float(v) * 1000 for v in self.redis.lrange(LATENCY_KEY, 0, -1)]
                result.p50.append(percentile(samples, 0.50))
                result.p95.append(percentile(samples, 0.95))
                result.p99.append(percentile(samples, 0.99))

    def sleep(self, row: Row, result: RowResult) -> None:
        jobs = self.settings.sleep_jobs
        self.reset(row)
        self.client(row, "sleep", jobs)
        started = time.perf_counter()
        with self.worker(row) as process:
            progress = self.wait_done(jobs, process, started, self.settings.sleep_timeout)
        result.sleep.append(progress.steady_rate)
        if progress.done < jobs:
            result.notes.append(f"sleep runs stopped at {self.settings.sleep_timeout:.0f} s")

    def run_row(self, row: Row, bulk: str | None) -> RowResult:
        result = RowResult(row.name, row.config, bulk, row.store)
        try:
            for _ in range(self.settings.repeat):
                self.enqueue_and_process(row, result, bulk)
            self.latency(row, result)
            for _ in range(self.settings.repeat):
                self.sleep(row, result)
        except Exception as exc:  # one broken peer must not sink the whole comparison
            result.error = f"{type(exc).__name__}: {exc}"
        result.notes = sorted(set(result.notes))
        return result


def row_bulk_api(row: Row) -> str | None:
    """What the row's Producer uses for bulk enqueue (read from its module, in its env)."""
    code = f"import {row.module} as m; print(m.Producer.bulk or '')"
    out = subprocess.run(
        [row.python, "-c", code],
        env=subprocess_env("redis://127.0.0.1:1/0", "tcp://127.0.0.1:1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None


async def _conveyor_flush(url: str) -> None:
    from conveyor.client import Client

    client = await Client.connect(url)
    try:
        await client.flush()
    finally:
        await client.close()


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=8)
    # pool children can outlive their parent; the group is ours alone
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def log_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="conveyor-bench-logs-"))
