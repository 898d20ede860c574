"""Counters and histograms kept as plain dicts, turned into Prometheus families on a scrape.

A job passes the server's hot path about 20,000 times a second; ``prometheus_client``'s own
``Counter.labels(...).inc()`` costs over a microsecond (a dict lookup under a lock, then another
lock). These cost a dict update, and the families are built only when someone scrapes.

Label values come from clients (queue names, jobtypes), so the number of label sets is capped:
past ``max_series`` new ones are counted under ``OVERFLOW_LABEL``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = [
    "DURATION_BUCKETS_SECONDS",
    "MAX_SERIES",
    "OVERFLOW_LABEL",
    "Counters",
    "Histograms",
]

DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip
"""Job run times span milliseconds (a cache refresh) to an hour (a report)."""

MAX_SERIES = 2000
OVERFLOW_LABEL = "_other"
"""The label value that counts what arrives once ``max_series`` label sets exist."""

Labels = tuple[str, ...]


class Counters:
    """Monotonic counts per label set (e.g. ``(queue, jobtype)``)."""

    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.values: dict[Labels, int] = {}
        self.max_series = max_series

    def add(self, labels: Labels, amount: int = 1) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        elif len(values) < self.max_series:
            values[labels] = amount
        else:
            key = (OVERFLOW_LABEL,) * len(labels)
            values[key] = values.get(key, 0) + amount

    def get(self, labels: Labels) -> int:
        return self.values.get(labels, 0)

    def total(self) -> int:
        return sum(self.values.values())

    def family(self, name: str, documentation: str, label_names: Sequence[str]) -> Metric:
        """``name`` without ``_total``: the client library adds it."""
        family = CounterMetricFamily(name, documentation, labels=label_names)
        for labels, value in list(self.values.items()):  # one C-level copy: thread-safe enough
            family.add_metric(list(labels), value)
        return family

    def clear(self) -> None:
        self.values.clear()


class Histograms:
    """Observations per label set, in fixed buckets."""

    def __init__(
        self,
        buckets: Sequence[float] = DURATION_BUCKETS_SECONDS,
        max_series: int = MAX_SERIES,
    ) -> None:
        self.buckets = tuple(buckets)
        self.max_series = max_series
        # labels -> [count in bucket 0, ..., count above the last bucket, sum]
        self.values: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        row = self.values.get(labels)
        if row is None:
            if len(self.values) >= self.max_series:
                labels = (OVERFLOW_LABEL,) * len(labels)
            row = self.values.setdefault(labels, [0] * (len(self.buckets) + 1) + [0.0])
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def count(self, labels: Labels) -> int:
        row = self.values.get(labels)
        return int(sum(row[:-1])) if row else 0

    def family(self, name: str, documentation: str, label_names: Sequence[str]) -> Metric:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, row in list(self.values.items()):
            row = list(row)
            family.add_metric(list(labels), list(_cumulative(self.buckets, row)), row[-1])
        return family

    def clear(self) -> None:
        self.values.clear()


def _cumulative(buckets: Sequence[float], row: Sequence[float]) -> Iterator[tuple[str, float]]:
    running = 0.0
    for bound, count in zip(buckets, row, strict=False):
        running += count
        yield _bound(bound), running
    yield "+Inf", running + row[len(buckets)]


def _bound(value: float) -> str:
    return repr(float(value))
