"""Groups (``conveyor.store.groups``) in SQLite: ``sql/groups.sql``. Writes join the store's
shared transaction (group commit); a group's row keeps its numbers current, so listings and
the due index read no members."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import Page, QueuedJob
from conveyor.store.groups import GroupAdd, GroupMember, Groups, GroupSpec, GroupState, due_at
from conveyor.store.sqlite import damage
from conveyor.store.sqlite.damage import Damaged, checksum, intact
from conveyor.store.sqlite.db import Database, load_queries, split_statements

__all__ = ["SQLiteGroups"]

_SQL = load_queries("groups.sql")
_SOURCE = "agg_members"


def _state(row: Sequence[Any]) -> GroupState:
    key, size, first_at, last_at, due, max_size, max_delay, grace = row
    return GroupState(key, size, first_at, last_at, due, GroupSpec(max_size, max_delay, grace))


class SQLiteGroups(Groups):
    """Mixed into ``SQLiteStore``."""

    _db: Database

    if TYPE_CHECKING:  # SQLiteStore's

        def _push(self, conn: sqlite3.Connection, jobs: Sequence[QueuedJob]) -> dict[str, int]: ...

        def _grow(self, added: dict[str, int]) -> None: ...

    def _create_groups(self) -> None:
        self._db.conn.executescript(_SQL["create"])

    def _flush_groups(self, conn: sqlite3.Connection) -> None:
        for statement in split_statements(_SQL["flush"]):
            conn.execute(statement)

    async def add_to_groups(self, adds: Sequence[GroupAdd]) -> list[GroupState]:
        with self._db.atomic() as conn:
            return [self._add(conn, add) for add in adds]

    def _add(self, conn: sqlite3.Connection, add: GroupAdd) -> GroupState:
        member, spec = add.member, add.spec
        row = (add.key, member.jid, member.added_at, checksum(member.payload), member.payload)
        if conn.execute(_SQL["add_member"], row).rowcount == 0:  # a member already
            (where,) = conn.execute(_SQL["member_group"], (member.jid,)).fetchone()
            return _state(conn.execute(_SQL["group_row"], (where,)).fetchone())
        old = conn.execute(_SQL["group_row"], (add.key,)).fetchone()
        if old is None:
            size, first_at, last_at = 1, member.added_at, member.added_at
        else:  # the oldest member stays the oldest
            size, first_at, last_at = old[1] + 1, old[2], max(old[3], member.added_at)
        due = due_at(size, first_at, last_at, spec)
        group = (add.key, size, first_at, last_at, due, spec.max_size, spec.max_delay, spec.grace)
        conn.execute(_SQL["put_group"], group)
        return _state(group)

    def _regroup(self, conn: sqlite3.Connection, key: str, removed: int) -> None:
        """Work a group's numbers out again after ``removed`` members left; an emptied
        group goes."""
        old = conn.execute(_SQL["group_row"], (key,)).fetchone()
        oldest = conn.execute(_SQL["oldest_member"], (key,)).fetchone()
        if oldest is None or old is None:
            conn.execute(_SQL["delete_group"], (key,))
            return
        spec = GroupSpec(old[5], old[6], old[7])
        size, first_at, last_at = old[1] - removed, oldest[0], old[3]
        due = due_at(size, first_at, last_at, spec)
        row = (key, size, first_at, last_at, due, spec.max_size, spec.max_delay, spec.grace)
        conn.execute(_SQL["put_group"], row)

    async def due_groups(self, now: float, limit: int) -> list[GroupState]:
        return [_state(row) for row in self._db.read(_SQL["due_groups"], (now, max(limit, 0)))]

    async def next_group_due(self) -> float | None:
        ((due,),) = self._db.read(_SQL["next_due"])
        return None if due is None else float(due)

    async def list_groups(self, offset: int, limit: int) -> Page[GroupState]:
        rows = self._db.read(_SQL["list_groups"], (max(limit, 0), max(offset, 0)))
        ((total, _members),) = self._db.read(_SQL["counts"])
        return Page([_state(row) for row in rows], int(total))

    async def get_groups(self, keys: Sequence[str]) -> list[GroupState]:
        found = []
        for key in dict.fromkeys(keys):
            rows = self._db.read(_SQL["group_row"], (key,))
            found += [_state(row) for row in rows]
        return found

    async def group_members(self, key: str, offset: int, limit: int) -> list[GroupMember]:
        rows = self._db.read(_SQL["members"], (key, max(limit, 0), max(offset, 0)))
        members = []
        damaged: list[tuple[str, Damaged]] = []
        for _id, jid, added_at, crc, payload in rows:
            if intact(payload, crc):
                members.append(GroupMember(jid, payload, added_at))
            else:
                damaged.append((key, Damaged(_SOURCE, jid, key, crc, payload)))
        self._set_aside(damaged)
        return members

    async def find_group_members(self, jids: Sequence[str]) -> dict[str, tuple[str, GroupMember]]:
        found: dict[str, tuple[str, GroupMember]] = {}
        damaged: list[tuple[str, Damaged]] = []
        for jid in dict.fromkeys(jids):
            for key, _jid, added_at, crc, payload in self._db.read(_SQL["find_member"], (jid,)):
                if intact(payload, crc):
                    found[jid] = (key, GroupMember(jid, payload, added_at))
                else:
                    damaged.append((key, Damaged(_SOURCE, jid, key, crc, payload)))
        self._set_aside(damaged)
        return found

    def _set_aside(self, found: list[tuple[str, Damaged]]) -> None:
        """Move members whose payload changed on disk into ``damaged_jobs`` (not during an
        outage: they are skipped all the same)."""
        if not found:
            return
        damage.report([d for _key, d in found])
        if not self._db.writable:
            return
        with self._db.atomic() as conn:
            for key, member in found:
                self._remove_members(conn, key, [member.jid])
            damage.move_aside(conn, [d for _key, d in found])

    async def group_counts(self) -> tuple[int, int]:
        ((groups, members),) = self._db.read(_SQL["counts"])
        return int(groups), int(members)

    async def flush_group(self, key: str, jids: Sequence[str], job: QueuedJob, now: float) -> bool:
        unique = list(dict.fromkeys(jids))
        ((present,),) = self._db.read(_SQL["count_members"], (key, json.dumps(unique)))
        if not unique or present != len(unique):
            return False
        # no await since the count: one server owns the file, so nothing changed meanwhile
        with self._db.atomic() as conn:
            self._remove_members(conn, key, unique)
            added = self._push(conn, [job])
        committed = self._db.pending
        self._grow(added)
        await committed
        return True

    def _remove_members(self, conn: sqlite3.Connection, key: str, jids: Iterable[str]) -> int:
        """Remove members of group ``key`` and work the group out again; how many were there."""
        rows = [(key, jid) for jid in jids]
        removed = conn.executemany(_SQL["remove_member"], rows).rowcount
        if removed:
            self._regroup(conn, key, removed)
        return removed
