"""Worker records for the backends that keep them in a dict in this process (memory, SQLite):
workers reconnect and beat again after a restart, so they need no durable storage. Each
method runs without awaiting, so each update is atomic on the event loop."""

from __future__ import annotations

import dataclasses

from conveyor.store.base import WorkerRecord, advance_worker_state

__all__ = ["LocalWorkers", "update_in_dict"]


def update_in_dict(
    workers: dict[str, WorkerRecord],
    wid: str,
    *,
    rss_kb: int | None,
    last_beat: float | None,
    state: str | None,
    connections_delta: int,
    create: WorkerRecord | None,
) -> WorkerRecord | None:
    """Apply one ``update_worker`` to ``workers``; returns a copy of the changed record."""
    if create is not None and create.wid != wid:
        raise ValueError(f"update_worker({wid!r}) cannot create a record for {create.wid!r}")
    record = workers.get(wid)
    if record is None:
        if create is None:
            return None
        record = workers[wid] = dataclasses.replace(create, labels=list(create.labels))
    if rss_kb is not None:
        record.rss_kb = rss_kb
    if last_beat is not None:
        record.last_beat = last_beat
    record.state = advance_worker_state(record.state, state)
    record.connections += connections_delta
    if connections_delta < 0 and record.connections <= 0:
        del workers[wid]
    return dataclasses.replace(record, labels=list(record.labels))


def _copy(record: WorkerRecord) -> WorkerRecord:
    """A copy, so callers cannot change a stored record by accident."""
    return dataclasses.replace(record, labels=list(record.labels))


class LocalWorkers:
    """The worker part of the Store contract over ``self._workers`` (set by the subclass)."""

    _workers: dict[str, WorkerRecord]

    async def save_worker(self, record: WorkerRecord) -> None:
        self._workers[record.wid] = _copy(record)

    async def update_worker(
        self,
        wid: str,
        *,
        rss_kb: int | None = None,
        last_beat: float | None = None,
        state: str | None = None,
        connections_delta: int = 0,
        create: WorkerRecord | None = None,
    ) -> WorkerRecord | None:
        return update_in_dict(
            self._workers,
            wid,
            rss_kb=rss_kb,
            last_beat=last_beat,
            state=state,
            connections_delta=connections_delta,
            create=create,
        )

    async def get_worker(self, wid: str) -> WorkerRecord | None:
        record = self._workers.get(wid)
        return None if record is None else _copy(record)

    async def list_workers(self) -> list[WorkerRecord]:
        return [_copy(record) for record in self._workers.values()]

    async def delete_worker(self, wid: str, silent_before: float | None = None) -> bool:
        record = self._workers.get(wid)
        if record is None or (silent_before is not None and record.last_beat >= silent_before):
            return False
        del self._workers[wid]
        return True
