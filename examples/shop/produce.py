"""Push jobs from plain (sync) code and from async code: ``python -m examples.shop.produce``."""

from __future__ import annotations

import asyncio
import datetime as dt

from examples.shop.jobs import Email, Order, app, charge, resize_image, send_email


async def produce_async() -> list[str]:
    jids = [
        await send_email.push(Email("ada@example.com", "Welcome")),
        await charge.push(Order(id=1, items=["book"], total_cents=1200)),
        # per-call options: another queue, later, fewer retries
        await resize_image.options(queue="default", in_=dt.timedelta(minutes=5)).push("a.png", 64),
    ]
    # one round trip for many jobs, one result per job
    results = await app.push_bulk([resize_image.build(f"img{i}.png", 128) for i in range(3)])
    jids += [r.jid for r in results if r.ok]
    await app.aclose()
    return jids


def produce_sync() -> str:
    """From a Django view, a script, a notebook: the same API, ``_sync``."""
    jid = send_email.push_sync(Email("grace@example.com", "Sync hello"))
    app.close()
    return jid


if __name__ == "__main__":
    print("async:", asyncio.run(produce_async()))
    print("sync:", produce_sync())
