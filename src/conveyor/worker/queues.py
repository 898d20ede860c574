"""Which queues a worker fetches from, and in what order.

``--queue critical --queue default`` is **strict**: FETCH lists the queues in that order, so a
job in ``default`` runs only when ``critical`` is empty. Give any weight (``critical:3
--queue default:1``) and the order is **weighted**: each fetch draws a fresh order in which a
queue comes first with probability proportional to its weight, so no queue starves (what
Faktory's Go and Node workers do, by shuffling client-side).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["QueueOrder", "QueueSpec", "parse_queue"]

_QUEUE_NAME = re.compile(r"\A[a-zA-Z0-9._-]+\Z")


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    weight: int | None = None


def parse_queue(text: str) -> QueueSpec:
    """Parse ``NAME`` or ``NAME:WEIGHT``; raises ``ValueError`` with the reason."""
    name, sep, weight_text = text.partition(":")
    if not _QUEUE_NAME.match(name):
        raise ValueError(f"invalid queue name {name!r}: use letters, digits, '.', '_' and '-'")
    if not sep:
        return QueueSpec(name)
    try:
        weight = int(weight_text)
    except ValueError:
        raise ValueError(f"invalid weight in {text!r}: expected NAME:INTEGER") from None
    if weight < 1:
        raise ValueError(f"invalid weight in {text!r}: weights start at 1")
    return QueueSpec(name, weight)


class QueueOrder:
    """Produces the queue list for each FETCH."""

    def __init__(self, queues: Iterable[str | QueueSpec]) -> None:
        specs = [q if isinstance(q, QueueSpec) else parse_queue(q) for q in queues]
        if not specs:
            raise ValueError("a worker needs at least one queue")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"a queue is listed twice: {names}")
        self.names = names
        self.weighted = any(s.weight is not None for s in specs)
        self.weights = [s.weight or 1 for s in specs]
        self._random = random.Random()

    def __repr__(self) -> str:
        if self.weighted:
            pairs = [f"{n}:{w}" for n, w in zip(self.names, self.weights, strict=True)]
            return f"QueueOrder(weighted {' '.join(pairs)})"
        return f"QueueOrder(strict {' '.join(self.names)})"

    def order(self) -> list[str]:
        if not self.weighted or len(self.names) == 1:
            return self.names
        # Weighted sampling without replacement (Efraimidis-Spirakis): key = u ** (1 / w).
        keyed = [
            (self._random.random() ** (1.0 / w), name)
            for name, w in zip(self.names, self.weights, strict=True)
        ]
        keyed.sort(reverse=True)
        return [name for _, name in keyed]
