"""``GET /metrics``: the server's Prometheus metrics (docs/operations.md lists them).

Behind the dashboard's password like every page but ``/health``: Prometheus sends it with
``basic_auth`` in the scrape config (any user name).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from conveyor.metrics.server import CONTENT_TYPE, ServerCollector

__all__ = ["metrics"]


async def metrics(request: Request) -> Response:
    collector: ServerCollector = request.app.state.metrics
    body = await collector.render()
    return Response(body, media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
