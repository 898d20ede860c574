"""The BATCH verbs (Faktory Enterprise, reference §4.3, plus fossas' ``CHILD``) and the views
of batches the dashboard, the CLI and ``ADMIN batch.*`` show. Mixed into ``BatchFeature``."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.errors import CommandError, InvalidJob
from conveyor.job import Job, encode_job
from conveyor.manager import validation
from conveyor.manager.features.base import Feature
from conveyor.store.base import Page
from conveyor.store.batches import BatchRecord, CallbackJob, Fired, JobMark, NewBatch
from conveyor.timefmt import format_time

if TYPE_CHECKING:
    from conveyor.manager.features.batches import BatchSettings

__all__ = ["BatchCommands", "NewBatchArgs", "batch_view", "mark_view", "status_view"]

BID_PREFIX = "b-"


class NewBatchArgs(msgspec.Struct):
    """``BATCH NEW`` as the Go, Ruby and Rust clients send it (unknown keys are ignored)."""

    bid: str = ""
    parent_bid: str = ""
    description: str = ""
    success: Job | None = None
    complete: Job | None = None


_new_decoder = msgspec.json.Decoder(NewBatchArgs)


def no_such_batch(bid: str) -> CommandError:
    return CommandError(f"no such batch {bid}")


def status_view(batch: BatchRecord) -> dict[str, Any]:
    """``BATCH STATUS``: Faktory Enterprise's fields, in its order (``parent_bid`` and
    ``description`` left out when empty, as the Go client's ``omitempty`` does)."""
    view: dict[str, Any] = {"bid": batch.bid}
    if batch.parent_bid:
        view["parent_bid"] = batch.parent_bid
    if batch.description:
        view["description"] = batch.description
    view.update(
        created_at=format_time(batch.created_at),
        total=batch.total,
        pending=batch.pending,
        failed=batch.failed,
        complete_st=batch.complete_st,
        success_st=batch.success_st,
    )
    return view


def _callback_view(job: CallbackJob | None, state: str) -> dict[str, Any] | None:
    if job is None:
        return None
    return {"jid": job.jid, "jobtype": job.jobtype, "queue": job.queue, "state": state}


def batch_view(batch: BatchRecord) -> dict[str, Any]:
    """A batch as the dashboard, ``ADMIN batch.*`` and ``conveyor batch`` show it: STATUS's
    fields and what Faktory Enterprise does not show (expiry, callbacks, children)."""
    succeeded = batch.total - batch.pending
    return {
        **status_view(batch),
        "parent_bid": batch.parent_bid,
        "description": batch.description,
        "succeeded": succeeded,
        "running": batch.pending - batch.failed,
        "committed": batch.committed,
        "committed_at": format_time(batch.committed_at) if batch.committed_at else "",
        "expires_at": format_time(batch.expires_at),
        "children": batch.children,
        "children_pending": max(batch.kids_complete, batch.kids_success),
        "complete": _callback_view(batch.complete, batch.complete_st),
        "success": _callback_view(batch.success, batch.success_st),
        "percent": round(100 * succeeded / batch.total) if batch.total else 0,
    }


def mark_view(mark: JobMark) -> dict[str, Any]:
    return {
        "jid": mark.jid,
        "state": mark.state.value,
        "updated_at": format_time(mark.updated_at),
        "role": mark.role,
    }


