"""The Redis store: many conveyor servers over one Redis (or one Redis Cluster).

Every lifecycle transition is one Lua script (``store/redis/lua/*.lua``) that declares every key it
touches in KEYS, so two servers can never hand out or move the same job twice. Every key of a
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
    {ns}:s:completed   ZSET, {ns}:d:completed HASH: completed jobs, as the other sets
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url as parse_redis_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    WorkerRecord,
)
from conveyor.store.filters import filter_entries
from conveyor.store.redis.codec import (
    RedisURL,
    decode_entry,
    decode_fields,
    decode_set_entry,
    encode_entry,
    encode_set_data,
    parse_url,
    score_arg,
)
from conveyor.store.redis.completed import RedisCompletions, RedisSignals
from conveyor.store.redis.records import RedisRecords
from conveyor.store.redis.scripts import Script, load_scripts
from conveyor.store.redis.wakeup import Subscriber

__all__ = ["RedisStore"]

SCAN_CHUNK = 1000
_FIND_SLICE = 2000  # queue entries one queue_find call looks at: well under a millisecond
"""Entries read per script call when a listing has to filter a whole sorted set."""

_worker_encoder = msgspec.json.Encoder()
_worker_decoder = msgspec.json.Decoder(WorkerRecord)


def _reraise_cancellation() -> None:
    """Raise a cancellation that was swallowed on the way.

    On Python 3.11 ``asyncio.wait_for`` returns the inner result, dropping a CancelledError, when
    the awaited future finishes in the same loop iteration as the cancel (fixed in 3.12);
    redis-py awaits ``wait_for(writer.drain(), socket_timeout)`` on every command. A manager
    loop cancelled at that instant would then run on and never stop. A pending cancellation is
    raised again here, so cancelling a task that uses the store always works."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Keys:
    """Key names of one namespace; every key shares the hash tag ``{namespace}``."""

    def __init__(self, namespace: str) -> None:
        p = f"{{{namespace}}}:"
        self.queues, self.paused, self.ready = p + "queues", p + "paused", p + "ready"
        self.signals = p + "signals"
        self.res, self.exp, self.busy = p + "res", p + "exp", p + "busy"
        self.stats, self.workers = p + "stats", p + "workers"
        self.record_spaces = p + "rspaces"
        self._p = p

    def queue(self, name: str) -> str:
        return f"{self._p}q:{name}"

    def zset(self, name: SortedSet) -> str:
        return f"{self._p}s:{name.value}"

    def data(self, name: SortedSet) -> str:
        return f"{self._p}d:{name.value}"

    def worker(self, wid: str) -> str:
        return f"{self._p}w:{wid}"

    def records(self, space: str) -> str:
        return f"{self._p}r:{space}"

    def record_expiry(self, space: str) -> str:
        return f"{self._p}rx:{space}"


