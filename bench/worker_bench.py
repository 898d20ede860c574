"""End-to-end worker benchmark: N no-op jobs pushed, then processed by ``conveyor worker``.

    python -m bench.worker_bench                          # 50,000 jobs, SQLite, async handler
    python -m bench.worker_bench --storage memory:// --concurrency 100 --sync --no-batch
    python -m bench.worker_bench --processes 2            # conveyor worker --processes 2

Runs a real ``conveyor server`` process, pushes the jobs with ``app.push_bulk`` (PUSHB, 1000
per round trip), then starts ``conveyor worker --burst`` as a second process and samples the
server's INFO until every job is processed. Reports jobs/s (first ACK to last ACK, so process
start-up is not counted), the worker's peak RSS (VmHWM, summed over its processes) and the CPU
time the worker used (user + system, start-up included; its processes' too). With one process
the server is usually the bottleneck, so CPU per job is the measure of the worker's own cost.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench._harness import start_server
from bench.worker_bench_app import app, noop, noop_sync
from conveyor.client import Client

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_rss_kb(root: int) -> int:
    """VmHWM of ``root`` plus that of its children (``--processes``: the worker processes)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if parent == root:
                children.append(int(entry))
    return peak_rss_kb(root) + sum(peak_rss_kb(child) for child in children)


async def push_all(url: str, jobs: int, sync: bool) -> float:
    app.url = url
    jobdef = noop_sync if sync else noop
    started = time.perf_counter()
    results = await app.push_bulk([jobdef.build(i) for i in range(jobs)])
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} pushes failed, e.g. {failed[0]}")
    await app.aclose()
    return elapsed


async def processed(client: Client) -> int:
    info = await client.info()
    return int(info["faktory"]["total_processed"])


async def run_worker(url: str, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable, "-m", "conveyor", "worker", "bench.worker_bench_app:app", "--burst",
        "--concurrency", str(args.concurrency), "--log-level", "warning",
        "--batch" if args.batch else "--no-batch", "--processes", str(args.processes),
    ]  # fmt: skip
    env = {**os.environ, "CONVEYOR_URL": url}
    client = await Client.connect(url)
    baseline = await processed(client)
    spawned = time.perf_counter()
    worker = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: ASYNC220 - we poll it
    first = last = 0.0
    peak = 0
    done = 0
    ended = None  # (status, usage) once the worker exited: a burst worker may end at once
    while done < args.jobs:
        done = await processed(client) - baseline
        now = time.perf_counter()
        if done and not first:
            first = now
        last = now
        peak = max(peak, tree_peak_rss_kb(worker.pid))
        if ended is None:  # wait4, not poll(): reaping the worker must keep its usage
            pid, status, usage = os.wait4(worker.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG
            if pid:
                ended = (status, usage)
        if ended is not None and done < args.jobs:
            code = os.waitstatus_to_exitcode(ended[0])
            raise RuntimeError(f"the worker exited with {code} after {done} jobs")
        await asyncio.sleep(0.01)
    # wait4's usage covers the worker and the processes it waited for (its children).
    if ended is None:
        _, status, usage = await asyncio.to_thread(os.wait4, worker.pid, 0)
    else:
        status, usage = ended
    worker.returncode = os.waitstatus_to_exitcode(status)
    await client.close()
    return {
        "seconds": last - first,
        "total_seconds": last - spawned,
        "peak_rss_kb": peak,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "exit_code": worker.returncode,
    }


async def main(args: argparse.Namespace) -> None:
    console = Console()
    # A short FETCH wait lets the burst worker notice the empty queue quickly at the end.
    env = {"CONVEYOR_FETCH_WAIT_SECONDS": "0.2"}
    with start_server(args.storage, extra_env=env) as server:
        push_seconds = await push_all(server.url, args.jobs, args.sync)
        result = await run_worker(server.url, args)
    table = Table(
        title=f"conveyor worker: {args.jobs:,} no-op jobs ({server.storage.split(':')[0]})"
    )
    for column in ("handler", "batch", "processes x concurrency", "push jobs/s",
                   "worker jobs/s", "incl. start-up", "worker peak RSS", "worker CPU",
                   "CPU per job"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        "sync" if args.sync else "async",
        "FETCHB/ACKB" if args.batch else "FETCH/ACK",
        f"{args.processes} x {args.concurrency}",
        f"{args.jobs / push_seconds:,.0f}",
        f"{args.jobs / result['seconds']:,.0f}",
        f"{args.jobs / result['total_seconds']:,.0f}",
        f"{result['peak_rss_kb'] / 1024:.1f} MiB",
        f"{result['cpu_seconds']:.2f} s",
        f"{result['cpu_seconds'] / args.jobs * 1e6:.1f} µs",
    )
    console.print(table)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1, help="conveyor worker --processes")
    parser.add_argument("--storage", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--sync", action="store_true", help="a plain def handler (thread pool)")
    parser.add_argument(
        "--no-batch",
        dest="batch",
        action="store_false",
        help="standard FETCH/ACK only, as against a plain Faktory server",
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
