"""What the unique locks in the job rows cost a SQLite store's start.

    python -m bench.unique_open                      # 100,000 queued jobs, 10,000 unique
    python -m bench.unique_open --jobs 1000000 --unique 100000

Since schema version 4 a unique lock is kept in its job's row (``ukey``, ``ukey_until``:
store/sqlite/claims.py) and the in-memory lock table is rebuilt from the rows that hold one:
a scan of ``queue_jobs`` and ``set_entries`` with no index (an index would cost every unique
PUSH a page of its own). This builds a file with ``--jobs`` queued jobs, ``--unique`` of them
holding a lock, then times, in fresh processes, the store's ``open`` and the first read of the
locks (the rebuild), against the same file with no lock at all. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


async def _build(path: Path, jobs: int, unique: int) -> None:
    from conveyor.store.base import QueuedJob
    from conveyor.store.records import Record
    from conveyor.store.sqlite import SQLiteStore

    store = SQLiteStore.from_url(f"sqlite:///{path}")
    await store.open()
    until = time.time() + 86_400
    every = jobs // unique if unique else 0
    for start in range(0, jobs, 1000):
        batch = []
        for n in range(start, min(start + 1000, jobs)):
            jid = uuid.uuid4().hex
            custom = ',"custom":{"unique_for":86400}' if every and n % every == 0 else ""
            payload = f'{{"jid":"{jid}","jobtype":"W","args":[{n},"x"],"queue":"q"{custom}}}'
            if custom:
                record = Record(uuid.uuid4().hex * 2, jid.encode(), until)
                assert store.claim_record_now("unique", record, time.time()) is None
            batch.append(QueuedJob("q", jid, payload.encode(), 1800))
        await store.enqueue(batch)
        await store.durable()
    await store.close()


async def _open(path: Path) -> dict[str, float]:
    from conveyor.store.sqlite import SQLiteStore

    store = SQLiteStore.from_url(f"sqlite:///{path}")
    started = time.perf_counter()
    await store.open()
    opened = time.perf_counter()
    locks = await store.count_records("unique", time.time())
    loaded = time.perf_counter()
    await store.close()
    return {"open": opened - started, "locks": loaded - opened, "count": locks}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--unique", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(_open(Path(args.measure)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = {"with locks": Path(tmp) / "locks.db", "no lock": Path(tmp) / "plain.db"}
        asyncio.run(_build(files["with locks"], args.jobs, args.unique))
        asyncio.run(_build(files["no lock"], args.jobs, 0))
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in files}
        for _ in range(args.rounds):
            for name, path in files.items():
                command = [sys.executable, "-m", "bench.unique_open", "--measure", str(path)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                samples[name].append(json.loads(done.stdout))
        print(f"{args.jobs:,} queued jobs, median of {args.rounds} fresh processes:")
        for name, found in samples.items():
            opened = statistics.median(s["open"] for s in found) * 1e3
            loaded = statistics.median(s["locks"] for s in found) * 1e3
            count = int(found[0]["count"])
            print(f"  {name:>10}: open {opened:7.1f} ms, locks read {loaded:7.1f} ms ({count:,})")


if __name__ == "__main__":
    main()
