"""Endings (``conveyor.store.endings``) in Redis: ``lua/endings_end.lua``, which also keeps
completed jobs (``RedisCompletions.complete``, its mode ``complete``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.endings import Endings
from conveyor.store.redis.codec import decode_entry, decode_fields, encode_set_data, score_arg

__all__ = ["RedisEndings"]


class RedisEndings(Endings):
    """Mixed into ``RedisStore``, whose ``_run``/``_keys`` it uses."""

    if TYPE_CHECKING:  # RedisStore's
        _keys: Any
        _pub: str
        _origin: str

        def _wake_all(self, names: Collection[str]) -> None: ...

        async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any: ...

        async def _write(
            self,
            name: str,
            keys: Sequence[str],
            args: Sequence[Any] = (),
            *,
            token: str | None = None,
            durable: bool = False,
        ) -> Any: ...

        async def _read(self, make: Callable[[], Awaitable[Any]], op: str = "a command") -> Any: ...

    def _end_call(
        self,
        mode: str,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        entries: Sequence[SetEntry] = (),
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of endings_end.lua (also sent by ``RedisSoon.ack_returning_soon``).
        ``mode`` "ack", "discard" or "complete" (then ``entries``, not ``jids``, say which
        reservations end and what the completed set keeps of each)."""
        k = self._keys
        done = SortedSet.COMPLETED
        queues = list(throttled)
        keys = [k.res, k.exp, k.busy, k.stats, k.ready, k.zset(done), k.data(done)]
        keys += [k.key(f"tq:{queue}") for queue in queues]
        wanted: list[Any] = ["*"] if marks is None else [len(marks), *marks]
        args = [mode, day, self._pub, self._origin, len(queues), *queues, *wanted]
        if entries:
            for entry in entries:
                args += [entry.jid, score_arg(entry.score), encode_set_data(entry)]
        else:
            args += jids
        return keys, args

    def _ended(self, flat: list[bytes], throttled: Collection[str]) -> list[Reservation]:
        """The reservations endings_end.lua returned; their throttled queues are woken."""
        ended = []
        for i in range(0, len(flat), 4):
            (queue, wid), payload = decode_fields(flat[i + 1], 2)
            ended.append(
                Reservation(
                    jid=flat[i].decode(),
                    queue=queue,
                    payload=payload,
                    wid=wid,
                    reserved_at=float(flat[i + 3]),
                    expires_at=float(flat[i + 2]),
                )
            )
        woken = {r.queue for r in ended if r.queue in throttled} if throttled else None
        if woken:
            self._wake_all(woken)
        return ended

    async def _end(
        self,
        mode: str,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        entries: Sequence[SetEntry] = (),
    ) -> list[Reservation]:
        if not jids and not entries:
            return []
        keys, args = self._end_call(mode, jids, day, throttled, marks, entries)
        flat = await self._write("endings_end", keys, args)
        return self._ended(flat, throttled)

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
    ) -> list[Reservation]:
        return await self._end("ack", jids, day, throttled, marks)

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        return await self._end("discard", jids, "")

    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        if not jids:
            return []
        taken = await self._write(
            "endings_take", [self._keys.queue(queue)], list(jids), durable=True
        )
        return [decode_entry(queue, entry) for entry in taken]
