"""What admission and flow control cost (issue 11's targets), A/B in one run.

    python -m bench.admission_bench                       # SQLite, 3 rounds
    python -m bench.admission_bench --storage redis://127.0.0.1:6379/0 --jobs 5000
    python -m bench.admission_bench --baseline /tmp/main-src/src   # + the plain paths vs main

Each round measures every variant once, in turn, so the machine's load falls on all of them
alike; the table shows the median of the rounds and, as the ratio to its reference, the median
of each round's own ratio:

* PUSH with ``unique_for`` against a plain PUSH (target: at most 1.3x the time);
* FETCH+ACK from a queue with an unsaturated throttle, and with a rate limit far above the
  rate reached, against an unlimited queue (target: at least 0.8x the throughput);
* the server's CPU per job of each of those (``/proc``): on a machine other processes load,
  the steadier measure of the same targets (time ratio <= 1.3x, throughput >= 0.8x, i.e.
  CPU ratio <= 1.25x);
* server CPU while FETCHes wait on a saturated throttled queue, or on a rate-limited one with
  an empty bucket, against FETCHes waiting on an empty queue (target: no more);
* with ``--baseline SRC`` (a checkout's ``src``, e.g. ``git archive main``), plain PUSH and
  push->fetch->ack against that code's server: the paths without features must not slow down;
  and the server CPU per job of a plain and a unique PUSH on both, each server by itself.

A server is a real ``conveyor server`` process (``bench._harness``) driven over loopback by
conveyor's client, one command in flight per connection. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._harness import ServerProcess, start_server
from conveyor.client import Client

CONFIG = """
[throttles]
throttled = { concurrency = 100000, timeout = 600 }
saturated = { concurrency = 2, timeout = 600 }

[queues.paced]
rate_limit = 1000000
burst = 1000000

