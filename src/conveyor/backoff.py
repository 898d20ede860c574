"""Exponential backoff with full jitter, for reconnects, fetch errors and worker restarts.

Its own module, importing only ``random``, so the ``--processes`` parent (``worker/supervisor.py``)
can use it without the client stack that ``pool.py`` brings.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with full jitter: 0.05 s, 0.1 s, ... capped at ``max_seconds``."""

    def __init__(self, first_seconds: float = 0.05, max_seconds: float = 5.0) -> None:
        self.first_seconds = first_seconds
        self.max_seconds = max_seconds
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_seconds, self.first_seconds * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
