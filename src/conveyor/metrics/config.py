"""The ``[metrics]`` settings of ``conveyor server`` (docs/configuration.md)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["METRICS_KEYS", "MetricsConfig"]


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    jobs: bool = True
    """Count jobs by queue and jobtype, and keep the run times workers report (about 1 % of
    the FWP hot path); the store-wide gauges of ``/metrics`` are there either way."""

    store_timing: bool = False
    """Time every store command (``conveyor_store_command_duration_seconds``): a few % of the
    hot path, so off unless asked for."""

    statsd: str = ""
    """``HOST:PORT`` of a statsd / DogStatsD agent (UDP) to push the metrics to; empty = off.
    ``DD_DOGSTATSD_URL`` (``udp://host:port``) sets it too, as in Faktory Enterprise."""

    statsd_namespace: str = "conveyor."
    """Prefix of every statsd metric name (Faktory Enterprise: ``faktory.``)."""

    statsd_tags: str = ""
    """DogStatsD tags added to every metric, comma-separated: ``env:prod,region:eu``."""

    statsd_interval_seconds: float = 10.0
    """How often the gauges and counters are pushed."""


METRICS_KEYS: dict[str, type] = {
    "jobs": bool,
    "store_timing": bool,
    "statsd": str,
    "statsd_namespace": str,
    "statsd_tags": str,
    "statsd_interval_seconds": float,
}
"""Each key of ``[metrics]``; its environment variable is ``CONVEYOR_METRICS_<KEY>``."""
