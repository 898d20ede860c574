"""``Store.update_worker`` for the backends that keep worker records in a dict in this process
(memory, SQLite): one synchronous function, so each update is atomic on the event loop."""

from __future__ import annotations

import dataclasses

from conveyor.store.base import WorkerRecord, advance_worker_state

__all__ = ["update_in_dict"]


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
