"""Deadlines (``conveyor.store.deadlines``) in memory."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.deadlines import Deadline, Deadlines

__all__ = ["MemoryDeadlines"]


class MemoryDeadlines(Deadlines):
    """Mixed into ``MemoryStore``: one dict per space, sorted when read (a sweep's read)."""

    def _deadlines(self, space: str) -> dict[str, Deadline]:
        spaces: dict[str, dict[str, Deadline]] = self.__dict__.setdefault("_deadline_spaces", {})
        return spaces.setdefault(space, {})

    def _flush_deadlines(self) -> None:
        self.__dict__.pop("_deadline_spaces", None)

    async def set_deadlines(self, space: str, deadlines: Sequence[Deadline]) -> None:
        stored = self._deadlines(space)
        for deadline in deadlines:
            stored[deadline.key] = deadline

    async def due_deadlines(self, space: str, before: float, limit: int) -> list[Deadline]:
        due = [d for d in self._deadlines(space).values() if d.at <= before]
        due.sort(key=lambda d: (d.at, d.key))
        return due[: max(limit, 0)]

    async def delete_deadlines(self, space: str, keys: Sequence[str]) -> int:
        stored = self._deadlines(space)
        return sum(1 for key in dict.fromkeys(keys) if stored.pop(key, None) is not None)

    async def count_deadlines(self, space: str) -> int:
        return len(self._deadlines(space))
