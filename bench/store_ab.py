"""A/B of conveyor trees on the SQLite store alone: CPU per job of Faktory's load-shape cycle.

    python -m bench.store_ab --a main --b working --rounds 9

The cycle is what the server does for Faktory's load shape, without sockets: 4 single-job
enqueues (one PUSH each) sharing a commit, then a FETCH (reserve of one job over 5 queues)
and an ACK for each, riding on the next lazy commit. Each round runs it in a fresh process
per tree (a temp file, 20,000 jobs), alternating, and reads that process's CPU time; the
minimum over the rounds is the figure least touched by other work on a shared machine.
Small changes to the store's statements show here well below the load shape's noise.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from bench.load_ab import tree

CYCLE = r"""
import asyncio, sys, tempfile, time
from conveyor.store.base import QueuedJob
from conveyor.store.sqlite.store import SQLiteStore

JOB = (b'{"retry":25,"jid":"%s","queue":"queue3","jobtype":"SomeJob","created_at":'
       b'"2026-12-06T02:51:00.123456789Z","args":[[1,"string",3]],'
       b'"enqueued_at":"2026-12-06T02:51:00.123456Z"}')

async def main(n):
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore.from_url(f"sqlite:///{tmp}/ab.db")
        await store.open()
        queues = [f"queue{i}" for i in range(5)]
        day = "2026-12-06"
        started = time.process_time()
        for i in range(0, n, 4):
            waits = []
            for k in range(4):
                jid = f"ab{i + k:014d}"
                job = QueuedJob(queues[(i + k) % 5], jid, JOB % jid.encode(), 1800)
                waits.append(store.enqueue_now([job]))
            for wait in waits:
                await wait
            for k in range(4):
                [taken] = await store.reserve(queues, "", time.time(), 1)
                await store.ack([taken.jid], day)
        spent = time.process_time() - started
        await store.close()
    print(spent / n * 1e6)

asyncio.run(main(int(sys.argv[1])))
"""


def one(path: str, jobs: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CYCLE, str(jobs)],
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--a", default="main", help="git ref, or 'working'")
    parser.add_argument("--b", default="working", help="git ref, or 'working'")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    costs: dict[str, list[float]] = {"A": [], "B": []}
    with tree(args.a) as path_a, tree(args.b) as path_b:
        for index in range(args.rounds):
            order = [("A", path_a), ("B", path_b)]
            for side, path in order if index % 2 == 0 else order[::-1]:
                costs[side].append(one(path, args.jobs))
    for side, ref in (("A", args.a), ("B", args.b)):
        values = costs[side]
        print(f"{side} ({ref}): min {min(values):.1f} µs/job, median "
              f"{statistics.median(values):.1f} ({args.rounds} rounds)")  # fmt: skip
    print(f"B - A: min {min(costs['B']) - min(costs['A']):+.1f} µs/job, median "
          f"{statistics.median(costs['B']) - statistics.median(costs['A']):+.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
