"""Giving back jobs reserved for a FETCH that never got them.

A reserve call whose reply was lost (and no retry got an answer), or whose FETCH was
cancelled while the call was on its way, may have reserved jobs that nobody will run or ACK:
they would wait for their reservation to expire (30 minutes by default). The store hands the
call's token to a ``Releaser``, which runs ``release.lua`` as soon as Redis answers again: the
jobs still reserved by that call go back to the head of their queues, and any attempt of the
call still on its way then reserves nothing (docs/design/idempotency.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from conveyor.errors import StoreError

__all__ = ["Lost", "Releaser"]

log = logging.getLogger(__name__)

DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)
STOP_WAIT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Lost:
    """A reserve call whose caller never got its jobs."""

    token: str
    wid: str
    now: float
    queues: tuple[str, ...]
    deadline: float  # monotonic: after this the token may be gone, so stop trying
    routine: bool = False  # a reserve sent ahead of a FETCH that did not come: no warning


class Releaser:
    """One background task that releases ``Lost`` calls, in order, until each one is done."""

    def __init__(self, release: Callable[[Lost], Awaitable[int]], keep_for: float) -> None:
        self._release = release
        self._keep_for = keep_for
        self._pending: collections.deque[Lost] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    def add(
        self, token: str, wid: str, now: float, queues: tuple[str, ...], routine: bool = False
    ) -> None:
        deadline = time.monotonic() + self._keep_for
        self._pending.append(Lost(token, wid, now, queues, deadline, routine))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-release")

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def _run(self) -> None:
        failures = 0
        while self._pending:
            lost = self._pending[0]
            try:
                released = await self._release(lost)
            except StoreError as exc:
                if time.monotonic() > lost.deadline:
                    self._pending.popleft()
                    log.warning(
                        "could not give back the jobs of a lost reserve call (%s): they stay "
                        "reserved until their reservation expires",
                        exc,
                    )
                    continue
                await asyncio.sleep(DELAYS[min(failures, len(DELAYS) - 1)])
                failures += 1
                continue
            failures = 0
            self._pending.popleft()
            if released and not lost.routine:
                log.warning("gave back %d jobs reserved by a lost reserve call", released)

    async def stop(self) -> None:
        """Give Redis one last chance (bounded) to take back what is pending, then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_SECONDS):
                await asyncio.shield(task)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
