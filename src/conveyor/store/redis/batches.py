"""Batches (``conveyor.store.batches``) in Redis: ``lua/batches_*.lua``, with the rules of
``batch_engine`` in ``lua/_batches.lua``. Every key shares the namespace's hash tag::

    {ns}:b:<bid>      HASH  a batch: counters, states, callbacks (field names: _batches.lua)
    {ns}:bj:<bid>     ZSET  its jobs by the order they joined
    {ns}:bk:<bid>     SET   its children
    {ns}:batches      ZSET  bid by creation (the listing);  {ns}:bseq  its counter
    {ns}:bexp         ZSET  bid by expires_at
    {ns}:bprop        SET   children whose parent has a milestone to count
    {ns}:marks        HASH  jid -> lp(state) lp(updated_at) lp(bid) lp(role) lp(expires_at)
    {ns}:markx        ZSET  jid by expires_at
    {ns}:waiting      HASH  jid -> a waiting job (layout: _batches.lua)
    {ns}:waitz        ZSET  waiting jid by since;   {ns}:edges  HASH dep -> its waiters

Every script is safe to run twice (a reply lost, the call sent again: ``RedisStore._run``)
without the per-call tokens of the job scripts (docs/design/idempotency.md): each change is
keyed by jid or bid and made once (a mark moves from one state to the next, a callback's state
from ``""`` to ``"1"``, a child counts in its parent under a flag, a batch is created under the
creation time the call carries).

A script may only touch the batches the caller declared: the one of each job it ends (the
caller knows it from the job or its mark), the parent in ``propagate``. A waiting job killed
by a dead dependency whose batch was not declared comes back as ``doomed``, to end again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.store.base import Page, QueuedJob, SetEntry, SortedSet
from conveyor.store.batches import (
    Batches,
    BatchRecord,
    CallbackJob,
    EndContext,
    Fired,
    JobEnd,
    JobMark,
    MarkResult,
    MarkState,
    NewBatch,
    NewMark,
    Outcome,
    WaitingJob,
)
from conveyor.store.redis.codec import decode_fields, encode_entry, lp, score_arg
from conveyor.store.redis.endings import unpack
from conveyor.store.redis.host import RedisHost
from conveyor.timefmt import format_time

if TYPE_CHECKING:
    from conveyor.store.redis.calls import Caller
    from conveyor.store.redis.scripts import Script

__all__ = ["RedisBatches"]

EXPIRE_CHUNK = 1000
_NOTHING_FIRED = b"0:" * 6 + b"1:0"
"""``packed_fired()`` of a step that set nothing off."""
_NO_LISTS = b"0:" * 6
"""The start of a ``packed_fired()`` whose lists are empty (then: the processed count)."""
_INTS = ("total", "pending", "failed", "children", "kids_complete", "kids_success")
_FLAGS = ("committed", "m_complete", "m_success", "r_complete", "r_success")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _pack(items: Sequence[str]) -> bytes:
    return b"".join(lp(item) for item in items)


def _unpack(data: bytes) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        size = int(data[pos:colon])
        out.append(data[colon + 1 : colon + 1 + size].decode())
        pos = colon + 1 + size
    return out


def _callback(fields: dict[str, bytes], prefix: str) -> CallbackJob | None:
    jid = _text(fields.get(f"{prefix}_jid"))
    if not jid:
        return None
    queue, jobtype = _text(fields.get(f"{prefix}_queue")), _text(fields.get(f"{prefix}_type"))
    return CallbackJob(jid, queue, jobtype, fields.get(f"{prefix}_payload", b""))


def _batch(raw: dict[bytes, bytes]) -> BatchRecord:
    fields = {key.decode(): value for key, value in raw.items()}
    committed_at = _text(fields.get("committed_at"))
    batch = BatchRecord(
        _text(fields["bid"]),
        float(fields["created_at"]),
        float(fields["expires_at"]),
        description=_text(fields.get("description")),
        parent_bid=_text(fields.get("parent_bid")),
        committed_at=float(committed_at) if committed_at else None,
        complete_st=_text(fields.get("complete_st")),
        success_st=_text(fields.get("success_st")),
        complete=_callback(fields, "cc"),
        success=_callback(fields, "sc"),
    )
    for name in _INTS:
        setattr(batch, name, int(fields.get(name) or 0))
    for name in _FLAGS:
        setattr(batch, name, fields.get(name) == b"1")
    return batch


def _mark(jid: str, raw: bytes) -> JobMark:
    (state, updated, bid, role, expires), _ = decode_fields(raw, 5)
    return JobMark(
        jid, MarkState(state), float(updated), bid, role, float(expires) if expires else None
    )


def _waiting(jid: str, raw: bytes) -> WaitingJob:
    (queue, jobtype, due, remaining, since, bid, doomed_by), rest = decode_fields(raw, 7)
    colon = rest.index(b":")
    size = int(rest[:colon])
    after = _unpack(rest[colon + 1 : colon + 1 + size])
    payload = rest[colon + 1 + size :]
    return WaitingJob(
        jid, queue, jobtype, payload, tuple(after), int(remaining), float(since), float(due),
        bid, doomed_by,
    )  # fmt: skip


def _fired(flat: list[Any]) -> Fired:
    sched, ended, marked, propagate, doomed, killed, processed = flat
    fired = Fired()
    for i in range(0, len(sched), 5):
        score, jid, queue, jobtype, payload = sched[i : i + 5]
        fired.scheduled.append(
            SetEntry(float(score), jid.decode(), payload, queue.decode(), jobtype.decode())
        )
    fired.ended = [jid.decode() for jid in ended]
    fired.marked = [jid.decode() for jid in marked]
    fired.propagate = [bid.decode() for bid in propagate]
    for i in range(0, len(doomed), 4):
        jid, outcome, bid, cause = (value.decode() for value in doomed[i : i + 4])
        fired.doomed.append(JobEnd(jid, Outcome(outcome), bid, cause))
    fired.killed = [jid.decode() for jid in killed]
    fired.processed = int(processed)
    return fired


class RedisBatches(RedisHost, Batches):
    """Mixed into ``RedisStore``, whose ``_run``/``_call``/``_redis``/``_keys`` it uses."""

    if TYPE_CHECKING:  # RedisStore's

        @property
        def _calls(self) -> Caller: ...

        _scripts: dict[str, Script]

    def _k(self, name: str) -> str:
        return f"{self._keys.prefix}{name}"

    def _ack_end_keys(self, bids: Sequence[str]) -> list[str]:
        """The keys ``endings_end.lua`` needs to end marks with an ACK (after its own)."""
        keys = self.__dict__.get("_ack_keys")
        if keys is None:  # the same for every ACK
            keys = [*self._settle_keys(), self._k("waiting"), self._k("waitz"), self._k("edges")]
            self.__dict__["_ack_keys"] = keys
        return keys + self._batch_keys(bids, with_jobs=False) if bids else keys

    def _unpack_fired(self, packed: bytes) -> Fired:
        """``packed_fired()`` of ``_batches.lua``, back."""
        if packed == _NOTHING_FIRED:  # most ACKs
            return Fired()
        if packed.startswith(_NO_LISTS):  # a batch job's ACK that fired nothing
            fired = Fired()
            fired.processed = int(unpack(packed[len(_NO_LISTS) :])[0])
            return fired
        parts = unpack(packed)  # most lists empty: a batch job's ACK ends only itself
        return _fired([*(unpack(part) if part else [] for part in parts[:6]), parts[6]])

    def _settle_keys(self) -> list[str]:
        k = self._keys
        return [
            self._k("marks"), self._k("markx"), k.zset(SortedSet.SCHEDULED),
            k.data(SortedSet.SCHEDULED), self._k("bprop"),
        ]  # fmt: skip

    # ----------------------------------------------------------------- batches

    async def create_batch(self, batch: NewBatch) -> str | None:
        parent = batch.parent_bid
        keys = [self._k(f"b:{batch.bid}"), self._k("batches"), self._k("bexp"), self._k("bseq")]
        if parent:
            keys += [self._k(f"b:{parent}"), self._k(f"bk:{parent}")]
        args: list[Any] = [
            batch.bid, score_arg(batch.created_at), score_arg(batch.expires_at),
            batch.description, parent,
        ]  # fmt: skip
        for job in (batch.complete, batch.success):
            args += [job.jid, job.queue, job.jobtype, job.payload] if job else ["", "", "", b""]
        error = await self._run("batches_new", keys, args)
        return None if error is None else _text(error)

    async def _state(self, mode: str, bid: str, now: float, expires_at: float) -> Fired | None:
        keys = [*self._settle_keys(), self._k(f"b:{bid}"), self._k("bexp")]
        args = [mode, bid, score_arg(now), score_arg(expires_at)]
        flat = await self._run("batches_state", keys, args)
        return None if flat is None else _fired(flat)

    async def open_batch(self, bid: str) -> bool:
        return await self._state("open", bid, 0.0, 0.0) is not None

    async def commit_batch(self, bid: str, now: float, expires_at: float) -> Fired | None:
        return await self._state("commit", bid, now, expires_at)

    async def _parent_of(self, bid: str) -> str:
        key = self._k(f"b:{bid}")
        return _text(await self._read(lambda: self._redis.hget(key, "parent_bid"), "parent"))

    async def adopt_batch(self, parent: str, child: str, now: float) -> str | None:
        while True:
            ancestors: list[str] = []
            bid = await self._parent_of(parent)
            while bid and bid not in ancestors and len(ancestors) < 1000:
                ancestors.append(bid)
                bid = await self._parent_of(bid)
            keys = [self._k(f"b:{parent}"), self._k(f"b:{child}"), self._k(f"bk:{parent}")]
            keys += [self._k(f"b:{a}") for a in ancestors]
            error = await self._run("batches_adopt", keys, [parent, child, *ancestors])
            if error is None:
                return None
            if _text(error) != "retry":
                return _text(error)

    async def get_batches(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        unique = list(dict.fromkeys(bids))
        if not unique:
            return {}
        keys = [self._k(f"b:{bid}") for bid in unique]

        def fill(pipe: Any) -> None:
            for key in keys:
                pipe.hgetall(key)

        found = await self._pipelined("get_batches", fill)
        return {bid: _batch(raw) for bid, raw in zip(unique, found, strict=True) if raw}

    async def list_batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        offset, limit = max(offset, 0), max(limit, 0)
        key = self._k("batches")
        if not search:
            total = int(await self._read(lambda: self._redis.zcard(key), "list_batches"))
            end = offset + limit - 1
            bids = await self._read(lambda: self._redis.zrevrange(key, offset, end), "list_batches")
            found = await self.get_batches([b.decode() for b in bids]) if limit else {}
            return Page(list(found.values()), total)
        needle = search.lower()
        every = await self._read(lambda: self._redis.zrevrange(key, 0, -1), "list_batches")
        bids = [b.decode() for b in every]

        def fill(pipe: Any) -> None:
            for bid in bids:
                pipe.hget(self._k(f"b:{bid}"), "description")

        descriptions = await self._pipelined("list_batches", fill)
        matching = [
            bid
            for bid, text in zip(bids, descriptions, strict=True)
            if needle in bid.lower() or needle in _text(text).lower()
        ]
        found = await self.get_batches(matching[offset : offset + limit])
        return Page(list(found.values()), len(matching))

    async def batch_children(self, bid: str) -> list[str]:
        key = self._k(f"bk:{bid}")
        members = await self._read(lambda: self._redis.smembers(key), "batch_children")
        return sorted(m.decode() for m in members)

    async def batch_jobs(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        offset, limit = max(offset, 0), max(limit, 0)
        key = self._k(f"bj:{bid}")

        def fill(pipe: Any) -> None:
            pipe.zcard(key)
            pipe.zrange(key, offset, offset + limit - 1)

        total, jids = await self._pipelined("batch_jobs", fill)
        marks = await self.get_marks([j.decode() for j in jids], 0.0) if limit else {}
        return Page(list(marks.values()), int(total))

    async def propagate(self, child: str, now: float) -> Fired:
        while True:
            parent = await self._parent_of(child)
            keys = [*self._settle_keys(), self._k(f"b:{child}"), self._k(f"b:{parent}")]
            flat = await self._run("batches_propagate", keys, [child, parent, score_arg(now)])
            if flat != b"retry":
                return _fired(flat)

    async def pending_propagations(self, limit: int) -> list[str]:
        key = self._k("bprop")
        members = await self._read(lambda: self._redis.smembers(key), "pending_propagations")
        return sorted(m.decode() for m in members)[: max(limit, 0)]

    async def expire_batches(self, now: float, limit: int) -> int:
        key, until = self._k("bexp"), score_arg(now)
        due = await self._read(
            lambda: self._redis.zrangebyscore(key, "-inf", until, 0, max(limit, 0)), "expire"
        )
        expired = 0
        for raw in due:
            bid = raw.decode()
            keys = [
                self._k(f"b:{bid}"), self._k(f"bj:{bid}"), self._k(f"bk:{bid}"),
                self._k("batches"), self._k("bexp"), self._k("bprop"), self._k("marks"),
                self._k("markx"),
            ]  # fmt: skip
            while True:
                done = int(
                    await self._run("batches_expire", keys, [bid, score_arg(now), EXPIRE_CHUNK])
                )
                if done != 0:
                    expired += done == 1
                    break
        return expired

    # ----------------------------------------------------------------- marks

    def _batch_keys(self, bids: Sequence[str], with_jobs: bool) -> list[str]:
        keys: list[str] = []
        for bid in bids:
            keys.append(self._k(f"b:{bid}"))
            if with_jobs:
                keys.append(self._k(f"bj:{bid}"))
        return keys

    async def mark_jobs(
        self, marks: Sequence[NewMark], now: float
    ) -> dict[str, tuple[MarkResult, str]]:
        if not marks:
            return {}
        keys, args = self._mark_call(marks, now, ())
        return _marked(await self._write("batches_mark", keys, args))

    def mark_jobs_soon(
        self,
        marks: Sequence[NewMark],
        now: float,
        done: Callable[[dict[str, tuple[MarkResult, str]] | None, BaseException | None], object],
    ) -> bool:
        if not marks:
            return False
        keys, args = self._mark_call(marks, now, ())
        return self._calls.write_soon(self._scripts["batches_mark"], keys, args, _read(done))

    def mark_enqueue_soon(
        self,
        marks: Sequence[NewMark],
        now: float,
        queued: Sequence[QueuedJob],
        done: Callable[[dict[str, tuple[MarkResult, str]] | None, BaseException | None], object],
    ) -> bool:
        # one script, one round trip: batches_mark.lua queues each job it finds ready
        if not marks or {m.jid for m in marks} != {job.jid for job in queued}:
            return False
        keys, args = self._mark_call(marks, now, queued)
        names = list(dict.fromkeys(job.queue for job in queued))
        read = _read(done)

        def answered(flat: Any, error: BaseException | None) -> None:
            # Even after an error: the script may have run, and our own echo is skipped.
            self._wake_all(names)
            read(flat, error)

        script = self._scripts["batches_mark"]
        # durable: a job is queued here, so where PUSHes wait for replicas, the caller marks
        # and then enqueues with enqueue.lua, which does
        return self._calls.write_soon(script, keys, args, answered, durable=True)

    def _mark_call(
        self, marks: Sequence[NewMark], now: float, queued: Sequence[QueuedJob]
    ) -> tuple[list[str], list[Any]]:
        """KEYS (after the token) and ARGV (after the token's TTL and attempt) of
        batches_mark.lua; ``queued``: the entries of the jobs it queues when ready."""
        bids = list(dict.fromkeys(m.bid for m in marks if m.bid))
        # the keys of an ACK's ends: SETTLE, waiting, waitz, edges (built once)
        keys = [*self._ack_end_keys(()), *self._batch_keys(bids, with_jobs=True)]
        entries = {job.jid: job for job in queued}
        if entries:
            keys += [self._keys.queues, self._keys.ready]
        args: list[Any] = [score_arg(now), self._pub, self._origin, len(bids), *bids]
        for mark in marks:
            expires = "" if mark.expires_at is None else score_arg(mark.expires_at)
            args += [mark.jid, mark.bid, expires]
            job = entries.get(mark.jid)
            if job is None:
                args.append("")
            else:
                keys.append(self._keys.queue(job.queue))
                args += [job.queue, encode_entry(job)]
            waiting = mark.waiting
            if waiting is None:
                args.append("0")
            else:
                after = _pack(waiting.after)
                args += [
                    "1",
                    waiting.queue,
                    waiting.jobtype,
                    score_arg(waiting.due),
                    after,
                    waiting.payload,
                ]
        return keys, args

    async def get_marks(self, jids: Sequence[str], now: float) -> dict[str, JobMark]:
        unique = list(dict.fromkeys(jids))
        if not unique:
            return {}
        key = self._k("marks")
        values = await self._read(lambda: self._redis.hmget(key, unique), "get_marks")
        found: dict[str, JobMark] = {}
        for jid, raw in zip(unique, values, strict=True):
            if raw is not None:
                mark = _mark(jid, raw)
                if mark.expires_at is None or mark.expires_at > now:
                    found[jid] = mark
        return found

    async def unfinished_marks(self, after: str, limit: int) -> list[str]:
        key = self._k("marks")
        stored = await self._read(lambda: self._redis.hgetall(key), "unfinished_marks")
        jids = sorted(
            jid.decode()
            for jid, raw in stored.items()
            if jid.decode() > after and _mark(jid.decode(), raw).unfinished
        )
        return jids[: max(limit, 0)]

    async def end_jobs(self, ends: Sequence[JobEnd], ctx: EndContext) -> Fired:
        if not ends:
            return Fired()
        k = self._keys
        bids = list(dict.fromkeys(end.bid for end in ends if end.bid))
        keys = [
            *self._settle_keys(), self._k("waiting"), self._k("waitz"), self._k("edges"),
            k.res, k.exp, k.busy, k.stats, k.zset(SortedSet.DEAD), k.data(SortedSet.DEAD),
            *self._batch_keys(bids, with_jobs=False),
        ]  # fmt: skip
        args: list[Any] = [
            ctx.day, score_arg(ctx.now), score_arg(ctx.keep_seconds), score_arg(ctx.dead_until),
            format_time(ctx.now), len(bids), *bids,
        ]  # fmt: skip
        for end in ends:
            args += [end.jid, end.outcome.value, end.cause]
        return _fired(await self._run("batches_end", keys, args))

    async def purge_marks(self, now: float, limit: int) -> int:
        keys = [self._k("marks"), self._k("markx")]
        return int(await self._run("batches_purge", keys, [score_arg(now), max(limit, 0)]))

    # ----------------------------------------------------------------- waiting jobs

    async def list_waiting(self, offset: int, limit: int) -> Page[WaitingJob]:
        offset, limit = max(offset, 0), max(limit, 0)
        key = self._k("waitz")

        def fill(pipe: Any) -> None:
            pipe.zcard(key)
            pipe.zrange(key, offset, offset + limit - 1)

        total, jids = await self._pipelined("list_waiting", fill)
        found = await self.get_waiting([j.decode() for j in jids]) if limit else {}
        return Page(list(found.values()), int(total))

    async def get_waiting(self, jids: Sequence[str]) -> dict[str, WaitingJob]:
        unique = list(dict.fromkeys(jids))
        if not unique:
            return {}
        key = self._k("waiting")
        values = await self._read(lambda: self._redis.hmget(key, unique), "get_waiting")
        return {
            jid: _waiting(jid, raw)
            for jid, raw in zip(unique, values, strict=True)
            if raw is not None
        }

    async def count_waiting(self) -> int:
        key = self._k("waiting")
        return int(await self._read(lambda: self._redis.hlen(key), "count_waiting"))

    async def _flush_batches(self) -> None:
        """Delete every key of this capability (called by ``RedisStore.flush``)."""
        key = self._k("batches")
        bids = [b.decode() for b in await self._read(lambda: self._redis.zrange(key, 0, -1))]
        keys = [
            self._k(name)
            for name in (
                "batches",
                "bseq",
                "bexp",
                "bprop",
                "marks",
                "markx",
                "waiting",
                "waitz",
                "edges",
            )
        ]
        for bid in bids:
            keys += [self._k(f"b:{bid}"), self._k(f"bj:{bid}"), self._k(f"bk:{bid}")]
        for start in range(0, len(keys), 500):
            await self._delete(keys[start : start + 500])

    async def _delete(self, keys: list[str]) -> None:
        await self._read(lambda: self._redis.delete(*keys), "flush")


def _marked(reply: bytes) -> dict[str, tuple[MarkResult, str]]:
    """batches_mark.lua's reply: pack() of jid, result, detail, ..."""
    flat = unpack(reply)
    return {
        flat[i].decode(): (MarkResult(flat[i + 1].decode()), flat[i + 2].decode())
        for i in range(0, len(flat), 3)
    }


def _read(
    done: Callable[[dict[str, tuple[MarkResult, str]] | None, BaseException | None], object],
) -> Callable[[Any, BaseException | None], None]:
    """A callback for batches_mark.lua's reply that hands ``done`` what ``mark_jobs`` would
    return, or the error."""

    def answered(reply: Any, error: BaseException | None) -> None:
        if error is not None:
            done(None, error)
            return
        try:
            results = _marked(reply)
        except Exception as exc:  # a reply we cannot read: the PUSH must still be answered
            done(None, exc)
        else:
            done(results, None)

    return answered
