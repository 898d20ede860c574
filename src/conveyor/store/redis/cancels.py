"""Cancels (``conveyor.store.cancels``) in Redis: one script, ``lua/cancel.lua``, that takes
the job out of its queue, set, group or reservation and writes its record and counts into the
records' hashes (``records.py``). It takes a token (``calls.py``): a retry after a lost reply
returns what the first attempt said."""

from __future__ import annotations

from conveyor.store.base import SortedSet
from conveyor.store.cancels import (
    CANCELLED_SPACE,
    COUNTS_SPACE,
    NOTICES_SPACE,
    CancelOutcome,
    Cancels,
    CancelTarget,
)
from conveyor.store.records import Record
from conveyor.store.redis.codec import encode_entry, score_arg
from conveyor.store.redis.groups import group_keys
from conveyor.store.redis.host import RedisHost

__all__ = ["RedisCancels"]


def _expiry(record: Record | None) -> str:
    return "" if record is None or record.expires_at is None else score_arg(record.expires_at)


class RedisCancels(RedisHost, Cancels):
    """Mixed into ``RedisStore``."""

    def _where_keys(self, target: CancelTarget) -> tuple[list[str], str | bytes]:
        """The keys of where the job is (KEYS[8..]) and the script's ARGV[9]."""
        k = self._keys
        if target.where == "queued":  # the exact entry: LREM finds it without a Lua scan
            exact = b"" if target.entry is None else encode_entry(target.entry)
            return [k.queue(target.queue)], exact
        if target.where == "working":
            return [k.res, k.exp, k.busy], target.wid
        if target.where == "aggregating":
            return group_keys(k, target.group), target.group
        name = SortedSet(target.where)
        return [k.zset(name), k.data(name)], score_arg(target.score)

    async def cancel_job(
        self,
        target: CancelTarget,
        record: Record,
        notice: Record | None,
        day: str,
        now: float,
    ) -> CancelOutcome:
        k = self._keys
        keys = [k.record_spaces]
        for space in (CANCELLED_SPACE, NOTICES_SPACE, COUNTS_SPACE):
            keys += [k.records(space), k.record_expiry(space)]
        where, detail = self._where_keys(target)
        args = [target.where, target.jid, record.value, _expiry(record),
                b"" if notice is None else notice.value, _expiry(notice), day, score_arg(now),
                detail]  # fmt: skip
        reply = await self._write("cancel", [*keys, *where], args, durable=True)
        return CancelOutcome(reply.decode() if isinstance(reply, bytes) else str(reply))
