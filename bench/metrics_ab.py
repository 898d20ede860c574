"""What metrics cost the FWP hot path: the same workloads against servers that differ only in
their ``[metrics]`` settings, interleaved round by round in one run (A/B under the same load).

    python -m bench.metrics_ab                      # SQLite, 20,000 jobs per workload, 3 rounds
    python -m bench.metrics_ab --baseline /path/to/other/checkout/src
    python -m bench.metrics_ab --in-process --rounds 9   # the manager alone, CPU time per job

Variants: ``off`` (``CONVEYOR_METRICS_JOBS=false``), ``jobs`` (the default: counters by queue and
jobtype), ``jobs+store`` (also ``store_timing``), and with ``--baseline`` the server code of
another checkout (``PYTHONPATH``), e.g. the main branch before metrics existed. Prints, for
each, the median of the server process's CPU time per job (from /proc: what the variant costs
the server, much steadier than the rate on a machine others are loading) and of the rate, with
their ratios to the first variant. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.table import Table

from bench._harness import start_server
from bench.server_bench import Result, bench_batched_consumer, bench_round_trip

Workload = Callable[[str, int], Awaitable[Result]]

WORKLOADS: dict[str, Workload] = {
    "push -> fetch -> ack": lambda url, jobs: bench_round_trip(url, jobs, 4, 8),
    "FETCHB/ACKB x100": lambda url, jobs: bench_batched_consumer(url, jobs * 2, 4),
}


async def manager_loop(with_metrics: bool, jobs: int, timed: bool = False) -> float:
    """CPU seconds per job of push + fetch + ack through one in-process manager (memory store):
    the manager's own cost, free of the network and of other processes' load."""
    import time

    from conveyor.manager import Manager, ManagerConfig
    from conveyor.metrics import JobMetrics
    from conveyor.metrics.store_timing import instrument_store
    from conveyor.store.memory import MemoryStore

    store = MemoryStore()
    if timed:
        instrument_store(store)
    manager = Manager(store, ManagerConfig(), metrics=JobMetrics() if with_metrics else None)
    await manager.start()
    payloads = [
        b'{"jid":"%032d","jobtype":"Noop","args":[1,"two"],"queue":"bench"}' % n
        for n in range(jobs)
    ]
    started = time.process_time()
    for start in range(0, jobs, 100):
        for payload in payloads[start : start + 100]:
            await manager.push(payload)
        got = await manager.fetch_many(["bench"], "w1", 100, wait=0)
        jids = [payload[8:40].decode() for payload in got]
        await manager.ack_many(jids, {jid: 0.01 for jid in jids})
    spent = time.process_time() - started
    await manager.stop()
    return spent / jobs


def in_process(jobs: int, rounds: int) -> None:
    kinds = {"off": (False, False), "jobs": (True, False), "jobs+store": (True, True)}
    costs: dict[str, list[float]] = {name: [] for name in kinds}
    for round_number in range(rounds):
        order = list(kinds)
        shift = round_number % len(order)
        for name in order[shift:] + order[:shift]:
            costs[name].append(asyncio.run(manager_loop(*kinds[name][:1], jobs, kinds[name][1])))
    table = Table(title=f"manager push+fetch+ack, in process, {rounds} rounds: CPU per job")
    table.add_column("variant")
    table.add_column("median µs/job", justify="right")
    table.add_column("ratio to off", justify="right")
    base = statistics.median(costs["off"])
    for name, values in costs.items():
        median = statistics.median(values)
        table.add_row(name, f"{median * 1e6:.2f}", f"{median / base:.3f}")
    Console().print(table)


def variants(baseline: str | None) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    if baseline:
        found["baseline"] = {"PYTHONPATH": baseline}
    found["off"] = {"CONVEYOR_METRICS_JOBS": "false"}
    found["jobs"] = {}
    found["jobs+store"] = {"CONVEYOR_METRICS_STORE_TIMING": "true"}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage", default=None, help="storage URL (default: temp SQLite)")
    parser.add_argument("--baseline", default=None, help="src/ of another checkout to compare")
    parser.add_argument(
        "--in-process", action="store_true", help="only the manager's CPU cost, in this process"
    )
    args = parser.parse_args()
    if args.in_process:
        in_process(args.jobs, args.rounds)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    chosen = variants(args.baseline)
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    names = list(chosen)
    for round_number in range(args.rounds):
        # rotate the order each round, so no variant always runs first (or last)
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            with start_server(args.storage, chosen[name]) as server:
                for workload, run in WORKLOADS.items():
                    before = cpu_seconds(server.process.pid)
                    result = asyncio.run(run(server.url, args.jobs))
                    spent = cpu_seconds(server.process.pid) - before
                    rates.setdefault((name, workload), []).append(result.rate)
                    cpu.setdefault((name, workload), []).append(spent / result.jobs * 1e6)
    table = Table(
        title=f"metrics cost, {args.rounds} rounds: server CPU µs/job and jobs/s, medians "
        "(ratio to the first variant)"
    )
    table.add_column("variant")
    for workload in WORKLOADS:
        table.add_column(f"{workload}: CPU µs/job", justify="right")
        table.add_column("jobs/s", justify="right")
    for name in names:
        cells = []
        for workload in WORKLOADS:
            for values, fmt in ((cpu, "{:.1f}"), (rates, "{:,.0f}")):
                median = statistics.median(values[(name, workload)])
                first = statistics.median(values[(names[0], workload)])
                cells.append(f"{fmt.format(median)} ({median / first:.3f})")
        table.add_row(name, *cells)
    Console().print(table)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
