"""taskiq with taskiq-redis's ``RedisStreamBroker`` (acknowledged streams); no bulk API."""

from __future__ import annotations

from taskiq_redis import RedisStreamBroker

from bench.peers._common import redis_url, run_async

broker = RedisStreamBroker(url=redis_url())


@broker.task(task_name="bench_job")
async def bench_job(mode: int, t: float) -> None:
    await run_async(mode, t)


class Producer:
    bulk = None

    async def open(self) -> None:
        await broker.startup()

    async def push(self, mode: int, t: float) -> None:
        await bench_job.kiq(mode, t)

    async def close(self) -> None:
        await broker.shutdown()
