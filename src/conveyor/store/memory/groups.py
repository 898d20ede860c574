"""Groups (``conveyor.store.groups``) in memory: a dict of groups, each an ordered dict of
its members, and a jid -> group index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from conveyor.store.base import Page, QueuedJob
from conveyor.store.groups import GroupAdd, GroupMember, Groups, GroupSpec, GroupState, due_at

__all__ = ["MemoryGroups"]


class _Group:
    __slots__ = ("last_at", "members", "spec")

    def __init__(self, spec: GroupSpec) -> None:
        self.members: dict[str, GroupMember] = {}  # arrival order
        self.last_at = 0.0
        self.spec = spec

    def state(self, key: str) -> GroupState:
        first_at = next(iter(self.members.values())).added_at
        size = len(self.members)
        due = due_at(size, first_at, self.last_at, self.spec)
        return GroupState(key, size, first_at, self.last_at, due, self.spec)


class MemoryGroups(Groups):
    """Mixed into ``MemoryStore``. Every method completes without awaiting, so each is atomic
    on the event loop."""

    if TYPE_CHECKING:  # MemoryStore's

        def _push(self, job: QueuedJob) -> None: ...

        def _notify(self, queues: Iterable[str]) -> None: ...

    _groups: dict[str, _Group]
    _group_of: dict[str, str]

    def _init_groups(self) -> None:
        self._groups = {}
        self._group_of = {}

    async def add_to_groups(self, adds: Sequence[GroupAdd]) -> list[GroupState]:
        return [self._add(add.key, add.member, add.spec) for add in adds]

    def _add(self, key: str, member: GroupMember, spec: GroupSpec) -> GroupState:
        where = self._group_of.get(member.jid)
        if where is not None:  # a member already: nothing changes
            return self._groups[where].state(where)
        group = self._groups.get(key) or _Group(spec)
        self._groups[key] = group
        group.spec = spec
        group.members[member.jid] = member
        group.last_at = max(group.last_at, member.added_at)
        self._group_of[member.jid] = key
        return group.state(key)

    def _states(self) -> list[GroupState]:
        states = [group.state(key) for key, group in self._groups.items()]
        states.sort(key=lambda state: (state.due_at, state.key))
        return states

    async def due_groups(self, now: float, limit: int) -> list[GroupState]:
        return [state for state in self._states() if state.due_at <= now][: max(limit, 0)]

    async def next_group_due(self) -> float | None:
        return min((group.state(key).due_at for key, group in self._groups.items()), default=None)

    async def list_groups(self, offset: int, limit: int) -> Page[GroupState]:
        states = self._states()
        start = max(offset, 0)
        return Page(states[start : start + max(limit, 0)], len(states))

    async def get_groups(self, keys: Sequence[str]) -> list[GroupState]:
        return [self._groups[key].state(key) for key in dict.fromkeys(keys) if key in self._groups]

    async def group_members(self, key: str, offset: int, limit: int) -> list[GroupMember]:
        group = self._groups.get(key)
        if group is None:
            return []
        start = max(offset, 0)
        return list(group.members.values())[start : start + max(limit, 0)]

    async def find_group_members(self, jids: Sequence[str]) -> dict[str, tuple[str, GroupMember]]:
        found = {}
        for jid in jids:
            key = self._group_of.get(jid)
            if key is not None:
                found[jid] = (key, self._groups[key].members[jid])
        return found

    async def group_counts(self) -> tuple[int, int]:
        return len(self._groups), len(self._group_of)

    async def flush_group(self, key: str, jids: Sequence[str], job: QueuedJob, now: float) -> bool:
        group = self._groups.get(key)
        if group is None or not jids or any(jid not in group.members for jid in jids):
            return False
        self._remove_members(key, jids)
        self._push(job)
        self._notify([job.queue])
        return True

    def _remove_members(self, key: str, jids: Iterable[str]) -> None:
        """Remove members (present ones) of group ``key``; an emptied group goes."""
        group = self._groups[key]
        for jid in jids:
            if group.members.pop(jid, None) is not None:
                del self._group_of[jid]
        if not group.members:
            del self._groups[key]
