"""``Worker``: fetch jobs, run them with bounded concurrency, report, beat, shut down cleanly.

Two connections per worker process, both registered under its ``wid``: the **fetcher**
(FETCH, or FETCHB for as many jobs as there are free slots when the server is conveyor) and the
**reporter** (ACK/ACKB, FAIL, BEAT; see ``reporter.py``). On a conveyor server a third one
waits in ``CANCELS`` to hear of running jobs that were cancelled (docs/cancellation.md): an
async job's task is cancelled, a sync job's context says so (``JobContext.cancelled``), and
the job is reported as cancelled.

Each job runs as one task of ``JobRunner.execute``; the task's done callback counts and reports
its outcome, so the per-job path has no coroutine of the worker's own.

States only move forward, as in Faktory: running -> quiet (stop fetching; finish what runs) ->
stopping (also: wait at most ``shutdown_grace_seconds`` for running jobs, then cancel them and
FAIL them so the server retries them) -> stopped. A FETCH in flight is never interrupted (its
job would stay reserved until the reservation expires); it returns within the server's fetch
wait and its jobs run normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import msgspec

from conveyor.backoff import Backoff
from conveyor.client import Client
from conveyor.client._connection import fetch_jobs
from conveyor.errors import JobCancelled, UnknownWorker
from conveyor.job import Job
from conveyor.pool import CONNECTION_ERRORS
from conveyor.worker.cancels import watch_cancels
from conveyor.worker.context import Middleware
from conveyor.worker.execute import (
    DEFAULT_BACKTRACE_LINES,
    DEFAULT_MAX_RESULT_BYTES,
    JobRunner,
    Outcome,
)
from conveyor.worker.joblog import log_cancelled, log_outcome
from conveyor.worker.queues import QueueOrder, QueueSpec
from conveyor.worker.ratelimit import RateLimit
from conveyor.worker.reporter import Reporter

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.metrics.worker import WorkerMetrics

__all__ = ["Worker", "rss_kb"]

logger = logging.getLogger("conveyor.worker")

FETCH_BATCH_MAX = 100
"""Most jobs one FETCHB asks for, so one busy worker does not take a whole queue at once."""

FINAL_FLUSH_SECONDS = 10.0


SINGLE_FETCHERS_MAX = 8
"""Parallel FETCH connections when the server does not know FETCHB (plain Faktory)."""

MANY = 1 << 30
"""What ``_queued`` answers when it cannot count."""

EMPTY: list[Job] = []
"""What a fetch returns when the server had no job (not: when the fetch failed)."""


class ShutdownError(Exception):
    """The worker stopped before the job finished; FAILed so the server retries it."""

    errtype = "conveyor.WorkerShutdown"


def rss_kb() -> int:
    """Resident set size of this process in KiB (``/proc``; peak RSS where that is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class Worker:
    """Runs the jobs of ``app``: ``await run()``, or ``async with``, or ``start``/``stop``."""

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 10,
        queues: Iterable[str | QueueSpec] = ("default",),
        labels: Sequence[str] = (),
        burst: bool = False,
        heartbeat_seconds: float = 15.0,
        shutdown_grace_seconds: float = 25.0,
        middleware: Sequence[Middleware] = (),
        batch: bool | None = None,
        threads: int | None = None,
        wid: str | None = None,
        hostname: str | None = None,
        metrics: WorkerMetrics | None = None,
        rate_limit: str | RateLimit | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        """``rate_limit``: at most that many jobs of this process (``"100/s"``); jobs over it
        are retried at their turn without using a retry. ``max_result_bytes``: the largest
        result (as JSON) sent to the server; a larger one fails its job (dead)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.app = app
        self.concurrency = concurrency
        self.queues = QueueOrder(queues)
        self.labels = ["python", *labels]
        self.burst = burst
        self.heartbeat_seconds = heartbeat_seconds
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self.batch = batch
        self.wid = wid or os.urandom(8).hex()
        self.hostname = hostname or socket.gethostname()
        self.threads = ThreadPoolExecutor(threads or concurrency, thread_name_prefix="conveyor")
        self.runner = JobRunner(
            app, middleware=middleware, threads=self.threads, wid=self.wid,
            rate_limit=rate_limit, max_result_bytes=max_result_bytes,
        )  # fmt: skip
        self.extensions = False
        """The server is conveyor (from INFO): results and retry control are sent."""
        self.metrics = metrics
        """Counts this worker's jobs for ``--metrics-bind`` (``conveyor.metrics.worker``)."""
        if metrics is not None:
            metrics.attach(self)
        self.processed = 0
        self.failed = 0
        self.cancelled = 0
        self.state = "running"
        self._in_flight: dict[asyncio.Task[Outcome], tuple[Job, float]] = {}
        """Running jobs: each task's job and when it started (the loop's clock)."""
        self._capacity = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._done = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # the loop ``run`` runs in, set there
        self._claimed = 0
        self._fetched = 0
        self._fetch_backoff = Backoff()
        self._looking = asyncio.Lock()  # burst: one fetcher looks at the queues at a time
        self._reporter: Reporter | None = None
        self._signals = 0

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return len(self._in_flight)

    @property
    def unsent_results(self) -> int:
        """Results (ACK/FAIL) waiting to reach the server."""
        return self._reporter.backlog if self._reporter is not None else 0

    def __repr__(self) -> str:
        return (
            f"<Worker wid={self.wid} {self.state} {self.queues!r} concurrency={self.concurrency}>"
        )

    # -- public lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, process jobs until stopped (or, with ``burst``, until the queues are empty)."""
        if self._main is not None:
            raise RuntimeError("this worker was already started; create a new one")
        self._main = asyncio.current_task()
        try:
            await self._run()
        finally:
            self._done.set()

    async def start(self) -> None:
        """Run in a background task; returns once connected (connection errors raise here)."""
        if self._main is not None:
            raise RuntimeError("this worker was already started; create a new one")
        connected = asyncio.Event()
        self._main = asyncio.create_task(self._run(connected), name=f"conveyor-worker-{self.wid}")
        self._main.add_done_callback(lambda _: self._done.set())
        waiter = asyncio.create_task(connected.wait())
        await asyncio.wait([waiter, self._main], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._main.done():
            self._main.result()  # raise the connection error

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop fetching, finish running jobs within the grace period, FAIL the rest, disconnect."""
        if grace_seconds is not None:
            self.shutdown_grace_seconds = grace_seconds
            if grace_seconds <= 0:
                self._hurry.set()
        self._stop_requested.set()
        if self._main is not None and self._main is not asyncio.current_task():
            await self._done.wait()
            self._raise_failure()

    def quiet(self) -> None:
        """Stop fetching new jobs; keep running the current ones and keep beating."""
        if self.state == "running":
            logger.info("worker %s is quiet: no more fetching", self.wid)
            self.state = "quiet"
        self._capacity.set()  # wake the fetch loop so it notices

    async def wait(self) -> None:
        """Wait until the worker has stopped (by ``stop``, a signal, the server, or burst).

        Raises what stopped it, when that was an error.
        """
        await self._done.wait()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._main is not None and self._main.done() and not self._main.cancelled():
            self._main.result()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def install_signal_handlers(self, *, supervised: bool = False) -> None:
        """TSTP = quiet; TERM/INT = graceful stop; a second TERM/INT = stop now (no grace).

        ``supervised`` (a process of ``conveyor worker --processes``): TERM and INT only ever
        ask for the graceful stop, as they can arrive twice (from the parent, and from a
        terminal or systemd signalling the whole group); QUIT, which the parent sends on its
        own second TERM/INT, stops now.
        """
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTSTP, self.quiet)
        for sig in (signal.SIGTERM, signal.SIGINT):
            handler = self._request_stop if supervised else self._on_stop_signal
            loop.add_signal_handler(sig, handler, sig)
        if supervised:
            loop.add_signal_handler(signal.SIGQUIT, self._stop_now, signal.SIGQUIT)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self._request_stop(sig)
        else:
            self._stop_now(sig)

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stop_requested.is_set():
            logger.info(
                "%s: finishing running jobs (grace %ss); send it again to stop now",
                sig.name,
                self.shutdown_grace_seconds,
            )
        self._stop_requested.set()

    def _stop_now(self, sig: signal.Signals) -> None:
        logger.warning("%s: stopping now, cutting the grace period short", sig.name)
        self.shutdown_grace_seconds = 0
        self._hurry.set()
        self._stop_requested.set()
        self._capacity.set()

    # -- the main task ----------------------------------------------------------------------------

    async def _connect(self) -> Client:
        return await self.app.connect(wid=self.wid, labels=self.labels, hostname=self.hostname)

    async def _run(self, connected: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        clients, watcher = await self._open()
        logger.info(
            "worker %s started: %r, %s fetch%s",
            self.wid,
            self.queues,
            "batched" if self.batch else "single",
            "" if self.runner.limiter is None else f", rate limit {self.runner.limiter.limit}",
        )
        if connected is not None:
            connected.set()
        fetches = [asyncio.create_task(self._fetch_loop(c), name="conveyor-fetch") for c in clients]
        beat = asyncio.create_task(self._beat_loop(), name="conveyor-beat")
        watch: list[asyncio.Task[None]] = []
        if watcher is not None:  # a conveyor server can tell us of cancelled jobs
            channel = watch_cancels(watcher, self._connect, self._cancel)
            watch.append(asyncio.create_task(channel, name="conveyor-cancels"))
        try:
            await self._stop_requested.wait()
            self.state = "stopping"
            self._capacity.set()
            await asyncio.gather(*fetches)  # each returns within one server fetch wait
            await self._drain()
        finally:
            for task in (beat, *fetches, *watch):
                task.cancel()
            await asyncio.gather(beat, *fetches, *watch, return_exceptions=True)
            await self._disconnect()

    async def _open(self) -> tuple[list[Client], Client | None]:
        """Connect the fetchers, the reporter and, on a conveyor server, the cancel channel;
        all of them before the worker counts as started."""
        clients = [await self._connect()]
        watcher: Client | None = None
        try:
            description = (await clients[0].info()).get("server", {}).get("description", "")
            self.extensions = conveyor = "conveyor" in str(description).lower()
            if self.batch is None:
                self.batch = conveyor
            await self.app.crons.register(clients[0])  # @app.cron entries, once per process
            # One FETCHB asks for every free slot; plain FETCH gets one job per round trip, so
            # several fetchers keep the slots busy (as Faktory's own workers do).
            fetchers = 1 if self.batch else min(self.concurrency, SINGLE_FETCHERS_MAX)
            clients += [await self._connect() for _ in range(fetchers - 1)]
            reporter = self._reporter = Reporter(
                self._connect, batch=self.batch, connections=fetchers, on_sent=self._capacity.set,
                extensions=conveyor,
            )  # fmt: skip
            await reporter.call(_hello)  # fail here, not later, when the server is unreachable
            if conveyor:
                watcher = await self._connect()
            reporter.start()
        except BaseException:
            for client in clients:
                await client.close()
            if self._reporter is not None:
                await self._reporter.close(0)
            raise
        return clients, watcher

    async def _drain(self) -> None:
        """Wait for running jobs up to the grace period; cancel and FAIL what is left."""
        if self._in_flight:
            logger.info(
                "waiting up to %ss for %d running jobs",
                self.shutdown_grace_seconds,
                len(self._in_flight),
            )
            await self._wait_in_flight()
        leftover = list(self._in_flight)
        if leftover:
            logger.warning(
                "cancelling %d jobs still running; the server will retry them", len(leftover)
            )
            for task in leftover:
                task.cancel()
            await asyncio.gather(*leftover, return_exceptions=True)
        self.state = "stopped"

    async def _wait_in_flight(self) -> None:
        """Until every running job is done, the grace period ends, or a second signal."""
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            async with asyncio.timeout(self.shutdown_grace_seconds):
                while self._in_flight and not self._hurry.is_set():
                    await asyncio.wait([*self._in_flight, hurry], return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        finally:
            hurry.cancel()

    async def _disconnect(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self._reporter is not None and not await self._reporter.close(FINAL_FLUSH_SECONDS):
            logger.error(
                "could not report every result before exiting; "
                "those jobs will be retried when their reservation expires"
            )
        logger.info(
            "worker %s stopped: %d processed, %d failed, %d cancelled",
            self.wid,
            self.processed,
            self.failed,
            self.cancelled,
        )

    # -- fetching ---------------------------------------------------------------------------------

    async def _fetch_loop(self, client: Client) -> None:
        """Fetch while running; each loop owns its connection and closes it when done."""
        assert self._reporter is not None
        reporter = self._reporter
        try:
            while self.state == "running":
                # Results waiting beyond one per slot take slots: when the server takes them
                # slower than the handlers make them, fetch less and let the backlog drain.
                unsent = max(reporter.backlog - self.concurrency, 0)
                free = self.concurrency - len(self._in_flight) - self._claimed - unsent
                count = min(free, FETCH_BATCH_MAX) if self.batch else 1
                if free > 0 and self.burst:
                    # Look first (without a fetch wait): a FETCH that finds the queues empty
                    # waits out the server's fetch wait (2 s) before the worker can exit.
                    # One fetcher looks and claims at a time, so two never go for one job.
                    async with self._looking:
                        if await self._queued(client, self._claimed):
                            self._claimed += count
                        elif not self._in_flight:
                            break
                        else:
                            free = 0  # wait for the running jobs, then look again
                elif free > 0:
                    self._claimed += count  # parallel fetchers never ask beyond the free slots
                if free <= 0:
                    self._capacity.clear()
                    await self._capacity.wait()
                    continue
                fetched_before = self._fetched
                jobs, client = await self._fetch_or_reconnect(client, count)
                self._fetched += len(jobs)
                for job in jobs:
                    self._spawn(job)
                if jobs:
                    # Let the jobs start before the next FETCH goes out: when workers idle,
                    # that write was on every job's enqueue->start path.
                    await asyncio.sleep(0)
                # Burst is done when a fetch found nothing, nothing runs, and no other fetcher
                # found a job meanwhile.
                idle = not self._in_flight and self._fetched == fetched_before
                if jobs is EMPTY and self.burst and idle:
                    break
        finally:
            await client.close()
        if self.state == "running":  # left the loop for burst
            logger.info("queues are empty: burst mode is done")
            self._stop_requested.set()

    async def _queued(self, client: Client, claimed: int) -> int:
        """Burst: jobs in this worker's queues that the ``claimed`` slots of the fetches in
        flight will not take, asked without a fetch wait (a FETCH on empty queues waits it).

        With no fetch in flight (the batched worker's one fetcher) ``QUEUE LATENCY`` says
        enough (a queue with a job has a latency above 0; how many is not needed) and costs
        the server little; otherwise INFO counts. A large number when that cannot be told:
        the fetch that follows will."""
        try:
            if not claimed:
                latency = await client.queue_latency(*self.queues.names)
                return MANY if any(seconds > 0 for seconds in latency.values()) else 0
            sizes = (await client.info()).get("faktory", {}).get("queues", {})
            return max(sum(int(sizes.get(q) or 0) for q in self.queues.names) - claimed, 0)
        except Exception:
            return MANY

    async def _fetch_or_reconnect(self, client: Client, count: int) -> tuple[list[Job], Client]:
        """One FETCH/FETCHB of ``count`` jobs, whose slots the caller claimed (released here);
        after a failure, wait with backoff (and reconnect if it dropped)."""
        try:
            if client.closed:  # the server closed it while every slot was busy (idle timeout)
                client = await self._reconnect(client)
            queues = self.queues.order()
            if self.batch:
                found = await fetch_jobs(client, count, *queues)
            else:
                one = await client.fetch(*queues)
                found = [] if one is None else [msgspec.convert(one, Job)]
            self._fetch_backoff.reset()
            return (found or EMPTY), client
        except CONNECTION_ERRORS as exc:
            delay = self._fetch_backoff.next_delay()
            logger.warning("fetch failed (%s); reconnecting in %.2fs", exc, delay)
            await self._pause(delay)
            return [], await self._reconnect(client)
        except Exception:  # an error reply, or a job we cannot even decode
            delay = self._fetch_backoff.next_delay()
            logger.exception("fetch failed; trying again in %.2fs", delay)
            await self._pause(delay)
            return [], client
        finally:
            self._claimed -= count

    async def _pause(self, seconds: float) -> None:
        """Sleep before retrying a fetch, but wake up at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

    async def _reconnect(self, client: Client) -> Client:
        await client.close()
        try:
            return await self._connect()
        except CONNECTION_ERRORS as exc:
            logger.warning("cannot reconnect yet: %s", exc)
            return client  # closed: the next fetch fails fast and we come back here

    def _spawn(self, job: Job) -> None:
        # loop.create_task, not asyncio.create_task: on Python 3.11 the latter's lookup of the
        # running loop costs a getpid() system call, per job.
        task = self._loop.create_task(self.runner.execute(job))
        self._in_flight[task] = (job, self._loop.time())
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Outcome]) -> None:
        """Count and report the job of ``task``, however its task ended."""
        assert self._reporter is not None
        job, started = self._in_flight.pop(task)
        cancelled = self.runner.cancelled
        if cancelled and job.jid in cancelled:  # the server cancelled it: FAIL is harmless
            cancelled.discard(job.jid)
            self.cancelled += 1
            stopped = Outcome.failed(job, JobCancelled(f"job {job.jid} was cancelled"), 0)
            stopped.duration = self._loop.time() - started
            log_cancelled(stopped)
            self._reporter.report(stopped)
            self._capacity.set()
            return
        interrupted = task.cancelled()
        if interrupted:  # the worker is stopping: FAIL it, so the server retries it
            error = ShutdownError("the worker stopped before the job finished")
            outcome = Outcome.failed(job, error, 0)
        elif (exc := task.exception()) is not None:  # a BaseException escaped the handler
            outcome = Outcome.failed(job, exc, DEFAULT_BACKTRACE_LINES)
            self.processed += 1
        else:
            outcome = task.result()
            self.processed += 1
        if outcome.error is not None:
            self.failed += 1
        outcome.duration = self._loop.time() - started
        log_outcome(outcome, interrupted=interrupted)
        if self.metrics is not None:
            self.metrics.on_outcome(outcome, interrupted=interrupted)
        self._reporter.report(outcome)
        self._capacity.set()

    # -- cancelled jobs ---------------------------------------------------------------------------

    def _cancel(self, jid: str) -> None:
        """Stop the running job ``jid``: cancel an async job's task; a sync job's thread cannot
        be stopped, so its context says it is cancelled (the handler looks)."""
        for task, (job, _started) in self._in_flight.items():
            if job.jid != jid or jid in self.runner.cancelled:
                continue
            self.runner.cancelled.add(jid)
            jobdef = self.app.jobs.get(job.jobtype)
            logger.info("job %s (%s) was cancelled: stopping it", jid, job.jobtype)
            if jobdef is None or jobdef.is_async:
                task.cancel()
            return

    # -- heartbeats -------------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        assert self._reporter is not None
        reporter = self._reporter
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            state = {"running": None, "quiet": "quiet"}.get(self.state, "terminate")
            try:
                wanted: Any = await reporter.call(functools.partial(_beat, state=state))
            except UnknownWorker:
                # The server forgot us (reaped after a long pause): a new HELLO registers again.
                logger.warning("the server does not know worker %s; reconnecting", self.wid)
                await reporter.reconnect()
                continue
            except Exception:
                logger.exception("heartbeat failed")
                continue
            if wanted == "quiet":
                self.quiet()
            elif wanted == "terminate":
                logger.info("the server asked worker %s to terminate", self.wid)
                self._stop_requested.set()


async def _beat(client: Client, state: str | None) -> str:
    return await client.beat(rss_kb(), state)


async def _hello(client: Client) -> None:
    """Nothing: connecting already said HELLO."""
