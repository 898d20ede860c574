"""Managing cron at run time: list, show, add or change, pause, resume, delete, run now.

One API for the ``ADMIN cron.*`` operations (``conveyor.server.admin_cron``), the JSON API,
the dashboard and the CLI (which goes through ADMIN), and the first release's ``CRON`` verb,
kept as an alias (``command``). Every change is written to the store first, so every server
sees it (they poll a version record); a bad entry is refused with the message a bad file
entry gets, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from conveyor.errors import CommandError
from conveyor.manager.features.base import Feature
from conveyor.manager.features.cron_entry import CronEntry, EntryError, parse_entry
from conveyor.manager.features.cron_records import (
    END_SUFFIX,
    HISTORY_RUNS,
    SPACE_CURSOR,
    SPACE_ENTRIES,
    SPACE_PAUSED,
    Cursor,
    EntryView,
    Paused,
    RunView,
    StoredEntry,
    decode,
    encode,
    runs_space,
)
from conveyor.store.records import Record

__all__ = ["NEXT_RUNS", "SUBCOMMANDS", "CronAdmin", "CronError"]

NEXT_RUNS = 5
RUNTIME_SOURCES = ("api", "code")
SUBCOMMANDS = ("LIST", "GET", "ADD", "PAUSE", "RESUME", "DELETE", "RUN")
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class CronError(CommandError):
    """A refused cron change (``-ERR <message>`` on the wire, HTTP 400 or 404 on the API)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class CronAdmin(Feature):
    """Mixed into ``CronFeature``, whose state and planner it uses."""

    if TYPE_CHECKING:
        _file: dict[str, CronEntry]
        _runtime: dict[str, CronEntry]
        clock: Callable[[], float]

        @property
        def entries(self) -> dict[str, CronEntry]: ...

        def _changed(self) -> None: ...

        async def _bump_version(self) -> None: ...

        async def refresh(self, force: bool = False) -> None: ...

        async def _fire(
            self, entry: CronEntry, tick: float, kind: str, missed: int = 0
        ) -> str | None: ...

    # ------------------------------------------------------------------ the alias verb

    async def command(self, subcommand: str, payload: bytes) -> Any:
        """``CRON <subcommand> [<json>]``, the alias of ``ADMIN cron.*`` kept for one more
        release (docs/protocol.md): the reply's JSON value."""
        try:
            args = _object_decoder.decode(payload) if payload.strip() else {}
        except msgspec.DecodeError as exc:
            raise CronError(f"CRON {subcommand}: invalid JSON: {exc}") from None
        except RecursionError:  # msgspec has no nesting limit but Python's recursion limit
            raise CronError(f"CRON {subcommand}: invalid JSON: nested too deeply") from None
        if subcommand == "LIST":
            return {"entries": [view.to_json() for view in await self.views()]}
        if subcommand == "ADD":
            source = args.pop("source", "api")
            return (await self.add(args, source if isinstance(source, str) else "")).to_json()
        if subcommand not in SUBCOMMANDS:
            known = " ".join(SUBCOMMANDS)
            raise CronError(f"no such CRON subcommand: {subcommand} (known: {known})")
        entry_id = args.get("id")
        if not isinstance(entry_id, str) or not entry_id:
            raise CronError(f'CRON {subcommand} needs {{"id": "<entry id>"}}')
        if subcommand == "GET":
            return (await self.view(entry_id)).to_json()
        if subcommand == "PAUSE":
            return (await self.pause(entry_id)).to_json()
        if subcommand == "RESUME":
            return (await self.resume(entry_id)).to_json()
        if subcommand == "DELETE":
            await self.delete(entry_id)
            return {"deleted": entry_id}
        return {"jid": await self.run_now(entry_id)}

    # ------------------------------------------------------------------ reading

    def entry(self, entry_id: str) -> CronEntry:
        found = self.entries.get(entry_id)
        if found is None:
            raise CronError(f"no cron entry {entry_id!r}", not_found=True)
        return found

    async def views(self) -> list[EntryView]:
        """Every entry with its state, next runs and last runs: file entries first."""
        await self.refresh()
        entries = sorted(self.entries.values(), key=lambda e: (e.source != "file", e.id))
        now = self.clock()
        paused = await self.manager.store.get_records(
            SPACE_PAUSED, [entry.id for entry in entries], now
        )
        return [await self._view(entry, paused.get(entry.id), now) for entry in entries]

    async def view(self, entry_id: str) -> EntryView:
        await self.refresh()
        entry = self.entry(entry_id)
        now = self.clock()
        paused = await self.manager.store.get_records(SPACE_PAUSED, [entry_id], now)
        return await self._view(entry, paused.get(entry_id), now)

    async def _view(self, entry: CronEntry, paused: Record | None, now: float) -> EntryView:
        records = await self.manager.store.list_records(runs_space(entry.id), now, limit=10**6)
        endings = {r.key: r.value for r in records if r.key.endswith(END_SUFFIX)}
        runs = []
        for record in records:
            if not record.key.endswith(END_SUFFIX):
                view = RunView.parse(record.key, record.value, endings.get(record.key + END_SUFFIX))
                if view is not None:
                    runs.append(view)
        runs.sort(key=lambda run: run.tick, reverse=True)
        paused_at = None
        if paused is not None:
            try:
                paused_at = float(decode(paused.value, Paused).at)
            except msgspec.DecodeError:
                paused_at = now
        upcoming = entry.schedule.upcoming(now, NEXT_RUNS)
        return EntryView(entry, paused_at, upcoming, runs[:HISTORY_RUNS])

    # ------------------------------------------------------------------ changing

    async def add(self, data: Mapping[str, Any], source: str = "api") -> EntryView:
        """Add a run-time entry, or replace the one with its id. Idempotent: the same entry
        again changes nothing (``@app.cron`` registers at every start)."""
        if source not in RUNTIME_SOURCES:
            raise CronError(f"source must be one of {', '.join(RUNTIME_SOURCES)}")
        try:
            entry = parse_entry(data, source, "cron entry", self.manager.config)
        except EntryError as exc:
            raise CronError(str(exc)) from None
        if entry.id in self._file:
            raise CronError(f"cron entry {entry.id!r} comes from the config file: change it there")
        store = self.manager.store
        now = self.clock()
        current = (await store.get_records(SPACE_ENTRIES, [entry.id], now)).get(entry.id)
        if current is None or _changes(current.value, entry):
            stored = StoredEntry(entry.spec, source, entry.rev, now)
            # its ticks count from now: one due before a server plans it is late, not missed
            cursor = Cursor(now, entry.rev)
            await store.put_records(SPACE_CURSOR, [Record(entry.id, encode(cursor))])
            await store.put_records(SPACE_ENTRIES, [Record(entry.id, encode(stored))])
            await self._bump_version()
        self._runtime[entry.id] = entry
        self._changed()
        return await self.view(entry.id)

    async def pause(self, entry_id: str) -> EntryView:
        self.entry(entry_id)
        now = self.clock()
        store = self.manager.store
        if not await store.get_records(SPACE_PAUSED, [entry_id], now):
            await store.put_records(SPACE_PAUSED, [Record(entry_id, encode(Paused(now)))])
        return await self.view(entry_id)

    async def resume(self, entry_id: str) -> EntryView:
        """Resume; the ticks that passed while paused are not missed ones."""
        entry = self.entry(entry_id)
        now = self.clock()
        store = self.manager.store
        if await store.get_records(SPACE_PAUSED, [entry_id], now):
            cursor = Cursor(now, entry.rev)
            await store.put_records(SPACE_CURSOR, [Record(entry_id, encode(cursor))])
            await store.delete_records(SPACE_PAUSED, [entry_id])
        self._changed()
        return await self.view(entry_id)

    async def delete(self, entry_id: str) -> None:
        """Delete a run-time entry and its history. A file entry can only be paused."""
        entry = self.entry(entry_id)
        if entry.source == "file":
            raise CronError(
                f"cron entry {entry_id!r} comes from the config file: pause it, or remove it "
                "from the file"
            )
        store = self.manager.store
        now = self.clock()
        await store.delete_records(SPACE_ENTRIES, [entry_id])
        await self._bump_version()
        self._runtime.pop(entry_id, None)
        self._changed()
        await store.delete_records(SPACE_PAUSED, [entry_id])
        await store.delete_records(SPACE_CURSOR, [entry_id])
        space = runs_space(entry_id)
        while records := await store.list_records(space, now, limit=1000):
            await store.delete_records(space, [record.key for record in records])

    async def run_now(self, entry_id: str) -> str:
        """Push the entry's job now, paused or not; returns its jid."""
        entry = self.entry(entry_id)
        jid = await self._fire(entry, self.clock(), "manual")
        if jid is None:
            raise CronError(f"cron entry {entry_id!r} could not be run now; see the log")
        return jid


def _changes(stored_value: bytes, entry: CronEntry) -> bool:
    try:
        stored: StoredEntry = decode(stored_value, StoredEntry)
    except msgspec.DecodeError:
        return True
    return (stored.rev, stored.source, stored.spec.missed, stored.spec.id) != (
        entry.rev,
        entry.source,
        entry.spec.missed,
        entry.spec.id,
    )
