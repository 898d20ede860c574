"""The one job body every library runs, so the rows differ only in the library around it.

``mode`` 0 = no-op, 1 = 10 ms sleep (I/O), 2 = latency probe (``t`` is the enqueue time).
Each job ends with one Redis round trip (INCR of a counter the driver polls), the way the
issue's calibration figures were taken; a latency probe also pushes ``start - t`` to a list.
Standard library and ``redis`` only: this module is imported inside the peers' virtualenv.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

DONE_KEY = "bench:done"
LATENCY_KEY = "bench:latency"
NOOP, SLEEP, LATENCY = 0, 1, 2
SLEEP_SECONDS = 0.010
QUEUE = "bench"

_sync_client: Any = None
_async_clients: dict[int, Any] = {}


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _sync() -> Any:
    global _sync_client
    pid = os.getpid()
    # one client per process: forking workers (RQ, Celery prefork) must not share a socket
    if _sync_client is None or _sync_client[0] != pid:
        import redis

        _sync_client = (pid, redis.Redis.from_url(redis_url()))
    return _sync_client[1]


def _async() -> Any:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None:
        import redis.asyncio

        client = _async_clients[id(loop)] = redis.asyncio.Redis.from_url(redis_url())
    return client


def run_sync(mode: int, t: float) -> None:
    """The job body for thread/process workers (RQ, Dramatiq, Celery, Huey)."""
    started = time.time()
    if mode == SLEEP:
        time.sleep(SLEEP_SECONDS)
    client = _sync()
    if mode == LATENCY:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(LATENCY_KEY, started - t)
        pipe.incr(DONE_KEY)
        pipe.execute()
    else:
        client.incr(DONE_KEY)


async def run_async(mode: int, t: float) -> None:
    """The job body for asyncio workers (arq, SAQ, taskiq, streaQ, conveyor)."""
    started = time.time()
    if mode == SLEEP:
        await asyncio.sleep(SLEEP_SECONDS)
    client = _async()
    if mode == LATENCY:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(LATENCY_KEY, started - t)
        pipe.incr(DONE_KEY)
        await pipe.execute()
    else:
        await client.incr(DONE_KEY)
