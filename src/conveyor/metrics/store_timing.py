"""How long each store command takes, when ``[metrics] store_timing`` asks for it.

The store's asynchronous methods are wrapped on the store *instance* (the class is untouched),
so every caller (manager, background loops, web app) is timed without knowing. This costs a
coroutine frame and two clock reads per call -- a few per cent of the FWP hot path, which is why
it is off by default; ``conveyor_store_ping_seconds`` is always there.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client.core import Metric

from conveyor.metrics.stats import Histograms
from conveyor.store.base import Store

__all__ = ["LATENCY_BUCKETS_SECONDS", "StoreTimings", "instrument_store"]

LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""A local SQLite commit or Redis round trip takes 0.1-1 ms; a slow disk, tens of ms."""

UNTIMED = frozenset({"open", "close", "set_ready_listener"})
SYNC_TIMED = {
    "enqueue_now": "enqueue_now",
    "hand_off": "hand_off",
    "reserve_now": "reserve",
    "ack_now": "ack",
    "ack_returning_now": "ack_returning",
}
"""The in-process stores' synchronous writes, by the command they are timed as (a PUSH on
SQLite: the write, not the commit, which the returned awaitable waits for). A FETCH's
``reserve_now`` and an ACK's ``ack_now`` are ``reserve`` and ``ack`` done in the caller's
step."""
SOON_TIMED = {
    "enqueue_soon": "enqueue",
    "reserve_soon": "reserve",
    "ack_soon": "ack",
    "ack_returning_soon": "ack_returning",
    "ack_ending_soon": "ack_returning",
}
"""The callback forms of a store whose writes wait for I/O (Redis), by the command they are
timed as: from the call to its callback."""


class StoreTimings:
    def __init__(self) -> None:
        self.histograms = Histograms(LATENCY_BUCKETS_SECONDS)

    def family(self) -> Metric:
        return self.histograms.family(
            "conveyor_store_command_duration_seconds",
            "How long each store command took (only with [metrics] store_timing).",
            ("command",),
        )


def instrument_store(store: Store) -> StoreTimings:
    """Time every asynchronous method of ``store`` from now on; returns where the times go."""
    timings = StoreTimings()
    for name, _ in inspect.getmembers(type(store), inspect.iscoroutinefunction):
        if name.startswith("_") or name in UNTIMED:
            continue
        setattr(store, name, _timed(getattr(store, name), (name,), timings.histograms))
    if store.in_process:
        for name, label in SYNC_TIMED.items():
            setattr(store, name, _timed_sync(getattr(store, name), (label,), timings.histograms))
    else:
        for name, label in SOON_TIMED.items():
            setattr(store, name, _timed_soon(getattr(store, name), (label,), timings.histograms))
    return timings


def _timed(
    method: Callable[..., Awaitable[Any]], labels: tuple[str], histograms: Histograms
) -> Callable[..., Awaitable[Any]]:
    clock = time.perf_counter
    observe = histograms.observe

    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return await method(*args, **kwargs)
        finally:
            observe(labels, clock() - started)

    return timed


def _timed_sync(
    method: Callable[..., Any], labels: tuple[str], histograms: Histograms
) -> Callable[..., Any]:
    clock = time.perf_counter
    observe = histograms.observe

    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return method(*args, **kwargs)
        finally:
            observe(labels, clock() - started)

    return timed


def _timed_soon(
    method: Callable[..., bool], labels: tuple[str], histograms: Histograms
) -> Callable[..., bool]:
    """A callback form (its last argument the callback): timed until the callback."""
    clock = time.perf_counter
    observe = histograms.observe

    @functools.wraps(method)
    def timed(*args: Any) -> bool:
        started = clock()
        done = args[-1]

        def answered(value: Any, error: BaseException | None) -> Any:
            observe(labels, clock() - started)
            return done(value, error)

        return method(*args[:-1], answered)

    return timed
