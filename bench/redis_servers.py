"""push -> fetch -> ack throughput: SQLite, one server over Redis, two servers over one Redis.

    python -m bench.redis_servers --jobs 20000

Starts a private redis-server (AOF on, ``appendfsync everysec``, as docs/redis.md advises) and
``conveyor server`` processes; producers PUSH while consumers FETCH+ACK, spread evenly over the
servers, one command in flight per connection. Prints one table. No timed assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from bench._harness import free_port, start_server
from bench.server_bench import _job
from conveyor.client import Client


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-redis-") as tmp:
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction"]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


async def round_trip(urls: list[str], jobs: int, producers: int, consumers: int) -> float:
    """Jobs per second through PUSH, FETCH and ACK, clients spread over ``urls``."""
    push = [await Client.connect(urls[i % len(urls)]) for i in range(producers)]
    fetch = [await Client.connect(urls[i % len(urls)]) for i in range(consumers)]
    remaining = jobs // producers * producers
    done = asyncio.Event()

    async def produce(client: Client) -> None:
        for _ in range(jobs // producers):
            await client.push(_job("rt"))

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            job = await client.fetch("rt")
            if job is None:
                continue
            await client.ack(job["jid"])
            remaining -= 1
            if remaining <= 0:
                done.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(consume(c)) for c in fetch]
    await asyncio.gather(*(produce(c) for c in push))
    await done.wait()
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in push:
        await client.close()
    for client in fetch:
        client._abort()
    return (jobs // producers * producers) / seconds


async def measure(urls: list[str], jobs: int) -> float:
    return await round_trip(urls, jobs, producers=4, consumers=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []
    with start_server() as sqlite:
        rows.append(("SQLite, 1 server", asyncio.run(measure([sqlite.url], args.jobs))))
    with redis_server() as redis_url:
        with start_server(redis_url) as one:
            rows.append(("Redis, 1 server", asyncio.run(measure([one.url], args.jobs))))
        with start_server(redis_url) as one, start_server(redis_url) as two:
            urls = [one.url, two.url]
            rows.append(("Redis, 2 servers", asyncio.run(measure(urls, args.jobs))))
    table = Table(title=f"push -> fetch -> ack, {args.jobs} jobs, 4 producers, 8 consumers")
    table.add_column("storage")
    table.add_column("jobs/s", justify="right")
    for name, rate in rows:
        table.add_row(name, f"{rate:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
