"""The Groups page (aggregating groups) and its JSON API (docs/web.md, docs/aggregation.md).

* ``GET /groups``: every group, soonest due first: queue, jobtype, name, size of max, the
  oldest job's age and when the group is due. ``GET /groups/detail?key=...``: one group and
  the jobs waiting in it; ``POST`` there cancels the chosen ones.
* ``GET /api/groups``, ``GET /api/groups/detail?key=...`` (or ``jobtype=``, ``group=`` and
  ``queue=``): the same as JSON.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.manager.features.aggregation import AggregateFeature, group_key
from conveyor.manager.views import plural
from conveyor.web import actions
from conveyor.web.present import parse_listing

__all__ = ["api_detail", "api_list", "detail", "page"]


def _feature(request: Request) -> AggregateFeature:
    return request.app.state.manager.feature(AggregateFeature)  # type: ignore[no-any-return]


def _key(request: Request) -> str:
    params = request.query_params
    key = params.get("key")
    if key:
        return key
    jobtype, group = params.get("jobtype"), params.get("group")
    if not jobtype or not group:
        raise HTTPException(400, "name the group: key=..., or jobtype=... and group=...")
    return group_key(params.get("queue") or "default", jobtype, group)


def _listing(request: Request) -> Any:
    try:
        return parse_listing(request.query_params)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


async def _groups(request: Request) -> dict[str, Any]:
    listing = _listing(request)
    view = await _feature(request).groups_view(listing.offset, listing.per_page)
    return {**view, "listing": listing}


async def _detail(request: Request) -> dict[str, Any]:
    listing = _listing(request)
    key = _key(request)
    view = await _feature(request).group_view(key, listing.offset, listing.per_page)
    if view is None:
        raise HTTPException(404, f"No aggregating group {key}: it may have been enqueued.")
    return {**view, "listing": listing}


async def page(request: Request) -> Response:
    from conveyor.web.pages import render

    view = await _groups(request)
    return render(request, "groups.html", view)


async def detail(request: Request) -> Response:
    from conveyor.web.pages import _back, _form, _strings, render

    if request.method == "POST":
        form = await _form(request)
        reports = await actions.run(
            actions.cancel_jobs(request.app.state.manager, _strings(form, "jid"))
        )
        cancelled = sum(1 for report in reports if report.outcome == "cancelled")
        return _back(request, f"Cancelled {plural(cancelled, 'job')}.")
    return render(request, "group.html", await _detail(request))


async def api_list(request: Request) -> Response:
    view = await _groups(request)
    view.pop("listing")
    return JSONResponse(view, headers={"cache-control": "no-store"})


async def api_detail(request: Request) -> Response:
    view = await _detail(request)
    view.pop("listing")
    return JSONResponse(view, headers={"cache-control": "no-store"})
