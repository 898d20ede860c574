"""Results and completed jobs: what they cost push->fetch->ack, and how soon a result arrives.

    python -m bench.results_bench                          # SQLite, this checkout only
    python -m bench.results_bench --baseline-src /work/main/src --repeat 3
    python -m bench.results_bench --baseline-src /tmp/main/src --baseline-every-mode

A/B in one run, on one machine, servers started one after the other (never at once):

* **off**: plain jobs, plain ACKs (results and retention off: the path must not have changed;
  with ``--baseline-src`` the same workload also runs on a server built from that source tree,
  e.g. the main branch, interleaved with this one);
* **results**: every job asks for its result (``custom.result_ttl``), every ACK carries one;
* **retain**: every job is kept in the completed set with its result (``custom.retain``, no
  ``result_ttl``: the completed set is where its result is read).

Each mode runs two consumer paths: FETCH+ACK one job per round trip (what Faktory clients
do), and FETCHB/ACKB x100 (what conveyor's worker does). The latency rows measure how soon a
waiting ``RESULT`` (what ``app.result()`` sends) is answered after the ACK that stores the
result was sent, on a quiet server and on one loaded by another process (1,000 jobs a
second with results, FETCH+ACK), on each server tree. Prints a table of the best run of each,
with the **server's CPU time per job** (read from ``/proc``): on a machine shared with other
work the rates swing with the load, the CPU a job costs the server much less. Nothing here is
a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from bench._harness import percentile, start_server
from conveyor.client import Client

RESULT = b'{"n":1,"ok":true}'
MODES: dict[str, dict[str, object]] = {
    "off": {},
    "results": {"result_ttl": 3600},
    "retain": {"retain": 3600},
}


@dataclass
class Run:
    label: str
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    """The server's CPU time (user + system) per job, in µs, of each run."""
    written: list[float] = field(default_factory=list)
    """Bytes the server wrote per job (``/proc/<pid>/io`` wchar: replies and, on SQLite, the
    WAL frames of its commits and the checkpoints' copies), of each run."""

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else 0.0

    @property
    def least_cpu(self) -> float:
        return min(self.cpu_us) if self.cpu_us else 0.0

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu_us) if self.cpu_us else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written_bytes(pid: int) -> int:
    """Bytes a process has written through write(2) and its kin (``/proc/<pid>/io``)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def _job(queue: str, custom: dict[str, object]) -> dict[str, object]:
    job: dict[str, object] = {
        "jid": uuid.uuid4().hex,
        "jobtype": "Noop",
        "args": [1],
        "queue": queue,
    }
    if custom:
        job["custom"] = custom
    return job


async def _connect(url: str, count: int) -> list[Client]:
    return list(await asyncio.gather(*(Client.connect(url) for _ in range(count))))


async def round_trip(url: str, jobs: int, mode: str) -> float:
    """4 producers PUSH while 8 consumers FETCH+ACK one job per round trip; jobs/s."""
    custom, results = MODES[mode], mode != "off"
    producers, consumers = await _connect(url, 4), await _connect(url, 8)
    remaining = jobs // 4 * 4
    done = asyncio.Event()

    async def produce(client: Client) -> None:
        for _ in range(jobs // 4):
            await client.push(_job("rt", custom))

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            job = await client.fetch("rt")
            if job is None:
                continue
            await client.ack(job["jid"], result=RESULT if results else None)
            remaining -= 1
            if remaining <= 0:
                done.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(consume(c)) for c in consumers]
    await asyncio.gather(*(produce(c) for c in producers))
    await done.wait()
    seconds = time.perf_counter() - started
    await _drop(tasks, producers, consumers)
    return (jobs // 4 * 4) / seconds


async def batched(url: str, jobs: int, mode: str) -> float:
    """The queue pre-filled, 4 consumers FETCHB/ACKB x100 (conveyor's worker); jobs/s."""
    custom, results = MODES[mode], mode != "off"
    clients = await _connect(url, 4)
    for start in range(0, jobs, 1000):
        await clients[0].push_bulk(
            [_job("batched", custom) for _ in range(min(1000, jobs - start))]
        )
    remaining = jobs
    done = asyncio.Event()

    async def consume(client: Client) -> None:
        nonlocal remaining
        while remaining > 0:
            got = await client.fetch_many(100, "batched")
            if got:
                jids = [j["jid"] for j in got]
                await client.ack_many(jids, results=[RESULT] * len(jids) if results else None)
                remaining -= len(got)
                if remaining <= 0:
                    done.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(consume(c)) for c in clients]
    await done.wait()
    seconds = time.perf_counter() - started
    await _drop(tasks, clients)
    return jobs / seconds


async def result_latency(url: str, count: int) -> list[float]:
    """ms from sending the ACK that carries a result to the reply of a RESULT waiting for it."""
    producer, worker, waiter = await _connect(url, 3)
    latencies: list[float] = []
    for _ in range(count):
        job = _job("lat", MODES["results"])
        await producer.push(job)
        fetched = await worker.fetch("lat")
        assert fetched is not None
        waiting = asyncio.create_task(waiter.result(str(job["jid"]), 5.0))
        await asyncio.sleep(0.002)  # the RESULT is waiting on the server
        sent = time.perf_counter()
        await worker.ack(fetched["jid"], result=RESULT)
        outcome = await waiting
        latencies.append((time.perf_counter() - sent) * 1000)
        assert outcome is not None
        assert outcome["result"] == {"n": 1, "ok": True}
    for client in (producer, worker, waiter):
        await client.close()
    return latencies


