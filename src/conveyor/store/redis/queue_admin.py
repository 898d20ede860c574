"""A queue's jobs as the operator sees them (sizes, heads, pages, finding, deleting, clearing)
and pausing or removing queues, in Redis: mixed into ``RedisStore``. Queues are lists
``{ns}:queue:<name>``; the known and paused ones are sets (``store.py``'s key layout)."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.store.base import Page, QueuedJob
from conveyor.store.redis.codec import decode_entry
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisQueueAdmin"]

_FIND_SLICE = 2000  # queue entries one queue_find call looks at: well under a millisecond


class RedisQueueAdmin(RedisHost):
    """Mixed into ``RedisStore``."""

    __slots__ = ()

    async def _known_queues(self) -> set[str]:  # provided by RedisStore
        raise NotImplementedError

    async def queue_sizes(self) -> dict[str, int]:
        names = sorted(await self._known_queues())
        if not names:
            return {}
        keys = [self._keys.queue(name) for name in names]
        sizes = await self._pipelined("queue_sizes", lambda pipe: [pipe.llen(k) for k in keys])
        return {name: int(size) for name, size in zip(names, sizes, strict=True)}

    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        keys = [self._keys.queue(name) for name in unique]
        heads = await self._pipelined("queue_heads", lambda pipe: [pipe.lindex(k, 0) for k in keys])
        return {
            name: None if raw is None else decode_entry(name, raw).payload
            for name, raw in zip(unique, heads, strict=True)
        }

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        offset, limit = max(offset, 0), max(limit, 0)
        key = self._keys.queue(name)
        total, raw = await self._pipelined(
            "list_queue", lambda pipe: pipe.llen(key).lrange(key, offset, offset + limit - 1)
        )
        items = [decode_entry(name, entry) for entry in raw] if limit else []
        return Page(items, int(total))

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        if not jids:
            return 0
        keys = [self._keys.queue(name)]
        return int(await self._write("queue_delete", keys, list(jids), durable=True))

    async def find_queued(
        self, jids: Sequence[str], queues: Sequence[str] | None = None
    ) -> list[QueuedJob]:
        """A bounded Lua slice at a time (queue_find.lua), from each queue's tail: no index to
        keep on every enqueue and reserve (docs/design/queued-lookup.md)."""
        wanted = set(jids)
        found: list[QueuedJob] = []
        names = sorted(await self._known_queues()) if queues is None else list(queues)
        for name in names:
            key, skip = self._keys.queue(name), 0
            while wanted and skip >= 0:
                args = [skip, _FIND_SLICE, *sorted(wanted)]
                skip, *entries = await self._run("queue_find", [key], args)
                for raw in entries:
                    job = decode_entry(name, raw)
                    if job.jid in wanted:
                        wanted.discard(job.jid)
                        found.append(job)
        return found

    async def clear_queue(self, name: str) -> int:
        return int(await self._write("queue_clear", [self._keys.queue(name)], durable=True))

    async def paused_queues(self) -> set[str]:
        members = await self._read(lambda: self._redis.smembers(self._keys.paused))
        return {m.decode() for m in members}

    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        if not names:
            return
        k = self._keys
        mode = "pause" if paused else "resume"
        args = [self._pub, self._origin, mode, *names]
        try:
            await self._write("queues_admin", [k.queues, k.paused, k.ready], args, durable=True)
        finally:
            if not paused:
                self._wake_all(names)

    async def remove_queues(self, names: Sequence[str]) -> None:
        unique = list(dict.fromkeys(names))
        if not unique:
            return
        k = self._keys
        keys = [k.queues, k.paused, k.ready, *(k.queue(n) for n in unique)]
        args = [self._pub, self._origin, "remove", *unique]
        await self._write("queues_admin", keys, args, durable=True)
