"""The FWP server: listen, accept, shut down gracefully. Embeddable::

    server = FaktoryServer(manager, ServerConfig(port=0))
    await server.start()
    ...  # tcp://127.0.0.1:{server.port}
    await server.stop()

``run(config)`` is the whole ``conveyor server`` process: store, manager, FWP server, web
dashboard, signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from conveyor.config import ConfigError, ServerConfig
from conveyor.manager import Manager, ServerStats
from conveyor.metrics.jobs import JobMetrics
from conveyor.metrics.server import ServerCollector
from conveyor.metrics.statsd import StatsdReporter
from conveyor.metrics.store_timing import instrument_store
from conveyor.server.connection import Connection
from conveyor.server.guard import PasswordGuard
from conveyor.web import WebHandle, start_web

__all__ = ["FaktoryServer", "check_addresses", "make_ssl_context", "run", "run_forever"]

log = logging.getLogger("conveyor.server")

CLOSE_TIMEOUT_SECONDS = 2.0


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return context


class FaktoryServer:
    """The FWP listener over one manager. It does not start or stop the manager."""

    def __init__(self, manager: Manager, config: ServerConfig | None = None) -> None:
        self.manager = manager
        self.config = config or ServerConfig(port=0)
        self.connections: set[Connection] = set()
        self.command_count = 0
        self.partial_bytes = 0  # held by partial lines of all connections (max_partial_bytes)
        self.guard = PasswordGuard(self.config.password) if self.config.password else None
        self.closing = False
        self._server: asyncio.Server | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        scheme = "tcp+tls" if self.config.tls_cert else "tcp"
        password = f":{self.config.password}@" if self.config.password else ""
        return f"{scheme}://{password}{self.host}:{self.port}"

    def stats(self) -> ServerStats:
        return ServerStats(connections=len(self.connections), command_count=self.command_count)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a background coroutine (a disconnect) that ``stop`` waits for."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed: %r", exc)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = make_ssl_context(self.config)
        self._server = await loop.create_server(
            lambda: Connection(self),
            self.config.host,
            self.config.port,
            ssl=context,
            ssl_handshake_timeout=self.config.handshake_timeout_seconds if context else None,
            reuse_address=True,
            backlog=1024,
        )
        log.info("FWP server listening on %s", _redact(self.url))

    async def stop(self) -> None:
        """Stop accepting, let commands in flight answer, then close every connection."""
        if self._server is None:
            return
        self.closing = True
        self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        runners = [c.runner for c in self.connections if c.runner is not None]
        if runners:
            _, late = await asyncio.wait(runners, timeout=self.config.shutdown_grace_seconds)
            for task in late:
                task.cancel()
        for connection in list(self.connections):
            connection.close()
        await self._wait_disconnected(CLOSE_TIMEOUT_SECONDS)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1)
        self._server = None
        if self.guard is not None:
            self.guard.close()

    async def _wait_disconnected(self, within: float) -> None:
        """Wait for every transport to report connection_lost (so each worker's disconnect
        reaches the manager before it stops); abort peers too slow to take their last bytes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        await asyncio.sleep(0)


def check_addresses(config: ServerConfig) -> None:
    """Raise ``OSError`` with a one-line message naming the address and the flag when the
    FWP or the dashboard address cannot be bound, before anything is opened or served."""
    wanted = [(config.host, config.port, "the Faktory protocol", "--bind")]
    if config.web_port is not None:
        wanted.append((config.web_host, config.web_port, "the web dashboard", "--web-bind"))
    for host, port, what, flag in wanted:
        if port:
            _try_bind(host, port, what, flag)


def _try_bind(host: str, port: int, what: str, flag: str) -> None:
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(
            f"cannot listen on {host}:{port} for {what}: {exc.strerror} ({flag})"
        ) from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listeners
            try:
                probe.bind(address)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                hint = (
                    " (is another conveyor server running?)"
                    if exc.errno == errno.EADDRINUSE
                    else ""
                )
                raise OSError(
                    f"cannot listen on {host}:{port} for {what}: {reason}{hint}; "
                    f"choose another address with {flag}"
                ) from None


async def run(
    config: ServerConfig,
    *,
    stop: asyncio.Event | None = None,
    reload: Callable[[], ServerConfig] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    ``reload`` reads the configuration again: SIGHUP then applies the features' new
    settings (throttles, cron, ...) without a restart, or logs why it keeps the old ones."""
    from conveyor.store import open_store

    check_addresses(config)  # both ports, before the store is opened or anything served
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    store = open_store(config.storage)
    timings = instrument_store(store) if config.metrics.store_timing else None
    metrics = JobMetrics() if config.metrics.jobs else None
    features = config.build_features()
    manager = Manager(store, config.manager, features=features, metrics=metrics)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(manager, reload))
    await manager.start()
    server = FaktoryServer(manager, config)
    collector = ServerCollector(manager, stats=server.stats, store_timings=timings)
    web: WebHandle | None = None
    statsd: StatsdReporter | None = None
    try:
        await server.start()
        if config.web_port is not None:
            web = await start_web(manager, config, stats=server.stats, collector=collector)
            log.info("web dashboard on %s (metrics on /metrics)", web.url)
        if config.metrics.statsd:
            statsd = await StatsdReporter.start(collector, config.metrics)
        log.info("conveyor ready (storage %s)", _redact(config.storage))
        # What start-up built (modules, the web app, templates) lives as long as the process:
        # keep it out of the collector's full passes, which would otherwise walk it all while
        # clients wait (a latency-tail measure, as in the worker).
        gc.freeze()
        await stop.wait()
        log.info("shutting down")
    finally:
        if statsd is not None:
            await statsd.stop()
        await server.stop()
        if web is not None:
            await web.stop()
        await manager.stop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def _reloader(manager: Manager, reload: Callable[[], ServerConfig]) -> Callable[[], None]:
    def on_sighup() -> None:
        try:
            features = reload().build_features()
        except (ConfigError, ValueError) as exc:
            log.error("configuration not reloaded, the old settings stay: %s", exc)
            return
        manager.reconfigure(features)
        log.info("configuration reloaded")

    return on_sighup


def run_forever(config: ServerConfig, reload: Callable[[], ServerConfig] | None = None) -> None:
    """Run ``run(config)`` on uvloop when it is installed."""
    map_large_buffers()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(config, reload=reload))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(config, reload=reload))


LARGE_BUFFER_BYTES = 1 << 20


def map_large_buffers() -> None:
    """Have glibc map every block of 1 MiB or more on its own, so it goes back to the system
    when freed.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MiB), so after
    the first burst of large partial lines the next ones land on the heap, which it then
    rarely trims: ten clients that each sent 15 MiB and left could keep over 100 MiB of a
    server's memory for good (issue 17). Setting the threshold pins it, and with it the trim
    threshold. Elsewhere than glibc this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to pin
        return
    m_mmap_threshold = -3  # <malloc.h>
    mallopt(m_mmap_threshold, LARGE_BUFFER_BYTES)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest
