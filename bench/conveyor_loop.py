"""A minimal conveyor worker loop, the stand-in used while ``conveyor worker`` did not exist.

    python -m bench.conveyor_loop tcp://127.0.0.1:7419 16

Two connections, each fetching up to ``slots / 2`` jobs per FETCHB, running them concurrently
with the shared job body and acknowledging the batch with one ACKB. No retries, no heartbeat:
it measures the wire and the server, not a production worker.
"""

from __future__ import annotations

import asyncio
import os
import sys

from bench.peers._common import QUEUE, run_async
from conveyor.client import Client

CONNECTIONS = 2


async def _consume(url: str, batch: int, index: int) -> None:
    client = await Client.connect(url, wid=f"bench-{os.getpid()}-{index}")
    try:
        while True:
            jobs = await client.fetch_many(batch, QUEUE)
            if not jobs:
                continue
            await asyncio.gather(*(run_async(*job["args"]) for job in jobs))
            await client.ack_many([job["jid"] for job in jobs])
    finally:
        await client.close()


async def main(url: str, slots: int) -> None:
    batch = max(1, slots // CONNECTIONS)
    await asyncio.gather(*(_consume(url, batch, i) for i in range(CONNECTIONS)))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
