"""Server memory with a million jobs queued: does the SQLite store keep jobs out of Python?

    python -m bench.server_memory --jobs 1000000

Starts a fresh ``conveyor server`` (SQLite in a temp dir), reads its RSS, fills one queue with
no-op jobs through ``App.push_bulk`` (PUSHB), then reads its RSS again. The growth should be
SQLite's page cache (capped at 32 MiB by ``PRAGMA cache_size``), not a per-job cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import asdict, dataclass

from bench._harness import rss_kb, start_server

BUILD_CHUNK = 20_000  # jobs built and pushed per call, so the pusher's own memory stays small


@dataclass(frozen=True)
class MemoryResult:
    jobs: int
    empty_mib: float
    queued_mib: float
    push_seconds: float
    db_bytes: int

    @property
    def growth_mib(self) -> float:
        return self.queued_mib - self.empty_mib

    @property
    def bytes_per_job(self) -> float:
        """RSS growth per queued job (what Faktory's Redis pays ~183 bytes for)."""
        return self.growth_mib * 1024 * 1024 / self.jobs if self.jobs else 0.0


async def _fill(url: str, jobs: int) -> float:
    from conveyor.app import App

    app = App(url)

    @app.job(queue="memory")
    async def noop(n: int) -> None: ...

    started = time.perf_counter()
    try:
        for first in range(0, jobs, BUILD_CHUNK):
            batch = [noop.build(n) for n in range(first, min(jobs, first + BUILD_CHUNK))]
            refused = [r for r in await app.push_bulk(batch) if not r.ok]
            if refused:
                raise RuntimeError(f"the server refused {len(refused)} jobs: {refused[0]}")
        return time.perf_counter() - started
    finally:
        await app.aclose()


def run(jobs: int, extra_env: dict[str, str] | None = None) -> MemoryResult:
    with start_server(extra_env=extra_env) as server:
        time.sleep(0.5)  # let start-up allocations settle before the first reading
        empty = rss_kb(server.process.pid) / 1024
        seconds = asyncio.run(_fill(server.url, jobs))
        time.sleep(1.0)  # and for the background checkpoint to fold the WAL into the file
        queued = rss_kb(server.process.pid) / 1024
        db_bytes = os.path.getsize(server.storage.removeprefix("sqlite:///"))
    return MemoryResult(jobs, empty, queued, seconds, db_bytes)


def describe(result: MemoryResult) -> str:
    return (
        f"server RSS {result.empty_mib:.1f} MiB empty, {result.queued_mib:.1f} MiB with "
        f"{result.jobs:,} jobs queued (+{result.growth_mib:.1f} MiB, "
        f"{result.bytes_per_job:.0f} bytes per job); database file "
        f"{result.db_bytes / result.jobs:.0f} bytes per job on disk; filled at "
        f"{result.jobs / result.push_seconds:,.0f} jobs/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.server_memory", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    result = run(args.jobs)
    print(describe(result))
    print(asdict(result))


if __name__ == "__main__":
    main()
