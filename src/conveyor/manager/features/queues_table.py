"""The ``[queues]`` table, shared by backpressure and rate limits::

    [queues]
    backpressure = 100000        # every queue: PUSH refused while it holds this many (0: none)

    [queues.default]
    backpressure = 500000        # this queue's own bound (0: none, whatever the default)

    [queues.emails]
    rate_limit = 50              # jobs handed out per second, over every server
    burst = 100                  # tokens the bucket holds (default: rate_limit, at least 1)

Each feature reads the whole table through ``parse_queues`` (``QueuesFeature``), so a key
neither knows (a typo) is refused wherever it is, naming the table and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from conveyor.errors import ConfigError
from conveyor.manager.features.base import Feature
from conveyor.manager.validation import QUEUE_NAME

__all__ = ["QueueSettings", "QueuesFeature", "QueuesTable", "parse_queues"]

QUEUE_KEYS = ("backpressure", "rate_limit", "burst")


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """One ``[queues.NAME]`` table; None where it says nothing."""

    backpressure: int | None = None
    rate_limit: float | None = None
    burst: float | None = None


@dataclass(frozen=True, slots=True)
class QueuesTable:
    backpressure: int = 0
    """The default bound of every queue (0: none)."""
    queues: dict[str, QueueSettings] = field(default_factory=dict)


class QueuesFeature(Feature):
    """A feature configured by the ``[queues]`` table (backpressure, rate limits)."""

    tables = ("queues",)

    def __init__(self, settings: QueuesTable | None = None) -> None:
        self.settings = settings or QueuesTable()

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        return cls(parse_queues(tables))

    def reconfigure(self, new: Self) -> None:
        self.settings = new.settings


def parse_queues(tables: Mapping[str, Any]) -> QueuesTable:
    """The ``[queues]`` table of ``tables`` (absent: no limits). Raises ``ConfigError``."""
    table = tables.get("queues", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"[queues] must be a table, not {table!r}")
    default = 0
    queues: dict[str, QueueSettings] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            queues[key] = _queue(key, value)
        elif key == "backpressure":
            default = _count(value, "[queues] backpressure")
        else:
            raise ConfigError(
                f"[queues] {key}: unknown key (a queue's settings go in [queues.{key}]; "
                "[queues] itself takes backpressure)"
            )
    return QueuesTable(default, queues)


def _queue(name: str, table: Mapping[str, Any]) -> QueueSettings:
    where = f"[queues.{name}]"
    if QUEUE_NAME.fullmatch(name) is None:
        raise ConfigError(f"{where}: queue names must match [a-zA-Z0-9._-]+")
    for key in table:
        if key not in QUEUE_KEYS:
            raise ConfigError(f"{where} {key}: unknown key (known: {', '.join(QUEUE_KEYS)})")
    backpressure = table.get("backpressure")
    rate = table.get("rate_limit")
    burst = table.get("burst")
    if burst is not None and rate is None:
        raise ConfigError(f"{where} burst: needs a rate_limit")
    return QueueSettings(
        backpressure=None
        if backpressure is None
        else _count(backpressure, f"{where} backpressure"),
        rate_limit=None if rate is None else positive(rate, f"{where} rate_limit"),
        burst=None if burst is None else positive(burst, f"{where} burst", at_least=1),
    )


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: expected a whole number of jobs (0 for none), got {value!r}")
    return value


def positive(value: Any, where: str, *, at_least: float = 0.0) -> float:
    """A finite number above 0 (and at least ``at_least``), for ``where`` in the message."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0 or value < at_least:
        bound = f"at least {at_least:g}" if at_least else "above 0"
        raise ConfigError(f"{where}: expected a number {bound}, got {value!r}")
    return float(value)
