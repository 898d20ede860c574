"""Groups: the aggregating set, where jobs wait to be enqueued together as one
(docs/aggregation.md).

A **group** is named by a key the manager chooses (opaque here) and holds **members** (a jid
and its payload, in arrival order) plus the three numbers of its ``GroupSpec``. It is *due*
when it holds ``max_size`` members or more, or at ``min(first_at + max_delay, last_at +
grace)`` otherwise, where ``first_at`` is the arrival of its oldest member and ``last_at`` of
its newest arrival ever. The store keeps groups indexed by that moment (``due_at``), so the
manager's loop can sleep until the next one.

``flush_group`` is the one step that turns members into a job: it removes exactly the members
read, and enqueues the aggregate job built from them, only if every one of them is still
there. Two servers flushing the same group at once therefore enqueue it once: the second
finds the members gone; a flush run twice finds them gone and changes nothing. A jid is a
member of at most one group.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base.py includes this capability in Store
    from conveyor.store.base import Page, QueuedJob

__all__ = ["GroupAdd", "GroupMember", "GroupSpec", "GroupState", "Groups", "due_at"]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """When a group is due: at ``max_size`` members, ``max_delay`` seconds after its oldest
    member arrived, or ``grace`` seconds after its newest arrival, whichever comes first."""

    max_size: int
    max_delay: float
    grace: float


@dataclass(frozen=True, slots=True)
class GroupMember:
    jid: str
    payload: bytes
    added_at: float


@dataclass(frozen=True, slots=True)
class GroupAdd:
    """One member to add to the group ``key``, which takes ``spec``."""

    key: str
    member: GroupMember
    spec: GroupSpec


@dataclass(frozen=True, slots=True)
class GroupState:
    """A group as it is now; ``due_at <= first_at`` means due at once (it is full)."""

    key: str
    size: int
    first_at: float
    last_at: float
    due_at: float
    spec: GroupSpec


def due_at(size: int, first_at: float, last_at: float, spec: GroupSpec) -> float:
    """When a group with these numbers is due (the Lua scripts compute the same)."""
    if size >= spec.max_size:
        return first_at
    return min(first_at + spec.max_delay, last_at + spec.grace)


class Groups(abc.ABC):
    """The groups capability; every backend implements it (``Store`` includes it)."""

    async def add_to_group(self, key: str, member: GroupMember, spec: GroupSpec) -> GroupState:
        """``add_to_groups`` of one member."""
        return (await self.add_to_groups([GroupAdd(key, member, spec)]))[0]

    @abc.abstractmethod
    async def add_to_groups(self, adds: Sequence[GroupAdd]) -> list[GroupState]:
        """Add each member at the end of its group (created if absent), in the order given, in
        one atomic step; a group takes the ``spec`` of its newest add and ``last_at =
        max(last_at, added_at)``. A jid that is a member of a group already changes nothing:
        adding again is harmless. Returns, for each add, the state of the group that holds its
        jid now. Not awaited for durability, as records are (``records.py``): the caller
        awaits ``Store.durable()`` taken right after it."""

    @abc.abstractmethod
    async def due_groups(self, now: float, limit: int) -> list[GroupState]:
        """Up to ``limit`` groups with ``due_at <= now``, soonest first (unchanged)."""

    @abc.abstractmethod
    async def next_group_due(self) -> float | None:
        """The earliest ``due_at`` of all groups; None when there is none."""

    @abc.abstractmethod
    async def list_groups(self, offset: int, limit: int) -> Page[GroupState]:
        """One page of every group, soonest due first (then by key), and how many there are."""

    @abc.abstractmethod
    async def get_groups(self, keys: Sequence[str]) -> list[GroupState]:
        """The groups of these keys that exist (any order)."""

    @abc.abstractmethod
    async def group_members(self, key: str, offset: int, limit: int) -> list[GroupMember]:
        """Members of group ``key`` in arrival order, one page of them."""

    @abc.abstractmethod
    async def find_group_members(self, jids: Sequence[str]) -> dict[str, tuple[str, GroupMember]]:
        """For each of ``jids`` that is a member of a group: its group's key and the member."""

    @abc.abstractmethod
    async def group_counts(self) -> tuple[int, int]:
        """How many groups there are and how many members they hold together."""

    @abc.abstractmethod
    async def flush_group(self, key: str, jids: Sequence[str], job: QueuedJob, now: float) -> bool:
        """Atomically: if every one of ``jids`` is still a member of group ``key``, remove
        them, enqueue ``job`` (waking its queue, as ``enqueue``) and return True; members that
        arrived meanwhile stay, with the group's ``due_at`` worked out again from them (an
        empty group is deleted). Otherwise change nothing and return False. Durable."""
