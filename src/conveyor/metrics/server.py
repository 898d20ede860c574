"""Everything the server's ``/metrics`` exports, in the Prometheus text format.

A scrape reads the store's state once (queue sizes and latency, set sizes, workers, counters),
asynchronously, then builds every family from that snapshot and from the in-memory counters
(``JobMetrics``, ``StoreTimings``) synchronously. No module globals: each server has its own
``ServerCollector`` (and the process collectors of ``prometheus_client``, built unregistered).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from conveyor.errors import StoreError
from conveyor.manager.types import ServerStats
from conveyor.metrics.store_timing import StoreTimings
from conveyor.store.base import Counters, SortedSet

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = ["CONTENT_TYPE", "ServerCollector", "StoreSnapshot", "take_snapshot"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(slots=True)
class StoreSnapshot:
    """What one scrape read from the store."""

    queues: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    sets: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    counters: Counters = field(default_factory=lambda: Counters(0, 0))
    ping_seconds: float = 0.0
    ok: bool = True
    """False when the store could not be read (then the rest is empty, not zero)."""


async def take_snapshot(manager: Manager) -> StoreSnapshot:
    """The store's state; a store that fails gives ``ok=False`` (logged, rate-limited), so
    the in-memory counters are still exported while it is down."""
    try:
        return await _read_store(manager)
    except StoreError as exc:
        manager.store_trouble.problem("metrics could not read the store: %s", exc)
        return StoreSnapshot(ok=False)


async def _read_store(manager: Manager) -> StoreSnapshot:
    store = manager.store
    started = time.perf_counter()
    counters = await store.counters()  # first, and timed alone: the store's round trip
    ping = time.perf_counter() - started
    queues = await store.queue_sizes()
    latency = await manager.queue_latency(list(queues)) if queues else {}
    sets = {str(name): await store.set_size(name) for name in SortedSet}
    sets["working"] = (await store.list_reservations(0, 0)).total
    workers: dict[str, int] = {"running": 0, "quiet": 0, "terminate": 0}
    for record in await store.list_workers():
        workers[record.state] = workers.get(record.state, 0) + 1
    return StoreSnapshot(
        queues=queues,
        latency=latency,
        paused=await store.paused_queues(),
        sets=sets,
        workers=workers,
        counters=counters,
        ping_seconds=ping,
    )


def _gauge(
    name: str, doc: str, values: Iterable[tuple[Iterable[str], float]], *labels: str
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def _store_families(snapshot: StoreSnapshot) -> Iterator[Metric]:
    """What the scrape read from the store (shared by every server over it)."""
    yield _gauge(
        "conveyor_queue_size",
        "Jobs waiting in each queue.",
        (((q,), n) for q, n in sorted(snapshot.queues.items())),
        "queue",
    )
    yield _gauge(
        "conveyor_queue_latency_seconds",
        "Age of the oldest job waiting in each queue (0 when empty).",
        (((q,), s) for q, s in sorted(snapshot.latency.items())),
        "queue",
    )
    yield _gauge(
        "conveyor_queue_paused",
        "1 for a paused queue, 0 otherwise.",
        (((q,), float(q in snapshot.paused)) for q in sorted(snapshot.queues)),
        "queue",
    )
    yield _gauge(
        "conveyor_set_size",
        "Jobs in each set: scheduled, retries, dead, and working (reserved by workers).",
        (((name,), n) for name, n in snapshot.sets.items()),
        "set",
    )
    yield _gauge(
        "conveyor_workers",
        "Worker processes known to the store (every server sharing it), by state.",
        (((state,), n) for state, n in snapshot.workers.items()),
        "state",
    )
    for name, value, total in (
        ("conveyor_store_processed", snapshot.counters.processed, "total_processed"),
        ("conveyor_store_failures", snapshot.counters.failures, "total_failures"),
    ):
        family = CounterMetricFamily(
            name,
            f"INFO's {total}: what the store counts for every server sharing it (FLUSH resets it).",
        )
        family.add_metric([], value)
        yield family
    yield _gauge(
        "conveyor_store_ping_seconds",
        "How long one small store read took during this scrape.",
        [((), snapshot.ping_seconds)],
    )


class ServerCollector:
    """The families of one server. ``render`` is the whole ``/metrics`` response body."""

    def __init__(
        self,
        manager: Manager,
        *,
        stats: Callable[[], ServerStats] | None = None,
        store_timings: StoreTimings | None = None,
        process_metrics: bool = True,
    ) -> None:
        from conveyor import __version__

        self.manager = manager
        self.stats = stats or ServerStats
        self.store_timings = store_timings
        self.version = __version__
        self.registry = CollectorRegistry()
        """This server's own registry: the process collectors, then ``families()``."""
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.registry.register(self)
        self._snapshot: StoreSnapshot | None = None

    async def render(self) -> bytes:
        """Read the store, then encode every family (the text format, version 0.0.4)."""
        snapshot = await take_snapshot(self.manager)
        # No await from here on: another scrape cannot swap the snapshot under this one.
        self._snapshot = snapshot
        try:
            return generate_latest(self.registry)
        finally:
            self._snapshot = None

    def collect(self) -> Iterator[Metric]:
        if self._snapshot is not None:
            yield from self.families(self._snapshot)

    def families(self, snapshot: StoreSnapshot) -> Iterator[Metric]:
        manager = self.manager
        stats = self.stats()
        info = GaugeMetricFamily(
            "conveyor_info", "The server's version (the value is always 1).",
            labels=("version", "faktory_version", "store"),
        )  # fmt: skip
        info.add_metric([self.version, manager.version, type(manager.store).__name__], 1)
        yield info
        yield _gauge(
            "conveyor_store_up",
            "1 when this scrape could read the store, 0 when it failed (the store's gauges are "
            "then missing, not zero).",
            [((), float(snapshot.ok))],
        )
        if snapshot.ok:
            yield from _store_families(snapshot)
        yield _gauge(
            "conveyor_connections",
            "Open FWP connections to this server.",
            [((), stats.connections)],
        )
        commands = CounterMetricFamily(
            "conveyor_commands", "FWP commands this server has answered."
        )
        commands.add_metric([], stats.command_count)
        yield commands
        if manager.metrics is not None:
            manager.metrics.drop_stale()
            yield _gauge(
                "conveyor_jobs_running",
                "Jobs this server handed out whose end it has not seen yet.",
                [((), manager.metrics.running)],
            )
            yield from manager.metrics.families()
        if self.store_timings is not None:
            yield self.store_timings.family()
