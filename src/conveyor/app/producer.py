"""The producer side's pipe to the server: ``Producer`` (a connection pool, or an inline runner
in tests), PUSHB in chunks cut by count and size, and ``PushResult``, the outcome of one job
of a bulk push."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import msgspec

from conveyor.client import Client
from conveyor.errors import CommandError, NotUnique
from conveyor.job import Job, encode_job
from conveyor.pool import ConnectionPool

__all__ = ["PUSH_BULK_MAX_BYTES", "PoolProducer", "Producer", "PushMiddleware", "PushResult"]

T = TypeVar("T")

PUSH_BULK_CHUNK = 1000  # Faktory's recommended PUSHB batch size
PUSH_BULK_MAX_BYTES = 1024 * 1024
"""The longest PUSHB line ``App.push_bulk`` sends (``App(push_bulk_max_bytes=...)``): a
sixteenth of a conveyor server's default ``max_line_bytes`` (16 MiB), since a client cannot
know the server's setting; a job longer than this alone goes in a PUSHB of its own."""
_PUSHB_FRAME_BYTES = len(b"PUSHB []\r\n")


@dataclass(frozen=True, slots=True)
class PushResult:
    """The outcome of one job of a bulk push: ``error`` is ``None`` when it was accepted."""

    jid: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exception(self) -> CommandError | None:
        """The error as the exception a PUSH of this job alone raises: ``NotUnique``,
        ``QueueFull``, ``InvalidJob``, ... (None when the job was accepted)."""
        if self.error is None:
            return None
        if self.error.startswith(NotUnique.code + " "):
            return CommandError.from_reply(self.error)
        return CommandError.from_reply("ERR " + self.error)


PushMiddleware = Callable[[Sequence[Job], Callable[[], Awaitable[None]]], Awaitable[None]]
"""``async def mw(jobs, call_next)``: around each push (see ``App.use_push``)."""


class Producer(Protocol):
    """Where pushes go: a connection pool normally, an inline runner in tests."""

    async def push(self, job: Job) -> None: ...

    async def push_bulk(self, jobs: Sequence[Job]) -> dict[str, str]: ...

    async def call(self, command: Callable[[Client], Awaitable[T]]) -> T:
        """Run another command (BATCH, TRACK, ...) on one of its connections."""
        ...

    async def close(self) -> None: ...


class PoolProducer:
    def __init__(self, pool: ConnectionPool[Client], max_bytes: int = PUSH_BULK_MAX_BYTES) -> None:
        self.pool = pool
        self.max_bytes = max_bytes

    async def push(self, job: Job) -> None:
        await self.pool.run(lambda client: client.push(job))

    async def call(self, command: Callable[[Client], Awaitable[T]]) -> T:
        return await self.pool.run(command)

    async def push_bulk(self, jobs: Sequence[Job]) -> dict[str, str]:
        """PUSHB in chunks, two in flight on one connection (so they land in order).

        A chunk refused as a whole gives its error to each of its jobs. When the connection
        breaks, the pool reconnects and the chunks not yet answered are sent again (so, as
        with PUSH, a chunk whose reply was lost can be enqueued twice: at-least-once).
        """
        chunks = _pushb_chunks(jobs, PUSH_BULK_CHUNK, self.max_bytes)
        lines = [line for _, line in chunks]
        outcomes: list[dict[str, str] | CommandError] = []
        while len(outcomes) < len(chunks):
            await self.pool.run(
                lambda client: client.push_bulk_chunks(lines[len(outcomes) :], outcomes)
            )
        errors: dict[str, str] = {}
        for (chunk, _), outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, CommandError):
                message = outcome.message if outcome.code == "ERR" else str(outcome)
                errors.update((job.jid, message) for job in chunk)
            else:
                errors.update(outcome)
        return errors

    async def close(self) -> None:
        await self.pool.close()


def _pushb_chunks(
    jobs: Sequence[Job], max_jobs: int, max_bytes: int
) -> list[tuple[Sequence[Job], bytes]]:
    """``jobs`` cut into PUSHB arguments (JSON arrays) of at most ``max_jobs`` jobs and, but
    for a job longer than that alone, ``max_bytes`` a line. A chunk of ``max_jobs`` is
    encoded in one call; only one over ``max_bytes`` is encoded again job by job, to cut it."""
    chunks: list[tuple[Sequence[Job], bytes]] = []
    for start in range(0, len(jobs), max_jobs):
        chunk = jobs[start : start + max_jobs]
        body = _encode_jobs(chunk)
        if len(body) + _PUSHB_FRAME_BYTES <= max_bytes:
            chunks.append((chunk, body))
        else:
            chunks += _cut_by_size(chunk, max_bytes)
    return chunks


_encode_jobs = msgspec.json.Encoder().encode


def _cut_by_size(jobs: Sequence[Job], max_bytes: int) -> list[tuple[Sequence[Job], bytes]]:
    chunks: list[tuple[Sequence[Job], bytes]] = []
    start, size = 0, _PUSHB_FRAME_BYTES
    encoded: list[bytes] = []
    for index, job in enumerate(jobs):
        body = encode_job(job)
        if encoded and size + len(body) > max_bytes:
            chunks.append((jobs[start:index], b"[" + b",".join(encoded) + b"]"))
            start, size, encoded = index, _PUSHB_FRAME_BYTES, []
        encoded.append(body)
        size += len(body) + 1  # and its comma
    if encoded:
        chunks.append((jobs[start:], b"[" + b",".join(encoded) + b"]"))
    return chunks
