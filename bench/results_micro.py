"""The manager's own cost of FETCH+ACK with results and retention off and on, A/B in one run.

    python -m bench.results_micro                                  # this checkout, 5 rounds
    python -m bench.results_micro --baseline /work/main/src        # + the same on main
    python -m bench.results_micro --storage memory

``bench/results_bench.py`` runs whole servers over loopback, where the machine's load and the
Python client move the numbers by 2x between runs. This measures the manager alone, in one
process over a SQLite file (or memory), in CPU seconds of that process
(``time.process_time``), the way the server is called: a FETCH and an ACK one at a time (the
ACK offered to the short way first, ``Manager.ack_now``, as an idle connection does), and
FETCHB/ACKB of 100. The queue is filled by PUSHB before each measured part (not counted).
Writes are committed every 10 jobs one at a time, every batch of 100 (a server's group commit
at a few thousand jobs a second). Each round runs every variant in a fresh subprocess, in
turn; the table shows medians and each mode's ratio to "off" of the same tree (CPU per job
of off / CPU per job of the mode: the throughput ratio when CPU bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULT = b'{"n":1,"ok":true}'
MODES: dict[str, dict[str, object]] = {
    "off": {},
    "results": {"result_ttl": 3600},
    "retain": {"retain": 3600},
}


def _bulk(queue: str, count: int, custom: dict[str, object]) -> bytes:
    jobs = []
    for n in range(count):
        job: dict[str, object] = {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": [n]}
        job["queue"] = queue
        if custom:
            job["custom"] = custom
        jobs.append(job)
    return json.dumps(jobs).encode()


async def _measure(storage: str, jobs: int) -> dict[str, float]:
    from conveyor.manager import Manager, ManagerConfig
    from conveyor.store import open_store

    manager = Manager(open_store(storage), ManagerConfig())
    await manager.start()
    store = manager.store
    found: dict[str, float] = {}
    try:
        for mode, custom in MODES.items():
            results = mode != "off"
            queue = f"one-{mode}"
            for start in range(0, jobs, 1000):
                await manager.push_bulk(_bulk(queue, min(1000, jobs - start), custom))
            await store.durable()
            started = time.process_time()
            for n in range(jobs):
                payload = await manager.fetch([queue], "w1", wait=0)
                assert payload is not None
                jid = json.loads(payload)["jid"]
                result = RESULT if results else None
                done = manager.ack_now(jid, None, result)
                if done is None:
                    await manager.ack(jid, None, result)
                if n % 10 == 9:
                    await store.durable()
            found[f"FETCH+ACK {mode}"] = (time.process_time() - started) / jobs
            queue = f"batch-{mode}"
            for start in range(0, jobs, 1000):
                await manager.push_bulk(_bulk(queue, min(1000, jobs - start), custom))
            await store.durable()
            started = time.process_time()
            left = jobs
            while left > 0:
                got = await manager.fetch_many([queue], "w1", 100, wait=0)
                jids = [json.loads(payload)["jid"] for payload in got]
                acked = dict.fromkeys(jids, RESULT) if results else None
                await manager.ack_many(jids, results=acked)
                await store.durable()
                left -= len(jids)
            found[f"FETCHB/ACKB x100 {mode}"] = (time.process_time() - started) / jobs
    finally:
        await manager.stop()
    return found


def _worker(storage: str, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/micro.db" if storage == "sqlite" else storage
        print(json.dumps(asyncio.run(_measure(url, jobs))))


def _run(storage: str, jobs: int, pythonpath: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [sys.executable, "-m", "bench.results_micro", "--worker", "--storage", storage]
    done = subprocess.run(
        [*args, "--jobs", str(jobs)], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--storage", default="sqlite", help="sqlite (a temp file) or a URL")
    parser.add_argument("--baseline", default=None, help="src directory of the code to compare")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.storage, args.jobs)
        return
    samples: dict[tuple[str, str], list[float]] = {}
    trees: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.baseline:
        trees.insert(0, ("baseline", str(Path(args.baseline).resolve())))
    for _ in range(args.rounds):  # interleaved, so drift hits every tree alike
        for label, path in trees:
            for name, value in _run(args.storage, args.jobs, path).items():
                samples.setdefault((name, label), []).append(value)
    title = f"manager CPU per job, {args.storage}, {args.jobs} jobs, median of {args.rounds} rounds"
    table = Table(title=title)
    for column in ("workload", "tree", "CPU per job", "rounds (µs)", "vs off", "vs baseline"):
        table.add_column(column, justify="left" if column in ("workload", "tree") else "right")
    for (name, label), values in samples.items():
        median = statistics.median(values)
        workload = name.rsplit(" ", 1)[0]
        off = statistics.median(samples[(f"{workload} off", label)])
        base = samples.get((name, "baseline"))
        versus = f"{statistics.median(base) / median:.2f}x" if base and label != "baseline" else ""
        rounds = " ".join(f"{v * 1e6:.1f}" for v in values)
        table.add_row(name, label, f"{median * 1e6:.1f} µs", rounds, f"{off / median:.2f}x", versus)
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
