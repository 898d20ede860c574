"""The worker's second connection: ACK, FAIL and BEAT, with acknowledgements batched.

Handlers finish on many tasks at once; their ACKs go into one buffer that a single task drains,
as one ``ACKB`` round trip for everything that piled up (conveyor servers) or one ``ACK`` each
(plain Faktory). FAILs are sent one by one, in order with the ACKs. A dropped connection is
re-opened with backoff and the pending work is sent again (ACK is idempotent; a repeated FAIL
gets ``JobNotFound``, which is ignored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor.client import Client
from conveyor.errors import JobNotFound
from conveyor.pool import CONNECTION_ERRORS, Backoff
from conveyor.worker.execute import Outcome

__all__ = ["Reporter"]

logger = logging.getLogger("conveyor.worker")

ACK_BATCH_MAX = 1000


class Reporter:
    def __init__(self, connect: Callable[[], Awaitable[Client]], *, batch: bool) -> None:
        self._connect = connect
        self.batch = batch
        self._client: Client | None = None
        self._lock = asyncio.Lock()
        self._acks: list[str] = []
        self._fails: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- called by job tasks ---------------------------------------------------------------------

    def report(self, outcome: Outcome) -> None:
        if outcome.ok:
            self._acks.append(outcome.job.jid)
        else:
            self._fails.append(outcome)
        self._idle.clear()
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, client: Client) -> None:
        self._client = client
        self._task = asyncio.create_task(self._drain_forever(), name="conveyor-reporter")

    async def flush(self) -> None:
        """Wait until everything reported so far reached the server."""
        if self._acks or self._fails:
            self._wake.set()
            await self._idle.wait()

    async def close(self) -> None:
        await self.flush()
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        async with self._lock:
            if self._client is not None:
                await self._client.close()
                self._client = None

    async def call(self, operation: Callable[[Client], Awaitable[Any]]) -> Any:
        """Run one command on the reporter connection, reconnecting with backoff if it dropped."""
        backoff = Backoff()
        while True:
            async with self._lock:
                try:
                    if self._client is None or self._client.closed:
                        self._client = await self._connect()
                    return await operation(self._client)
                except CONNECTION_ERRORS as exc:
                    if self._closing:
                        raise
                    self._client = None
                    delay = backoff.next_delay()
                    logger.warning("lost the server connection (%s); retry in %.2fs", exc, delay)
            await asyncio.sleep(delay)

    # -- the drain loop --------------------------------------------------------------------------

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._acks or self._fails:
                try:
                    await self._drain_once()
                except Exception:  # keep reporting; what failed is logged
                    logger.exception("could not report job results")
            self._idle.set()

    async def _drain_once(self) -> None:
        if self._acks:
            jids, self._acks = self._acks[:ACK_BATCH_MAX], self._acks[ACK_BATCH_MAX:]
            if self.batch:
                await self.call(lambda client: client.ack_many(jids))
            else:
                await self.call(lambda client: _ack_each(client, jids))
        if self._fails:
            outcome = self._fails.pop(0)
            await self.call(lambda client: _fail(client, outcome))


async def _ack_each(client: Client, jids: list[str]) -> None:
    for jid in jids:
        await client.ack(jid)


async def _fail(client: Client, outcome: Outcome) -> None:
    jid = outcome.job.jid
    try:
        await client.fail(jid, outcome.errtype, outcome.message, outcome.backtrace)
    except JobNotFound:  # already failed before a reconnect, or the reservation expired
        return
    if outcome.dead:
        # FAIL put it in the retry set; move it on to the dead set right away, since running
        # it again would fail the same way. Standard MUTATE, so plain Faktory does it too.
        await client.mutate("kill", "retries", {"jids": [jid]})
