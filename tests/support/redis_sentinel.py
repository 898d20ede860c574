"""A real Redis Sentinel setup on loopback ports: a master, replicas and three sentinels.

Every process runs in its own directory under a temp dir, on a free port. Sentinels watch the
master as service ``conveyor-test`` with a quorum of 2 and ``down-after-milliseconds`` 1000,
so a killed master is replaced within a few seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from tests.support.services import free_port, require_binary, wait_for_port

if TYPE_CHECKING:  # imported by conftest after this module: no import at run time
    from tests.support.tls import CertFiles

__all__ = ["SentinelGroup", "sentinel_group"]

SERVICE = "conveyor-test"
SENTINELS = 3
PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class SentinelGroup:
    def __init__(
        self,
        directory: Path,
        replicas: int = 1,
        auth: bool = False,
        tls: CertFiles | None = None,
    ) -> None:
        """``auth``: the data nodes ask for ``PASSWORD``, the sentinels for
        ``SENTINEL_PASSWORD``. ``tls``: every node and sentinel speaks TLS only, with this
        certificate (also the CA to trust)."""
        self.server_binary = require_binary("redis-server")
        self.sentinel_binary = require_binary("redis-sentinel")
        self.directory = directory
        self.data_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.auth = auth
        self.tls = tls

    def url(self, query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        extra = [query]
        if self.auth:
            hosts = f":{PASSWORD}@{hosts}"
            extra.append(f"sentinel_password={SENTINEL_PASSWORD}")
        if self.tls:
            extra.append(f"ssl_ca_certs={self.tls.cert}")
        query = "&".join(q for q in extra if q)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{SERVICE}/0" + (f"?{query}" if query else "")

    def _tls_settings(self) -> list[str]:
        """``--name value`` pairs of the TLS settings (sentinel.conf takes them as lines)."""
        if self.tls is None:
            return []
        cert, key = str(self.tls.cert), str(self.tls.key)
        return [
            "tls-cert-file", cert, "tls-key-file", key, "tls-ca-cert-file", cert,
            "tls-auth-clients", "no", "tls-replication", "yes",
        ]  # fmt: skip

    # ------------------------------------------------------------------ processes

    def _spawn(self, port: int, args: list[str]) -> None:
        log = open(self.directory / f"{port}.log", "wb")  # noqa: SIM115 - the process owns it
        self.processes[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_data_node(self, port: int, replica_of: int | None = None) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        listen = ["--port", "0", "--tls-port", str(port)] if self.tls else ["--port", str(port)]
        tls = self._tls_settings()
        args = [
            self.server_binary, *listen, "--bind", "127.0.0.1",
            *(f"--{v}" if i % 2 == 0 else v for i, v in enumerate(tls)),
            "--dir", str(node_dir), "--save", "", "--appendonly", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        if self.auth:
            args += ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
        self._spawn(port, args)
        wait_for_port(port)

    def start(self) -> None:
        master, *replicas = self.data_ports
        self.start_data_node(master)
        for port in replicas:
            self.start_data_node(port, replica_of=master)
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            tls = self._tls_settings()
            listen = f"port 0\ntls-port {port}\n" if self.tls else f"port {port}\n"
            config.write_text(
                listen
                + "".join(f"{tls[i]} {tls[i + 1]}\n" for i in range(0, len(tls), 2))
                + f"bind 127.0.0.1\nprotected-mode no\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            if self.auth:
                with config.open("a") as file:
                    file.write(
                        f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                        f"requirepass {SENTINEL_PASSWORD}\n"
                        f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                    )
            self._spawn(port, [self.sentinel_binary, str(config)])
            wait_for_port(port)
        self.wait_ready(master)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(timeout=10)

    # ------------------------------------------------------------------ state

    def _client(self, port: int, password: str | None) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.tls.cert)} if self.tls else {}
        return redis.Redis(port=port, socket_timeout=2, password=password, **tls)

    def sentinel(self, index: int = 0) -> redis.Redis:
        password = SENTINEL_PASSWORD if self.auth else None
        return self._client(self.sentinel_ports[index], password)

    def data(self, port: int) -> redis.Redis:
        return self._client(port, PASSWORD if self.auth else None)

    def master_port(self) -> int:
        """The master's port as the first sentinel sees it."""
        with self.sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def wait_ready(self, master: int, timeout: float = 30.0) -> None:
        """Until every sentinel agrees ``master`` is the master, knows the other sentinels,
        and sees every replica replicating from it."""
        deadline = time.monotonic() + timeout
        replicas = len(self.data_ports) - 1
        for index in range(SENTINELS):
            while True:
                with self.sentinel(index) as client:
                    state = client.sentinel_master(SERVICE)
                    seen = [
                        r for r in client.sentinel_slaves(SERVICE)
                        if not (r["is_sdown"] or r["is_odown"]) and r["master-link-status"] == "ok"
                    ]  # fmt: skip
                if (
                    int(state["port"]) == master
                    and state["num-other-sentinels"] == SENTINELS - 1
                    and len(seen) == replicas
                ):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sentinel setup not ready: {state}, replicas {seen}")
                time.sleep(0.1)

    def wait_new_master(self, old: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a master other than ``old`` and it answers as a master."""
        deadline = time.monotonic() + timeout
        while True:
            port = self.master_port()
            if port != old:
                with self.data(port) as client:
                    if client.info("replication")["role"] == "master":
                        return port
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new master after {old} within {timeout}s")
            time.sleep(0.1)


@pytest.fixture
def sentinel_group(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    """A fresh master, one replica (or ``request.param`` replicas, with indirect
    parametrisation) and three sentinels: a failover test changes them."""
    group = SentinelGroup(tmp_path / "sentinel", replicas=getattr(request, "param", 1))
    group.directory.mkdir()
    try:
        group.start()
        yield group
    finally:
        group.stop()
