"""Deadlines: keys with a time, in named spaces, read soonest first.

What a background sweep needs to find the work that is due without reading everything: the
expiring jobs whose ``expires_at`` has passed, for one. A key holds one deadline (setting it
again replaces its time and value); ``due_deadlines`` reads without removing, so several
servers may sweep at once and each removes what it handled (``delete_deadlines`` is
idempotent). Writes become durable in order, like records (``records.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Deadline", "Deadlines"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """``key`` is due at ``at`` (seconds since the epoch); ``value`` is for the sweeper."""

    key: str
    at: float
    value: bytes = b""


class Deadlines(abc.ABC):
    """The deadlines capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def set_deadlines(self, space: str, deadlines: Sequence[Deadline]) -> None:
        """Store each deadline, replacing whatever its key held."""

    @abc.abstractmethod
    async def due_deadlines(self, space: str, before: float, limit: int) -> list[Deadline]:
        """Up to ``limit`` deadlines with ``at <= before``, soonest first (then by key)."""

    @abc.abstractmethod
    async def delete_deadlines(self, space: str, keys: Sequence[str]) -> int:
        """Delete these keys' deadlines; returns how many there were."""

    @abc.abstractmethod
    async def count_deadlines(self, space: str) -> int:
        """How many deadlines ``space`` holds."""
