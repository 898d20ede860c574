"""The worker's reporting connections: ACK, FAIL and BEAT, with acknowledgements batched.

Handlers finish on many tasks at once. Their ACKs go into one buffer that a single task drains:
everything that piled up goes out as one ``ACKB`` round trip (conveyor servers), or as plain
``ACK``s sent in parallel over a few connections (standard Faktory). A job keeps its worker slot
until its result has reached the server, which bounds the backlog by the concurrency.

A dropped connection is re-opened with backoff and the command sent again: ACK is idempotent,
and a repeated FAIL gets ``JobNotFound``, which is ignored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from conveyor.client import Client
from conveyor.errors import JobNotFound
from conveyor.pool import ConnectionPool
from conveyor.worker.execute import Outcome

__all__ = ["Reporter"]

logger = logging.getLogger("conveyor.worker")

T = TypeVar("T")

ACK_BATCH_MAX = 1000
RETRY_SECONDS = 24 * 3600.0
"""Keep reconnecting this long: a worker outlives server restarts (``close`` ends it sooner)."""


class Reporter:
    def __init__(
        self, connect: Callable[[], Awaitable[Client]], *, batch: bool, connections: int = 1
    ) -> None:
        self.batch = batch
        self._pool: ConnectionPool[Client] = ConnectionPool(
            connect, size=connections, retry_seconds=RETRY_SECONDS
        )
        self._connections = connections
        self._acks: list[tuple[str, asyncio.Future[None]]] = []
        self._fails: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- called by job tasks ---------------------------------------------------------------------

    def report(self, outcome: Outcome) -> asyncio.Future[None]:
        """Queue the ACK or FAIL; the future is done once the server has it (or gave up)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if outcome.ok:
            self._acks.append((outcome.job.jid, done))
        else:
            self._fails.append((outcome, done))
        self._idle.clear()
        self._wake.set()
        return done

    @property
    def backlog(self) -> int:
        """Results waiting to be sent."""
        return len(self._acks) + len(self._fails)

    async def call(self, operation: Callable[[Client], Awaitable[T]]) -> T:
        """Run one command on a reporting connection, reconnecting with backoff if needed."""
        return await self._pool.run(operation)

    async def reconnect(self) -> None:
        """Open fresh connections (a new HELLO) for what comes next."""
        await self._pool.discard_idle()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain_forever(), name="conveyor-reporter")

    async def flush(self) -> None:
        """Wait until everything reported so far reached the server."""
        await self._idle.wait()  # set only once the lists are empty AND nothing is in flight

    async def close(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a call's
        """Flush for up to ``timeout`` seconds, then stop; False if results were left unsent."""
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
            flushed = True
        except TimeoutError:
            flushed = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._pool.close()
        return flushed

    # -- the drain loop --------------------------------------------------------------------------

    async def _drain_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._acks or self._fails:
                await self._drain_once()
            self._idle.set()

    async def _drain_once(self) -> None:
        if self._acks:
            chunk, self._acks = self._acks[:ACK_BATCH_MAX], self._acks[ACK_BATCH_MAX:]
            jids = [jid for jid, _ in chunk]
            await self._settle([done for _, done in chunk], self._send_acks(jids))
        if self._fails:
            outcome, done = self._fails.pop(0)
            await self._settle([done], self.call(lambda client: _fail(client, outcome)))

    async def _send_acks(self, jids: list[str]) -> None:
        if self.batch:
            await self.call(lambda client: client.ack_many(jids))
            return
        # One ACK per round trip: spread them over the pool's connections.
        share = -(-len(jids) // self._connections)
        parts = [jids[i : i + share] for i in range(0, len(jids), share)]
        await asyncio.gather(
            *(self.call(functools.partial(_ack_each, jids=part)) for part in parts)
        )

    async def _settle(self, futures: list[asyncio.Future[None]], send: Awaitable[Any]) -> None:
        try:
            await send
        except Exception:  # keep reporting the rest; the server retries what was lost
            logger.exception("could not report %d job results", len(futures))
        finally:
            for future in futures:
                if not future.done():
                    future.set_result(None)


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
