"""The ``cron.*`` operations of ``ADMIN`` (docs/protocol.md): the server's periodic jobs.

``cron.list``, ``cron.show``, ``cron.add``, ``cron.pause``, ``cron.resume``, ``cron.delete``
and ``cron.run`` call the cron feature's management API (``CronAdmin``), the one the
dashboard, its JSON API, ``conveyor cron`` and ``@app.cron`` use. The ``CRON <SUB> [json]``
verb of the first release stays as an alias of these for one more release.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from conveyor.errors import CommandError
from conveyor.manager import Manager
from conveyor.manager.features.cron import CronFeature

__all__ = ["CRON_OPS"]


class _EntryId(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class _NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


def _args(op: str, kind: type[Any], raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CommandError(f"invalid ADMIN {op} arguments: {exc}") from None
    except RecursionError:  # msgspec stops at Python's recursion limit, not a limit of its own
        raise CommandError(f"invalid ADMIN {op} arguments: nested too deeply") from None


def _cron(manager: Manager) -> CronFeature:
    return manager.feature(CronFeature)


async def _list(manager: Manager, raw: bytes) -> Any:
    _args("cron.list", _NoArgs, raw)
    return {"entries": [view.to_json() for view in await _cron(manager).views()]}


async def _show(manager: Manager, raw: bytes) -> Any:
    entry_id = _args("cron.show", _EntryId, raw).id
    return (await _cron(manager).view(entry_id)).to_json()


async def _add(manager: Manager, raw: bytes) -> Any:
    """The arguments are the ``[[cron]]`` entry, plus ``"source": "code"`` from
    ``@app.cron`` (default ``"api"``)."""
    entry: dict[str, Any] = _args("cron.add", dict[str, Any], raw)
    source = entry.pop("source", "api")
    return (await _cron(manager).add(entry, source if isinstance(source, str) else "")).to_json()


async def _pause(manager: Manager, raw: bytes) -> Any:
    return (await _cron(manager).pause(_args("cron.pause", _EntryId, raw).id)).to_json()


async def _resume(manager: Manager, raw: bytes) -> Any:
    return (await _cron(manager).resume(_args("cron.resume", _EntryId, raw).id)).to_json()


async def _delete(manager: Manager, raw: bytes) -> Any:
    entry_id = _args("cron.delete", _EntryId, raw).id
    await _cron(manager).delete(entry_id)
    return {"deleted": entry_id}


async def _run(manager: Manager, raw: bytes) -> Any:
    return {"jid": await _cron(manager).run_now(_args("cron.run", _EntryId, raw).id)}


CRON_OPS: dict[str, Callable[[Manager, bytes], Awaitable[Any]]] = {
    "cron.list": _list,
    "cron.show": _show,
    "cron.add": _add,
    "cron.pause": _pause,
    "cron.resume": _resume,
    "cron.delete": _delete,
    "cron.run": _run,
}
