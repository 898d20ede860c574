"""FWP servers for tests: in-process over loopback, or ``conveyor server`` as a subprocess.

Fixtures:

* ``server``: a started ``RunningServer`` (FaktoryServer over a fresh MemoryStore, short
  timings) with ``.host``, ``.port``, ``.url`` (``tcp://127.0.0.1:PORT``) and ``.manager``;
* ``make_server``: ``await make_server(storage_url=..., password=..., config=ManagerConfig(...),
  features=build_features({...}) or the TOML tables themselves, {"results": {...}},
  **ServerConfig fields)`` for any other combination; all are stopped at teardown;
* ``spawn_server``: ``spawn_server(storage=..., password=..., env={...}, args=[...])`` runs
  ``conveyor server`` in a subprocess on a free port and returns a ``ServerProcess`` once the
  port answers; killed at teardown;
* ``raw_client``: ``await raw_client(port, hello=...)`` a byte-exact FWP connection
  (``RawClient``) for golden tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.config import ServerConfig
from conveyor.manager import Manager, ManagerConfig
from conveyor.manager.features import Feature
from conveyor.manager.features.registry import build_features
from conveyor.protocol import hash_password
from conveyor.server import FaktoryServer
from conveyor.store import open_store
from tests.support.services import free_port, wait_for_port

TEST_TIMINGS = ManagerConfig(
    fetch_wait_seconds=0.2,
    scheduler_interval_seconds=0.02,
    reaper_interval_seconds=0.1,
    dead_purge_interval_seconds=0.5,
)
"""Short timings for servers in tests; worker reaping keeps Faktory's 60 s so clients that do
not BEAT are not cut off mid-test."""

TEST_TIMINGS_ENV = {
    "CONVEYOR_FETCH_WAIT_SECONDS": "0.2",
    "CONVEYOR_SCHEDULER_INTERVAL_SECONDS": "0.02",
    "CONVEYOR_REAPER_INTERVAL_SECONDS": "0.1",
}


@dataclass
class RunningServer:
    server: FaktoryServer
    manager: Manager

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        await self.server.stop()
        await self.manager.stop()


MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[MakeServer]:
    started: list[RunningServer] = []

    async def make(
        storage_url: str = "memory://",
        password: str = "",
        config: ManagerConfig | None = None,
        features: Mapping[str, Any] | Sequence[Feature] | None = None,
        **server_options: Any,
    ) -> RunningServer:
        built = build_features(features) if isinstance(features, Mapping) else features
        manager = Manager(open_store(storage_url), config or TEST_TIMINGS, features=built)
        await manager.start()
        settings = ServerConfig(port=0, web_port=None, password=password, **server_options)
        server = FaktoryServer(manager, settings)
        try:
            await server.start()
        except BaseException:
            await manager.stop()
            raise
        running = RunningServer(server, manager)
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        await running.stop()


@pytest.fixture
async def server(make_server: MakeServer) -> RunningServer:
    return await make_server()


class RawClient:
    """One FWP connection that returns replies as the exact bytes the server sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    async def send(self, line: bytes) -> None:
        self.writer.write(line if line.endswith(b"\n") else line + b"\r\n")
        await self.writer.drain()

    async def reply(self, within: float = 5.0) -> bytes:
        """One whole reply (a bulk string with its payload); b"" if the server closed."""
        line = await asyncio.wait_for(self.reader.readline(), within)
        if line.startswith(b"$") and line != b"$-1\r\n":
            line += await asyncio.wait_for(self.reader.readexactly(int(line[1:]) + 2), within)
        return line

    async def call(self, line: bytes, within: float = 5.0) -> bytes:
        await self.send(line)
        return await self.reply(within)

    async def closed_by_server(self, within: float = 5.0) -> bool:
        """True if the server closes the connection (EOF) without sending anything more."""
        data = await asyncio.wait_for(self.reader.read(1), within)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


RawConnect = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def raw_client() -> AsyncIterator[RawConnect]:
    """``await raw_client(port, hello=b'{"v":2}', password=None, ssl=None)``.

    With ``hello=None`` only the greeting is read (for handshake tests); with a password the
    hash is computed from the greeting's challenge and added to the HELLO.
    """
    opened: list[RawClient] = []

    async def connect(
        port: int,
        hello: bytes | None = b'{"v":2}',
        password: str | None = None,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> RawClient:
        import msgspec

        reader, writer = await asyncio.open_connection(host, port, limit=2**26, **options)
        client = RawClient(reader, writer)
        opened.append(client)
        client.greeting = await asyncio.wait_for(reader.readline(), 5)
        if hello is None:
            return client
        if password is not None:
            challenge = msgspec.json.decode(client.greeting[4:])
            fields = msgspec.json.decode(hello)
            fields["pwdhash"] = hash_password(password, challenge["s"], challenge["i"])
            hello = msgspec.json.encode(fields)
        reply = await client.call(b"HELLO " + hello)
        assert reply == b"+OK\r\n", reply
        return client

    yield connect
    for client in opened:
        await client.close()


class ServerProcess:
    """``conveyor server`` in a subprocess, on a free loopback port."""

    def __init__(
        self,
        storage: str,
        *,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        port: int | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.storage = storage
        self.password = password
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.env = {**os.environ, **TEST_TIMINGS_ENV, "CONVEYOR_LOG_LEVEL": "warning"}
        self.env.update(env or {})
        self.args = list(args)
        self.log_file = log_file  # where its output goes, else a pipe (read once it exited)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        password = f":{self.password}@" if self.password else ""
        return f"tcp://{password}{self.host}:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-c", "from conveyor.cli import main; main()", "server"]
        command += ["--bind", f"{self.host}:{self.port}", "--web-bind", "off"]
        command += ["--storage", self.storage]
        if self.password:
            command += ["--password", self.password]
        return command + self.args

    def start(self, timeout: float = 15.0) -> ServerProcess:
        if self.log_file is not None:
            with open(self.log_file, "ab") as out:
                self.process = subprocess.Popen(
                    self.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            self.process = subprocess.Popen(
                self.command(), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"conveyor server did not start: {self.output()}") from None
        return self

    def output(self) -> str:
        if self.log_file is not None:
            return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        if self.process is None or self.process.stdout is None:
            return ""
        if self.process.poll() is None:
            return "(still running)"
        return self.process.stdout.read().decode(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (``kill -9``) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


SpawnServer = Callable[..., ServerProcess]


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[SpawnServer]:
    """``spawn_server(storage=None, ...)``; storage defaults to a SQLite file in tmp_path."""
    processes: list[ServerProcess] = []

    def spawn(storage: str | None = None, **options: Any) -> ServerProcess:
        storage = storage or f"sqlite:///{tmp_path / 'conveyor.db'}"
        process = ServerProcess(storage, **options)
        processes.append(process)
        return process.start()

    yield spawn
    for process in processes:
        process.kill()
        if process.process is not None and process.process.stdout is not None:
            process.process.stdout.close()
