"""Run a worker inside another asyncio program (a web app's lifespan, a bot, a daemon).

python -m examples.shop.embedded
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from examples.shop.jobs import Email, app, send_email


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """What a FastAPI/Starlette ``lifespan=`` would do: the worker lives as long as the app."""
    async with app.worker(concurrency=20, queues=["critical", "default"]):
        yield
    await app.aclose()


async def main() -> None:
    async with lifespan():
        await send_email.push(Email("embedded@example.com", "From inside"))
        await asyncio.sleep(1)  # the web app would be serving requests here


if __name__ == "__main__":
    asyncio.run(main())
