"""A real 3-master Redis Cluster on loopback ports, started once per test session.

Three ``redis-server --cluster-enabled yes`` processes in temporary directories, joined with
``redis-cli --cluster create ... --cluster-replicas 0``. Startup takes about a second.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import free_port, require_binary, wait_for_port

__all__ = ["RedisCluster", "redis_cluster", "redis_cluster_url"]

MASTERS = 3


class RedisCluster:
    def __init__(self, directory: Path) -> None:
        self.server_binary = require_binary("redis-server")
        self.cli_binary = require_binary("redis-cli")
        self.directory = directory
        self.ports = [free_port() for _ in range(MASTERS)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                self.server_binary, "--port", str(port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000", "--dir", str(node_dir),
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            wait_for_port(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [self.cli_binary, "--cluster", "create", *nodes,
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        self._wait_ok()

    def _wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                info = subprocess.run(
                    [self.cli_binary, "-p", str(port), "cluster", "info"],
                    capture_output=True, text=True, timeout=5,
                ).stdout  # fmt: skip
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster node {port} not ok: {info}")
                time.sleep(0.05)

    def flush(self) -> None:
        for port in self.ports:
            subprocess.run(
                [self.cli_binary, "-p", str(port), "flushall"], capture_output=True, timeout=5
            )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes.clear()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """A seed-list URL of the session's cluster, emptied first."""
    redis_cluster.flush()
    return redis_cluster.url
