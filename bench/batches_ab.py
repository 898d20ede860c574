"""What being in a batch, or tracked, costs a job: plain, batch and tracked jobs through the
same push -> fetch -> ack workload, against one server, interleaved round by round (A/B in
one run, under the same load). ``--baseline`` adds plain jobs against a server running
another checkout's code (e.g. main before batches), to show what plain jobs pay for the
feature being there at all.

    python -m bench.batches_ab                          # SQLite, 10,000 jobs a variant, 5 rounds
    python -m bench.batches_ab --storage redis://127.0.0.1:6379/5
    python -m bench.batches_ab --baseline /work/main/src
    python -m bench.batches_ab --baseline /work/main/src --baseline-all  # every variant, A/B
    python -m bench.batches_ab --in-process --rounds 7  # the manager alone: CPU per job

Reports, per variant, the median over rounds of the server process's CPU time per job (from
/proc: what the variant costs the server; much steadier than a rate on a shared machine) and
of the rate, with their ratios to plain jobs. ``--store-pid`` (a local redis-server's pid) adds
that process's CPU per job: the work a Lua script does is spent there, not in the server
(``--baseline-store-pid``: the one behind ``--baseline-storage``, each tree on its own Redis).
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from bench._harness import ServerProcess, start_server
from conveyor.client import Client

Custom = Callable[[], dict[str, Any] | None]


class _Jid(msgspec.Struct):
    jid: str


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def round_trip(url: str, jobs: int, custom: Custom, connections: int = 4) -> float:
    """``connections`` clients each PUSH a job, FETCH it back and ACK it, one command in
    flight per connection as Faktory clients do; returns the seconds it took."""
    clients = [await Client.connect(url) for _ in range(connections)]
    queue = f"ab-{uuid.uuid4().hex[:8]}"

    async def work(client: Client, count: int) -> None:
        for _ in range(count):
            job: dict[str, Any] = {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": [1],
                                   "queue": queue}  # fmt: skip
            extra = custom()
            if extra:
                job["custom"] = extra
            await client.push(job)
            fetched = await client.fetch(queue)
            assert fetched is not None
            await client.ack(fetched["jid"])

    started = time.perf_counter()
    await asyncio.gather(*(work(c, jobs // connections) for c in clients))
    seconds = time.perf_counter() - started
    for client in clients:
        await client.close()
    return seconds


async def new_batch(url: str) -> str:
    async with await Client.connect(url) as client:
        callback = {"jobtype": "Done", "args": [], "queue": "ab-callbacks"}
        return await client.batch_new({"description": "bench", "success": callback})


def variants(url: str, bid: str) -> dict[str, tuple[str, Custom]]:
    return {
        "plain": (url, lambda: None),
        "batch": (url, lambda: {"bid": bid}),
        "tracked": (url, lambda: {"track": 1}),
    }


def run(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        server = stack.enter_context(start_server(args.storage or None))
        servers: dict[str, ServerProcess] = {"plain": server}
        bid = asyncio.run(new_batch(server.url))
        chosen = variants(server.url, bid)
        if args.baseline:
            env = {"PYTHONPATH": args.baseline}
            base = stack.enter_context(start_server(args.baseline_storage or None, env))
            base_bid = asyncio.run(new_batch(base.url))
            for name, (_url, custom) in variants(base.url, base_bid).items():
                if name == "plain" or args.baseline_all:
                    chosen[f"{name} (baseline)"] = (base.url, custom)
                    servers[f"{name} (baseline)"] = base
        cpu: dict[str, list[float]] = {name: [] for name in chosen}
        store: dict[str, list[float]] = {name: [] for name in chosen}
        rate: dict[str, list[float]] = {name: [] for name in chosen}
        names = list(chosen)
        for number in range(args.rounds):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                url, custom = chosen[name]
                pid = servers.get(name, server).process.pid
                before = cpu_seconds(pid)
                store_pid = args.store_pid
                if name.endswith("(baseline)") and args.baseline_storage:
                    store_pid = args.baseline_store_pid  # its own Redis, or none measured
                store_before = cpu_seconds(store_pid) if store_pid else 0.0
                seconds = asyncio.run(round_trip(url, args.jobs, custom, args.connections))
                cpu[name].append((cpu_seconds(pid) - before) / args.jobs * 1e6)
                if store_pid:
                    spent = cpu_seconds(store_pid) - store_before
                    store[name].append(spent / args.jobs * 1e6)
                rate[name].append(args.jobs / seconds)
        _report(cpu, store if args.store_pid else None, rate, args)


def _report(
    cpu: dict[str, list[float]],
    store: dict[str, list[float]] | None,
    rate: dict[str, list[float]],
    args: Any,
) -> None:
    table = Table(
        title=f"push -> fetch -> ack, {args.jobs:,} jobs a variant, {args.connections} "
        f"connections, {args.rounds} rounds, {args.storage or 'SQLite'}"
    )
    columns = ["variant", "server CPU µs/job", "x plain"]
    columns += ["store CPU µs/job", "x plain"] if store else []
    for column in (*columns, "jobs/s", "rate / plain"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name in cpu:
        # each server's variants against its own plain jobs
        plain = "plain (baseline)" if name.endswith("(baseline)") and args.baseline_all else "plain"
        base_cpu = statistics.median(cpu[plain])
        base_rate = statistics.median(rate[plain])
        c, r = statistics.median(cpu[name]), statistics.median(rate[name])
        row = [name, f"{c:.1f}", f"{c / base_cpu:.2f}"]
        if store:
            if store[name] and store[plain]:
                s, base = statistics.median(store[name]), statistics.median(store[plain])
                row += [f"{s:.1f}", f"{s / base:.2f}"]
            else:  # a baseline on a store whose process was not named
                row += ["-", "-"]
        table.add_row(*row, f"{r:,.0f}", f"{base_rate / r:.2f}")
    Console().print(table)


async def manager_loop(kind: str, jobs: int, url: str = "memory://") -> float:
    """CPU seconds per job of push + fetch + ack through one in-process manager: the rules'
    own cost, free of the network and of other processes."""
    from conveyor.manager import Manager, ManagerConfig
    from conveyor.manager.features.batches import BatchFeature
    from conveyor.store import open_store

    manager = Manager(open_store(url), ManagerConfig())
    await manager.start()
    callback = b'{"success":{"jobtype":"Done","args":[],"queue":"cb"}}'
    bid = await manager.feature(BatchFeature).new_batch(callback)
    custom = {
        "plain": "",
        "batch": f',"custom":{{"bid":"{bid}"}}',
        "tracked": ',"custom":{"track":1}',
    }
    payloads = [
        b'{"jid":"%032d","jobtype":"Noop","args":[1],"queue":"bench"%s}'
        % (n, custom[kind].encode())
        for n in range(jobs)
    ]
    started = time.process_time()
    for start in range(0, jobs, 100):
        for payload in payloads[start : start + 100]:
            await manager.push(payload)
        got = await manager.fetch_many(["bench"], "w1", 100, wait=0)
        # the stored payload is canonical JSON: the jid is not first (its offset varies)
        await manager.ack_many([msgspec.json.decode(payload, type=_Jid).jid for payload in got])
    spent = time.process_time() - started
    await manager.stop()
    return spent / jobs


def in_process(jobs: int, rounds: int, sqlite: bool) -> None:
    import tempfile

    kinds = ("plain", "batch", "tracked")
    costs: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(rounds):
            shift = number % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                url = f"sqlite:///{tmp}/{kind}-{number}.db" if sqlite else "memory://"
                costs[kind].append(asyncio.run(manager_loop(kind, jobs, url)) * 1e6)
    store = "SQLite" if sqlite else "memory"
    table = Table(title=f"manager push + fetch + ack, in process, {store} store, {rounds} rounds")
    table.add_column("variant")
    table.add_column("CPU µs/job", justify="right")
    table.add_column("x plain", justify="right")
    base = statistics.median(costs["plain"])
    for kind in kinds:
        median = statistics.median(costs[kind])
        table.add_row(kind, f"{median:.1f}", f"{median / base:.2f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="", help="storage URL (default: a SQLite temp file)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--baseline", help="the src/ directory of another checkout")
    parser.add_argument("--baseline-storage", default="")
    parser.add_argument(
        "--baseline-all",
        action="store_true",
        help="run the batch and tracked variants against the baseline too (before/after)",
    )
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--store-pid", type=int, default=0, help="a local redis-server's pid")
    parser.add_argument(
        "--baseline-store-pid",
        type=int,
        default=0,
        help="the pid of the redis-server behind --baseline-storage",
    )
    args = parser.parse_args()
    if args.in_process:
        in_process(args.jobs, args.rounds, sqlite=args.storage.startswith("sqlite"))
    else:
        run(args)


if __name__ == "__main__":
    main()