[queues.slow]
rate_limit = 0.001
burst = 1
"""


def _job(queue: str, **custom: object) -> dict[str, object]:
    job: dict[str, object] = {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": [1, "a"]}
    job["queue"] = queue
    if custom:
        job["custom"] = custom
    return job


async def _clients(url: str, count: int) -> list[Client]:
    return list(await asyncio.gather(*(Client.connect(url) for _ in range(count))))


async def _close(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def push_rate(
    url: str, jobs: int, conns: int, unique: bool, cpu: list[float] | None = None, pid: int = 0
) -> float:
    """PUSHes per second, ``conns`` connections each pushing its share in turn; with ``cpu``
    (and the server's ``pid``), the server's CPU seconds per job are appended to it."""
    clients = await _clients(url, conns)
    queue = "uniq" if unique else "plain"
    share = jobs // conns

    async def work(client: Client, index: int) -> None:
        for n in range(share):
            custom = {"unique_for": 3600} if unique else {}
            job = _job(queue, **custom)
            job["args"] = [index, n]  # distinct args: every unique job takes a lock
            await client.push(job)

    before = _cpu_seconds(pid) if cpu is not None else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(work(c, i) for i, c in enumerate(clients)))
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append((_cpu_seconds(pid) - before) / (share * conns))
    await clients[0].queue_remove(queue)
    await _close(clients)
    return share * conns / seconds


async def fetch_rate(
    url: str, queue: str, jobs: int, conns: int, cpu: list[float] | None = None, pid: int = 0
) -> float:
    """FETCH+ACKs per second from a pre-filled queue, ``conns`` workers (``cpu``: as for
    ``push_rate``)."""
    clients = await _clients(url, conns)
    for start in range(0, jobs, 1000):
        await clients[0].push_bulk([_job(queue) for _ in range(min(1000, jobs - start))])
    remaining = jobs
    done = asyncio.Event()

    async def work(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            job = await client.fetch(queue)
            if job is None:
                continue
            await client.ack(job["jid"])
            remaining -= 1
            if remaining <= 0:
                done.set()

    before = _cpu_seconds(pid) if cpu is not None else 0.0
    started = time.perf_counter()
    tasks = [asyncio.create_task(work(c)) for c in clients]
    await done.wait()
    seconds = time.perf_counter() - started
    if cpu is not None:
        cpu.append((_cpu_seconds(pid) - before) / jobs)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        client._abort()
    return jobs / seconds


async def round_trip_rate(url: str, jobs: int) -> float:
    """PUSH by 4 producers while 8 workers FETCH+ACK: jobs per second end to end."""
    producers, consumers = await _clients(url, 4), await _clients(url, 8)
    remaining = jobs // 4 * 4
    done = asyncio.Event()

    async def produce(client: Client) -> None:
        for _ in range(jobs // 4):
            await client.push(_job("rt"))

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            job = await client.fetch("rt")
            if job is not None:
                await client.ack(job["jid"])
                remaining -= 1
                if remaining <= 0:
                    done.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(consume(c)) for c in consumers]
    await asyncio.gather(*(produce(c) for c in producers))
    await done.wait()
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _close(producers)
    for client in consumers:
        client._abort()
    return jobs // 4 * 4 / seconds


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def waiting_cpu(server: ServerProcess, queue: str, seconds: float, fetchers: int) -> float:
    """Server CPU seconds while ``fetchers`` FETCHes wait on ``queue`` for ``seconds``."""
    url = server.url
    holders = await _clients(url, 2)
    if queue == "saturated":  # two jobs held (no ACK) fill the throttle of 2; more wait
        await holders[0].push_bulk([_job(queue) for _ in range(10)])
        for holder in holders:
            assert await holder.fetch(queue) is not None
    elif queue == "slow":  # one job takes the bucket's only token; the others wait
        await holders[0].push_bulk([_job(queue) for _ in range(10)])
        assert await holders[0].fetch(queue) is not None
    clients = await _clients(url, fetchers)
    stop = time.monotonic() + seconds

    async def wait(client: Client) -> None:
        while time.monotonic() < stop:
            await client.fetch(queue)

    before = _cpu_seconds(server.process.pid)
    await asyncio.gather(*(wait(c) for c in clients))
    used = _cpu_seconds(server.process.pid) - before
    await clients[0].queue_remove(queue)
    await _close(clients + holders)
    return used


async def _flush(url: str) -> None:
    client = await Client.connect(url)
    await client.flush()
    await client.close()


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])


def run(args: argparse.Namespace) -> Samples:
    samples = Samples()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "conveyor.toml"
        config.write_text(CONFIG)
        for round_number in range(args.repeat):
            # which of a pair runs first alternates: the second one pays for the first's
            # leftovers (its queue's removal, the checkpoint of its WAL frames)
            pair = (False, True) if round_number % 2 == 0 else (True, False)
            with start_server(
                args.storage,
                extra_env={"CONVEYOR_CONFIG": str(config), "CONVEYOR_FETCH_WAIT_SECONDS": "1"},
            ) as server:
                url = server.url
                asyncio.run(_flush(url))  # a shared store (Redis) starts each round empty
                pid = server.process.pid
                for unique in pair:
                    per_job: list[float] = []
                    rate = asyncio.run(push_rate(url, args.jobs, 8, unique, per_job, pid))
                    label = "PUSH unique_for" if unique else "PUSH"
                    samples.add(label, rate)
                    samples.add(f"CPU/job {label}", per_job[0])
                for queue, label in (
                    ("plain", "FETCH+ACK"),
                    ("throttled", "FETCH+ACK throttled"),
                    ("paced", "FETCH+ACK rate-limited"),
                ):
                    per_job = []
                    rate = asyncio.run(fetch_rate(url, queue, args.jobs, 8, per_job, pid))
                    samples.add(label, rate)
                    samples.add(f"CPU/job {label}", per_job[0])
                for queue, label in (
                    ("idle", "CPU waiting, empty queue"),
                    ("saturated", "CPU waiting, throttle full"),
                    ("slow", "CPU waiting, bucket empty"),
                ):
                    cpu = asyncio.run(waiting_cpu(server, queue, args.wait_seconds, 50))
                    samples.add(label, cpu)
            if args.baseline:
                trees = (("main", args.baseline), ("branch", None))
                for label, code in trees if round_number % 2 == 0 else trees[::-1]:
                    env = {"PYTHONPATH": code} if code else {}
                    with start_server(args.storage, extra_env=env) as plain:
                        pid = plain.process.pid
                        for unique in pair:
                            name = "PUSH unique_for" if unique else "PUSH"
                            per_job = []
                            rate = asyncio.run(
                                push_rate(plain.url, args.jobs, 8, unique, per_job, pid)
                            )
                            if not unique:
                                samples.add(f"plain PUSH ({label})", rate)
                            samples.add(f"CPU/job {name} ({label})", per_job[0])
                        rate = asyncio.run(round_trip_rate(plain.url, args.jobs))
                        samples.add(f"push->fetch->ack ({label})", rate)
    return samples


def report(samples: Samples, args: argparse.Namespace) -> Table:
    table = Table(title=f"admission features, storage {args.storage or 'SQLite'}")
    for column in ("workload", "median", "rounds", "vs", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("workload", "vs") else "right")
    rows = [
        ("PUSH", "jobs/s", None, ""),
        ("PUSH unique_for", "jobs/s", "PUSH", "time <= 1.3x"),
        ("FETCH+ACK", "jobs/s", None, ""),
        ("FETCH+ACK throttled", "jobs/s", "FETCH+ACK", ">= 0.8x"),
        ("FETCH+ACK rate-limited", "jobs/s", "FETCH+ACK", ">= 0.8x"),
        ("CPU/job PUSH", "us", None, ""),
        ("CPU/job PUSH unique_for", "us", "CPU/job PUSH", "<= 1.3x"),
        ("CPU/job FETCH+ACK", "us", None, ""),
        ("CPU/job FETCH+ACK throttled", "us", "CPU/job FETCH+ACK", "<= 1.25x"),
        ("CPU/job FETCH+ACK rate-limited", "us", "CPU/job FETCH+ACK", "<= 1.25x"),
        ("CPU waiting, empty queue", "s", None, ""),
        ("CPU waiting, throttle full", "s", "CPU waiting, empty queue", "no more"),
        ("CPU waiting, bucket empty", "s", "CPU waiting, empty queue", "no more"),
        ("plain PUSH (main)", "jobs/s", None, ""),
        ("plain PUSH (branch)", "jobs/s", "plain PUSH (main)", "not slower"),
        ("CPU/job PUSH (main)", "us", None, ""),
        ("CPU/job PUSH unique_for (main)", "us", "CPU/job PUSH (main)", ""),
        ("CPU/job PUSH (branch)", "us", "CPU/job PUSH (main)", "+-5%"),
        ("CPU/job PUSH unique_for (branch)", "us", "CPU/job PUSH (branch)", "<= 1.3x"),
        ("push->fetch->ack (main)", "jobs/s", None, ""),
        ("push->fetch->ack (branch)", "jobs/s", "push->fetch->ack (main)", "not slower"),
    ]
    for name, unit, reference, target in rows:
        if name not in samples.values:
            continue
        value = samples.median(name)
        shown = ", ".join(_shown(v, unit) for v in samples.values[name])
        ratio = ""
        if reference and not samples.median(reference):
            ratio = "n/a (0 s)"  # CPU time below one clock tick
        elif reference:
            # the median of each round's own ratio: a round's pair ran back to back, so the
            # machine's load (it is shared) moves both alike
            pairs = list(zip(samples.values[name], samples.values[reference], strict=True))
            if name == "PUSH unique_for":  # a time ratio: plain rate / unique rate
                ratio = f"{statistics.median(b / a for a, b in pairs):.2f}x time"
            else:
                ratio = f"{statistics.median(a / b if b else 1.0 for a, b in pairs):.2f}x"
        median = f"{_shown(value, unit)} {unit}"
        table.add_row(name, median, shown, reference or "", ratio, target)
    return table


def _shown(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f}"
    if unit == "us":  # server CPU seconds per job, shown in microseconds
        return f"{value * 1e6:.1f}"
    return f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--storage", default=None, help="storage URL (default: a temp SQLite)")
    parser.add_argument("--wait-seconds", type=float, default=5.0)
    parser.add_argument("--baseline", default=None, help="src directory of the code to compare")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    samples = run(args)
    Console(width=150).print(report(samples, args))


if __name__ == "__main__":
    main()
