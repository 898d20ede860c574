"""HTML pages at Faktory's routes. GET renders; POST applies a form action through
``actions`` and redirects back (post/redirect/get), so a reload never repeats an action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from conveyor.errors import StoreError
from conveyor.manager.views import plural
from conveyor.web import actions, data, limits
from conveyor.web.present import (
    SET_ROUTES,
    default_descending,
    parse_job_key,
    parse_listing,
    route_for_set,
)
from conveyor.web.security import CSRF_FIELD, notice_is_genuine, sign_notice, token_is_valid

__all__ = [
    "EXCEPTION_HANDLERS",
    "busy",
    "dashboard",
    "favicon",
    "history_partial",
    "job_lookup",
    "queue_detail",
    "queues",
    "search",
    "set_job",
    "set_list",
    "throttles",
]


def render(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> Response:
    notice = request.query_params.get("notice", "")
    if not notice_is_genuine(request, notice, request.query_params.get("sig", "")):
        notice = ""  # a crafted link must not put words in the dashboard's mouth
    page: dict[str, Any] = {"notice": notice, **context}
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request, template, page, status_code=status_code
    )


async def _form(request: Request) -> FormData:
    """The posted form, after checking its CSRF token."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not token_is_valid(request, token if isinstance(token, str) else None):
        raise HTTPException(403, "The form has expired or did not come from this dashboard.")
    return form


def _back(request: Request, notice: str, path: str | None = None) -> RedirectResponse:
    """303 to ``path`` (default: the page that posted) with a notice for the user."""
    root = request.scope.get("root_path", "")
    target = path if path is not None else request.url.path[len(root) :]
    query = dict(request.query_params)
    query["notice"] = notice
    query["sig"] = sign_notice(request, notice)
    return RedirectResponse(f"{root}{target}?{urlencode(query)}", status_code=303)


