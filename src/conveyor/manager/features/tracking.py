"""TRACK (Faktory Enterprise, reference §4.4): a job's state and progress, by jid. Mixed into
``BatchFeature``, whose marks hold the state (``conveyor.store.batches``).

``TRACK GET <jid>`` -> ``{"jid","state","updated_at","percent"?,"desc"?}``: the state is the
mark's, ``working`` when a mark ``enqueued`` or ``failed`` has a reservation, ``enqueued``
while it waits for other jobs; ``unknown`` (with ``updated_at`` empty) without a mark.
``TRACK SET {"jid","percent","desc","reserve_until"}`` writes the progress, a record of its
own (so it never races a state change), and extends the job's reservation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.errors import CommandError, JobNotFound
from conveyor.manager.features.base import Feature
from conveyor.store.batches import MarkState
from conveyor.store.records import Record
from conveyor.timefmt import format_time, parse_time

if TYPE_CHECKING:
    from conveyor.manager.features.batches import BatchSettings

__all__ = ["MAX_RESERVE_AHEAD_SECONDS", "PROGRESS_SPACE", "Tracking"]

PROGRESS_SPACE = "progress"
MAX_RESERVE_AHEAD_SECONDS = 86_400.0
"""``reserve_until`` may be at most 24 h ahead (the Ruby client's rule)."""


class TrackSetArgs(msgspec.Struct):
    jid: str = ""
    percent: Any = None
    desc: Any = None
    reserve_until: Any = None


class Progress(msgspec.Struct, omit_defaults=True):
    updated_at: float
    percent: int | None = None
    desc: str | None = None


_set_decoder = msgspec.json.Decoder(TrackSetArgs)
_progress_decoder = msgspec.json.Decoder(Progress)
_encoder = msgspec.json.Encoder()
_SHOWN = {MarkState.WAITING: "enqueued"}


class Tracking(Feature):
    settings: BatchSettings
    clock: Callable[[], float]

    async def track_get(self, jid: str) -> dict[str, Any]:
        """``TRACK GET <jid>``."""
        store = self.manager.store
        now = self.clock()
        mark = (await store.get_marks([jid], now)).get(jid)
        progress = await self._progress(jid, now)
        view: dict[str, Any] = {"jid": jid, "state": "unknown", "updated_at": ""}
        if mark is not None:
            state = _SHOWN.get(mark.state, mark.state.value)
            unfinished = mark.state in (MarkState.ENQUEUED, MarkState.FAILED)
            if unfinished and await store.get_reservation(jid) is not None:
                state = "working"
            updated = max(mark.updated_at, progress.updated_at if progress else 0.0)
            view.update(state=state, updated_at=format_time(updated))
        if progress is not None:
            if progress.percent is not None:
                view["percent"] = progress.percent
            if progress.desc is not None:
                view["desc"] = progress.desc
        return view

    async def job_extras(self, jid: str, job: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """Its tracking (when tracked), its batch (``batch``: the bid, ``batch_role``:
        ``complete``/``success`` for a callback; from its mark when its payload is gone, e.g.
        a batch job known only by its result) and the jobs it waits or waited for
        (``after``)."""
        extras: dict[str, Any] = {}
        tracking = await self.track_get(jid)
        if tracking["state"] != "unknown" or len(tracking) > 3:
            extras["tracking"] = tracking
        custom = job.get("custom") if job is not None else None
        custom = custom if isinstance(custom, dict) else {}
        bid, role = custom.get("bid") or custom.get("_bid"), custom.get("_cb")
        if not (isinstance(bid, str) and bid) and tracking["state"] != "unknown":
            mark = (await self.manager.store.get_marks([jid], self.clock())).get(jid)
            bid, role = (mark.bid, mark.role) if mark is not None else ("", "")
        if isinstance(bid, str) and bid:
            extras["batch"] = bid
            if role:
                extras["batch_role"] = str(role)
        after = custom.get("after")
        if isinstance(after, list):
            extras["after"] = [str(j) for j in after]
        return extras

    async def _progress(self, jid: str, now: float) -> Progress | None:
        found = (await self.manager.store.get_records(PROGRESS_SPACE, [jid], now)).get(jid)
        if found is None:
            return None
        try:
            return _progress_decoder.decode(found.value)
        except msgspec.DecodeError:
            return None

    async def track_set(self, payload: bytes) -> None:
        """``TRACK SET {json}``: bad input changes nothing."""
        try:
            args = _set_decoder.decode(payload or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CommandError(f"invalid TRACK SET: {exc}") from None
        if not args.jid or not isinstance(args.jid, str):
            raise CommandError("TRACK SET needs a jid")
        percent = args.percent
        if percent is not None and (
            isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100
        ):
            raise CommandError(f"percent must be an integer from 0 to 100, not {percent!r}")
        if args.desc is not None and not isinstance(args.desc, str):
            raise CommandError("desc must be a string")
        now = self.clock()
        until = self._reserve_until(args.reserve_until, now)
        if until is not None:
            # not working now: nothing to extend (and Faktory Enterprise says OK too)
            with contextlib.suppress(JobNotFound):
                await self.manager.extend(args.jid, until)
        if percent is None and args.desc is None:
            return
        previous = await self._progress(args.jid, now)
        progress = Progress(
            now,
            percent if percent is not None else (previous.percent if previous else None),
            args.desc if args.desc is not None else (previous.desc if previous else None),
        )
        keep = now + max(self.settings.tracking_seconds, MAX_RESERVE_AHEAD_SECONDS)
        record = Record(args.jid, _encoder.encode(progress), keep)
        await self.manager.store.put_records(PROGRESS_SPACE, [record])
        await self.manager.store.durable()

    @staticmethod
    def _reserve_until(value: Any, now: float) -> float | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise CommandError("reserve_until must be an RFC 3339 time")
        try:
            until = parse_time(value)
        except ValueError as exc:
            raise CommandError(f"invalid reserve_until: {exc}") from None
        if until <= now:
            raise CommandError(f"reserve_until {value} is in the past")
        if until > now + MAX_RESERVE_AHEAD_SECONDS:
            raise CommandError(f"reserve_until {value} is more than 24 hours ahead")
        return until
