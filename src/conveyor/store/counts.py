"""Counts: integer counters under a key in named spaces (the number of jobs expired each day).

``add_counts`` changes several counters of a space in one atomic step; a key never added to
counts 0. ``Store.flush`` deletes every count. Unlike records, counts do not expire: a feature
that counts per day keeps a handful of keys a day.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

__all__ = ["Counts"]


class Counts(abc.ABC):
    """The counts capability; every backend implements it (``Store`` includes it)."""

    @abc.abstractmethod
    async def add_counts(self, space: str, deltas: Mapping[str, int]) -> None:
        """Add each delta to its counter (creating it at 0), all in one step."""

    @abc.abstractmethod
    async def get_counts(self, space: str, keys: Sequence[str]) -> dict[str, int]:
        """The counter of every key (0 for those never added to)."""
