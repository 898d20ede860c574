"""Endings (``conveyor.store.endings``) in Redis: ``lua/endings_end.lua``, which also keeps
completed jobs (``keep``) and moves the marks of batch and tracked jobs with an ACK (``ends``),
with the rules of ``_batches.lua``, in the same script run."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.batches import EndContext, Fired
from conveyor.store.endings import Acked, Endings, Settle
from conveyor.store.records import Record
from conveyor.store.redis.codec import (
    decode_entry,
    decode_fields,
    encode_set_data,
    lp,
    score_arg,
)
from conveyor.store.redis.completed import signal_start
from conveyor.store.redis.host import RedisHost
from conveyor.store.redis.records import expiry_arg

__all__ = ["RedisEndings", "Settled", "merge_held", "unpack"]


@dataclass(frozen=True, slots=True)
class Settled:
    """What ``settle`` asked an ACK to store, written by the ACK's own script
    (``RedisEndings._settle``): by jid, the record (None: a completed entry only, in
    ``keep``) and the reservation it was built from, which the run must end for either to be
    written (else the jid is left for a run of its own: ``stale``), and the start of the
    signal the run publishes for those of them a server waits for (``<origin><topic>``,
    b"": none; ``topic``: its registrations, ``Signals.expect``)."""

    space: str
    records: Mapping[str, tuple[Record | None, Reservation]]
    signal: bytes
    topic: str = ""


NOTES = 10_000
"""The most reservations noted at FETCH for their ACK (``RedisEndings._note``); past it the
oldest note is dropped (its ACK then reads the reservation)."""


def unpack(data: bytes) -> list[bytes]:
    """The items of lp-packed bytes (``_lib.lua``'s ``pack``)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        end = colon + 1 + int(data[pos:colon])
        out.append(data[colon + 1 : end])
        pos = end
    return out


def merge_held(acked: Acked, more: Acked, jids: Sequence[str]) -> None:
    """Add the second run's ``more`` (the jobs the first one held) to ``acked``, in ``jids``
    order."""
    acked.fired.add(more.fired)
    order = {jid: i for i, jid in enumerate(jids)}
    acked.ended = sorted([*acked.ended, *more.ended], key=lambda r: order[r.jid])


class RedisEndings(RedisHost, Endings):
    """Mixed into ``RedisStore``, whose ``_run``/``_keys`` it uses."""

    @property
    def _notes(self) -> dict[str, Reservation]:
        notes: dict[str, Reservation] | None = self.__dict__.get("_notes_of")
        if notes is None:
            notes = self.__dict__["_notes_of"] = {}
        return notes

    if TYPE_CHECKING:  # RedisStore's (and RedisBatches')

        def _ack_end_keys(self, bids: Sequence[str]) -> list[str]: ...

        def _unpack_fired(self, packed: bytes) -> Fired: ...

        async def reservations_of(self, jids: Sequence[str]) -> list[Reservation]: ...

    def _end_call(
        self,
        mode: str,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        bids: Sequence[str] = (),
        keep: Mapping[str, SetEntry] | None = None,
        settled: Settled | None = None,
    ) -> tuple[str, list[str], list[Any]]:
        """The script (``endings_end/bare`` without ``ends``), KEYS and ARGV of one run of
        endings_end.lua (also sent by ``RedisSoon.ack_returning_soon``). ``settled``: the
        records to write for the jobs whose reservation this run ends, and the signal it
        publishes for those of them some server waits for (``_settle``)."""
        k = self._keys
        done = SortedSet.COMPLETED
        queues = list(throttled)
        keys = [k.res, k.exp, k.busy, k.stats, k.ready, k.zset(done), k.data(done)]
        keys += [k.key(f"tq:{queue}") for queue in queues]
        wanted: list[Any] = ["*"] if marks is None else [len(marks), *marks]
        if ends is None:
            wanted.append("-")
        else:
            keys += self._ack_end_keys(bids)
            wanted += [score_arg(ends.now), score_arg(ends.keep_seconds), len(bids), *bids]
        args = [mode, day, self._pub, self._origin, len(queues), *queues, *wanted]
        kept = [keep[jid] for jid in dict.fromkeys(jids) if jid in keep] if keep else []
        args.append(len(kept))
        for entry in kept:
            args += [entry.jid, score_arg(entry.score), encode_set_data(entry)]
        if settled is None or not settled.records:
            args.append(0)
        else:
            space = settled.space
            waits = k.signal_waits(settled.topic)
            keys += [k.records(space), k.record_expiry(space), k.record_spaces, k.signals, waits]
            args += [len(settled.records), space]
            for jid, (record, held) in settled.records.items():
                args.append(jid)
                if record is None:  # a completed entry only (in keep): checked all the same
                    args += ["", "", ""]
                else:
                    args += [record.key, record.value, expiry_arg(record)]
                args += [lp(held.queue) + lp(held.wid), score_arg(held.reserved_at)]
            args.append(settled.signal)
        args += jids
        return ("endings_end" if ends is not None else "endings_end/bare"), keys, args

    def _end_reply(
        self, reply: bytes, throttled: Collection[str]
    ) -> tuple[Acked, list[tuple[str, str]], list[str]]:
        """What one run of endings_end.lua ended and set off, the jobs it held, with their
        batches, and those it left as their record was built from another reservation than
        the one found (stale); the throttled queues of the ended jobs are woken."""
        ended_part, fired_part, held_part, stale_part = unpack(reply)
        flat = unpack(ended_part)
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
        held = unpack(held_part) if held_part else []
        pairs = [(held[i].decode(), held[i + 1].decode()) for i in range(0, len(held), 2)]
        stale = [jid.decode() for jid in unpack(stale_part)] if stale_part else []
        fired = self._unpack_fired(fired_part) if fired_part else Fired()
        return Acked(ended, fired), pairs, stale

    async def _end(
        self,
        mode: str,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        bids: Sequence[str] = (),
        keep: Mapping[str, SetEntry] | None = None,
        settled: Settled | None = None,
    ) -> tuple[Acked, list[tuple[str, str]], list[str]]:
        """One run of the script; also returns the jobs it held, with their batches, and
        those it left stale (``_end_reply``)."""
        script, keys, args = self._end_call(
            mode, jids, day, throttled, marks, ends, bids, keep, settled
        )
        durable = settled is not None and bool(settled.records)  # as put_records
        reply = await self._write(script, keys, args, durable=durable)
        return self._end_reply(reply, throttled)

    async def ack_returning(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str] = (),
        marks: Sequence[bytes] | None = None,
        ends: EndContext | None = None,
        keep: Sequence[SetEntry] = (),
        settle: Settle | None = None,
    ) -> Acked:
        if not jids:
            return Acked([])
        settled = None
        if settle is not None:  # noted or read first; written by the ACK's own script
            settled, keep = await self._settle(jids, settle, keep)
        kept = {entry.jid: entry for entry in keep} if keep else None
        end = (day, throttled, marks, ends, kept)
        acked, stale = await self._end_held(jids, *end, settled)
        while stale and settle is not None:  # noted from another reservation: read, again
            fresh, keep = await self._settle(stale, settle, keep, noted=False)
            kept = {entry.jid: entry for entry in keep} if keep else None
            more, stale = await self._end_held(stale, day, throttled, marks, ends, kept, fresh)
            merge_held(acked, more, jids)
        if settled is not None and settled.signal and settle is not None:
            settle.signalled = True  # published by the script: the caller tells this server
        return acked

    async def _end_held(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        ends: EndContext | None,
        kept: Mapping[str, SetEntry] | None,
        settled: Settled | None,
    ) -> tuple[Acked, list[str]]:
        """The ACK's run, and a second one for the batch jobs whose batch the first could
        not name (held: their batches declared); returns what ended and the jids left stale
        (``_end_reply``)."""
        hinted = ends.bids if ends is not None else ()  # declared at once: one run
        acked, held, stale = await self._end(
            "ack", jids, day, throttled, marks, ends, hinted, kept, settled
        )
        if held:  # batch jobs whose batch the first step could not name: a step of their own
            bids = list(dict.fromkeys(bid for _, bid in held))
            again = [jid for jid, _ in held]
            more, _, late = await self._end(
                "ack", again, day, throttled, marks, ends, bids, kept, settled
            )
            merge_held(acked, more, jids)
            stale += late
        return acked, stale

    async def _settle(
        self, jids: Sequence[str], settle: Settle, keep: Sequence[SetEntry], noted: bool = True
    ) -> tuple[Settled, Sequence[SetEntry]]:
        """``settle`` asked with the reservations it wants: those noted at their FETCH on
        this server (``_note``), the others read in one round trip. The records it returns
        go into the ACK's own script, each written only when that run ends the very
        reservation it was built from (same queue, worker and reservation time; a late ACK
        stores nothing, a stale note is read again: ``stale``), with the signal announcing
        the jids it told (``Settle.topic``), published by the script for the jids a server
        waits for (``Signals.expect``: none, no PUBLISH); the entries join ``keep``. One
        round trip where a read, a write of the records, the ACK and a PUBLISH were four (two
        when a reservation must be read)."""
        notes = self._notes
        found = [note for jid in jids if (note := notes.pop(jid, None)) is not None]
        if not noted:  # a run left them stale: read them
            found = []
        known = {reservation.jid for reservation in found}
        wanted = [jid for jid in jids if jid not in known and settle.wants(jid)]
        if wanted:
            found += await self.reservations_of(wanted)
        return self._settled_of(found, settle, keep)

    def _settled_of(
        self, found: Sequence[Reservation], settle: Settle, keep: Sequence[SetEntry]
    ) -> tuple[Settled, Sequence[SetEntry]]:
        """What ``settle`` asks for the reservations ``found`` (``_settle``, once it has
        them): the records for the ACK's script, the signal, and ``keep`` with the entries."""
        records: dict[str, tuple[Record | None, Reservation]] = {}
        kept = list(keep)
        for reservation in found:
            if not settle.wants(reservation.jid):
                continue
            record, entry = settle(reservation)
            if entry is not None:
                kept.append(entry)
            if record is not None or entry is not None:
                records[reservation.jid] = (record, reservation)
        topic = getattr(settle, "topic", None)
        told = getattr(settle, "told", None)
        if records and topic and told:  # the script adds the jids some server waits for
            return Settled(settle.space, records, signal_start(self._origin, topic), topic), kept
        return Settled(settle.space, records, b""), kept

    def _note(self, reserved: Sequence[Reservation]) -> None:
        """Keep the reservations a FETCH took whose payload holds one of ``settle_marks``
        (their job asked its ACK to store something), so their ACK need not read them."""
        search, notes = self._marks_search, self._notes
        for reservation in reserved:
            if search(reservation.payload) is not None:  # one C call a job, no generator
                notes[reservation.jid] = reservation
                if len(notes) > NOTES:
                    del notes[next(iter(notes))]

    @property
    def _marks_search(self) -> Callable[[bytes], re.Match[bytes] | None]:
        """``settle_marks`` as one compiled search (made again when they change)."""
        marks = self.settle_marks
        made = self.__dict__.get("_marks_made")
        if made is None or made[0] != marks:
            pattern = re.compile(b"|".join(re.escape(mark) for mark in marks))
            made = self.__dict__["_marks_made"] = (marks, pattern.search)
        search: Callable[[bytes], re.Match[bytes] | None] = made[1]
        return search

    async def discard_reservations(self, jids: Sequence[str]) -> list[Reservation]:
        if not jids:
            return []
        acked, _, _ = await self._end("discard", jids, "")
        return acked.ended

    async def take_queued(self, queue: str, jids: Sequence[str]) -> list[QueuedJob]:
        if not jids:
            return []
        taken = await self._write(
            "endings_take", [self._keys.queue(queue)], list(jids), durable=True
        )
        return [decode_entry(queue, entry) for entry in taken]
