"""Push the server's metrics to statsd / DogStatsD over UDP, as Faktory Enterprise does.

Every ``statsd_interval_seconds`` the reporter reads the same snapshot ``/metrics`` would and
sends DogStatsD lines (``name:value|type|#tag:value,...``), packed into datagrams of at most
``MAX_DATAGRAM_BYTES``:

* gauges: ``processed``, ``failures`` (the store's totals), ``enqueued``, ``scheduled``,
  ``retries``, ``dead``, ``working``, ``connections``, ``workers``, ``ops.store.rtt_us`` (as
  Faktory's ``ops.redis.rtt_us``), and ``queue.size`` / ``queue.latency`` tagged ``queue:<name>``;
* counters (what changed since the last push): ``jobs.pushed``, ``jobs.processed``,
  ``jobs.failed``, ``jobs.expired``, ``jobs.dead`` tagged ``queue:<q>`` and ``jobtype:<t>``.

Tag values are reduced to the characters DogStatsD accepts (others become ``_``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator, Sequence

from conveyor.config import parse_bind
from conveyor.metrics.config import MetricsConfig
from conveyor.metrics.server import ServerCollector, StoreSnapshot, take_snapshot
from conveyor.metrics.stats import Counters

__all__ = ["MAX_DATAGRAM_BYTES", "StatsdReporter", "format_lines"]

log = logging.getLogger("conveyor.metrics.statsd")

MAX_DATAGRAM_BYTES = 1432
"""Fits one Ethernet frame over IPv6 with room to spare (DogStatsD's own client default)."""

_UNSAFE = re.compile(r"[^\w\-:./]")


def _tag(name: str, value: str) -> str:
    return f"{name}:{_UNSAFE.sub('_', value) or '_'}"


def _line(name: str, value: float, kind: str, tags: Sequence[str]) -> str:
    number = repr(value) if isinstance(value, float) else str(value)
    return f"{name}:{number}|{kind}" + (f"|#{','.join(tags)}" if tags else "")


class _Deltas:
    """The change of each counter since the previous push (a FLUSH or restart: from zero)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, tuple[str, ...]], int] = {}

    def changes(self, name: str, counters: Counters) -> Iterator[tuple[tuple[str, ...], int]]:
        for labels, value in list(counters.values.items()):
            key = (name, labels)
            before = self._last.get(key, 0)
            self._last[key] = value
            delta = value - before if value >= before else value
            if delta:
                yield labels, delta


def format_lines(
    collector: ServerCollector,
    snapshot: StoreSnapshot,
    namespace: str,
    tags: Sequence[str],
    deltas: _Deltas,
) -> list[str]:
    """Every statsd line of one push."""
    sets, stats = snapshot.sets, collector.stats()
    gauges: list[tuple[str, float]] = [("connections", stats.connections)]
    if snapshot.ok:  # a store that is down sends no gauges rather than zeros
        gauges += [
            ("processed", snapshot.counters.processed),
            ("failures", snapshot.counters.failures),
            ("enqueued", sum(snapshot.queues.values())),
            *((name, sets.get(name, 0)) for name in ("scheduled", "retries", "dead", "working")),
            ("workers", sum(snapshot.workers.values())),
            ("ops.store.rtt_us", int(snapshot.ping_seconds * 1e6)),
        ]
    lines = [_line(namespace + name, value, "g", tags) for name, value in gauges]
    for queue, size in sorted(snapshot.queues.items()):
        queue_tags = [*tags, _tag("queue", queue)]
        lines.append(_line(namespace + "queue.size", size, "g", queue_tags))
        latency = round(snapshot.latency.get(queue, 0.0), 6)
        lines.append(_line(namespace + "queue.latency", latency, "g", queue_tags))
    metrics = collector.manager.metrics
    if metrics is not None:
        metrics.settle()
        for name, counters in (
            ("jobs.pushed", metrics.pushed),
            ("jobs.processed", metrics.processed),
            ("jobs.failed", metrics.failed),
            ("jobs.expired", metrics.expired),
            ("jobs.dead", metrics.dead),
        ):
            for (queue, jobtype), delta in deltas.changes(name, counters):
                job_tags = [*tags, _tag("queue", queue), _tag("jobtype", jobtype)]
                lines.append(_line(namespace + name, delta, "c", job_tags))
    return lines


def pack(lines: Sequence[str], limit: int = MAX_DATAGRAM_BYTES) -> Iterator[bytes]:
    """Lines joined by newlines into datagrams of at most ``limit`` bytes (a longer line alone)."""
    chunk: list[bytes] = []
    size = 0
    for text in lines:
        line = text.encode()
        if chunk and size + 1 + len(line) > limit:
            yield b"\n".join(chunk)
            chunk, size = [], 0
        size += len(line) + (1 if chunk else 0)
        chunk.append(line)
    if chunk:
        yield b"\n".join(chunk)


class _Sender(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable: no agent yet
        log.debug("statsd agent did not take a datagram: %s", exc)


class StatsdReporter:
    """The push loop; ``await StatsdReporter.start(collector, config)``, then ``stop()``."""

    def __init__(
        self,
        collector: ServerCollector,
        config: MetricsConfig,
        transport: asyncio.DatagramTransport,
    ) -> None:
        self.collector = collector
        self.namespace = config.statsd_namespace
        self.tags = [t.strip() for t in config.statsd_tags.split(",") if t.strip()]
        self.interval = config.statsd_interval_seconds
        self._transport = transport
        self._deltas = _Deltas()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, collector: ServerCollector, config: MetricsConfig) -> StatsdReporter:
        host, port = parse_bind(config.statsd, "[metrics] statsd")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Sender, remote_addr=(host, port))
        reporter = cls(collector, config, transport)
        reporter._task = loop.create_task(reporter._run(), name="conveyor-statsd")
        log.info("pushing metrics to statsd at %s every %ss", config.statsd, reporter.interval)
        return reporter

    async def push(self) -> int:
        """Send one round of metrics now; returns how many datagrams went out."""
        snapshot = await take_snapshot(self.collector.manager)
        lines = format_lines(self.collector, snapshot, self.namespace, self.tags, self._deltas)
        sent = 0
        for datagram in pack(lines):
            self._transport.sendto(datagram)
            sent += 1
        return sent

    async def _run(self) -> None:
        while True:
            try:
                await self.push()
            except Exception:
                log.exception("could not push metrics to statsd; trying again next time")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.push()  # the last counts, so nothing counted is lost at shutdown
        self._transport.close()
