"""The JSON API (``/api/...``) for everything the pages show, plus Faktory's ``/stats`` and
``/health``. Documented in ``docs/web.md``.

Errors are ``{"error": "..."}`` with 400 (bad input), 403 (CSRF, read-only), 404, or 503
when the store cannot serve (``pages.EXCEPTION_HANDLERS``); ``/health`` answers 503 then.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.web import actions, data, limits
from conveyor.web.present import default_descending, parse_listing, set_for_route
from conveyor.web.security import CSRF_HEADER, token_is_valid

__all__ = [
    "busy",
    "cancel_job",
    "cancel_jobs",
    "health",
    "history",
    "job",
    "overview",
    "queue",
    "queue_action",
    "queues",
    "set_action",
    "set_job",
    "set_list",
    "signal_workers",
    "stats",
    "throttles",
]


def _json(content: Any, status_code: int = 200) -> Response:
    return JSONResponse(content, status_code=status_code, headers={"cache-control": "no-store"})


def _days(request: Request) -> int:
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or int(raw) not in data.HISTORY_DAYS:
        raise HTTPException(400, f"days must be one of {', '.join(map(str, data.HISTORY_DAYS))}")
    return int(raw)


def _listing(request: Request, descending: bool = False) -> Any:
    try:
        return parse_listing(request.query_params, default_descending=descending)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _set(request: Request) -> Any:
    name = set_for_route(request.path_params["set"])
    if name is None:
        raise HTTPException(404, "no such set: use retries, scheduled or dead")
    return name


async def _body(request: Request) -> dict[str, Any]:
    """The JSON body of an action, after the CSRF check: a valid ``X-CSRF-Token`` header, or
    ``Content-Type: application/json`` (cross-site pages cannot send it without a preflight)."""
    is_json = request.headers.get("content-type", "").split(";")[0].strip() == "application/json"
    if not (is_json or token_is_valid(request, request.headers.get(CSRF_HEADER))):
        raise HTTPException(403, "send Content-Type: application/json or an X-CSRF-Token header")
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(400, f"{key} must be a list of strings")
    return value


async def stats(request: Request) -> Response:
    state = request.app.state
    return _json(await data.stats_json(state.manager, state.stats))


async def health(request: Request) -> Response:
    """200 while the store serves, 503 (with the reason) while it cannot: what a load
    balancer or an orchestrator's probe looks at."""
    state = request.app.state
    health = await data.health_json(state.manager, state.stats)
    return _json(health, 200 if health["status"] == "ok" else 503)


async def overview(request: Request) -> Response:
    state = request.app.state
    return _json(await data.overview(state.manager, state.stats, _days(request)))


async def history(request: Request) -> Response:
    return _json(await data.history_view(request.app.state.manager, _days(request)))


async def queues(request: Request) -> Response:
    return _json(await data.queues_view(request.app.state.manager))


async def queue(request: Request) -> Response:
    name = request.path_params["name"]
    view = await data.queue_view(request.app.state.manager, name, _listing(request))
    if view is None:
        raise HTTPException(404, f"no queue named {name!r}")
    return _json(view)


async def queue_action(request: Request) -> Response:
    body = await _body(request)
    name, action = request.path_params["name"], request.path_params["action"]
    jids = _string_list(body, "jids")
    count = await actions.run(actions.queue_action(request.app.state.manager, name, action, jids))
    return _json({"ok": True, "count": count})


async def set_list(request: Request) -> Response:
    name = _set(request)
    listing = _listing(request, default_descending(name))
    return _json(await data.set_view(request.app.state.manager, name, listing))


async def set_job(request: Request) -> Response:
    name, jid = _set(request), request.path_params["jid"]
    view = await data.job_view(request.app.state.manager, name, jid)
    if view is None:
        raise HTTPException(404, f"no job {jid!r}")
    return _json(view)


async def set_action(request: Request) -> Response:
    name = _set(request)
    body = await _body(request)
    everything = body.get("all") is True
    jids = _string_list(body, "jids")
    call = actions.set_action(
        request.app.state.manager,
        name,
        request.path_params["action"],
        jids,
        everything=everything,
    )
    return _json({"ok": True, "count": await actions.run(call)})


async def busy(request: Request) -> Response:
    return _json(await data.busy_view(request.app.state.manager, _listing(request)))


async def signal_workers(request: Request) -> Response:
    body = await _body(request)
    everything = body.get("all") is True
    wids = _string_list(body, "wids")
    call = actions.signal_workers(
        request.app.state.manager, request.path_params["signal"], wids, everything=everything
    )
    return _json({"ok": True, "count": await actions.run(call)})


async def job(request: Request) -> Response:
    jid = request.path_params["jid"]
    queue = request.query_params.get("queue") or None
    view = await data.locate_view(request.app.state.manager, jid, queue)
    if view is None:
        raise HTTPException(404, f"no job {jid!r}")
    return _json(view)


async def throttles(request: Request) -> Response:
    """``GET /api/throttles``: what the Throttles page shows."""
    return _json(await limits.throttles_view(request.app.state.manager))


async def cancel_job(request: Request) -> Response:
    """``POST /api/jobs/{jid}/cancel``: what the cancel did (docs/cancellation.md)."""
    await _body(request)
    jid = request.path_params["jid"]
    (report,) = await actions.run(actions.cancel_jobs(request.app.state.manager, [jid]))
    return _json({"ok": report.outcome in ("cancelled", "already"), "job": report.to_json()})


async def cancel_jobs(request: Request) -> Response:
    """``POST /api/jobs/cancel`` with ``{"jids": [...]}``: one report per job."""
    body = await _body(request)
    jids = _string_list(body, "jids")
    reports = await actions.run(actions.cancel_jobs(request.app.state.manager, jids))
    cancelled = sum(1 for report in reports if report.outcome == "cancelled")
    return _json({"cancelled": cancelled, "jobs": [report.to_json() for report in reports]})
