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
from pathlib import Path
from typing import TYPE_CHECKING

import click

from conveyor.errors import AuthenticationError, ConnectError
from conveyor.logs import LOG_FORMATS, configure_logging
from conveyor.worker import settings, supervisor
from conveyor.worker.queues import QueueSpec, parse_queue
from conveyor.worker.ratelimit import RateLimit

if TYPE_CHECKING:
    from conveyor.app.core import App
    from conveyor.metrics.worker import WorkerMetrics
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


def _read_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager: the ``[worker]`` table becomes the defaults of every other option."""
    if value:
        try:
            table = settings.read_worker_table(Path(value))
        except settings.SettingsError as exc:
            raise click.BadParameter(str(exc)) from None
        ctx.default_map = {**(ctx.default_map or {}), **table}
    return value


def _env(key: str) -> str:
    return settings.env_name(key)


@click.command("worker", cls=_WorkerCommand)
@click.argument("app_path", metavar="APP", envvar=_env("app"))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="CONVEYOR_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_read_config,
    help="TOML file whose [worker] table sets any option below (flags and CONVEYOR_WORKER_* "
    "variables win). [env CONVEYOR_CONFIG]",
)
@click.option(
    "--url",
    envvar="CONVEYOR_URL",
    help="Server URL (default: CONVEYOR_URL, FAKTORY_URL, tcp://localhost:7419).",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True),
    envvar=_env("tls_ca"),
    help="PEM file of the CA that signed the server's certificate; implies TLS.",
)
@click.option(
    "-c",
    "--concurrency",
    envvar=_env("concurrency"),
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
    envvar=_env("queues"),
    callback=_parse_queues,
    metavar="NAME[:WEIGHT]",
    help="Queue to fetch from; repeat in priority order. Any weight makes the order weighted.",
)
@click.option(
    "-l",
    "--label",
    "labels",
    multiple=True,
    envvar=_env("labels"),
    help="Label shown on the dashboard's Busy page; repeatable.",
)
@click.option(
    "-p",
    "--processes",
    envvar=_env("processes"),
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each with --concurrency slots and its own wid. A parent process "
    "forwards TERM/INT/TSTP to them and starts a new one when one dies.",
)
@click.option("--burst", is_flag=True, envvar=_env("burst"), help="Exit once the queues are empty.")
@click.option(
    "--batch/--no-batch",
    default=None,
    envvar=_env("batch"),
    help="Fetch and acknowledge several jobs per round trip (FETCHB/ACKB). "
    "Default: when the server is conveyor.",
)
@click.option(
    "--grace",
    envvar=_env("grace"),
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="Seconds running jobs get to finish on TERM/INT before they are FAILed for retry.",
)
@click.option(
    "--heartbeat",
    envvar=_env("heartbeat"),
    type=click.FloatRange(min=0.05),
    default=15.0,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--threads",
    envvar=_env("threads"),
    type=click.IntRange(min=1),
    default=None,
    help="Threads for sync handlers (default: the concurrency).",
)
@click.option(
    "--rate-limit",
    metavar="COUNT/UNIT",
    envvar=_env("rate_limit"),
    callback=lambda ctx, param, value: _parse_rate(value),
    help="At most this many jobs per process (10/s, 100/m, 5/h, 3/10s); jobs over it are "
    "retried at their turn without using a retry.",
)
@click.option(
    "--log-level",
    envvar=_env("log_level"),
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar=_env("log_format"),
    help="text, or json: one JSON object per line with the job's fields (docs/operations.md).",
)
@click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    envvar=_env("metrics_bind"),
    help="Serve this worker's Prometheus metrics on HOST:PORT (with --processes, PORT + the "
    "process's number).",
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
    log_format: str,
    metrics_bind: str | None,
    tls_ca: str | None,
    no_configure_logging: bool,
) -> None:
    """Run the jobs of APP (``package.module:app``).

    TSTP = quiet (stop fetching); TERM/INT = finish running jobs within --grace, FAIL the rest
    so the server retries them, then exit; a second TERM/INT = stop now.

    Every option can also come from CONVEYOR_WORKER_<OPTION> or a [worker] table in --config.
    """
    ready_fd = supervisor.take_ready_fd()  # set: we are one of a --processes parent's children
    pool = processes > 1 or ready_fd is not None
    if not no_configure_logging:
        configure_logging(log_level, log_format, POOL_LOG_FORMAT if pool else LOG_FORMAT)
    if processes > 1 and ready_fd is None:
        ctx = click.get_current_context()
        command = [sys.executable, "-m", "conveyor", "worker", *ctx.meta[ARGS_KEY]]
        ctx.exit(supervisor.Supervisor(command, processes).run())
    app = load_app(app_path)
    if url:
        app.url = url
    if tls_ca:
        import ssl

        app.tls = ssl.create_default_context(cafile=tls_ca)
    metrics = _serve_metrics(metrics_bind) if metrics_bind else None
    worker = app.worker(
        concurrency=concurrency, queues=queues, labels=labels, burst=burst,
        shutdown_grace_seconds=grace, batch=batch, heartbeat_seconds=heartbeat, threads=threads,
        rate_limit=rate_limit, metrics=metrics,
    )  # fmt: skip
    try:
        _run(worker, ready_fd)
    finally:
        if metrics is not None:
            metrics.close()


def _serve_metrics(bind: str) -> WorkerMetrics:
    from conveyor.config import ConfigError
    from conveyor.metrics.worker import WorkerMetrics

    metrics = WorkerMetrics()
    try:
        host, port = metrics.serve(bind)
    except (ConfigError, OSError) as exc:
        raise click.BadParameter(f"cannot serve metrics on {bind}: {exc}") from None
    logging.getLogger("conveyor.worker").info("metrics on http://%s:%d/metrics", host, port)
    return metrics


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
