"""``conveyor worker APP``: parse options, import the app, run ``Worker`` with signal handlers.

With ``--processes N`` (N > 1) this process only supervises: it runs the same command N times
(``supervisor.py``), and each of those is a plain worker. The supervising process imports
nothing but click and ``supervisor.py``; the app, the runtime and asyncio are imported only on
the path that runs jobs (``load_app`` and ``_run``), to keep that process small.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

import click

from conveyor.errors import AuthenticationError, ConnectError
from conveyor.worker import supervisor
from conveyor.worker.queues import QueueSpec, parse_queue
from conveyor.worker.ratelimit import RateLimit

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.worker.runtime import Worker

__all__ = ["load_app", "worker_command"]


def load_app(target: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``) and return the App."""
    from conveyor.app.core import App  # here, not above: a --processes parent never needs it

    module_name, _, attribute = target.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the app's package is usually here
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    try:
        app = getattr(module, attribute or "app")
    except AttributeError:
        raise click.BadParameter(
            f"{module_name!r} has no attribute {attribute or 'app'!r}"
        ) from None
    if not isinstance(app, App):
        raise click.BadParameter(f"{target!r} is a {type(app).__name__}, not a conveyor.App")
    return app


def _parse_queues(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[QueueSpec]:
    try:
        return [parse_queue(v) for v in values] or [QueueSpec("default")]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


ARGS_KEY = "conveyor.worker.args"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
POOL_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class _WorkerCommand(click.Command):
    """Keeps the arguments as given, so ``--processes`` can start the same command again."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGS_KEY] = list(args)
        return super().parse_args(ctx, args)


@click.command("worker", cls=_WorkerCommand)
@click.argument("app_path", metavar="APP")
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    help="Server URL (default: CONVEYOR_URL, FAKTORY_URL, tcp://localhost:7419).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs run at the same time.",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    callback=_parse_queues,
    metavar="NAME[:WEIGHT]",
    help="Queue to fetch from; repeat in priority order. Any weight makes the order weighted.",
)
@click.option(
    "-l",
    "--label",
    "labels",
    multiple=True,
    help="Label shown on the dashboard's Busy page; repeatable.",
)
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each with --concurrency slots and its own wid. A parent process "
    "forwards TERM/INT/TSTP to them and starts a new one when one dies.",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--batch/--no-batch",
    default=None,
    help="Fetch and acknowledge several jobs per round trip (FETCHB/ACKB). "
    "Default: when the server is conveyor.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="Seconds running jobs get to finish on TERM/INT before they are FAILed for retry.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.05),
    default=15.0,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads for sync handlers (default: the concurrency).",
)
@click.option(
    "--rate-limit",
    metavar="COUNT/UNIT",
    callback=lambda ctx, param, value: _parse_rate(value),
    help="At most this many jobs per process (10/s, 100/m, 5/h, 3/10s); jobs over it are "
    "retried at their turn without using a retry.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--no-configure-logging", is_flag=True, help="Leave logging alone (configure it in your app)."
)
def worker_command(
    app_path: str,
    url: str | None,
    concurrency: int,
    queues: list[QueueSpec],
    labels: tuple[str, ...],
    processes: int,
    burst: bool,
    batch: bool | None,
    grace: float,
    heartbeat: float,
    threads: int | None,
    rate_limit: RateLimit | None,
    log_level: str,
    no_configure_logging: bool,
) -> None:
    """Run the jobs of APP (``package.module:app``).

    TSTP = quiet (stop fetching); TERM/INT = finish running jobs within --grace, FAIL the rest
    so the server retries them, then exit; a second TERM/INT = stop now.
    """
    ready_fd = supervisor.take_ready_fd()  # set: we are one of a --processes parent's children
    pool = processes > 1 or ready_fd is not None
    if not no_configure_logging:
        logging.basicConfig(level=log_level.upper(), format=POOL_LOG_FORMAT if pool else LOG_FORMAT)
    if processes > 1 and ready_fd is None:
        ctx = click.get_current_context()
        command = [sys.executable, "-m", "conveyor", "worker", *ctx.meta[ARGS_KEY]]
        ctx.exit(supervisor.Supervisor(command, processes).run())
    app = load_app(app_path)
    if url:
        app.url = url
    worker = app.worker(
        concurrency=concurrency, queues=queues, labels=labels, burst=burst,
        shutdown_grace_seconds=grace, batch=batch, heartbeat_seconds=heartbeat, threads=threads,
        rate_limit=rate_limit,
    )  # fmt: skip
    _run(worker, ready_fd)


def _parse_rate(value: str | None) -> RateLimit | None:
    if value is None:
        return None
    try:
        return RateLimit.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate-limit") from None


def _run(worker: Worker, ready_fd: int | None) -> None:
    import asyncio  # here, not above: a --processes parent does without it

    async def main() -> None:
        worker.install_signal_handlers(supervised=ready_fd is not None)
        await worker.start()
        # The app is imported and connected: nearly everything alive now lives as long as the
        # process. Freezing it takes it out of the collector's generations, so the collections
        # that per-job garbage triggers no longer walk it (shorter pauses, a thinner latency
        # tail); objects that die later are still freed by reference counting.
        gc.freeze()
        if ready_fd is None:
            await worker.wait()
            return
        supervisor.notify_ready(ready_fd)
        orphaned = asyncio.create_task(supervisor.stop_when_orphaned(worker))
        try:
            await worker.wait()
        finally:
            orphaned.cancel()
            await asyncio.gather(orphaned, return_exceptions=True)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    except (ConnectError, AuthenticationError) as exc:
        raise click.ClickException(str(exc)) from None
    if any(
        t.name.startswith("conveyor")
        for t in threading.enumerate()
        if t.is_alive() and t is not threading.main_thread()
    ):
        # A sync handler outlived the grace period; its job was FAILed for retry. Python
        # would wait for its thread at exit, so leave without waiting.
        logging.getLogger("conveyor.worker").warning("exiting with sync handlers still running")
        logging.shutdown()
        os._exit(0)
