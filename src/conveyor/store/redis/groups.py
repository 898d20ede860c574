"""Groups (``conveyor.store.groups``) in Redis: ``lua/groups_add.lua`` and ``groups_flush.lua``
write, ``lua/groups_read.lua`` reads. Keys (under the namespace's hash tag, so every script is
atomic on a Cluster too)::

    {ns}:gdue        ZSET  group key by due_at
    {ns}:gmeta       HASH  group key -> "size first_at last_at max_size max_delay grace seq"
    {ns}:gz:<key>    ZSET  member jid by arrival number
    {ns}:gd:<key>    HASH  member jid -> lp(added_at) payload
    {ns}:gjid        HASH  jid -> group key

Both writes take a token (``calls.py``): a retry after a lost reply returns what the first
attempt did. They are harmless to run twice anyway: an add finds its jids members already, a
flush finds its members gone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from conveyor.store.base import Page, QueuedJob
from conveyor.store.groups import GroupAdd, GroupMember, Groups, GroupSpec, GroupState, due_at
from conveyor.store.redis.codec import decode_fields, encode_entry, score_arg
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisGroups", "group_keys"]


ADD_CHUNK = 500
"""Members per groups_add call: one call holds Redis for a few milliseconds at most."""


def group_keys(keys: Any, key: str) -> list[str]:
    """KEYS[1..5] of groups_flush.lua (and KEYS[8..12] of cancel.lua) for group ``key``."""
    return [keys.key("gdue"), keys.key("gmeta"), keys.key(f"gz:{key}"), keys.key(f"gd:{key}"),
            keys.key("gjid")]  # fmt: skip


def _state(key: str, meta: bytes | str, due: float | None = None) -> GroupState:
    raw = meta.decode() if isinstance(meta, bytes) else meta
    size, first_at, last_at, max_size, max_delay, grace, _seq = raw.split()
    spec = GroupSpec(int(float(max_size)), float(max_delay), float(grace))
    sized, first, last = int(float(size)), float(first_at), float(last_at)
    when = due_at(sized, first, last, spec) if due is None else due
    return GroupState(key, sized, first, last, when, spec)


class RedisGroups(RedisHost, Groups):
    """Mixed into ``RedisStore``, whose ``_run``/``_call``/``_redis``/``_keys`` it uses."""

    async def add_to_groups(self, adds: Sequence[GroupAdd]) -> list[GroupState]:
        states: list[GroupState] = []
        for start in range(0, len(adds), ADD_CHUNK):
            states += await self._add_chunk(adds[start : start + ADD_CHUNK])
        return states

    async def _add_chunk(self, adds: Sequence[GroupAdd]) -> list[GroupState]:
        k = self._keys
        keys = [k.key("gdue"), k.key("gmeta"), k.key("gjid")]
        index: dict[str, int] = {}
        args: list[Any] = []
        for add in adds:
            if add.key not in index:
                index[add.key] = len(keys) + 1  # Lua KEYS are 1-based
                keys += [k.key(f"gz:{add.key}"), k.key(f"gd:{add.key}")]
            spec, member = add.spec, add.member
            args += [index[add.key], add.key, member.jid, score_arg(member.added_at),
                     member.payload, spec.max_size, score_arg(spec.max_delay),
                     score_arg(spec.grace)]  # fmt: skip
        flat = await self._write("groups_add", keys, args, durable=True)
        return [_state(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def _read_groups(self, *args: Any) -> tuple[int, list[GroupState]]:
        keys = [self._keys.key("gdue"), self._keys.key("gmeta")]
        flat = await self._run("groups_read", keys, args)
        states = [
            _state(flat[i].decode(), flat[i + 2], float(flat[i + 1]))
            for i in range(1, len(flat), 3)
        ]
        return int(flat[0]), states

    async def due_groups(self, now: float, limit: int) -> list[GroupState]:
        if limit <= 0:
            return []
        return (await self._read_groups("due", score_arg(now), limit))[1]

    async def next_group_due(self) -> float | None:
        key = self._keys.key("gdue")
        first = await self._read(lambda: self._redis.zrange(key, 0, 0, withscores=True), "groups")
        return float(first[0][1]) if first else None

    async def list_groups(self, offset: int, limit: int) -> Page[GroupState]:
        if limit <= 0:
            return Page([], (await self.group_counts())[0])
        total, states = await self._read_groups("page", max(offset, 0), limit)
        return Page(states, total)

    async def get_groups(self, keys: Sequence[str]) -> list[GroupState]:
        if not keys:
            return []
        return (await self._read_groups("keys", *dict.fromkeys(keys)))[1]

    async def group_members(self, key: str, offset: int, limit: int) -> list[GroupMember]:
        if limit <= 0:
            return []
        start = max(offset, 0)
        order, data = self._keys.key(f"gz:{key}"), self._keys.key(f"gd:{key}")
        jids = await self._read(lambda: self._redis.zrange(order, start, start + limit - 1))
        if not jids:
            return []
        stored = await self._read(lambda: self._redis.hmget(data, jids), "groups")
        members = []
        for jid, raw in zip(jids, stored, strict=True):
            if raw is not None:  # flushed between the two reads
                (added_at,), payload = decode_fields(raw, 1)
                members.append(GroupMember(jid.decode(), payload, float(added_at)))
        return members

    async def find_group_members(self, jids: Sequence[str]) -> dict[str, tuple[str, GroupMember]]:
        unique = list(dict.fromkeys(jids))
        if not unique:
            return {}
        index = self._keys.key("gjid")
        where = await self._read(lambda: self._redis.hmget(index, unique), "groups")
        found: dict[str, tuple[str, GroupMember]] = {}
        for jid, key in zip(unique, where, strict=True):
            if key is None:
                continue
            name = key.decode()
            raw = await self._read(
                functools.partial(self._redis.hget, self._keys.key(f"gd:{name}"), jid)
            )
            if raw is not None:
                (added_at,), payload = decode_fields(raw, 1)
                found[jid] = (name, GroupMember(jid, payload, float(added_at)))
        return found

    async def group_counts(self) -> tuple[int, int]:
        k = self._keys

        def fill(pipe: Any) -> None:
            pipe.zcard(k.key("gdue"))
            pipe.hlen(k.key("gjid"))

        groups, members = await self._pipelined("groups", fill)
        return int(groups), int(members)

    async def flush_group(self, key: str, jids: Sequence[str], job: QueuedJob, now: float) -> bool:
        unique = list(dict.fromkeys(jids))
        if not unique:
            return False
        k = self._keys
        keys = [*group_keys(k, key), k.queues, k.ready, k.queue(job.queue)]
        args = [key, self._pub, self._origin, job.queue, encode_entry(job), *unique]
        try:
            return bool(await self._write("groups_flush", keys, args, durable=True))
        finally:
            self._wake(job.queue)  # even after an error: the script may have run

    async def _flush_groups(self) -> None:
        k = self._keys
        names = await self._read(lambda: self._redis.zrange(k.key("gdue"), 0, -1), "flush")
        doomed = [k.key(f"{p}:{n.decode()}") for n in names for p in ("gz", "gd")]
        doomed += [k.key("gdue"), k.key("gmeta"), k.key("gjid")]
        # one slot; a DEL sent again after a lost reply is as if it came just after the FLUSH
        await self._read(lambda: self._redis.delete(*doomed), "flush")
