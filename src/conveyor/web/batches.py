"""The Batches pages and their JSON API, over the batch feature (docs/web.md).

* ``GET /batches``: batches newest first, searchable by bid or description (``q``), each with
  a progress bar (succeeded, failed, still to run), pending/failed/total, the callbacks'
  states, whether it is committed, its children;
* ``GET /batches/{bid}``: one batch: counters, callbacks (linked to their jobs), parent and
  children, expiry, and its jobs with their tracking states, a page at a time;
* ``GET /api/batches?q=&page=&per_page=`` and ``GET /api/batches/{bid}?page=``: the same as
  JSON (``ADMIN batch.list`` / ``batch.show``'s documents).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from conveyor.errors import CommandError
from conveyor.manager.features.batches import BatchFeature
from conveyor.web.pages import render
from conveyor.web.present import DEFAULT_PER_PAGE, MAX_PER_PAGE, page_count

__all__ = ["api_batch", "api_list", "detail", "page"]


def _feature(request: Request) -> BatchFeature:
    return request.app.state.manager.feature(BatchFeature)  # type: ignore[no-any-return]


def _int(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise HTTPException(400, f"{name} must be an integer from 1 to {high}")
    return int(raw)


def _paging(request: Request) -> tuple[int, int]:
    return _int(request, "page", 1, 10**9), _int(
        request, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE
    )


async def _listing(request: Request) -> dict[str, Any]:
    search = request.query_params.get("q", "").strip()
    page, per_page = _paging(request)
    listing = await _feature(request).listing(search, (page - 1) * per_page, per_page)
    pages = page_count(listing["total"], per_page)
    return {**listing, "q": search, "page": page, "per_page": per_page, "pages": pages}


async def _shown(request: Request) -> dict[str, Any]:
    bid = request.path_params["bid"]
    page, per_page = _paging(request)
    try:
        shown = await _feature(request).show(bid, (page - 1) * per_page, per_page)
    except CommandError as exc:
        raise HTTPException(404, f"{exc.message} (it may have expired)") from None
    pages = page_count(shown["jobs_total"], per_page)
    return {**shown, "page": page, "per_page": per_page, "pages": pages}


async def page(request: Request) -> Response:
    return render(request, "batches.html", await _listing(request))


async def detail(request: Request) -> Response:
    return render(request, "batch.html", {"batch": await _shown(request)})


async def api_list(request: Request) -> Response:
    return JSONResponse(await _listing(request))


async def api_batch(request: Request) -> Response:
    return JSONResponse(await _shown(request))
