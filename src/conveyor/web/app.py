"""The dashboard's app factory: one route table, state on ``app.state``, no module globals."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from conveyor import __version__
from conveyor.manager.types import ServerStats
from conveyor.manager.views import plural
from conveyor.metrics.server import ServerCollector
from conveyor.timefmt import human_duration
from conveyor.web import api, batches, cron, groups, metrics, pages
from conveyor.web.present import human_count, pretty_json, relative_time
from conveyor.web.security import SecurityMiddleware, csrf_token_for

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = ["create_app"]

PACKAGE_DIR = Path(__file__).parent

ROUTES: list[BaseRoute] = [
    Route("/", pages.dashboard, name="dashboard"),
    Route("/queues", pages.queues, methods=["GET", "POST"], name="queues"),
    Route("/queues/{name}", pages.queue_detail, methods=["GET", "POST"], name="queue"),
    Route("/busy", pages.busy, methods=["GET", "POST"], name="busy"),
    Route("/retries", pages.set_list, methods=["GET", "POST"], name="retries"),
    Route("/retries/{key}", pages.set_job, methods=["GET", "POST"], name="retry"),
    Route("/scheduled", pages.set_list, methods=["GET", "POST"], name="scheduled"),
    Route("/scheduled/{key}", pages.set_job, methods=["GET", "POST"], name="scheduled_job"),
    Route("/morgue", pages.set_list, methods=["GET", "POST"], name="morgue"),
    Route("/morgue/{key}", pages.set_job, methods=["GET", "POST"], name="dead_job"),
    Route("/completed", pages.set_list, methods=["GET", "POST"], name="completed"),
    Route("/completed/{key}", pages.set_job, methods=["GET", "POST"], name="completed_job"),
    Route("/jobs/{jid}", pages.job_lookup, methods=["GET", "POST"], name="job"),
    Route("/groups", groups.page, name="groups"),
    Route("/groups/detail", groups.detail, methods=["GET", "POST"], name="group"),
    Route("/search", pages.search, name="search"),
    Route("/batches", batches.page, name="batches"),
    Route("/batches/{bid}", batches.detail, name="batch"),
    Route("/cron", cron.page, methods=["GET", "POST"], name="cron"),
    Route("/throttles", pages.throttles, name="throttles"),
    Route("/partials/history", pages.history_partial, name="history_partial"),
    Route("/favicon.ico", pages.favicon),
    Route("/stats", api.stats, name="stats"),
    Route("/health", api.health, name="health"),
    Route("/metrics", metrics.metrics, name="metrics"),
    Route("/api/overview", api.overview),
    Route("/api/history", api.history),
    Route("/api/queues", api.queues),
    Route("/api/queues/{name}", api.queue),
    Route("/api/queues/{name}/{action}", api.queue_action, methods=["POST"]),
    Route("/api/sets/{set}", api.set_list),
    Route("/api/sets/{set}/{jid}", api.set_job),
    Route("/api/sets/{set}/actions/{action}", api.set_action, methods=["POST"]),
    Route("/api/busy", api.busy),
    Route("/api/workers/{signal}", api.signal_workers, methods=["POST"]),
    Route("/api/jobs/cancel", api.cancel_jobs, methods=["POST"]),
    Route("/api/jobs/{jid}", api.job),
    Route("/api/jobs/{jid}/cancel", api.cancel_job, methods=["POST"]),
    Route("/api/groups", groups.api_list),
    Route("/api/groups/detail", groups.api_detail),
    Route("/api/batches", batches.api_list),
    Route("/api/batches/{bid}", batches.api_batch),
    Route("/api/cron", cron.api_list),
    Route("/api/cron", cron.api_add, methods=["POST"]),
    Route("/api/cron/{id}", cron.api_entry),
    Route("/api/cron/{id}/{action}", cron.api_action, methods=["POST"]),
    Route("/api/throttles", api.throttles),
    Mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static"),
]


def _zero_stats() -> ServerStats:
    return ServerStats()


def _template_context(request: Request) -> dict[str, Any]:
    state = request.app.state
    return {
        "root": request.scope.get("root_path", ""),
        "read_only": state.read_only,
        "csrf_token": "" if state.read_only else csrf_token_for(request),
        "version": __version__,
        "protocol_version": state.manager.version,
        "path": request.url.path,
    }


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        count=human_count,
        duration=human_duration,
        ago=relative_time,
        pretty=pretty_json,
        plural=plural,
    )
    return Jinja2Templates(env=env, context_processors=[_template_context])


def create_app(
    manager: Manager,
    *,
    password: str | None = None,
    read_only: bool = False,
    root_path: str = "",
    stats: Callable[[], ServerStats] | None = None,
    poll_seconds: float = 2.0,
    collector: ServerCollector | None = None,
) -> Starlette:
    """The dashboard over ``manager``.

    * ``password``: when set, every page except ``/health`` asks for it (HTTP Basic, any user).
    * ``read_only``: no actions are shown and every POST is refused with 403.
    * ``root_path``: the prefix the app is served under behind a reverse proxy (a request's
      ``X-Script-Name`` header overrides it).
    * ``stats``: returns the network adapter's numbers (connections, commands) for ``/stats``.
    * ``poll_seconds``: how often the dashboard's live graph polls.
    * ``collector``: what ``/metrics`` exports (default: a ``ServerCollector`` over ``manager``).
    """
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(
                SecurityMiddleware, password=password, read_only=read_only, root_path=root_path
            )
        ],
        exception_handlers=pages.EXCEPTION_HANDLERS,
    )
    app.state.manager = manager
    app.state.stats = stats or _zero_stats
    app.state.read_only = read_only
    app.state.poll_seconds = poll_seconds
    app.state.metrics = collector or ServerCollector(manager, stats=stats)
    app.state.csrf_secret = secrets.token_bytes(32)
    app.state.templates = _templates()
    return app
