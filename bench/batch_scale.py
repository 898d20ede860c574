"""One batch of 100,000 jobs: pushed with PUSHB, run by several consumers, each callback
fired exactly once, and ``BATCH STATUS`` timed at that size (it reads counters, not jobs).

    python -m bench.batch_scale                          # SQLite, 100,000 jobs, 4 consumers
    python -m bench.batch_scale --storage redis://127.0.0.1:6379/5 --jobs 20000

Prints what it measured; exits non-zero if a callback did not come exactly once. Nothing
here is a test (no timed assertions): the tests prove exactly-once on smaller batches.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._harness import percentile, start_server
from conveyor.client import Client

CHUNK = 1000


async def push_batch(url: str, jobs: int, plain: bool = False) -> tuple[str, float]:
    """Push ``jobs`` into a new batch (or, ``plain``, the same jobs outside any batch)."""
    async with await Client.connect(url) as client:
        bid = ""
        if not plain:
            bid = await client.batch_new({
                "description": f"scale {jobs}",
                "complete": {"jobtype": "Complete", "args": [], "queue": "scale-callbacks"},
                "success": {"jobtype": "Success", "args": [], "queue": "scale-callbacks"},
            })  # fmt: skip
        custom = {} if plain else {"custom": {"bid": bid}}
        started = time.perf_counter()
        for start in range(0, jobs, CHUNK):
            chunk = [
                {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": [n], "queue": "scale",
                 **custom}
                for n in range(start, min(start + CHUNK, jobs))
            ]  # fmt: skip
            errors = await client.push_bulk(chunk)
            if errors:
                raise SystemExit(f"PUSHB refused jobs: {list(errors.items())[:3]}")
        if bid:
            await client.batch_commit(bid)
        return bid, time.perf_counter() - started


async def time_status(url: str, bid: str, calls: int) -> list[float]:
    async with await Client.connect(url) as client:
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.batch_status(bid)
            timings.append((time.perf_counter() - started) * 1000)
        return timings


async def consume(url: str, consumers: int, total: int) -> float:
    done = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        async with await Client.connect(url) as client:
            while done < total:
                jobs = await client.fetch_many(100, "scale")
                if jobs:
                    await client.ack_many([job["jid"] for job in jobs])
                    done += len(jobs)

    await asyncio.gather(*(worker() for _ in range(consumers)))
    return time.perf_counter() - started


async def callbacks(url: str, within: float) -> list[str]:
    """Run the callbacks that come within ``within`` seconds; their jobtypes, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    async with await Client.connect(url) as client:
        while time.monotonic() < deadline:
            job = await client.fetch("scale-callbacks")
            if job is not None:
                seen.append(job["jobtype"])
                await client.ack(job["jid"])
    return seen


async def server_side_status(jobs: int) -> list[float]:
    """``BATCH STATUS`` inside the server process alone (no network): a SQLite store holding
    a batch of ``jobs``, timed through the feature."""
    import tempfile

    from conveyor.manager import Manager, ManagerConfig
    from conveyor.manager.features.batches import BatchFeature
    from conveyor.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        manager = Manager(open_store(f"sqlite:///{tmp}/status.db"), ManagerConfig())
        await manager.start()
        feature = manager.feature(BatchFeature)
        bid = await feature.new_batch(b'{"success":{"jobtype":"S","args":[]}}')
        for start in range(0, jobs, CHUNK):
            payload = ",".join(
                f'{{"jid":"{uuid.uuid4().hex}","jobtype":"N","args":[],"custom":{{"bid":"{bid}"}}}}'
                for _ in range(min(CHUNK, jobs - start))
            )
            await manager.push_bulk(f"[{payload}]".encode())
        timings = []
        for _ in range(1000):
            started = time.perf_counter()
            await feature.status(bid)
            timings.append((time.perf_counter() - started) * 1000)
        assert (await feature.status(bid))["total"] == jobs
        await manager.stop()
        return timings


async def run(args: argparse.Namespace) -> int:
    with start_server(args.storage or None) as server:  # the same jobs outside a batch first
        _, plain_pushed = await push_batch(server.url, args.jobs, plain=True)
        plain_consumed = await consume(server.url, args.consumers, args.jobs)
    with start_server(args.storage or None) as server:
        bid, pushed = await push_batch(server.url, args.jobs)
        status_ms = await time_status(server.url, bid, 1000)
        consumed = await consume(server.url, args.consumers, args.jobs)
        seen = await callbacks(server.url, args.wait)
        async with await Client.connect(server.url) as client:
            final: dict[str, Any] = await client.batch_status(bid)
    inside = await server_side_status(args.jobs) if not args.storage else []
    table = Table(title=f"one batch of {args.jobs:,} jobs, {args.storage or 'SQLite'}")
    table.add_column("measure")
    table.add_column("in the batch", justify="right")
    table.add_column("plain jobs", justify="right")
    table.add_row("PUSHB (1,000 a command)", f"{args.jobs / pushed:,.0f} jobs/s",
                  f"{args.jobs / plain_pushed:,.0f} jobs/s")  # fmt: skip
    table.add_row(f"run by {args.consumers} consumers (FETCHB/ACKB 100)",
                  f"{args.jobs / consumed:,.0f} jobs/s",
                  f"{args.jobs / plain_consumed:,.0f} jobs/s")  # fmt: skip
    table.add_row("BATCH STATUS round trip p50 / p99", _p50_p99(status_ms))
    if inside:
        table.add_row("BATCH STATUS in the server p50 / p99", _p50_p99(inside))
    table.add_row("callbacks run", ", ".join(seen) or "none")
    table.add_row("final status", f"pending {final['pending']}, complete_st "
                  f"{final['complete_st']!r}, success_st {final['success_st']!r}")  # fmt: skip
    Console().print(table)
    return 0 if seen == ["Complete", "Success"] else 1


def _p50_p99(samples: list[float]) -> str:
    return f"{statistics.median(samples):.3f} / {percentile(samples, 0.99):.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--wait", type=float, default=3.0, help="seconds to wait for callbacks")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
