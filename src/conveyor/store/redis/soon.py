"""The hot transitions of the Redis store with a callback: PUSH, FETCH and ACK without a task.

``enqueue``, ``reserve``, ``ack`` and ``ack_returning`` are coroutines: the server ran each in
a task of its own (three per job), whose frames every reply had to climb back up.
``enqueue_soon``, ``reserve_soon``, ``ack_soon`` and ``ack_returning_soon`` send the same
script, with its token, through the store's own connection (``Caller.write_soon``) and call
back from the reply's own step. A lost reply or any other
trouble goes on in a task, with the same token and retries as ``write`` (calls.py), and calls
back once that ends. Mixed into ``RedisStore``; the argument lists are built here for both
forms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from conveyor.store.base import QueuedJob, Reservation, SetEntry, SortedSet
from conveyor.store.batches import EndContext
from conveyor.store.endings import Acked, Settle
from conveyor.store.redis.calls import OutcomeUnknown
from conveyor.store.redis.codec import encode_entry, encode_set_data, lp, score_arg
from conveyor.store.redis.endings import RedisEndings, Settled, merge_held
from conveyor.store.redis.records import expiry_arg

if TYPE_CHECKING:
    from conveyor.store.redis.calls import Caller
    from conveyor.store.redis.release import Releaser
    from conveyor.store.redis.scripts import Script
    from conveyor.store.redis.store import Keys

__all__ = ["RedisSoon"]

COMPLETED = SortedSet.COMPLETED
_later: set[asyncio.Task[None]] = set()  # second runs of ACKs the pipe could not take at once


class RedisSoon(RedisEndings):
    """The callback forms of enqueue, reserve and ack (see the module docstring)."""

    _keys: Keys
    _scripts: dict[str, Script]
    _releaser: Releaser | None

    if TYPE_CHECKING:  # RedisStore's

        @property
        def _calls(self) -> Caller: ...

    # ----------------------------------------------------------------- argument lists

    def _enqueue_call(self, jobs: Sequence[QueuedJob]) -> tuple[list[str], list[Any], list[str]]:
        """KEYS and ARGV of enqueue.lua, and the queues it pushes to."""
        by_queue: dict[str, list[bytes]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(encode_entry(job))
        keys = [self._keys.queues, self._keys.ready]
        args: list[Any] = [self._pub, self._origin]
        for name, entries in by_queue.items():
            keys.append(self._keys.queue(name))
            args += [name, len(entries), *entries]
        return keys, args, list(by_queue)

    def _reserve_call(
        self, names: list[str], wid: str, now: float, count: int
    ) -> tuple[list[str], list[Any]]:
        k = self._keys
        keys = [k.paused, k.res, k.exp, k.busy, *(k.queue(n) for n in names)]
        return keys, [wid, score_arg(now), count, *names]

    def _reserved(self, flat: list[bytes], wid: str, now: float) -> list[Reservation]:
        reserved = [
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
        if self.settle_marks:
            self._note(reserved)
        return reserved

    def _lost_reserve(
        self, token: str, wid: str, now: float, names: list[str], routine: bool = False
    ) -> None:
        """The call may have reserved jobs its caller will never get: give them back
        (``routine``: a reserve sent ahead of a FETCH, not a fault)."""
        assert self._releaser is not None
        self._releaser.add(token, wid, now, tuple(names), routine)

    # ----------------------------------------------------------------- with a callback

    def enqueue_soon(
        self, jobs: Sequence[QueuedJob], done: Callable[[None, BaseException | None], object]
    ) -> bool:
        keys, args, names = self._enqueue_call(jobs)

        def answered(_result: Any, error: BaseException | None) -> None:
            # Even after an error: the script may have run, and our own echo is skipped.
            self._wake_all(names)
            done(None, error)

        return self._calls.write_soon(self._scripts["enqueue"], keys, args, answered, durable=True)

    def reserve_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        done: Callable[[list[Reservation] | None, BaseException | None], bool],
    ) -> bool:
        return self._reserve_soon(queues, wid, now, count, done) is not None

    def reserve_ahead_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        done: Callable[[list[Reservation] | None, BaseException | None], bool],
    ) -> Callable[[], None] | None:
        names = list(dict.fromkeys(queues))
        token = self._reserve_soon(names, wid, now, count, done, ahead=True)
        if token is None:
            return None
        return partial(self._lost_reserve, token, wid, now, names, True)

    def _reserve_soon(
        self,
        queues: Sequence[str],
        wid: str,
        now: float,
        count: int,
        done: Callable[[list[Reservation] | None, BaseException | None], bool],
        ahead: bool = False,
    ) -> str | None:
        """``reserve_soon``; the call's token, None when nothing was sent. ``ahead``: for a
        FETCH that has not come yet, whose jobs nobody taking is routine."""
        names = list(dict.fromkeys(queues))
        if not names or count <= 0:
            return None
        keys, args = self._reserve_call(names, wid, now, count)
        calls = self._calls
        token = calls.new_token()

        def answered(flat: Any, error: BaseException | None) -> None:
            if error is not None:
                if isinstance(error, OutcomeUnknown):
                    self._lost_reserve(token, wid, now, names)
                done(None, error)
                return
            reserved = self._reserved(flat, wid, now)
            if not done(reserved, None) and reserved:  # its FETCH went away meanwhile
                self._lost_reserve(token, wid, now, names, ahead)

        sent = calls.write_soon(self._scripts["reserve"], keys, args, answered, token=token)
        return token if sent else None

    def ack_soon(
        self,
        jids: Sequence[str],
        day: str,
        done: Callable[[int | None, BaseException | None], object],
    ) -> bool:
        if not jids:
            return False
        k = self._keys

        def answered(result: Any, error: BaseException | None) -> None:
            done(None if error is not None else int(result), error)

        keys = [k.res, k.exp, k.busy, k.stats]
        return self._calls.write_soon(self._scripts["ack"], keys, [day, *jids], answered)

    def ack_returning_soon(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        done: Callable[[list[Reservation] | None, BaseException | None], object],
    ) -> bool:
        if not jids:
            return False
        # without ends: the bare script (the caller knows these jobs carry no marks)
        script, keys, args = self._end_call("ack", jids, day, throttled, marks)

        def answered(reply: Any, error: BaseException | None) -> None:
            if error is not None:
                done(None, error)
                return
            try:
                acked, _held, _stale = self._end_reply(reply, throttled)
            except Exception as exc:  # a reply we cannot read: the ACK must still be answered
                done(None, exc)
            else:
                done(acked.ended, None)

        return self._calls.write_soon(self._scripts[script], keys, args, answered)

    def ack_settled_soon(
        self,
        jid: str,
        day: str,
        settle: Settle,
        done: Callable[[Acked | None, BaseException | None], object],
    ) -> bool:
        # The reservation noted at its FETCH is settled here, and its records travel in the
        # ACK's one run of endings_settle.lua (only a job not noted takes the long way, which
        # reads it). A note from another reservation than the one the run finds (the job was
        # reserved again since) stores nothing there and comes back stale: the rest goes on
        # in a task, as ack_returning's loop (read, settle, run again).
        note = self._notes.get(jid)
        if note is None:
            return False
        settled, kept = self._settled_of((note,), settle, ())
        keys, args = self._settle_call(note, day, settled, kept)

        def answer(result: Acked | None, error: BaseException | None) -> None:
            done(result, error)

        def answered(reply: Any, error: BaseException | None) -> None:
            if error is not None:
                done(None, error)
            elif reply == b"s":
                self._go_on_later(self.ack_returning((jid,), day, settle=settle), answer)
            else:
                if settled.signal:
                    settle.signalled = True  # the script published it: the caller tells us
                done(Acked([note] if reply == b"1" else []), None)

        durable = bool(settled.records)  # as _end
        script = self._scripts["endings_settle"]
        if not self._calls.write_soon(script, keys, args, answered, durable=durable):
            return False
        del self._notes[jid]
        return True

    @property
    def _settled_keys(self) -> dict[tuple[str, str], list[str]]:
        made: dict[tuple[str, str], list[str]] | None = self.__dict__.get("_settled_keys_of")
        if made is None:
            made = self.__dict__["_settled_keys_of"] = {}
        return made

    def _settle_call(
        self, note: Reservation, day: str, settled: Settled, kept: Sequence[SetEntry]
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of endings_settle.lua: the ACK of the one reservation ``note``, with
        the record and completed entry ``settle`` made of it (``_settled_of``)."""
        space = settled.space
        keys = self._settled_keys.get((space, settled.topic))
        if keys is None:  # the same few every time: made once
            k = self._keys
            keys = [k.res, k.exp, k.busy, k.stats, k.zset(COMPLETED), k.data(COMPLETED)]
            keys += [k.records(space), k.record_expiry(space), k.record_spaces, k.signals]
            keys.append(k.signal_waits(settled.topic))
            self._settled_keys[space, settled.topic] = keys
        record = settled.records.get(note.jid, (None, None))[0]
        args: list[Any] = [day, self._pub, note.jid, lp(note.queue) + lp(note.wid)]
        args.append(score_arg(note.reserved_at))
        if record is None:
            args += ["", "", "", space]
        else:
            args += [record.key, record.value, expiry_arg(record), space]
        if kept:
            args += [score_arg(kept[0].score), encode_set_data(kept[0])]
        else:
            args += ["", ""]
        args.append(settled.signal)
        return keys, args

    def ack_ending_soon(
        self,
        jids: Sequence[str],
        day: str,
        throttled: Collection[str],
        marks: Sequence[bytes] | None,
        ends: EndContext,
        done: Callable[[Acked | None, BaseException | None], object],
    ) -> bool:
        if not jids:
            return False
        # the batches noted at FETCH declared at once: a batch job's ACK is one run; a job
        # whose batch was not (reserved elsewhere, a wrong hint) is held, then ended by a
        # second run with its batch declared, as ack_returning does
        script, keys, args = self._end_call("ack", jids, day, throttled, marks, ends, ends.bids)
        write_soon = self._calls.write_soon

        def read(reply: Any) -> tuple[Acked, list[tuple[str, str]]]:
            acked, held, _stale = self._end_reply(reply, throttled)  # no records: none stale
            return acked, held

        def answered(reply: Any, error: BaseException | None) -> None:
            if error is not None:
                done(None, error)
                return
            try:
                acked, held = read(reply)
            except Exception as exc:  # a reply we cannot read: the ACK must still be answered
                done(None, exc)
                return
            if not held:
                done(acked, None)
                return
            bids = list(dict.fromkeys(bid for _, bid in held))
            again = [jid for jid, _ in held]
            call = self._end_call("ack", again, day, throttled, marks, ends, bids)

            def answered_again(reply: Any, error: BaseException | None) -> None:
                if error is not None:
                    done(None, error)
                    return
                try:
                    more, _ = read(reply)
                except Exception as exc:
                    done(None, exc)
                    return
                merge_held(acked, more, jids)
                done(acked, None)

            if not write_soon(self._scripts[call[0]], call[1], call[2], answered_again):
                self._go_on_later(self._write(*call), answered_again)

        return write_soon(self._scripts[script], keys, args, answered)

    def _go_on_later(
        self, work: Coroutine[Any, Any, Any], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Await ``work`` in a task and call ``done`` with what it returns or raises."""

        async def run() -> None:
            try:
                result = await work
            except Exception as exc:
                done(None, exc)
            else:
                done(result, None)

        task = asyncio.get_running_loop().create_task(run())
        _later.add(task)
        task.add_done_callback(_later.discard)
