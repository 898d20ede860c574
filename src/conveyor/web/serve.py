"""Serving the dashboard with uvicorn inside the job server's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn

from conveyor.manager.types import ServerStats
from conveyor.metrics.server import ServerCollector
from conveyor.web.app import create_app

if TYPE_CHECKING:
    from conveyor.manager import Manager

__all__ = ["WebHandle", "parse_bind", "start_web"]

DEFAULT_BIND = "127.0.0.1:7420"
STOP_TIMEOUT_SECONDS = 5.0


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host process: plain uvicorn would
    take over SIGINT/SIGTERM and re-raise them after stopping, fighting the job server's own
    shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def parse_bind(bind: str) -> tuple[str, int] | None:
    """``HOST:PORT`` -> (host, port); ``""`` or ``:0`` -> None (UI disabled, as Faktory's
    ``-w :0``). ``HOST:0`` with a host binds a free port. Raises ``ValueError`` otherwise."""
    text = bind.strip()
    if text.lower() in ("", ":0", "0", "off"):
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"web binding {bind!r} is not HOST:PORT (e.g. 127.0.0.1:7420)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


@dataclass
class WebHandle:
    """The running dashboard. ``port`` is the bound port (None when the UI is disabled)."""

    server: _EmbeddedServer | None
    task: asyncio.Task[None] | None
    host: str = ""
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port is not None else ""

    async def stop(self) -> None:
        if self.server is None or self.task is None:
            return
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            self.server.force_exit = True
            await self.task


async def start_web(
    manager: Manager,
    config: Any,
    *,
    stats: Callable[[], ServerStats] | None = None,
    collector: ServerCollector | None = None,
) -> WebHandle:
    """Serve the dashboard in the current event loop, as ``config`` says.

    ``config`` is any object with ``web_bind`` ("HOST:PORT"), ``password`` and optionally
    ``web_password`` (wins over ``password``, as Faktory's ``[web] password``),
    ``web_read_only``, ``web_root_path`` and ``web_poll_seconds``. Returns once the port is
    bound; raises ``OSError`` when it cannot be.
    """
    address = parse_bind(str(getattr(config, "web_bind", DEFAULT_BIND) or ""))
    if address is None:
        return WebHandle(server=None, task=None)
    app = create_app(
        manager,
        password=getattr(config, "web_password", None) or getattr(config, "password", None),
        read_only=bool(getattr(config, "web_read_only", False)),
        root_path=str(getattr(config, "web_root_path", "") or ""),
        stats=stats,
        poll_seconds=float(getattr(config, "web_poll_seconds", 2.0) or 2.0),
        collector=collector,
    )
    host, port = address
    uv_config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = _EmbeddedServer(uv_config)
    task = asyncio.create_task(server.serve(), name="conveyor-web")
    while not server.started:
        if task.done():
            # uvicorn logs bind errors and exits (SystemExit) instead of raising: an OSError
            # with the address, not a traceback, for whoever started us
            with contextlib.suppress(SystemExit):
                task.result()
            raise OSError(f"cannot listen on {host}:{port} for the web dashboard")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return WebHandle(server=server, task=task, host=host, port=int(bound))
