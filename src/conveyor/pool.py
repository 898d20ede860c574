"""A pool of client connections with reconnect and exponential backoff.

FWP allows one command in flight per connection, so concurrent producers need several. The pool
opens connections lazily up to ``size``; a connection that fails with a connection-level error
(``ConnectError``, ``OSError``), or that the server closed while it sat idle, is thrown away,
never handed out again. ``run`` retries an operation on a fresh connection with backoff while
the server is unreachable, up to ``retry_seconds``: a push may then reach the server twice,
which at-least-once delivery (and idempotent handlers) already covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from conveyor.backoff import Backoff
from conveyor.errors import AuthenticationError, ConnectError

__all__ = ["ConnectionPool"]

logger = logging.getLogger("conveyor.pool")

T = TypeVar("T")


class Closable(Protocol):
    async def close(self) -> None: ...

    @property
    def closed(self) -> bool:
        """True once the connection is known to be gone (closed by either side)."""


C = TypeVar("C", bound=Closable)

# Errors that mean "this connection is gone", as opposed to an error reply from the server.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (ConnectError, OSError, EOFError)


class _StaleConnection(ConnectError):
    """A connection error on a connection that had been waiting in the pool."""


class ConnectionPool(Generic[C]):
    """Up to ``size`` connections made by ``connect``; ``acquire`` waits for a free one."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        *,
        size: int = 10,
        retry_seconds: float = 30.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[C] = []
        self._all: set[C] = set()
        self._closed = False
        self.retry_seconds = retry_seconds
        self._backoff = backoff

    async def _open(self) -> C:
        """Connect, retrying with backoff for up to ``retry_seconds`` (bad passwords fail fast)."""
        backoff = self._backoff()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_seconds
        while True:
            try:
                conn = await self._connect()
            except AuthenticationError:
                raise
            except CONNECTION_ERRORS as exc:
                delay = backoff.next_delay()
                if loop.time() + delay > deadline:
                    raise ConnectError(f"cannot connect: {exc}") from exc
                logger.warning("cannot connect (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._all.add(conn)
            return conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[C]:
        """Borrow a connection; it returns to the pool unless a connection error escaped."""
        if self._closed:
            raise ConnectError("the connection pool is closed")
        async with self._slots:
            conn, _ = await self._take()
            try:
                yield conn
            except BaseException as exc:
                await self._give_back(conn, exc)
                raise
            await self._give_back(conn, None)

    async def run(self, operation: Callable[[C], Awaitable[T]]) -> T:
        """Run ``operation`` on a pooled connection; on a connection error, reconnect and retry
        with backoff for up to ``retry_seconds`` from the first failure."""
        backoff: Backoff | None = None
        deadline = 0.0
        while True:
            try:
                return await self._run_once(operation)
            except _StaleConnection as stale:
                # Before any other failure: an idle connection the server closed just as we
                # took it. Straight on to another one (a push may land twice, as after any
                # lost connection: at-least-once).
                if backoff is None and not self._closed:
                    logger.debug("pooled connection was closed by the server: %s", stale)
                    continue
                exc = stale.__cause__ or stale
                if self._closed:
                    raise
                backoff, deadline = await self._wait_to_retry(backoff, deadline, exc)
            except CONNECTION_ERRORS as exc:
                if self._closed:
                    raise
                backoff, deadline = await self._wait_to_retry(backoff, deadline, exc)

    async def _wait_to_retry(
        self, backoff: Backoff | None, deadline: float, exc: BaseException
    ) -> tuple[Backoff, float]:
        """Sleep the next backoff delay, or raise ``ConnectError`` past the deadline."""
        loop = asyncio.get_running_loop()
        if backoff is None:
            backoff = self._backoff()
            deadline = loop.time() + self.retry_seconds
        delay = backoff.next_delay()
        if loop.time() + delay > deadline:
            raise ConnectError(f"lost the connection to the server: {exc}") from exc
        logger.warning("connection lost (%s); retrying in %.2fs", exc, delay)
        await asyncio.sleep(delay)
        return backoff, deadline

    async def _run_once(self, operation: Callable[[C], Awaitable[T]]) -> T:
        # ``acquire`` without its context-manager machinery: this is every push's path.
        if self._closed:
            raise ConnectError("the connection pool is closed")
        await self._slots.acquire()
        try:
            conn, reused = await self._take()
            try:
                result = await operation(conn)
            except BaseException as exc:
                await self._give_back(conn, exc)
                if reused and isinstance(exc, CONNECTION_ERRORS):
                    raise _StaleConnection(str(exc)) from exc
                raise
            await self._give_back(conn, None)
            return result
        finally:
            self._slots.release()

    async def _take(self) -> tuple[C, bool]:
        """An idle connection (and True), or a new one. An idle connection the server has
        closed meanwhile (its idle timeout, a restart) is dropped here, before a command is
        sent on it: reconnecting then is transparent, without an error or a retry delay."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn, True
            await self._discard(conn)
        return await self._open(), False

    async def _give_back(self, conn: C, exc: BaseException | None) -> None:
        """Back to the idle list, unless the pool is closed or the command broke off (a
        connection error or a cancellation leaves its reply unread: never reuse it)."""
        if self._closed or isinstance(exc, (*CONNECTION_ERRORS, asyncio.CancelledError)):
            await self._discard(conn)
        else:
            self._idle.append(conn)

    async def _discard(self, conn: C) -> None:
        self._all.discard(conn)
        with contextlib.suppress(Exception):
            await conn.close()

    async def discard_idle(self) -> None:
        """Close the idle connections, so the next operations open fresh ones."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)

    async def close(self) -> None:
        """Close idle connections now and busy ones when they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)

    @property
    def stats(self) -> dict[str, Any]:
        return {"open": len(self._all), "idle": len(self._idle)}
