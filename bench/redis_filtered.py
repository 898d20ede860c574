"""MUTATE with a filter over a big Redis sorted set: is paging through the matches linear?

    python -m bench.redis_filtered --entries 20000

Starts a private redis-server (no persistence), fills the retries set with ``--entries`` jobs
(half of them of the jobtype the filter asks for), then times ``MUTATE kill`` with that
jobtype filter through the manager (what the FWP command calls) and, separately, the listing
alone: every page of the filtered set, 1,000 a page, as MUTATE and bulk actions read it. The
manager reads every page before it changes anything, so a listing that re-reads the whole set
for each page costs (matches / 1000) full scans. Run it on two trees (``PYTHONPATH=other/src``)
to compare; numbers on a shared machine are noisy, so compare runs taken one after the other.
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

import msgspec
import redis

from bench._harness import free_port, wait_for_port
from conveyor.manager import Manager
from conveyor.store import open_store
from conveyor.store.base import JobFilter, SetEntry, SortedSet

PAGE = 1000


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-redis-") as tmp:
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                "--save", "", "--appendonly", "no"]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port, process, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


async def fill(manager: Manager, entries: int) -> None:
    now = time.time()
    batch: list[SetEntry] = []
    for n in range(entries):
        jobtype = "Target" if n % 2 == 0 else "Other"
        jid = f"job-{n:08d}"
        payload = msgspec.json.encode({"jid": jid, "jobtype": jobtype, "args": [n], "queue": "q"})
        batch.append(SetEntry(now + 3600 + n, jid, payload, "q", jobtype))
        if len(batch) == PAGE:
            await manager.store.add_to_set(SortedSet.RETRIES, batch)
            batch = []
    if batch:
        await manager.store.add_to_set(SortedSet.RETRIES, batch)


async def list_all(manager: Manager, flt: JobFilter) -> int:
    seen = 0
    while True:
        page = await manager.store.list_set(SortedSet.RETRIES, flt, seen, PAGE)
        seen += len(page.items)
        if len(page.items) < PAGE:
            return seen


def entries_read(client: redis.Redis) -> int:
    """Set entries Redis handed out since the last reset (one HGET each in set_read.lua)."""
    return int(client.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


async def run(entries: int) -> None:
    flt = JobFilter(jobtype="Target")
    with redis_server() as url:
        manager = Manager(open_store(url))
        await manager.start()
        client = redis.Redis.from_url(url)
        try:
            await fill(manager, entries)
            client.config_resetstat()
            started = time.perf_counter()
            listed = await list_all(manager, flt)
            listing = time.perf_counter() - started
            read = entries_read(client)
            started = time.perf_counter()
            await manager.mutate("kill", "retries", flt)
            mutate = time.perf_counter() - started
            left = await manager.store.set_size(SortedSet.RETRIES)
            dead = await manager.store.set_size(SortedSet.DEAD)
        finally:
            client.close()
            await manager.stop()
    print(f"{entries:,} entries in retries, {listed:,} of jobtype Target")
    print(
        f"  listing every filtered page ({PAGE:,} a page): {listing:.2f} s, {read:,} entries read"
    )
    print(f"  MUTATE kill jobtype=Target: {mutate:.2f} s ({left:,} left, {dead:,} dead)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(run(args.entries))


if __name__ == "__main__":
    main()