class BatchCommands(Feature):
    """BATCH NEW / OPEN / COMMIT / STATUS / CHILD, and reads of batches."""

    settings: BatchSettings
    clock: Callable[[], float]

    async def finish(self, fired: Fired) -> None:  # BatchFeature's
        raise NotImplementedError

    # ------------------------------------------------------------------ the verbs

    async def new_batch(self, payload: bytes) -> str:
        """``BATCH NEW {json}`` -> the new bid."""
        try:
            args = _new_decoder.decode(payload or b"{}")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CommandError(f"invalid BATCH NEW: {exc}") from None
        if args.bid:
            raise CommandError("BATCH NEW makes the bid: leave bid out or empty")
        if args.success is None and args.complete is None:
            raise CommandError("a batch needs a success or a complete callback job")
        bid = BID_PREFIX + secrets.token_urlsafe(12)
        now = self.clock()
        batch = NewBatch(
            bid,
            now,
            now + self.settings.uncommitted_seconds,
            description=args.description,
            parent_bid=args.parent_bid,
            complete=self._callback(args.complete, bid, "complete"),
            success=self._callback(args.success, bid, "success"),
        )
        error = await self.manager.store.create_batch(batch)
        if error is not None:
            raise CommandError(error)
        await self.manager.store.durable()
        return bid

    def _callback(self, job: Job | None, bid: str, role: str) -> CallbackJob | None:
        """Validate a callback job as a PUSH would, now (a bad one fails BATCH NEW)."""
        if job is None:
            return None
        if not job.jid:
            job.jid = secrets.token_hex(12)
        if job.args is None:
            job.args = []
        try:
            validation.prepare_job(job, self.manager.config)
        except InvalidJob as exc:
            raise CommandError(f"invalid {role} callback: {exc.message}") from None
        job.at = ""  # a callback runs when it is due, not later
        job.custom = {**(job.custom or {}), "_bid": bid, "_cb": role}
        return CallbackJob(job.jid, job.queue, job.jobtype, encode_job(job))

    async def reopen(self, bid: str) -> str:
        """``BATCH OPEN <bid>`` -> the bid."""
        if not await self.manager.store.open_batch(bid):
            raise no_such_batch(bid)
        await self.manager.store.durable()
        return bid

    async def commit(self, bid: str) -> None:
        """``BATCH COMMIT <bid>``: callbacks may fire from now on (at once for an empty or
        finished batch)."""
        now = self.clock()
        expires = now + self.settings.committed_seconds
        fired = await self.manager.store.commit_batch(bid, now, expires)
        if fired is None:
            raise no_such_batch(bid)
        await self.finish(fired)
        await self.manager.store.durable()

    async def adopt(self, parent: str, child: str) -> None:
        """``BATCH CHILD <bid> <child_bid>``."""
        error = await self.manager.store.adopt_batch(parent, child, self.clock())
        if error is not None:
            raise CommandError(error)
        await self.manager.store.durable()

    async def status(self, bid: str) -> dict[str, Any]:
        """``BATCH STATUS <bid>``."""
        return status_view(await self.batch(bid))

    # ------------------------------------------------------------------ reads

    async def batch(self, bid: str) -> BatchRecord:
        found = (await self.manager.store.get_batches([bid])).get(bid)
        if found is None:
            raise no_such_batch(bid)
        return found

    async def batches(self, search: str, offset: int, limit: int) -> Page[BatchRecord]:
        return await self.manager.store.list_batches(search, offset, limit)

    async def children(self, bid: str) -> list[BatchRecord]:
        store = self.manager.store
        found = await store.get_batches(await store.batch_children(bid))
        return sorted(found.values(), key=lambda b: b.created_at)

    async def jobs_of(self, bid: str, offset: int, limit: int) -> Page[JobMark]:
        return await self.manager.store.batch_jobs(bid, offset, limit)

    async def batches_of(self, bids: Sequence[str]) -> dict[str, BatchRecord]:
        return await self.manager.store.get_batches(bids)

    async def listing(self, search: str, offset: int, limit: int) -> dict[str, Any]:
        """Batches newest first, ``search`` in bid or description: the Batches page's and
        ``ADMIN batch.list``'s answer."""
        page = await self.batches(search, offset, limit)
        views = [batch_view(batch) for batch in page.items]
        return {"total": page.total, "offset": offset, "batches": views}

    async def show(self, bid: str, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """One batch with its children and a page of its jobs (``ADMIN batch.show``)."""
        batch = await self.batch(bid)
        jobs = await self.jobs_of(bid, offset, limit)
        return {
            **batch_view(batch),
            "children_batches": [batch_view(child) for child in await self.children(bid)],
            "jobs": [mark_view(mark) for mark in jobs.items],
            "jobs_total": jobs.total,
            "jobs_offset": offset,
        }
