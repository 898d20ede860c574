"""Cancellation and aggregation, measured on real ``conveyor server`` processes.

    python -m bench.cancel_aggregate_bench                    # SQLite, then two servers on Redis
    python -m bench.cancel_aggregate_bench --redis redis://127.0.0.1:6379/0

* **cancel -> stopped**: a worker of this process runs async jobs that wait forever; each is
  cancelled (``app.cancel``) and the time from sending the cancel to the handler's
  ``CancelledError`` is recorded. With ``--redis``, twice: the cancel sent to the worker's own
  server, and to another server over the same Redis (the notice crosses through the store).
* **due -> enqueued**: groups of jobs with a short grace; the time from each group's due
  moment (its last push + grace) to its aggregate job starting in the handler.
* **PUSHB of members**: jobs per second into groups, next to plain jobs, same payloads.

Nothing is asserted: it prints a table (docs/cancellation.md and docs/aggregation.md quote it).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from rich.console import Console
from rich.table import Table

import conveyor
from bench._harness import percentile, start_server
from conveyor.client import Client, new_jid

GRACE_SECONDS = 0.2


def _app(url: str) -> tuple[conveyor.App, dict[str, Any]]:
    app = conveyor.App(url)
    state: dict[str, Any] = {"started": asyncio.Event(), "stopped": {}, "batches": []}

    @app.job
    async def wait_forever(tag: str) -> None:
        state["started"].set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            state["stopped"][tag] = time.perf_counter()
            raise

    @app.job(aggregate=conveyor.Aggregate(max_size=1000, max_delay=60, grace=GRACE_SECONDS))
    async def collect(items: list[int]) -> None:
        state["batches"].append((time.perf_counter(), items))

    state["jobs"] = (wait_forever, collect)
    return app, state


async def cancel_latency(worker_url: str, cancel_url: str, rounds: int) -> list[float]:
    app, state = _app(worker_url)
    canceller = conveyor.App(cancel_url)
    wait_forever, _ = state["jobs"]
    delays = []
    async with app.worker(concurrency=4):
        for n in range(rounds):
            state["started"].clear()
            jid = await wait_forever.push(str(n))
            await state["started"].wait()
            await asyncio.sleep(0.05 + 0.011 * n)  # not in step with any server-side poll
            sent = time.perf_counter()
            await canceller.cancel(jid)
            while str(n) not in state["stopped"]:
                await asyncio.sleep(0.001)
            delays.append((state["stopped"][str(n)] - sent) * 1000)
    await app.aclose()
    await canceller.aclose()
    return delays


async def flush_lateness(url: str, groups: int, per_group: int) -> tuple[list[float], int]:
    app, state = _app(url)
    _, collect = state["jobs"]
    due: dict[int, float] = {}
    async with app.worker(concurrency=8):
        for g in range(groups):
            for n in range(per_group):
                await collect.options(group=f"g{g}").push(g * per_group + n)
            due[g] = time.perf_counter() + GRACE_SECONDS
        while sum(len(items) for _, items in state["batches"]) < groups * per_group:
            await asyncio.sleep(0.01)
        await asyncio.sleep(GRACE_SECONDS * 2)  # a second flush would show by now
    late = [(ran - due[items[0] // per_group]) * 1000 for ran, items in state["batches"]]
    await app.aclose()
    return late, len(state["batches"])


async def pushb_members(url: str, jobs: int) -> tuple[float, float]:
    client = await Client.connect(url)
    rates = []
    try:
        for custom in (None, {"group": "bulk", "aggregate": {"max_size": 10_000, "grace": 3600}}):
            started = time.perf_counter()
            for start in range(0, jobs, 1000):
                chunk = [{"jid": new_jid(), "jobtype": "Noop", "args": [n], "queue": "pb"}
                         for n in range(start, min(start + 1000, jobs))]  # fmt: skip
                if custom is not None:
                    for job in chunk:
                        job["custom"] = custom
                await client.push_bulk(chunk)
            rates.append(jobs / (time.perf_counter() - started))
    finally:
        await client.close()
    return rates[0], rates[1]


def _row(table: Table, name: str, values: list[float], note: str) -> None:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    table.add_row(name, f"{len(values)}", f"{p50:.1f}", f"{p99:.1f}", f"{max(values):.1f}", note)


async def main_async(redis: str | None, rounds: int) -> None:
    console = Console()
    table = Table(title="cancellation and aggregation (ms)")
    for column in ("measure", "n", "p50", "p99", "max", "conditions"):
        table.add_column(column, justify="left" if column in ("measure", "conditions") else "right")
    with start_server() as server:
        _row(table, "cancel -> stopped", await cancel_latency(server.url, server.url, rounds),
             "SQLite, same server")  # fmt: skip
        late, batches = await flush_lateness(server.url, 10, 50)
        _row(table, "due -> aggregate runs", late, f"SQLite, 10 groups of 50: {batches} jobs")
        plain, grouped = await pushb_members(server.url, 20_000)
    pushes = [f"SQLite: {grouped:,.0f} jobs/s into groups, {plain:,.0f} plain"]
    if redis:
        with start_server(redis) as a, start_server(redis) as b:
            _row(table, "cancel -> stopped", await cancel_latency(a.url, a.url, rounds),
                 "Redis, same server")  # fmt: skip
            _row(table, "cancel -> stopped", await cancel_latency(a.url, b.url, rounds),
                 "Redis, worker on A, cancel sent to B")  # fmt: skip
            late, batches = await flush_lateness(a.url, 10, 50)
            _row(table, "due -> aggregate runs", late, f"Redis, 10 groups of 50: {batches} jobs")
            plain, grouped = await pushb_members(a.url, 20_000)
            pushes.append(f"Redis: {grouped:,.0f} jobs/s into groups, {plain:,.0f} plain")
    console.print(table)
    console.print("PUSHB of 1,000 jobs a command: " + "; ".join(pushes))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis", default=None, help="a Redis URL: also run two servers on it")
    parser.add_argument("--rounds", type=int, default=20, help="cancels per measure")
    args = parser.parse_args()
    asyncio.run(main_async(args.redis, args.rounds))


if __name__ == "__main__":
    main()
