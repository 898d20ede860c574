"""The worker's reporting connections: ACK, FAIL and BEAT, with acknowledgements batched.

Handlers finish on many tasks at once. Their ACKs go into one buffer that a single task drains:
everything that piled up goes out as one ``ACKB`` round trip (conveyor servers), or as plain
``ACK``s sent in parallel over a few connections (standard Faktory). Reporting costs a job no
more than a list append: nothing waits per job. The worker bounds the ``backlog`` instead: while
more results wait than it has slots, it fetches less (``on_sent`` tells it to look again).

A dropped connection is re-opened with backoff and the command sent again: ACK is idempotent,
and a repeated FAIL gets ``JobNotFound``, which is ignored.

With a conveyor server (``extensions``) an ACK carries the job's result when it asked for one,
and a FAIL what should happen to the retries (``skip_retry``, ``retry_after``, ``backoff``:
docs/protocol.md). A plain Faktory server gets the standard commands: a job that must not be
retried is FAILed, then moved to the dead set with ``MUTATE kill``; the rest is ignored there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from conveyor.client import Client
from conveyor.errors import CommandError, JobNotFound
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
        self,
        connect: Callable[[], Awaitable[Client]],
        *,
        batch: bool,
        connections: int = 1,
        on_sent: Callable[[], object] = lambda: None,
        extensions: bool | None = None,
    ) -> None:
        self.batch = batch
        self.extensions = batch if extensions is None else extensions
        """The server is conveyor: results and retry control go with ACK and FAIL."""
        self._pool: ConnectionPool[Client] = ConnectionPool(
            connect, size=connections, retry_seconds=RETRY_SECONDS
        )
        self._connections = connections
        self._on_sent = on_sent
        self._acks: list[str] = []
        self._runs: list[float | None] = []
        """The run time of each job in ``_acks``, in step: sent with ACKB (conveyor servers)."""
        self._results: list[bytes | None] = []
        """The result of each job in ``_acks``, in step (conveyor servers, jobs that ask)."""
        self._fails: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    # -- called by job tasks ---------------------------------------------------------------------

    def report(self, outcome: Outcome) -> None:
        """Queue the ACK or FAIL; ``flush`` waits until the server has it (or we gave up)."""
        if outcome.error is None:
            self._acks.append(outcome.job.jid)
            self._runs.append(outcome.duration)
            self._results.append(outcome.result_json if self.extensions else None)
        else:
            self._fails.append(outcome)
        self._idle.clear()
        self._wake.set()

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
            if len(self._acks) <= ACK_BATCH_MAX:
                jids, self._acks = self._acks, []
                runs, self._runs = self._runs, []
                results, self._results = self._results, []
            else:
                jids, self._acks = self._acks[:ACK_BATCH_MAX], self._acks[ACK_BATCH_MAX:]
                runs, self._runs = self._runs[:ACK_BATCH_MAX], self._runs[ACK_BATCH_MAX:]
                cut = ACK_BATCH_MAX
                results, self._results = self._results[:cut], self._results[cut:]
            await self._send(len(jids), self._send_acks(jids, runs, results))
        if self._fails:
            outcome = self._fails.pop(0)
            duration = outcome.duration if self.batch else None
            fail = functools.partial(
                _fail, outcome=outcome, duration=duration, extensions=self.extensions
            )
            await self._send(1, self.call(fail))
        self._on_sent()

    async def _send_acks(
        self, jids: list[str], runs: list[float | None], results: list[bytes | None]
    ) -> None:
        with_results = results if any(result is not None for result in results) else None
        if self.batch:
            try:
                await self.call(lambda client: client.ack_many(jids, runs, with_results))
                return
            except CommandError:
                if with_results is None:
                    raise
            # A result the server refused (its limit may be lower than ours): one by one,
            # so only the jobs whose result it refuses fail.
            await self.call(functools.partial(_ack_each, jids=jids, results=results))
            return
        # One ACK per round trip: spread them over the pool's connections.
        share = -(-len(jids) // self._connections)
        parts = range(0, len(jids), share)
        await asyncio.gather(
            *(
                self.call(
                    functools.partial(
                        _ack_each, jids=jids[i : i + share], results=results[i : i + share]
                    )
                )
                for i in parts
            )
        )

    async def _send(self, count: int, send: Awaitable[Any]) -> None:
        try:
            await send
        except Exception:  # keep reporting the rest; the server retries what was lost
            logger.exception("could not report %d job results", count)


async def _ack_each(client: Client, jids: list[str], results: list[bytes | None]) -> None:
    for jid, result in zip(jids, results, strict=True):
        if result is None:
            await client.ack(jid)
            continue
        try:
            await client.ack(jid, result=result)
        except CommandError as exc:  # the server refused the result: the job cannot have it
            logger.error("the server refused the result of job %s: %s", jid, exc.message)
            await _refused(client, jid, exc.message)


async def _refused(client: Client, jid: str, why: str) -> None:
    with contextlib.suppress(JobNotFound):  # its reservation ended meanwhile
        await client.fail(jid, "conveyor.ResultError", why, skip_retry=True)


async def _fail(client: Client, outcome: Outcome, duration: float | None, extensions: bool) -> None:
    jid = outcome.job.jid
    try:
        if extensions:
            await client.fail(
                jid, outcome.errtype, outcome.message, outcome.backtrace, duration,
                skip_retry=outcome.dead, retry_after=outcome.retry_after, backoff=outcome.backoff,
            )  # fmt: skip
            return
        await client.fail(jid, outcome.errtype, outcome.message, outcome.backtrace, duration)
    except JobNotFound:  # already failed before a reconnect, or the reservation expired
        return
    if outcome.dead:
        # FAIL put it in the retry set; move it on to the dead set right away, since running
        # it again would fail the same way. Standard MUTATE, so plain Faktory does it too.
        await client.mutate("kill", "retries", {"jids": [jid]})
