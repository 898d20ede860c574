"""``@app.cron``: periodic jobs declared in code, registered with the server at start.

::

    @app.cron("*/5 * * * *", args=[7])
    @app.job(queue="reports")
    async def build_report(days: int) -> None: ...

The entry is checked where it is declared (the server's own validation, with the server's
default limits, so a typo fails at import time, not on the server), and sent with
``ADMIN cron.add`` (source ``code``) when a worker of the app starts or the app first
pushes. Registering again is a no-op on the server, so every process of a deployment may do
it; a changed schedule replaces the entry of the same id (by default the jobtype).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.errors import CommandError, ConveyorError

if TYPE_CHECKING:
    from conveyor.app.jobs import JobDef
    from conveyor.client import Client

__all__ = ["CronDeclarations"]

log = logging.getLogger("conveyor.app")

_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]")


class CronDeclarations:
    """An app's ``@app.cron`` entries, by id, and whether they reached the server yet."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self._registered = False
        self._lock = asyncio.Lock()

    def declare(
        self,
        jobdef: JobDef[Any, Any],
        schedule: str,
        *,
        args: Sequence[Any] = (),
        entry_id: str | None = None,
        tz: str = "UTC",
        missed: str = "one",
        queue: str | None = None,
        retry: int | None = None,
        reserve_for: int | None = None,
        custom: Mapping[str, Any] | None = None,
    ) -> None:
        from conveyor.manager.config import ManagerConfig
        from conveyor.manager.features.cron_entry import EntryError, parse_entry

        entry_id = entry_id or _NOT_ID.sub("-", jobdef.name)[:64]
        defaults = jobdef.defaults
        job: dict[str, Any] = {
            "type": jobdef.name,
            "queue": queue or defaults.queue,
            "args": jobdef.payload.encode(tuple(args)),
        }
        if (retry := retry if retry is not None else defaults.retry) is not None:
            job["retry"] = retry
        if (reserve := reserve_for or defaults.reserve_for) is not None:
            job["reserve_for"] = reserve
        merged = {**(defaults.custom or {}), **(custom or {})}
        if merged:
            job["custom"] = merged
        entry = {"id": entry_id, "schedule": schedule, "tz": tz, "missed": missed, "job": job}
        try:
            # the server's default limits here; the server checks its own when it registers
            parse_entry(entry, "code", f"@app.cron on {jobdef.name}", ManagerConfig())
        except EntryError as exc:
            raise ValueError(str(exc)) from None
        if entry_id in self.entries:
            raise ValueError(
                f"@app.cron on {jobdef.name}: id {entry_id!r} is declared twice; give each "
                "schedule of one job its own entry_id="
            )
        self.entries[entry_id] = entry
        self._registered = False

    async def register(self, client: Client) -> None:
        """Send every entry to the server over ``client``; once per process unless new ones
        were declared since. A server without cron (a Faktory server) is logged, not fatal;
        an entry the server refuses raises."""
        if self._registered or not self.entries:
            return
        async with self._lock:
            if self._registered:
                return
            for entry in self.entries.values():
                try:
                    await client.cron("add", {**entry, "source": "code"})
                except CommandError as exc:
                    if exc.message.lower().startswith("unknown command"):  # Faktory
                        log.warning("the server has no cron; @app.cron entries not registered")
                        break
                    raise
            self._registered = True

    async def register_with(self, connect: Any) -> None:
        """``register`` over a connection of its own (``connect`` makes one)."""
        if self._registered or not self.entries:
            return
        client = await connect()
        try:
            await self.register(client)
        except ConveyorError as exc:
            log.error("cannot register the @app.cron entries: %s", exc)
            raise
        finally:
            await client.close()
