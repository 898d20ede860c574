"""Batches and tracking on the producer side, over Faktory Enterprise's BATCH and TRACK
commands only, so they work against a Faktory Enterprise server too (docs/batches.md).

``async with app.batch(...) as b:`` creates the batch on entry; every job pushed through the
app inside the block (in this task, and the tasks it starts) joins it; the block commits it
on a normal exit. An exception leaves it uncommitted (it expires; the jobs already pushed run
anyway), as the Go client's ``Batch.Jobs`` does. A batch started inside another one's block
is its child: the parent's callbacks wait for it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.job import Job, encode_job
from conveyor.timefmt import parse_time

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.app.workflows import Signature

__all__ = ["BatchBlock", "BatchRef", "BatchStatus", "TrackInfo", "current_bid", "in_batch"]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conveyor_batch", default=None
)


def current_bid() -> str | None:
    """The bid of the batch block this code runs in, if any."""
    return _current.get()


def in_batch(job: Job) -> Job:
    """``job`` joined to the current batch block (unless it names a batch already)."""
    bid = _current.get()
    if bid is not None and not (job.custom and "bid" in job.custom):
        job.custom = {**(job.custom or {}), "bid": bid}
    return job


def _time(text: str) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromtimestamp(parse_time(text), dt.UTC)


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """``BATCH STATUS``. ``complete_state``/``success_state``: ``""`` (not yet), ``"1"``
    (callback enqueued), ``"2"`` (callback finished)."""

    bid: str
    created_at: dt.datetime | None
    total: int
    pending: int
    failed: int
    complete_state: str
    success_state: str
    description: str = ""
    parent_bid: str = ""

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> BatchStatus:
        return cls(
            bid=str(data["bid"]),
            created_at=_time(str(data.get("created_at") or "")),
            total=int(data.get("total", 0)),
            pending=int(data.get("pending", 0)),
            failed=int(data.get("failed", 0)),
            complete_state=str(data.get("complete_st", "")),
            success_state=str(data.get("success_st", "")),
            description=str(data.get("description", "")),
            parent_bid=str(data.get("parent_bid", "")),
        )

    @property
    def complete(self) -> bool:
        """Every job ran at least once (its complete callback, if any, was enqueued)."""
        return self.pending == self.failed and self.complete_state != ""

    @property
    def succeeded(self) -> bool:
        return self.pending == 0 and self.success_state != ""


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """``TRACK GET``: ``state`` is ``unknown``, ``enqueued``, ``working``, ``success``,
    ``failed`` or ``dead``."""

    jid: str
    state: str
    updated_at: dt.datetime | None
    percent: int | None = None
    desc: str | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> TrackInfo:
        percent = data.get("percent")
        return cls(
            jid=str(data["jid"]),
            state=str(data.get("state", "unknown")),
            updated_at=_time(str(data.get("updated_at") or "")),
            percent=int(percent) if percent is not None else None,
            desc=data.get("desc"),
        )


def _callback_job(callback: Signature | Job | None) -> dict[str, Any] | None:
    if callback is None:
        return None
    job = callback if isinstance(callback, Job) else callback.build()
    encoded: dict[str, Any] = msgspec.json.decode(encode_job(job))
    return encoded


class BatchBlock:
    """``async with app.batch(...)`` / ``app.open_batch(bid)``: see the module docstring."""

    def __init__(
        self,
        app: App,
        *,
        bid: str | None = None,
        description: str = "",
        on_success: Signature | Job | None = None,
        on_complete: Signature | Job | None = None,
        parent: str | None = None,
    ) -> None:
        if bid is None and on_success is None and on_complete is None:
            raise ValueError("a batch needs on_success= or on_complete= (a job to call back)")
        self.app = app
        self.bid = bid or ""
        self._reopen = bid is not None
        self._spec: dict[str, Any] = {}
        if not self._reopen:
            self._spec = {"description": description}
            parent = parent if parent is not None else _current.get()
            if parent:
                self._spec["parent_bid"] = parent
            for key, callback in (("success", on_success), ("complete", on_complete)):
                encoded = _callback_job(callback)
                if encoded is not None:
                    self._spec[key] = encoded
        self._token: contextvars.Token[str | None] | None = None

    async def __aenter__(self) -> BatchBlock:
        if self._reopen:
            await self.app.call(lambda client: client.batch_open(self.bid))
        else:
            self.bid = await self.app.call(lambda client: client.batch_new(self._spec))
        self._token = _current.set(self.bid)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if exc_type is None:
            await self.app.call(lambda client: client.batch_commit(self.bid))

    async def status(self) -> BatchStatus:
        return await self.app.batch_status(self.bid)


class BatchRef:
    """The batch a running job belongs to (``ctx.batch``): reopen it to add jobs."""

    def __init__(self, app: App, bid: str) -> None:
        self.app = app
        self.bid = bid

    def __repr__(self) -> str:
        return f"<BatchRef {self.bid}>"

    def open(self) -> BatchBlock:
        """``async with ctx.batch.open():`` pushes inside join this batch, committed on exit."""
        return self.app.open_batch(self.bid)

    async def status(self) -> BatchStatus:
        return await self.app.batch_status(self.bid)
