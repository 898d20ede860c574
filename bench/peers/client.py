"""Producer side of one workload, run as a subprocess in the library's own environment.

    python -m bench.peers.client bench.peers.rq_app enqueue 20000

Operations: ``enqueue`` (no-op jobs one by one), ``bulk`` (no-op jobs through the library's
bulk API in batches of 1,000), ``sleep`` (10 ms jobs, bulk when there is one), ``latency``
(probes pushed ``gap`` seconds apart, each carrying its enqueue time), ``warm`` (one no-op).
Prints one JSON object: ``{"seconds": <time spent pushing>}``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from typing import Any

from bench.peers._common import LATENCY, NOOP, SLEEP

BATCH = 1000
LATENCY_GAP = 0.005


async def _push_all(producer: Any, mode: int, count: int, bulk: bool) -> None:
    if bulk and getattr(producer, "bulk", None):
        for start in range(0, count, BATCH):
            await producer.push_many([(mode, 0.0)] * min(BATCH, count - start))
    else:
        for _ in range(count):
            await producer.push(mode, 0.0)


async def _latency(producer: Any, count: int) -> None:
    next_at = time.perf_counter()
    for _ in range(count):
        next_at += LATENCY_GAP
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await producer.push(LATENCY, time.time())


async def run(module_name: str, op: str, count: int) -> float:
    producer = importlib.import_module(module_name).Producer()
    await producer.open()
    try:
        started = time.perf_counter()
        if op == "enqueue":
            await _push_all(producer, NOOP, count, bulk=False)
        elif op == "bulk":
            await _push_all(producer, NOOP, count, bulk=True)
        elif op == "sleep":
            await _push_all(producer, SLEEP, count, bulk=True)
        elif op == "latency":
            await _latency(producer, count)
        elif op == "warm":
            await _push_all(producer, NOOP, count, bulk=False)
        else:
            raise SystemExit(f"unknown operation {op!r}")
        return time.perf_counter() - started
    finally:
        await producer.close()


def main() -> None:
    module_name, op, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    seconds = asyncio.run(run(module_name, op, count))
    print(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main()
