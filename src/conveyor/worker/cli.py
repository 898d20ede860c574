"""``conveyor worker APP``: parse options, import the app, run ``Worker`` with signal handlers."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import sys
import threading

import click

from conveyor.app.core import App
from conveyor.errors import AuthenticationError, ConnectError
from conveyor.worker.queues import QueueSpec, parse_queue
from conveyor.worker.runtime import Worker

__all__ = ["load_app", "worker_command"]


def load_app(target: str) -> App:
    """Import ``module:attribute`` (or ``module``, which must define ``app``) and return the App."""
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


@click.command("worker")
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
    burst: bool,
    batch: bool | None,
    grace: float,
    heartbeat: float,
    threads: int | None,
    log_level: str,
    no_configure_logging: bool,
) -> None:
    """Run the jobs of APP (``package.module:app``).

    TSTP = quiet (stop fetching); TERM/INT = finish running jobs within --grace, FAIL the rest
    so the server retries them, then exit; a second TERM/INT = stop now.
    """
    if not no_configure_logging:
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    app = load_app(app_path)
    if url:
        app.url = url
    worker = app.worker(
        concurrency=concurrency, queues=queues, labels=labels, burst=burst,
        shutdown_grace_seconds=grace, batch=batch, heartbeat_seconds=heartbeat, threads=threads,
    )  # fmt: skip
    _run(worker)


def _run(worker: Worker) -> None:
    async def main() -> None:
        worker.install_signal_handlers()
        await worker.start()
        # The app is imported and connected: nearly everything alive now lives as long as the
        # process. Freezing it takes it out of the collector's generations, so the collections
        # that per-job garbage triggers no longer walk it (shorter pauses, a thinner latency
        # tail); objects that die later are still freed by reference counting.
        gc.freeze()
        await worker.wait()

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
