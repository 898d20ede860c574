"""arq: ``WorkerSettings`` with the defaults (max_jobs=10, poll_delay=0.5 s); no bulk API."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import create_pool
from arq.connections import RedisSettings

from bench.peers._common import redis_url, run_async


async def bench_job(ctx: dict[str, Any], mode: int, t: float) -> None:
    await run_async(mode, t)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [bench_job]
    redis_settings = RedisSettings.from_dsn(redis_url())


class Producer:
    bulk = None

    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(redis_url()))

    async def push(self, mode: int, t: float) -> None:
        await self.pool.enqueue_job("bench_job", mode, t)

    async def close(self) -> None:
        await self.pool.aclose()