def _strings(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


def _listing(request: Request, **kwargs: Any) -> Any:
    try:
        return parse_listing(request.query_params, **kwargs)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def dashboard(request: Request) -> Response:
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or int(raw) not in data.HISTORY_DAYS:
        raise HTTPException(400, f"days must be one of {', '.join(map(str, data.HISTORY_DAYS))}")
    state = request.app.state
    view = await data.overview(state.manager, state.stats, int(raw))
    return render(
        request,
        "dashboard.html",
        {**view, "poll_ms": int(state.poll_seconds * 1000), "day_choices": data.HISTORY_DAYS},
    )


async def history_partial(request: Request) -> Response:
    """The History chart alone, for the dashboard to redraw it live (app.js)."""
    raw = request.query_params.get("days", "7")
    if not raw.isdigit() or int(raw) not in data.HISTORY_DAYS:
        raise HTTPException(400, f"days must be one of {', '.join(map(str, data.HISTORY_DAYS))}")
    history = await data.history_view(request.app.state.manager, int(raw))
    return render(request, "_history.html", {"history": history})


async def queues(request: Request) -> Response:
    manager = request.app.state.manager
    if request.method == "POST":
        form = await _form(request)
        name, action = str(form.get("queue", "")), str(form.get("action", ""))
        count = await actions.run(actions.queue_action(manager, name, action))
        return _back(request, _queue_notice(action, name, count))
    return render(request, "queues.html", {"queues": await data.queues_view(manager)})


def _queue_notice(action: str, name: str, count: int) -> str:
    if action in ("pause", "resume"):
        return f"Queue {name} {action}d."
    return f"Deleted {plural(count, 'job')} from {name}."


async def queue_detail(request: Request) -> Response:
    manager = request.app.state.manager
    name = request.path_params["name"]
    if request.method == "POST":
        form = await _form(request)
        action = str(form.get("action", ""))
        jids = _strings(form, "jid")
        count = await actions.run(actions.queue_action(manager, name, action, jids))
        if action == "clear":
            return _back(request, _queue_notice(action, name, count), "/queues")
        return _back(request, _queue_notice(action, name, count))
    listing = _listing(request)
    view = await data.queue_view(manager, name, listing)
    if view is None:
        raise HTTPException(404, f"No queue named {name!r}.")
    return render(request, "queue.html", {**view, "listing": listing})


def _set_of(request: Request) -> Any:
    segment = request.url.path[len(request.scope.get("root_path", "")) :].split("/")[1]
    return SET_ROUTES[segment]


async def set_list(request: Request) -> Response:
    manager = request.app.state.manager
    name = _set_of(request)
    if request.method == "POST":
        form = await _form(request)
        action = str(form.get("action", ""))
        keys = _strings(form, "key")
        everything = "all" in keys
        jids = [] if everything else [_jid_of(key) for key in keys]
        count = await actions.run(
            actions.set_action(manager, name, action, jids, everything=everything)
        )
        return _back(request, _set_notice(action, count))
    listing = _listing(request, default_descending=default_descending(name))
    view = await data.set_view(manager, name, listing)
    context = {**view, "listing": listing, "actions": actions.SET_ACTIONS[name]}
    return render(request, "set.html", context)


def _set_notice(action: str, count: int) -> str:
    jobs = plural(count, "job")
    if action == "kill":
        return f"Moved {jobs} to the morgue."
    verb = {
        "retry": "Enqueued", "add_to_queue": "Enqueued", "delete": "Deleted", "cancel": "Cancelled"
    }.get(action)  # fmt: skip
    return f"{verb or action} {jobs}."


def _jid_of(key: str) -> str:
    try:
        return parse_job_key(key)[1]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def set_job(request: Request) -> Response:
    manager = request.app.state.manager
    name = _set_of(request)
    jid = _jid_of(request.path_params["key"])
    route = route_for_set(name)
    if request.method == "POST":
        form = await _form(request)
        action = str(form.get("action", ""))
        count = await actions.run(
            actions.set_action(manager, name, action, [jid], everything=False)
        )
        return _back(request, _set_notice(action, count), f"/{route}")
    view = await data.job_view(manager, name, jid)
    if view is None:
        raise HTTPException(404, f"No job {jid!r} in {route} (it may have run or been deleted).")
    return render(request, "job.html", {**view, "actions": actions.SET_ACTIONS[name]})


async def job_lookup(request: Request) -> Response:
    """A job wherever it is: a set entry redirects to its page, others are shown here. POST
    ``action=cancel`` cancels it (docs/cancellation.md)."""
    manager = request.app.state.manager
    jid = request.path_params["jid"]
    if request.method == "POST":
        form = await _form(request)
        if form.get("action") != "cancel":
            raise HTTPException(400, "unknown action: use cancel")
        (report,) = await actions.run(actions.cancel_jobs(manager, [jid]))
        return _back(request, f"{jid}: {report.message}.")
    view = await data.locate_view(manager, jid, request.query_params.get("queue") or None)
    if view is None:
        raise HTTPException(
            404,
            f"Nothing is known of job {jid!r}: not queued, scheduled, busy, retrying, "
            "aggregating, dead, completed or cancelled, and no result of it is kept.",
        )
    root = request.scope.get("root_path", "")
    for route, name in SET_ROUTES.items():
        if view["where"] == name.value:
            entry = await data.job_view(manager, name, jid)
            if entry is not None and entry["in_set"]:
                return RedirectResponse(f"{root}/{route}/{entry['key']}", status_code=303)
    return render(request, "located.html", view)


async def search(request: Request) -> Response:
    """The header's search box: a jid goes to its job; anything else searches the dead set."""
    text = request.query_params.get("q", "").strip()
    root = request.scope.get("root_path", "")
    if not text:
        return RedirectResponse(f"{root}/", status_code=303)
    # only what could be a jid (Faktory's are 8+ characters, no spaces) is looked up: the
    # lookup may scan the queues (docs/design/queued-lookup.md)
    could_be_jid = len(text) >= 8 and not any(c.isspace() for c in text)
    if could_be_jid and await data.locate_view(request.app.state.manager, text) is not None:
        return RedirectResponse(f"{root}/jobs/{quote(text, safe='')}", status_code=303)
    return RedirectResponse(f"{root}/morgue?q={quote(text, safe='')}", status_code=303)


async def busy(request: Request) -> Response:
    manager = request.app.state.manager
    if request.method == "POST":
        form = await _form(request)
        signal = str(form.get("signal", ""))
        wids = _strings(form, "wid")
        everything = "all" in wids
        count = await actions.run(
            actions.signal_workers(manager, signal, wids, everything=everything)
        )
        return _back(request, f"Sent {signal} to {plural(count, 'worker')}.")
    listing = _listing(request)
    view = await data.busy_view(manager, listing)
    return render(request, "busy.html", {**view, "listing": listing})


async def throttles(request: Request) -> Response:
    """Throttles, rate limits and backpressure now, and the jobs expired each day."""
    view = await limits.throttles_view(request.app.state.manager)
    return render(request, "throttles.html", view)


async def favicon(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return RedirectResponse(f"{root}/static/favicon.svg", status_code=301)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    context = {"status": exc.status_code, "message": exc.detail}
    return render(request, "error.html", context, status_code=exc.status_code)


async def _store_error(request: Request, exc: Exception) -> Response:
    """503 while the store cannot serve (SQLite cannot commit, Redis is down): the store's
    message in JSON for the API, in the page's alert for people; logged, rate-limited."""
    assert isinstance(exc, StoreError)
    request.app.state.manager.report_storage_error(
        f"dashboard {request.method} {request.url.path}", exc
    )
    message = f"storage error: {exc}"
    root = request.scope.get("root_path", "")
    if request.url.path.startswith(f"{root}/api/"):
        return JSONResponse({"error": message}, status_code=503)
    context = {
        "status": 503,
        "alert": message,
        "message": "Try again in a moment: conveyor retries by itself, and /health says "
        "when storage is back.",
        "back": request.url.path[len(root) :] or "/",
    }
    return render(request, "error.html", context, status_code=503)


EXCEPTION_HANDLERS: dict[Any, Any] = {HTTPException: _http_error, StoreError: _store_error}
