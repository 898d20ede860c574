"""Huey's ``RedisHuey`` (blocking BRPOP reads, the default); no bulk API."""

from __future__ import annotations

from huey import RedisHuey

from bench.peers._common import redis_url, run_sync

huey = RedisHuey("bench", url=redis_url())


@huey.task()
def bench_job(mode: int, t: float) -> None:
    run_sync(mode, t)


class Producer:
    bulk = None

    async def open(self) -> None:
        pass

    async def push(self, mode: int, t: float) -> None:
        bench_job(mode, t)

    async def close(self) -> None:
        pass
