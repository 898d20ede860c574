"""``SyncClient``: the async ``Client`` driven from blocking code.

There is one implementation. ``SyncClient`` owns a private event loop on a daemon thread, runs
the async ``Client`` there, and each method is generated from the async one by ``_blocking``,
so the two can never drift apart. Calls from several threads are serialised by a lock, because
a connection carries one command at a time.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from conveyor.client._connection import Client

__all__ = ["SyncClient"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: each blocking call hops threads twice, and uvloop's wake-ups
    make that hop about twice as cheap (measured: 12.7k vs 7.2k sequential PUSH/s)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class _LoopThread:
    """An event loop running forever on its own daemon thread, until ``stop``."""

    def __init__(self) -> None:
        self.loop = _new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="conveyor-sync-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _R]) -> _R:
        future: Future[_R] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _blocking(
    method: Callable[Concatenate[Client, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[SyncClient, _P], _R]:
    """Turn ``Client.<method>`` into a blocking ``SyncClient.<method>`` with the same signature."""

    @functools.wraps(method)  # same name, docstring and signature (help() and IDEs see them)
    def call(self: SyncClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return self._loop.run(method(self._client, *args, **kwargs))

    call.__qualname__ = f"SyncClient.{method.__name__}"
    return call


def _blocking_connect(
    connect: Callable[_P, Coroutine[Any, Any, Client]],
) -> Callable[_P, SyncClient]:
    """Turn ``Client.connect`` into a blocking constructor with the same options."""

    @functools.wraps(connect)
    def open_blocking(*args: _P.args, **kwargs: _P.kwargs) -> SyncClient:
        loop = _LoopThread()
        try:
            client = loop.run(connect(*args, **kwargs))
        except BaseException:
            loop.stop()
            raise
        return SyncClient(client, loop)

    open_blocking.__qualname__ = "SyncClient.connect"
    return open_blocking


class SyncClient:
    """A blocking ``Client``: same methods, same arguments, same exceptions.

    >>> with SyncClient.connect("tcp://localhost:7419") as client:
    ...     client.push({"jobtype": "email", "args": ["a@example.com"]})
    """

    __slots__ = ("_client", "_lock", "_loop")

    def __init__(self, client: Client, loop: _LoopThread) -> None:
        self._client = client
        self._loop = loop
        self._lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The async client underneath (it lives on this facade's private loop)."""
        return self._client

    @property
    def wid(self) -> str | None:
        return self._client.wid

    @property
    def closed(self) -> bool:
        return self._client.closed

    def close(self) -> None:
        """Say ``END``, close the connection and stop the private loop. Safe to call twice."""
        with self._lock:
            if self._loop.loop.is_closed():
                return
            try:
                self._loop.run(self._client.close())
            finally:
                self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    connect = staticmethod(_blocking_connect(Client.connect))
    raw = _blocking(Client.raw)
    push = _blocking(Client.push)
    push_bulk = _blocking(Client.push_bulk)
    push_bulk_chunks = _blocking(Client.push_bulk_chunks)
    fetch = _blocking(Client.fetch)
    fetch_many = _blocking(Client.fetch_many)
    ack = _blocking(Client.ack)
    ack_many = _blocking(Client.ack_many)
    fail = _blocking(Client.fail)
    result = _blocking(Client.result)
    beat = _blocking(Client.beat)
    info = _blocking(Client.info)
    flush = _blocking(Client.flush)
    mutate = _blocking(Client.mutate)
    queue_pause = _blocking(Client.queue_pause)
    queue_resume = _blocking(Client.queue_resume)
    queue_remove = _blocking(Client.queue_remove)
    queue_latency = _blocking(Client.queue_latency)
    admin = _blocking(Client.admin)
    cron = _blocking(Client.cron)
    batch_new = _blocking(Client.batch_new)
    batch_open = _blocking(Client.batch_open)
    batch_commit = _blocking(Client.batch_commit)
    batch_status = _blocking(Client.batch_status)
    batch_child = _blocking(Client.batch_child)
    track_get = _blocking(Client.track_get)
    track_set = _blocking(Client.track_set)
    cancel = _blocking(Client.cancel)
    cancels = _blocking(Client.cancels)
