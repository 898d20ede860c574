"""The store's own connection for its scripts: RESP bytes out, hiredis replies in, in order.

redis-py spends several times what Redis spends running a script on the machinery around each
call: a connection taken from the pool and given back, every argument encoded in Python, a
timeout and an event per command. Every job runs three scripts (enqueue, reserve, ack), so
the store sends them through a ``Pipe`` instead: one connection shared by every caller, each
command packed by hiredis and written at the end of the loop iteration together with the
others of that iteration (Redis reads them as one pipeline), replies parsed by hiredis and
handed to the callers in the order the commands went out.

What a lost connection means is the same as with redis-py (``calls.py``): a command that
never left raises ``NotSent``, one that was written and got no reply raises ``Lost`` (the
caller retries it with its token). Used for one plain Redis (``redis://``, no TLS, no
options but the socket timeouts); Sentinel, Cluster and TLS keep redis-py's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
from redis._parsers import BaseParser

from conveyor.store.redis.codec import RedisURL

__all__ = ["Answer", "Lost", "NotSent", "Pipe", "usable"]

_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout"})

log = logging.getLogger(__name__)


class NotSent(Exception):
    """The command never left: no connection could be made."""


class Lost(Exception):
    """The command was sent (maybe only in part) and no reply came back."""


def usable(url: RedisURL) -> bool:
    """Whether a ``Pipe`` can serve this URL (else redis-py does, with all its options)."""
    return not (url.cluster or url.sentinel or url.tls) and set(url.options) <= _OPTIONS


Answer = Callable[[Any, BaseException | None], None]
"""Called with a command's reply, or with the error it ended with (``Pipe.send``)."""
Waiter = asyncio.Future[Any] | Answer


class _Connection(asyncio.Protocol):
    """One TCP connection to Redis; ``waiting`` holds, oldest first, what waits for each
    command written: a future (``call``) or a callback (``send``)."""

    def __init__(self, on_lost: Callable[[_Connection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.waiting: deque[Waiter] = deque()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                waiter = waiting.popleft()
                error = _error(str(reply)) if isinstance(reply, hiredis.ReplyError) else None
                if not isinstance(waiter, asyncio.Future):
                    _answer(waiter, None if error else reply, error)
                elif waiter.done():  # its caller was cancelled: the reply is dropped
                    continue
                elif error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # not Redis, or a reply unasked
            self._fail(Lost(f"unexpected bytes from Redis: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(Lost(f"connection to Redis lost: {exc or 'closed by Redis'}"))
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost(self)

    def _fail(self, error: Exception) -> None:
        waiting, self.waiting = self.waiting, deque()
        _fail(waiting, error)


def _error(text: str) -> Exception:
    """The exception redis-py raises for this error reply (NOSCRIPT, OOM, LOADING, ...), so
    callers treat both paths alike."""
    return BaseParser.parse_error(text)  # type: ignore[no-any-return,no-untyped-call]


class Pipe:
    """Commands to one Redis through one connection, opened on first use and again after it
    is lost."""

    def __init__(self, url: RedisURL) -> None:
        self._url = url
        self._db = url.db
        self._auth = [a for a in (url.username, url.password) if a]
        self._timeout = _seconds(url.options.get("socket_timeout"))
        self._connect_timeout = _seconds(url.options.get("socket_connect_timeout")) or 10.0
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._out: list[bytes] = []  # commands packed in this loop iteration, not yet written
        self._unsent: list[Waiter] = []  # what waits for each of them
        self._flush_scheduled = False
        self._closed = False
        self._opening: _Connection | None = None  # connected, AUTH/SELECT not answered yet

    def send(self, answer: Answer, *args: Any) -> bool:
        """Send one command; ``answer`` gets its reply (or error) from the reply's own step,
        without a future or a task. False, with nothing sent, when the connection is not
        open, or replies have a ``socket_timeout`` (the caller then takes ``call``, which
        opens the connection and keeps the time)."""
        if self._conn is None or self._timeout is not None:
            return False
        self._out.append(hiredis.pack_command(args))
        self._unsent.append(answer)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply (an error reply raises ``ResponseError``)."""
        conn = self._conn if self._conn is not None else await self._connection()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._out.append(hiredis.pack_command(args))
        self._unsent.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._timeout is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            if conn.transport is not None:  # its replies can no longer be matched
                conn.transport.abort()
            raise Lost(f"no reply from Redis within {self._timeout:g}s") from None

    def _flush(self) -> None:
        """Write the commands of this iteration at once: Redis reads them as one pipeline."""
        self._flush_scheduled = False
        out, unsent = self._out, self._unsent
        self._out, self._unsent = [], []
        conn = self._conn
        if conn is None or conn.transport is None:
            _fail(unsent, NotSent("the connection to Redis was lost before this command left"))
            return
        conn.waiting.extend(unsent)
        conn.transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def _connection(self) -> _Connection:
        """The open connection, opening it if needed. Callers arriving together share one
        attempt; one that joined an attempt started before it (maybe while Redis was still
        down) and saw it fail makes one of its own before giving up."""
        joined = self._connecting is not None
        while True:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._open())
            connecting = self._connecting
            try:
                return await asyncio.shield(connecting)
            except NotSent:
                if not joined:
                    raise
                joined = False
            finally:
                if connecting.done() and self._connecting is connecting:
                    self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                self._url.open_connection(lambda: _Connection(self._lost)), self._connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise NotSent(f"cannot connect to Redis at {self._url.where}: {exc}") from exc
        self._opening = conn
        try:
            if self._closed:
                raise Lost("the Redis store is closed")
            for command in self._setup():  # AUTH and SELECT, one at a time
                future: asyncio.Future[Any] = loop.create_future()
                conn.waiting.append(future)
                assert conn.transport is not None
                conn.transport.write(hiredis.pack_command(command))
                await future
        except BaseException as exc:
            if conn.transport is not None:
                conn.transport.abort()
            if isinstance(exc, Lost):
                raise NotSent(str(exc)) from exc
            raise
        finally:
            if self._opening is conn:
                self._opening = None
        self._conn = conn
        return conn

    def _setup(self) -> list[tuple[Any, ...]]:
        commands: list[tuple[Any, ...]] = []
        if self._auth:
            commands.append(("AUTH", *self._auth))
        if self._db:
            commands.append(("SELECT", self._db))
        return commands

    def _lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None

    async def close(self) -> None:
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None and opening.transport is not None:
            opening.transport.abort()  # its AUTH/SELECT wait ends with Lost: the attempt fails
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(conn.closed), 1)


def _fail(waiters: Iterable[Waiter], error: Exception) -> None:
    for waiter in waiters:
        if not isinstance(waiter, asyncio.Future):
            _answer(waiter, None, error)
        elif not waiter.done():
            waiter.set_exception(error)


def _answer(answer: Answer, reply: Any, error: BaseException | None) -> None:
    try:
        answer(reply, error)
    except Exception:  # one broken callback must not cost the others their replies
        log.exception("a Redis reply callback failed")


def _seconds(value: str | None) -> float | None:
    return float(value) if value not in (None, "", "None") else None
