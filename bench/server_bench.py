"""Server benchmark: PUSH, PUSHB, push->fetch->ack and wake-up latency over loopback.

    python -m bench.server_bench                 # SQLite store (the durable default)
    python -m bench.server_bench --storage memory:// --jobs 50000

Runs a real ``conveyor server`` process and drives it with conveyor's own async client from
this process, one command in flight per connection, as real Faktory clients do. Prints a
table; nothing here is a test (no timed assertions anywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from bench._harness import percentile, rss_kb, start_server
from conveyor.client import Client


@dataclass
class Result:
    name: str
    jobs: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def _job(queue: str = "default", *args: object) -> dict[str, object]:
    return {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": list(args), "queue": queue}


async def _connect_all(url: str, count: int) -> list[Client]:
    return list(await asyncio.gather(*(Client.connect(url) for _ in range(count))))


async def _close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def _split(
    clients: list[Client], jobs: int, work: Callable[[Client, int], Awaitable[None]]
) -> float:
    share = jobs // len(clients)
    started = time.perf_counter()
    await asyncio.gather(*(work(c, share) for c in clients))
    return time.perf_counter() - started


async def bench_push(url: str, jobs: int, connections: int) -> Result:
    clients = await _connect_all(url, connections)

    async def work(client: Client, count: int) -> None:
        for _ in range(count):
            await client.push(_job("push"))

    seconds = await _split(clients, jobs, work)
    await clients[0].queue_remove("push")
    await _close_all(clients)
    return Result(f"PUSH ({connections} conns)", jobs // connections * connections, seconds)


async def bench_pushb(url: str, jobs: int, connections: int, batch: int = 1000) -> Result:
    clients = await _connect_all(url, connections)
    batches = [[_job("pushb") for _ in range(batch)] for _ in range(jobs // batch)]

    async def work(client: Client, index: int) -> None:
        for chunk in batches[index::connections]:
            errors = await client.push_bulk(chunk)
            assert not errors, errors

    started = time.perf_counter()
    await asyncio.gather(*(work(c, i) for i, c in enumerate(clients)))
    seconds = time.perf_counter() - started
    await clients[0].queue_remove("pushb")
    await _close_all(clients)
    return Result(f"PUSHB x{batch} ({connections} conns)", len(batches) * batch, seconds)


async def bench_round_trip(url: str, jobs: int, producers: int, consumers: int) -> Result:
    """Producers PUSH while consumers FETCH+ACK; latency = push sent -> job fetched."""
    push_clients = await _connect_all(url, producers)
    fetch_clients = await _connect_all(url, consumers)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    remaining = jobs // producers * producers

    async def produce(client: Client, count: int) -> None:
        for _ in range(count):
            job = _job("rt")
            sent[str(job["jid"])] = time.perf_counter()
            await client.push(job)

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            job = await client.fetch("rt")
            if job is None:
                continue
            latencies.append((time.perf_counter() - sent[job["jid"]]) * 1000)
            await client.ack(job["jid"])
            remaining -= 1
            if remaining <= 0:
                done.set()

    started = time.perf_counter()
    consumers_tasks = [asyncio.create_task(consume(c)) for c in fetch_clients]
    await asyncio.gather(*(produce(c, jobs // producers) for c in push_clients))
    await done.wait()
    seconds = time.perf_counter() - started
    for task in consumers_tasks:
        task.cancel()
    await asyncio.gather(*consumers_tasks, return_exceptions=True)
    await _close_all(push_clients)
    for client in fetch_clients:
        client._abort()  # may be mid-FETCH; just drop the socket
    note = f"{producers} pushing, {consumers} fetching+acking"
    return Result("push -> fetch -> ack", jobs // producers * producers, seconds, latencies, note)


async def bench_wakeup(url: str, jobs: int, gap_seconds: float = 0.002) -> Result:
    """An idle FETCH woken by a PUSH: jobs pushed one at a time, ``gap`` apart."""
    producer, consumer = await _connect_all(url, 2)
    latencies: list[float] = []
    sent: dict[str, float] = {}

    async def consume() -> None:
        for _ in range(jobs):
            job = await consumer.fetch("wake")
            assert job is not None
            latencies.append((time.perf_counter() - sent[job["jid"]]) * 1000)
            await consumer.ack(job["jid"])

    task = asyncio.create_task(consume())
    started = time.perf_counter()
    for _ in range(jobs):
        await asyncio.sleep(gap_seconds)
        job = _job("wake")
        sent[str(job["jid"])] = time.perf_counter()
        await producer.push(job)
    await task
    seconds = time.perf_counter() - started
    await _close_all([producer, consumer])
    return Result(
        "idle FETCH woken by PUSH", jobs, seconds, latencies, f"{gap_seconds * 1000:.0f} ms apart"
    )


async def bench_batched_consumer(url: str, jobs: int, consumers: int, batch: int = 100) -> Result:
    """Our extension: FETCHB/ACKB move ``batch`` jobs per round trip (queue pre-filled)."""
    clients = await _connect_all(url, consumers)
    for start in range(0, jobs, 1000):
        await clients[0].push_bulk([_job("batched") for _ in range(min(1000, jobs - start))])
    remaining = jobs
    done = asyncio.Event()

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            got = await client.fetch_many(batch, "batched")
            if got:
                await client.ack_many([j["jid"] for j in got])
                remaining -= len(got)
                if remaining <= 0:
                    done.set()

    started = time.perf_counter()
    # The run ends when the last job is acknowledged; consumers still waiting in an empty
    # FETCHB (up to 2 s) must not count, so they are dropped rather than awaited.
    tasks = [asyncio.create_task(consume(c)) for c in clients]
    await done.wait()
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        client._abort()
    return Result(
        f"FETCHB/ACKB x{batch} (extension)", jobs, seconds, note=f"{consumers} conns, pre-filled"
    )


def _table(results: list[Result], title: str) -> Table:
    table = Table(title=title)
    for column in ("workload", "jobs", "seconds", "jobs/s", "p50 ms", "p99 ms", "notes"):
        table.add_column(column, justify="left" if column in ("workload", "notes") else "right")
    for r in results:
        p50 = f"{percentile(r.latencies_ms, 0.5):.2f}" if r.latencies_ms else "-"
        p99 = f"{percentile(r.latencies_ms, 0.99):.2f}" if r.latencies_ms else "-"
        table.add_row(r.name, f"{r.jobs:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}", p50, p99, r.note)
    return table


async def run(url: str, jobs: int) -> list[Result]:
    return [
        await bench_push(url, jobs, 8),
        await bench_pushb(url, jobs * 5, 4),
        await bench_round_trip(url, jobs, 4, 8),
        await bench_wakeup(url, 500),
        await bench_batched_consumer(url, jobs * 2, 4),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per workload (PUSHB: 5x)")
    parser.add_argument("--storage", default=None, help="storage URL (default: a temp SQLite file)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with start_server(args.storage) as server:
        results = asyncio.run(run(server.url, args.jobs))
        memory = rss_kb(server.process.pid)
    console = Console()
    console.print(_table(results, f"conveyor server, storage {server.storage.split('?')[0]}"))
    console.print(f"server RSS after the run: {memory / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