class RedisStore(RedisRecords, RedisCompletions, RedisSignals, Store):
    """A ``Store`` over Redis or Redis Cluster. Build it with ``RedisStore.from_url``."""

    def __init__(self, url: RedisURL) -> None:
        self._url = url
        self._keys = Keys(url.namespace)
        self._scripts: dict[str, Script] = load_scripts()
        self._client: Any = None
        self._listener: ReadyListener | None = None
        self._subscriber: Subscriber | None = None
        self._pub = "SPUBLISH"
        # Wake-up messages are "<origin> <queue>": a store skips its own (it already woke its
        # listener locally), so one push wakes one waiting FETCH, not two.
        self._origin = secrets.token_hex(6) + " "
        self._where = ",".join(f"{h}:{p}" for h, p in url.nodes)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://host:port/db``, ``rediss://`` (TLS), ``redis+cluster://h1:p1,h2:p2``
        (a Cluster seed list; ``rediss+cluster://`` with TLS). ``?namespace=`` picks the key
        prefix (default ``conveyor``). Raises ``ValueError`` for a malformed URL."""
        return cls(parse_url(url))

    # ----------------------------------------------------------------- life cycle

    def _client_options(self) -> dict[str, Any]:
        url = self._url
        # Let redis-py type the query options (socket_timeout=3 -> 3.0) as from_url would.
        typed = parse_redis_url("redis://h/0?" + urlencode(url.options))
        options = {k: v for k, v in typed.items() if k not in ("host", "port", "db")}
        if url.cluster:
            options.update(ssl=url.tls, username=url.username, password=url.password)
        return options

    def _new_client(self) -> Any:
        url = self._url
        if url.cluster:
            nodes = [ClusterNode(host, port) for host, port in url.nodes]
            return RedisCluster(startup_nodes=nodes, **self._client_options())
        # One quick retry lets a pooled connection that died with a Redis restart reconnect;
        # more would only delay the error reply the server owes its client.
        return Redis.from_url(url.client_url, retry=Retry(NoBackoff(), 1))

    async def _subscriber_client(self) -> Redis:
        """A dedicated connection for pub/sub: to the node owning our slot on a Cluster."""
        url = self._url
        no_retry = Retry(NoBackoff(), 0)
        if not url.cluster:
            return Redis.from_url(url.client_url, retry=no_retry, socket_timeout=None)
        await self._client.initialize()
        node = self._client.get_node_from_key(self._keys.ready)
        options = self._client_options()
        return Redis(host=node.host, port=node.port, retry=no_retry, **options)

    async def open(self) -> None:
        self._client = self._new_client()
        try:
            await self._client.ping()
            self._pub = await self._publish_command()
        except (RedisError, OSError) as exc:
            client, self._client = self._client, None
            await client.aclose()
            raise self._error("connect", exc) from exc
        self._subscriber = Subscriber(
            self._subscriber_client,
            self._keys.ready,
            self._pub == "SPUBLISH",
            self._origin,
            self._wake,
            self._known_queues,
            signals=(self._keys.signals, self._signalled),
        )
        self._subscriber.start()

    async def _publish_command(self) -> str:
        """SPUBLISH (sharded pub/sub, Redis 7+) when the server knows it, else PUBLISH."""
        probe = "return redis.call('SPUBLISH', KEYS[1], '')"
        try:
            await self._client.eval(probe, 1, self._keys.ready)
        except ResponseError:
            return "PUBLISH"
        return "SPUBLISH"

    async def close(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def set_ready_listener(self, listener: ReadyListener) -> None:
        self._listener = listener

    async def wait_subscribed(self) -> None:
        """Wait until the wake-up channel is subscribed (tests use it to avoid races)."""
        assert self._subscriber is not None, "open() first"
        await self._subscriber.subscribed.wait()

    def _wake(self, name: str) -> None:
        if self._listener is not None:
            self._listener(name)

    def _wake_all(self, names: Iterable[str]) -> None:
        for name in names:
            self._wake(name)

    async def _known_queues(self) -> set[str]:
        return {m.decode() for m in await self._call(self._redis.smembers(self._keys.queues))}

    # ----------------------------------------------------------------- plumbing

    def _error(self, op: str, exc: BaseException) -> StoreError:
        if isinstance(exc, (ConnectionError, RedisConnectionError, RedisTimeoutError)):
            return StoreError(f"Redis at {self._where} is unreachable ({op}): {exc}")
        return StoreError(f"Redis at {self._where} failed ({op}): {exc}")

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise StoreError("the Redis store is not open")
        return self._client

    async def _call(self, awaitable: Any, op: str = "a command") -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            _reraise_cancellation()
            raise self._error(op, exc) from exc
        _reraise_cancellation()
        return result

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        return await self._call(self._scripts[name](self._redis, keys, args), name)

    # ----------------------------------------------------------------- adding jobs

    async def enqueue(self, jobs: Sequence[QueuedJob]) -> None:
        if not jobs:
            return
        by_queue: dict[str, list[bytes]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(encode_entry(job))
        keys = [self._keys.queues, self._keys.ready]
        args: list[Any] = [self._pub, self._origin]
        for name, entries in by_queue.items():
            keys.append(self._keys.queue(name))
            args += [name, len(entries), *entries]
        try:
            await self._run("enqueue", keys, args)
        finally:
            # Even after an error: the script may have run, and our own echo is skipped.
            self._wake_all(by_queue)

    async def add_to_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> None:
        if not entries:
            return
        args: list[Any] = []
        for entry in entries:
            args += [score_arg(entry.score), entry.jid, encode_set_data(entry)]
        await self._run("set_add", [self._keys.zset(name), self._keys.data(name)], args)

    # ----------------------------------------------------------------- working

    async def reserve(
        self, queues: Sequence[str], wid: str, now: float, count: int = 1
    ) -> list[Reservation]:
        names = list(dict.fromkeys(queues))
        if not names or count <= 0:
            return []
        k = self._keys
        keys = [k.paused, k.res, k.exp, k.busy, *(k.queue(n) for n in names)]
        flat = await self._run("reserve", keys, [wid, score_arg(now), count, *names])
        return [
            Reservation(
                jid=flat[i + 1].decode(),
                queue=flat[i].decode(),
                payload=flat[i + 2],
                wid=wid,
                reserved_at=now,
                expires_at=float(flat[i + 3]),
            )
            for i in range(0, len(flat), 4)
        ]

    async def ack(self, jids: Sequence[str], day: str) -> int:
        if not jids:
            return 0
        k = self._keys
        return int(await self._run("ack", [k.res, k.exp, k.busy, k.stats], [day, *jids]))

    async def fail(self, jid: str, outcome: FailOutcome, day: str) -> bool:
        k = self._keys
        target = outcome.target or SortedSet.DEAD
        keys = [k.res, k.exp, k.busy, k.stats, k.zset(target), k.data(target)]
        data = encode_set_data(
            SetEntry(outcome.score, jid, outcome.payload, outcome.queue, outcome.jobtype)
        )
        store = "1" if outcome.target is not None else ""
        args = [jid, day, store, score_arg(outcome.score), data]
        return bool(await self._run("fail", keys, args))

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
                index[queue] = len(keys) + 1  # Lua KEYS are 1-based
                keys.append(k.queue(queue))
            entry = encode_entry(move.job)
            args += [move.entry.jid, score_arg(move.entry.score), index[queue], queue, entry]
        try:
            return int(await self._run("set_to_queue", keys, args))
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
        return int(await self._run("set_move", keys, args))

    async def remove_from_set(self, name: SortedSet, entries: Sequence[SetEntry]) -> int:
        if not entries:
            return 0
        args: list[Any] = ["exact"]
        for entry in entries:
            args += [entry.jid, score_arg(entry.score)]
        return int(
            await self._run("set_remove", [self._keys.zset(name), self._keys.data(name)], args)
        )

    async def purge_set(self, name: SortedSet, before: float, limit: int) -> int:
        if limit <= 0:
            return 0
        keys = [self._keys.zset(name), self._keys.data(name)]
        return int(await self._run("set_remove", keys, ["purge", score_arg(before), limit]))

    async def clear_set(self, name: SortedSet) -> int:
        keys = [self._keys.zset(name), self._keys.data(name)]
        return int(await self._run("set_remove", keys, ["clear"]))

    async def set_size(self, name: SortedSet) -> int:
        return int(await self._call(self._redis.zcard(self._keys.zset(name))))

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
        else:
            found = await self._scan_set(name, rev)
        kept = await filter_entries(flt, found)
        return Page(kept[offset : offset + limit], len(kept))

    async def _scan_set(self, name: SortedSet, rev: str) -> list[SetEntry]:
        """Every entry in score order, a chunk at a time (a listing, not a transition)."""
        out: list[SetEntry] = []
        start = 0
        while True:
            _, chunk = await self._read_set(name, "rank", start, start + SCAN_CHUNK - 1, rev)
            out += chunk
            if len(chunk) < SCAN_CHUNK:
                return out
            start += SCAN_CHUNK

    async def get_set_entries(self, name: SortedSet, jids: Sequence[str]) -> list[SetEntry]:
        if not jids:
            return []
        return (await self._read_set(name, "jids", *dict.fromkeys(jids)))[1]

    # ----------------------------------------------------------------- queues

    async def queue_sizes(self) -> dict[str, int]:
        names = sorted(await self._known_queues())
        if not names:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(self._keys.queue(name))
        sizes = await self._call(pipe.execute(), "queue_sizes")
        return {name: int(size) for name, size in zip(names, sizes, strict=True)}

    async def queue_heads(self, names: Sequence[str]) -> dict[str, bytes | None]:
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for name in unique:
            pipe.lindex(self._keys.queue(name), 0)
        heads = await self._call(pipe.execute(), "queue_heads")
        return {
            name: None if raw is None else decode_entry(name, raw).payload
            for name, raw in zip(unique, heads, strict=True)
        }

    async def list_queue(self, name: str, offset: int, limit: int) -> Page[QueuedJob]:
        offset, limit = max(offset, 0), max(limit, 0)
        key = self._keys.queue(name)
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(key)
        pipe.lrange(key, offset, offset + limit - 1)
        total, raw = await self._call(pipe.execute(), "list_queue")
        items = [decode_entry(name, entry) for entry in raw] if limit else []
        return Page(items, int(total))

    async def delete_queued(self, name: str, jids: Sequence[str]) -> int:
        if not jids:
            return 0
        return int(await self._run("queue_delete", [self._keys.queue(name)], list(jids)))

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
        return int(await self._run("queue_clear", [self._keys.queue(name)]))

    async def paused_queues(self) -> set[str]:
        return {m.decode() for m in await self._call(self._redis.smembers(self._keys.paused))}

    async def set_paused(self, names: Sequence[str], paused: bool) -> None:
        if not names:
            return
        k = self._keys
        mode = "pause" if paused else "resume"
        args = [self._pub, self._origin, mode, *names]
        try:
            await self._run("queues_admin", [k.queues, k.paused, k.ready], args)
        finally:
            if not paused:
                self._wake_all(names)

    async def remove_queues(self, names: Sequence[str]) -> None:
        unique = list(dict.fromkeys(names))
        if not unique:
            return
        k = self._keys
        keys = [k.queues, k.paused, k.ready, *(k.queue(n) for n in unique)]
        await self._run("queues_admin", keys, [self._pub, self._origin, "remove", *unique])

    # ----------------------------------------------------------------- counters

    async def counters(self) -> Counters:
        processed, failures = await self._call(
            self._redis.hmget(self._keys.stats, ["processed", "failures"])
        )
        return Counters(int(processed or 0), int(failures or 0))

    async def daily_counters(self, days: Sequence[str]) -> dict[str, Counters]:
        if not days:
            return {}
        fields = [f"{kind}:{day}" for day in days for kind in ("p", "f")]
        values = await self._call(self._redis.hmget(self._keys.stats, fields))
        return {
            day: Counters(int(values[2 * i] or 0), int(values[2 * i + 1] or 0))
            for i, day in enumerate(days)
        }

    # ----------------------------------------------------------------- workers

    async def save_worker(self, record: WorkerRecord) -> None:
        keys = [self._keys.workers, self._keys.worker(record.wid)]
        args = ["save", record.wid, _worker_encoder.encode(record), self._url.worker_ttl]
        await self._run("workers", keys, args)

    async def update_worker(
        self,
        wid: str,
        *,
        rss_kb: int | None = None,
        last_beat: float | None = None,
        state: str | None = None,
        connections_delta: int = 0,
        create: WorkerRecord | None = None,
    ) -> WorkerRecord | None:
        if create is not None and create.wid != wid:
            raise ValueError(f"update_worker({wid!r}) cannot create a record for {create.wid!r}")
        args: list[str | bytes | int] = [
            wid,
            self._url.worker_ttl,
            "" if rss_kb is None else int(rss_kb),
            "" if last_beat is None else score_arg(last_beat),
            state or "",
            int(connections_delta),
            b"" if create is None else _worker_encoder.encode(create),
        ]
        keys = [self._keys.workers, self._keys.worker(wid)]
        raw = await self._run("worker_update", keys, args)
        return None if raw is None else _worker_decoder.decode(raw)

    async def get_worker(self, wid: str) -> WorkerRecord | None:
        raw = await self._call(self._redis.get(self._keys.worker(wid)))
        return None if raw is None else _worker_decoder.decode(raw)

    async def list_workers(self) -> list[WorkerRecord]:
        wids = sorted(
            m.decode() for m in await self._call(self._redis.smembers(self._keys.workers))
        )
        if not wids:
            return []
        keys = [self._keys.worker(wid) for wid in wids]
        raws = await self._call(self._redis.mget(keys))
        gone = [wid for wid, raw in zip(wids, raws, strict=True) if raw is None]
        if gone:
            prune_keys = [self._keys.workers, *(self._keys.worker(w) for w in gone)]
            await self._run("workers", prune_keys, ["prune", *gone])
        return [_worker_decoder.decode(raw) for raw in raws if raw is not None]

    async def delete_worker(self, wid: str, silent_before: float | None = None) -> bool:
        keys = [self._keys.workers, self._keys.worker(wid)]
        since = "" if silent_before is None else repr(silent_before)
        return bool(await self._run("workers", keys, ["delete", wid, since]))

    # ----------------------------------------------------------------- admin

    async def flush(self) -> None:
        k = self._keys
        fixed = [k.queues, k.paused, k.res, k.exp, k.busy, k.stats]
        fixed += [key for s in SortedSet for key in (k.zset(s), k.data(s))]
        names = sorted(await self._known_queues())
        while True:
            missing = await self._run("flush", fixed + [k.queue(n) for n in names], names)
            if not missing:
                break
            names = [m.decode() for m in missing]
        await self._flush_records()