async def _drop(tasks: list[asyncio.Task[None]], *groups: list[Client]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for group in groups:
        for client in group:
            client._abort()  # may be mid-FETCH: just drop the socket


@contextlib.contextmanager
def _loaded(url: str) -> Iterator[None]:
    """Load on the server while the block runs: another process pushing, fetching and
    acknowledging jobs with results (``_load``; the measuring client stays quiet)."""
    load = subprocess.Popen([sys.executable, "-m", "bench.results_bench", "--load", url])
    try:
        time.sleep(1.0)  # the load is running
        yield
    finally:
        load.terminate()
        load.wait()


async def _load(url: str, rate: float = 1000.0) -> None:
    """``rate`` jobs a second with results, pushed by one client, fetched and acknowledged
    one at a time by four (a busy server, not a saturated one: each ACK's latency then
    measures the server, not a queue of work before it)."""
    producer, *consumers = await _connect(url, 5)

    async def produce() -> None:
        started = time.perf_counter()
        for n in range(10**9):
            await producer.push(_job("load", MODES["results"]))
            ahead = started + n / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def consume(client: Client) -> None:
        while True:
            job = await client.fetch("load")
            if job is not None:
                await client.ack(job["jid"], result=RESULT)

    await asyncio.gather(produce(), *(consume(client) for client in consumers))


def _measure(
    storage: str | None, env: dict[str, str] | None, jobs: int, work: Callable[[str], object]
) -> tuple[float, float, float]:
    """(jobs/s, server CPU µs per job, bytes the server wrote per job) of one run on a fresh
    server."""
    with start_server(storage, extra_env=env) as server:
        pid = server.process.pid
        before, wrote = cpu_seconds(pid), written_bytes(pid)
        rate = float(asyncio.run(work(server.url)))  # type: ignore[arg-type]
        used, wrote = cpu_seconds(pid) - before, written_bytes(pid) - wrote
    return rate, used / jobs * 1e6, wrote / jobs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is shown")
    parser.add_argument("--storage", default=None, help="storage URL (default: a SQLite file)")
    parser.add_argument(
        "--baseline-src", default=None, help="a source tree (its src/) to run 'off' against too"
    )
    parser.add_argument(
        "--baseline-every-mode",
        action="store_true",
        help="run results and retain on the baseline too (a tree that has them: main since "
        "issue 14)",
    )
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run(_load(args.load))
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    servers: list[tuple[str, dict[str, str] | None]] = [("this checkout", None)]
    if args.baseline_src:
        servers.insert(0, ("baseline", {"PYTHONPATH": args.baseline_src}))
    every_mode = args.baseline_every_mode
    workloads = {"FETCH+ACK": round_trip, "FETCHB/ACKB x100": batched}
    runs: dict[tuple[str, str, str], Run] = {}
    for _ in range(args.repeat):  # interleaved: A B A B ..., so drift hits every row alike
        for name, work in workloads.items():
            for mode in MODES:
                for server_label, env in servers:
                    if server_label == "baseline" and mode != "off" and not every_mode:
                        continue
                    key = (name, mode, server_label)
                    run = runs.setdefault(key, Run(f"{name}, {mode}, {server_label}"))
                    jobs = args.jobs * (2 if name != "FETCH+ACK" else 1)
                    rate, cpu, wrote = _measure(
                        args.storage,
                        env,
                        jobs,
                        lambda url: work(url, jobs, mode),  # noqa: B023
                    )
                    run.rates.append(rate)
                    run.cpu_us.append(cpu)
                    run.written.append(wrote)
    latencies = {}
    for label, env in servers:
        with start_server(args.storage, extra_env=env) as server:
            latencies[("quiet", label)] = asyncio.run(result_latency(server.url, args.latency_jobs))
            with _loaded(server.url):
                latencies[("loaded", label)] = asyncio.run(
                    result_latency(server.url, args.latency_jobs)
                )
    table = Table(title=f"results and retention, storage {args.storage or 'SQLite (temp file)'}")
    columns = (
        "workload", "mode", "server", "best jobs/s", "all runs", "server µs/job",
        "median µs/job", "vs off", "median vs off", "KiB written/job",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for (name, mode, server_label), run in runs.items():
        # results and retain against "off" on their own server; a baseline's "off" against ours
        off = runs[(name, "off", server_label if mode != "off" else "this checkout")]
        ratio = f"{off.least_cpu / run.least_cpu:.2f}x" if run.least_cpu else "-"
        median_ratio = f"{off.median_cpu / run.median_cpu:.2f}x" if run.median_cpu else "-"
        rates = ", ".join(f"{rate:,.0f}" for rate in run.rates)
        cpu, median_cpu = f"{run.least_cpu:.1f}", f"{run.median_cpu:.1f}"
        wrote = f"{statistics.median(run.written) / 1024:.1f}" if run.written else "-"
        table.add_row(
            name, mode, server_label, f"{run.best:,.0f}", rates, cpu, median_cpu, ratio,
            median_ratio, wrote,
        )  # fmt: skip
    console = Console(width=180)
    console.print(table)
    for (load, label), samples in latencies.items():
        console.print(
            f"ACK -> waiting RESULT answered, {load}, {label}: "
            f"p50 {percentile(samples, 0.5):.3f} ms, p99 {percentile(samples, 0.99):.3f} ms, "
            f"max {max(samples):.3f} ms ({len(samples)} jobs, one at a time)"
        )


if __name__ == "__main__":
    main()
