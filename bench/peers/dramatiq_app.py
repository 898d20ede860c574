"""Dramatiq with its Redis broker and default middleware; no bulk API (``send`` per message)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers._common import QUEUE, redis_url, run_sync

broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def bench_job(mode: int, t: float) -> None:
    run_sync(mode, t)


class Producer:
    bulk = None

    async def open(self) -> None:
        pass

    async def push(self, mode: int, t: float) -> None:
        bench_job.send(mode, t)

    async def close(self) -> None:
        broker.close()
