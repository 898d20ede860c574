"""The Redis store: many conveyor servers over one Redis (a Sentinel-watched master, or a Cluster).

Every lifecycle transition is one Lua script (``store/redis/lua/*.lua``) that declares every key it
touches in KEYS, so two servers can never hand out or move the same job twice. Every script that
writes is safe to send again after a lost reply (``calls.py``): a second run of one call
changes nothing. Every key of a
namespace starts with the hash tag ``{<namespace>}``, so all of them live in one Cluster slot
and every script is valid on Redis Cluster. The price: one namespace is served by one master.
To spread load over a Cluster, run several namespaces (``?namespace=``), one per group of
servers and workers.

Key layout (``{ns}`` is ``{conveyor}`` unless the URL says ``?namespace=``)::

    {ns}:queues        SET   known queue names
    {ns}:paused        SET   paused queue names
    {ns}:q:<name>      LIST  queue entries "<reserve_for>:" lp(jid) payload, oldest first
    {ns}:res           HASH  jid -> lp(queue) lp(wid) payload      (reservations)
    {ns}:exp           ZSET  jid by expires_at
    {ns}:busy          ZSET  jid by reserved_at
    {ns}:s:<set>       ZSET  jid by score for scheduled / retries / dead
    {ns}:d:<set>       HASH  jid -> lp(queue) lp(jobtype) payload
    {ns}:stats         HASH  processed, failures, p:<day>, f:<day>
    {ns}:workers       SET   wids;   {ns}:w:<wid>  STRING  WorkerRecord JSON with a TTL
    {ns}:r:<space>     HASH  key -> lp(expires_at) value         (records, see records.py)
    {ns}:rx:<space>    ZSET  key by expires_at;  {ns}:rspaces  SET  spaces in use
    {ns}:ready         channel: queue names that may have jobs (SPUBLISH on Redis 7)
    {ns}:signals       channel: "<origin> <topic> <keys JSON>" (store/signals.py)
    {ns}:sw:<topic>    ZSET  key by expiry: the keys a server waits a signal for
    {ns}:s:completed   ZSET, {ns}:d:completed HASH: completed jobs, as the other sets
    {ns}:op:<token>    STRING the result of one write call, kept ~30 s (calls.py)

The capabilities' modules document their own keys (``records.py``, ``limits.py``,
``batches.py``, ``groups.py``, ...).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from conveyor.errors import StoreError
from conveyor.store.base import (
    Counters,
    FailOutcome,
    JobFilter,
    Page,
    QueuedJob,
    ReadyListener,
    Reservation,
    SetEntry,
    SetMove,
    SortedSet,
    Store,
)
from conveyor.store.filters import filter_entries
from conveyor.store.redis.batches import RedisBatches
from conveyor.store.redis.calls import (
    CONNECTION_ERRORS,
    Caller,
    OutcomeUnknown,
    reraise_cancellation,
)
from conveyor.store.redis.cancels import RedisCancels
from conveyor.store.redis.codec import (
    RedisURL,
    decode_fields,
    decode_set_entry,
    encode_entry,
    encode_set_data,
    parse_url,
    score_arg,
)
from conveyor.store.redis.completed import RedisCompletions, RedisSignals
from conveyor.store.redis.connect import Clients
from conveyor.store.redis.counts import RedisCounts
from conveyor.store.redis.deadlines import RedisDeadlines
from conveyor.store.redis.endings import RedisEndings
from conveyor.store.redis.groups import RedisGroups
from conveyor.store.redis.limits import RedisLimits
from conveyor.store.redis.listing import FilteredListing
from conveyor.store.redis.pipe import usable
from conveyor.store.redis.queue_admin import RedisQueueAdmin
from conveyor.store.redis.records import RedisRecords
from conveyor.store.redis.release import Lost, Releaser
from conveyor.store.redis.scripts import Script, load_scripts
from conveyor.store.redis.soon import RedisSoon
from conveyor.store.redis.wakeup import Subscriber
from conveyor.store.redis.workers import RedisWorkers

__all__ = ["RedisStore"]


class Keys:
    """Key names of one namespace; every key shares the hash tag ``{namespace}``."""

    def __init__(self, namespace: str) -> None:
        p = f"{{{namespace}}}:"
        self.queues, self.paused, self.ready = p + "queues", p + "paused", p + "ready"
        self.signals = p + "signals"
        self.res, self.exp, self.busy = p + "res", p + "exp", p + "busy"
        self.stats, self.workers = p + "stats", p + "workers"
        self.record_spaces = p + "rspaces"
        self.prefix = self._p = p

    def queue(self, name: str) -> str:
        return f"{self._p}q:{name}"

    def zset(self, name: SortedSet) -> str:
        return f"{self._p}s:{name.value}"

    def data(self, name: SortedSet) -> str:
        return f"{self._p}d:{name.value}"

    def worker(self, wid: str) -> str:
        return f"{self._p}w:{wid}"

    def signal_waits(self, topic: str) -> str:
        """The keys of ``topic`` some server waits a signal for (``Signals.expect``)."""
        return f"{self._p}sw:{topic}"

    def records(self, space: str) -> str:
        return f"{self._p}r:{space}"

    def record_expiry(self, space: str) -> str:
        return f"{self._p}rx:{space}"

    def key(self, suffix: str) -> str:
        """Any other key of the namespace (the capabilities' modules name theirs)."""
        return self._p + suffix


class RedisStore(
    RedisSoon,
    RedisQueueAdmin,
    RedisRecords,
    RedisWorkers,
    RedisLimits,
    RedisEndings,
    RedisCounts,
    RedisDeadlines,
    RedisBatches,
    RedisCancels,
    RedisGroups,
    RedisCompletions,
    RedisSignals,
    Store,
):
    """A ``Store`` over Redis or Redis Cluster. Build it with ``RedisStore.from_url``."""

    def __init__(self, url: RedisURL) -> None:
        self._url = url
        self._keys = Keys(url.namespace)
        self._scripts: dict[str, Script] = load_scripts()
        self._clients = Clients(url)
        self._client: Any = None
        self._caller: Caller | None = None
        self._listener: ReadyListener | None = None
        self._subscriber: Subscriber | None = None
        self._releaser: Releaser | None = None
        self._pub = "SPUBLISH"
        # Wake-up messages are "<origin> <queue>": a store skips its own (it already woke its
        # listener locally), so one push wakes one waiting FETCH, not two.
        self._origin = secrets.token_hex(6) + " "
        self._filtered = FilteredListing(self._read_set)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://host:port/db``, ``rediss://`` (TLS), ``redis+cluster://h1:p1,h2:p2``
        (a Cluster seed list), ``redis+sentinel://s1:p1,s2:p2/service/db`` (the master of a
        Sentinel service; ``rediss+...`` with TLS), ``redis+unix:///path/redis.sock?db=N`` (a
        local Redis through its Unix socket). ``?namespace=`` picks the key prefix
        (default ``conveyor``). Raises ``ValueError`` for a malformed URL."""
        return cls(parse_url(url))

    # ----------------------------------------------------------------- life cycle

    async def open(self) -> None:
        client = self._clients.main()
        caller = Caller(client, self._url, self._keys.prefix)
        try:
            await client.ping()
            self._pub = await self._publish_command(client)
        except (RedisError, OSError) as exc:
            await client.aclose()
            await self._clients.aclose()
            raise caller.unreachable("connect", exc, wrote=True) from exc
        self._client, self._caller = client, caller
        self._releaser = Releaser(self._release, keep_for=caller.token_ttl - caller.retry_for)
        self._subscriber = Subscriber(
            lambda: self._clients.subscriber(self._client, self._keys.ready),
            self._keys.ready,
            self._pub == "SPUBLISH",
            self._origin,
            self._wake,
            self._known_queues,
            self._url if usable(self._url) else None,
            signals=(self._keys.signals, self._signalled),
        )
        self._subscriber.start()

    async def _publish_command(self, client: Any) -> str:
        """SPUBLISH (sharded pub/sub, Redis 7+) when the server knows it, else PUBLISH."""
        probe = "return redis.call('SPUBLISH', KEYS[1], '')"
        try:
            await client.eval(probe, 1, self._keys.ready)
        except ResponseError:
            return "PUBLISH"
        return "SPUBLISH"

    async def close(self) -> None:
        if self._releaser is not None:
            await self._releaser.stop()
            self._releaser = None
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        if self._client is not None:
            if self._caller is not None:
                await self._caller.close()
            await self._client.aclose()
            self._client, self._caller = None, None
            await self._clients.aclose()

    def set_ready_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    async def wait_subscribed(self) -> None:
        """Wait until the wake-up channel is subscribed and the wake-ups of every known queue
        that follow a subscription are delivered (tests use it to avoid races)."""
        assert self._subscriber is not None, "open() first"
        await self._subscriber.subscribed.wait()

    def _wake(self, name: str) -> None:
        if self._listener is not None:
            self._listener(name)

    def _wake_all(self, names: Iterable[str]) -> None:
        for name in names:
            self._wake(name)

    async def _known_queues(self) -> set[str]:
        members = await self._read(lambda: self._redis.smembers(self._keys.queues))
        return {m.decode() for m in members}

    # ----------------------------------------------------------------- plumbing

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise StoreError("the Redis store is not open")
        return self._client

    @property
    def _calls(self) -> Caller:
        if self._caller is None:
            raise StoreError("the Redis store is not open")
        return self._caller

    async def _read(self, make: Callable[[], Awaitable[Any]], op: str = "a command") -> Any:
        """A command that changes nothing: sent once more at once if its reply is lost."""
        calls = self._calls
        for last in (False, True):
            try:
                result = await make()
            except CONNECTION_ERRORS as exc:
                if last:
                    raise calls.unreachable(op, exc, wrote=True) from exc
                continue
            except RedisError as exc:
                raise calls.failed(op, exc) from exc
            reraise_cancellation()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """A script whose second run changes nothing (reads, ``extend``)."""
        return await self._calls.run(self._scripts[name], keys, args)

    async def _write(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any] = (),
        *,
        token: str | None = None,
        durable: bool = False,
    ) -> Any:
        """A script that takes a token (KEYS[1]), so a retry after a lost reply is safe.
        ``durable``: wait for ``?wait_replicas`` replicas when the URL asks for it."""
        return await self._calls.write(
            self._scripts[name], keys, args, token=token, durable=durable
        )

    async def _pipelined(self, op: str, fill: Callable[[Any], object]) -> Any:
        """Read commands sent in one pipeline (``fill`` queues them), retried like ``_read``."""

        def send() -> Awaitable[Any]:
            pipe = self._redis.pipeline(transaction=False)
            fill(pipe)
            return pipe.execute()  # type: ignore[no-any-return]

        return await self._read(send, op)

    async def _release(self, lost: Lost) -> int:
        """Give back what a lost reserve call reserved (``release.py``)."""
        k, calls = self._keys, self._calls
        keys = [lost.token, k.res, k.exp, k.busy, k.ready, *(k.queue(n) for n in lost.queues)]
        args = [calls.token_ttl, self._pub, self._origin, lost.wid, score_arg(lost.now)]
        released = int(await self._run("release", keys, [*args, *lost.queues]))
        if released:
            self._wake_all(lost.queues)
        return released

    # ----------------------------------------------------------------- adding jobs

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        if not jobs:
            return
        keys, args, names = self._enqueue_call(jobs)
        try:
            await self._write("enqueue", keys, args, durable=True)
        finally:
            # Even after an error: the script may have run, and our own echo is skipped.
            self._wake_all(names)

    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        if not entries:
            return
        args: list[Any] = []
        for entry in entries:
            args += [score_arg(entry.score), entry.jid, encode_set_data(entry)]
        keys = [self._keys.zset(name), self._keys.data(name)]
        await self._write("set_add", keys, args, durable=True)

    # ----------------------------------------------------------------- working

    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        names = list(dict.fromkeys(queues))
        if not names or count <= 0:
            return []
        keys, args = self._reserve_call(names, wid, now, count)
        calls = self._calls
        token = calls.new_token()
        try:
            flat = await calls.write(self._scripts["reserve"], keys, args, token=token)
        except (OutcomeUnknown, asyncio.CancelledError):
            self._lost_reserve(token, wid, now, names)
            raise
        return self._reserved(flat, wid, now)

    async def ack(self, jids: Sequence[str], day: str) -> int:
        if not jids:
            return 0
        k = self._keys
        return int(await self._write("ack", [k.res, k.exp, k.busy, k.stats], [day, *jids]))

    async def fail(self, jid: str, outcome: FailOutcome, day: str) -> bool:
        k = self._keys
        target = outcome.target or SortedSet.DEAD
        keys = [k.res, k.exp, k.busy, k.stats, k.zset(target), k.data(target)]
        data = encode_set_data(
            SetEntry(outcome.score, jid, outcome.payload, outcome.queue, outcome.jobtype)
        )
        store = "1" if outcome.target is not None else ""
        args = [jid, day, store, score_arg(outcome.score), data]
        return bool(await self._write("fail", keys, args))

    async def _reservations(self, *args: Any) -> tuple[int, list[Reservation]]:
        k = self._keys
        flat = await self._run("reservations", [k.res, k.exp, k.busy], args)
        found = []
        for i in range(1, len(flat), 4):
            (queue, wid), payload = decode_fields(flat[i + 1], 2)
            found.append(
                Reservation(
                    jid=flat[i].decode(),
                    queue=queue,
                    payload=payload,
                    wid=wid,
                    reserved_at=float(flat[i + 3]),
                    expires_at=float(flat[i + 2]),
                )
            )
        return int(flat[0]), found

    async def get_reservation(self, jid: str) -> Reservation | None:
        _, found = await self._reservations("jids", jid)
        return found[0] if found else None

    async def expired_reservations(self, now: float, limit: int) -> list[Reservation]:
        if limit <= 0:
            return []
        _, found = await self._reservations("expired", score_arg(now), limit)
        return found

    async def extend_reservation(self, jid: str, expires_at: float) -> bool:
        k = self._keys
        return bool(await self._run("extend", [k.res, k.exp], [jid, score_arg(expires_at)]))

    async def list_reservations(self, offset: int, limit: int) -> Page[Reservation]:
        total, found = await self._reservations("page", max(offset, 0), max(limit, 0))
        return Page(found, total)

    # ----------------------------------------------------------------- sorted sets

    async def _read_set(self, name: SortedSet, *args: Any) -> tuple[int, list[SetEntry]]:
        flat = await self._run("set_read", [self._keys.zset(name), self._keys.data(name)], args)
        entries = [
            decode_set_entry(flat[i], flat[i + 1], flat[i + 2]) for i in range(1, len(flat), 3)
        ]
        return int(flat[0]), entries

    async def due_entries(self, name: SortedSet, now: float, limit: int) -> list[SetEntry]:
        if limit <= 0:
            return []
        return (await self._read_set(name, "due", score_arg(now), limit))[1]

    async def move_to_queue(self, name: SortedSet, moves: Sequence[SetMove]) -> int:
        if not moves:
            return 0
        k = self._keys
        keys = [k.zset(name), k.data(name), k.queues, k.ready]
        index: dict[str, int] = {}
        args: list[Any] = [self._pub, self._origin]
        for move in moves:
            queue = move.job.queue
            if queue not in index:
                index[queue] = len(keys) + 2  # Lua KEYS are 1-based, after the token
                keys.append(k.queue(queue))
            entry = encode_entry(move.job)
            args += [move.entry.jid, score_arg(move.entry.score), index[queue], queue, entry]
        try:
            return int(await self._write("set_to_queue", keys, args))
        finally:
            self._wake_all(index)

    async def move_to_set(
        self, source: SortedSet, entries: Sequence[SetEntry], target: SortedSet, score: float
    ) -> int:
        if not entries:
            return 0
        k = self._keys
        keys = [k.zset(source), k.data(source), k.zset(target), k.data(target)]
        args: list[Any] = [score_arg(score)]
        for entry in entries:
            args += [entry.jid, score_arg(entry.score)]
        return int(await self._write("set_move", keys, args, durable=True))

    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        if not entries:
            return 0
        args: list[Any] = ["exact"]
        for entry in entries:
            args += [entry.jid, score_arg(entry.score)]
        keys = [self._keys.zset(name), self._keys.data(name)]
        return int(await self._write("set_remove", keys, args, durable=True))

    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        keys = [self._keys.zset(name), self._keys.data(name)]
        args = ["purge", score_arg(before), limit]
        return int(await self._write("set_remove", keys, args, durable=True))

    async def clear_set(self, name: SortedSet) -> int:
        keys = [self._keys.zset(name), self._keys.data(name)]
        return int(await self._write("set_remove", keys, ["clear"], durable=True))

    async def set_size(self, name: SortedSet) -> int:
        return int(await self._read(lambda: self._redis.zcard(self._keys.zset(name))))

    async def list_set(
        self,
        name: SortedSet,
        flt: JobFilter,
        offset: int,
        limit: int,
        *,
        descending: bool = False,
    ) -> Page[SetEntry]:
        offset, limit = max(offset, 0), max(limit, 0)
        rev = "1" if descending else ""
        if flt.is_empty:
            if limit == 0:
                return Page([], await self.set_size(name))
            total, items = await self._read_set(name, "rank", offset, offset + limit - 1, rev)
            return Page(items, total)
        if flt.jids:
            _, found = await self._read_set(name, "jids", *dict.fromkeys(flt.jids))
            found.sort(key=lambda e: (e.score, e.jid), reverse=descending)
            kept = await filter_entries(flt, found)
            return Page(kept[offset : offset + limit], len(kept))
        return await self._filtered.page(name, flt, offset, limit, descending)

    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        if not jids:
            return []
        return (await self._read_set(name, "jids", *dict.fromkeys(jids)))[1]

    # ----------------------------------------------------------------- counters

    async def counters(self) -> Counters:
        processed, failures = await self._read(
            lambda: self._redis.hmget(self._keys.stats, ["processed", "failures"])
        )
        return Counters(int(processed or 0), int(failures or 0))

    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        if not days:
            return {}
        fields = [f"{kind}:{day}" for day in days for kind in ("p", "f")]
        values = await self._read(lambda: self._redis.hmget(self._keys.stats, fields))
        return {
            day: Counters(int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
            for i, day in enumerate(days)
        }

    # ----------------------------------------------------------------- admin

    async def flush(self) -> None:
        k = self._keys
        fixed = [k.queues, k.paused, k.res, k.exp, k.busy, k.stats]
        fixed += [key for s in SortedSet for key in (k.zset(s), k.data(s))]
        names = sorted(await self._known_queues())
        while True:
            keys = fixed + [k.queue(n) for n in names]
            missing = await self._write("flush", keys, names, durable=True)
            if not missing:
                break
            names = [m.decode() for m in missing]
        await self._flush_records()
        await self._flush_limits()
        await self._flush_counts()
        await self._flush_deadlines()
        await self._flush_batches()
        await self._flush_groups()
