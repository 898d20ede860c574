"""The Cron page and its JSON API, over the cron feature's management API (docs/web.md).

* ``GET /cron``: entries from files, added at run time and declared in code, each with its
  schedule in words, the next runs in its time zone and the last runs with their outcome.
  ``POST /cron`` applies ``action`` = pause | resume | run | delete | add (post/redirect/get).
* ``GET /api/cron``, ``GET /api/cron/{id}``, ``POST /api/cron`` (add or replace; the body is
  a ``[[cron]]`` entry), ``POST /api/cron/{id}/{action}`` (pause, resume, run, delete).
  A refused change is ``400 {"error": "<the message a bad file entry gets>"}``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.manager.features.cron import CronFeature
from conveyor.manager.features.cron_admin import CronError
from conveyor.manager.features.cron_records import EntryView
from conveyor.manager.features.cron_schedule import tick_datetime

__all__ = ["api_action", "api_add", "api_entry", "api_list", "page"]

ACTIONS = ("pause", "resume", "run", "delete")
SOURCES = (
    ("file", "From the config file", "Paused or resumed here; changed in the file (SIGHUP)."),
    ("api", "Added at run time", "Added from this page, the JSON API or conveyor cron add."),
    ("code", "Declared in code", "Registered by @app.cron when a worker or producer starts."),
)


def _feature(request: Request) -> CronFeature:
    return request.app.state.manager.feature(CronFeature)  # type: ignore[no-any-return]


def _local(tick: float, view: EntryView) -> str:
    moment: datetime = tick_datetime(tick, view.entry.schedule.zone)
    return moment.strftime("%a %Y-%m-%d %H:%M:%S %Z")


def _present(view: EntryView) -> dict[str, Any]:
    """The template's view of an entry: the JSON plus times in the entry's time zone."""
    data = view.to_json()
    data["next_local"] = [_local(tick, view) for tick in view.next_runs]
    for run, shown in zip(view.runs, data["runs"], strict=True):
        shown["tick_local"] = _local(run.tick, view)
    data["args_json"] = json.dumps(data["job"].get("args", []))
    return data


async def _apply(feature: CronFeature, action: str, entry_id: str) -> str:
    """Run one action; the notice to show."""
    if action == "pause":
        await feature.pause(entry_id)
        return f"Paused {entry_id}."
    if action == "resume":
        await feature.resume(entry_id)
        return f"Resumed {entry_id}."
    if action == "run":
        return f"Enqueued {entry_id} now: jid {await feature.run_now(entry_id)}."
    if action == "delete":
        await feature.delete(entry_id)
        return f"Deleted {entry_id}."
    raise CronError(f"no such action {action!r}: use {', '.join(ACTIONS)}")


def _form_entry(form: Any) -> dict[str, Any]:
    """A ``[[cron]]`` entry from the page's add form."""

    def text(name: str, default: str = "") -> str:
        value = form.get(name, default)
        return value.strip() if isinstance(value, str) else default

    try:
        args = json.loads(text("args") or "[]")
    except ValueError:
        raise CronError("cron entry job.args: is not JSON (write a JSON array)") from None
    job: dict[str, Any] = {"type": text("type"), "queue": text("queue") or "default", "args": args}
    entry: dict[str, Any] = {
        "schedule": text("schedule"),
        "tz": text("tz") or "UTC",
        "missed": text("missed") or "one",
        "job": job,
    }
    if text("id"):
        entry["id"] = text("id")
    return entry


async def page(request: Request) -> Response:
    from conveyor.web.pages import _back, _form, render

    feature = _feature(request)
    if request.method == "POST":
        form = await _form(request)
        action = str(form.get("action", ""))
        try:
            if action == "add":
                added = await feature.add(_form_entry(form))
                notice = f"Saved {added.entry.id}: {added.entry.schedule.describe()}."
            else:
                notice = await _apply(feature, action, str(form.get("id", "")))
        except CronError as exc:
            notice = f"Refused: {exc.message}"
        return _back(request, notice, "/cron")
    views = [_present(view) for view in await feature.views()]
    groups = [
        (source, title, hint, [v for v in views if v["source"] == source])
        for source, title, hint in SOURCES
    ]
    editing = next((v for v in views if v["id"] == request.query_params.get("edit")), None)
    return render(request, "cron.html", {"groups": groups, "editing": editing, "count": len(views)})


def _json(content: Any, status_code: int = 200) -> Response:
    return JSONResponse(content, status_code=status_code, headers={"cache-control": "no-store"})


def _refused(exc: CronError) -> HTTPException:
    return HTTPException(404 if exc.not_found else 400, exc.message)


async def api_list(request: Request) -> Response:
    return _json({"entries": [view.to_json() for view in await _feature(request).views()]})


async def api_entry(request: Request) -> Response:
    try:
        view = await _feature(request).view(request.path_params["id"])
    except CronError as exc:
        raise _refused(exc) from None
    return _json(view.to_json())


async def api_add(request: Request) -> Response:
    from conveyor.web.api import _body

    body = await _body(request)
    try:
        view = await _feature(request).add(body)
    except CronError as exc:
        raise _refused(exc) from None
    return _json(view.to_json())


async def api_action(request: Request) -> Response:
    from conveyor.web.api import _body

    await _body(request)  # the CSRF check
    feature = _feature(request)
    entry_id, action = request.path_params["id"], request.path_params["action"]
    try:
        if action == "run":
            return _json({"ok": True, "jid": await feature.run_now(entry_id)})
        await _apply(feature, action, entry_id)
    except CronError as exc:
        raise _refused(exc) from None
    return _json({"ok": True})
