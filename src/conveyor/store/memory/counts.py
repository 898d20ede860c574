"""Counts (``conveyor.store.counts``) in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from conveyor.store.counts import Counts

__all__ = ["MemoryCounts"]


class MemoryCounts(Counts):
    """Mixed into ``MemoryStore``: one dict per space."""

    def _counts(self, space: str) -> dict[str, int]:
        spaces: dict[str, dict[str, int]] = self.__dict__.setdefault("_count_spaces", {})
        return spaces.setdefault(space, {})

    async def add_counts(self, space: str, deltas: Mapping[str, int]) -> None:
        counts = self._counts(space)
        for key, delta in deltas.items():
            counts[key] = counts.get(key, 0) + delta

    async def get_counts(self, space: str, keys: Sequence[str]) -> dict[str, int]:
        counts = self._counts(space)
        return {key: counts.get(key, 0) for key in keys}

    def _flush_counts(self) -> None:
        self.__dict__.pop("_count_spaces", None)
