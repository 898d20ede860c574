"""Statsd / DogStatsD push: a real ``conveyor server`` sends UDP datagrams to a listener on
loopback, configured as Faktory Enterprise users would (``DD_DOGSTATSD_URL``) or with
``CONVEYOR_METRICS_*``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.client import Client
from conveyor.config import ConfigError, load_config
from conveyor.metrics.statsd import pack
from tests.support.server import SpawnServer


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


async def receive_until(sock: socket.socket, wanted: str, within: float = 10.0) -> list[str]:
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    async with asyncio.timeout(within):
        while not any(line.startswith(wanted) for line in lines):
            datagram = await loop.sock_recv(sock, 65536)
            assert len(datagram) <= 1432
            lines += datagram.decode().split("\n")
    return lines


async def test_the_server_pushes_gauges_and_job_counters(
    spawn_server: SpawnServer, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    server = spawn_server(
        env={
            "DD_DOGSTATSD_URL": f"udp://127.0.0.1:{port}",
            "CONVEYOR_METRICS_STATSD_TAGS": "env:test,region:eu-1",
            "CONVEYOR_METRICS_STATSD_INTERVAL_SECONDS": "0.1",
            "CONVEYOR_METRICS_STATSD_NAMESPACE": "faktory.",
        }
    )
    async with await Client.connect(server.url) as client:
        for n in range(3):
            await client.push({"jid": f"stat-{n:04}", "jobtype": "Send Mail", "args": []})
        job = await client.fetch("default")
        assert job is not None
        await client.ack(job["jid"], duration=0.2)
        lines = await receive_until(listener, "faktory.jobs.processed:")
    tags = "#env:test,region:eu-1"
    assert f"faktory.enqueued:2|g|{tags}" in lines or f"faktory.enqueued:3|g|{tags}" in lines
    assert any(line.startswith("faktory.ops.store.rtt_us:") for line in lines)
    assert any(line.startswith("faktory.queue.size:") and "queue:default" in line for line in lines)
    # counters carry what changed, tagged with the queue and the (sanitised) jobtype
    processed = [line for line in lines if line.startswith("faktory.jobs.processed:")]
    assert processed == [f"faktory.jobs.processed:1|c|{tags},queue:default,jobtype:Send_Mail"]
    pushed = [line for line in lines if line.startswith("faktory.jobs.pushed:")]
    assert sum(int(line.split(":")[1].split("|")[0]) for line in pushed) == 3
    server.terminate()


def test_datagrams_are_packed_up_to_the_limit() -> None:
    lines = [f"metric.{n}:1|g" for n in range(100)]
    datagrams = list(pack(lines, limit=100))
    assert all(len(d) <= 100 for d in datagrams)
    assert b"\n".join(datagrams).decode().split("\n") == lines


def test_metrics_settings_from_file_and_environment(tmp_path: Path) -> None:
    env = {"CONVEYOR_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="statsd"):
        load_config({}, {**env, "CONVEYOR_METRICS_STATSD": "nowhere"})
    with pytest.raises(ConfigError, match="statsd_interval_seconds"):
        load_config({}, {**env, "CONVEYOR_METRICS_STATSD_INTERVAL_SECONDS": "0"})
    config_file = tmp_path / "conveyor.toml"
    config_file.write_text(
        '[metrics]\njobs = false\nstatsd = "127.0.0.1:8125"\nstatsd_tags = ["env:prod", "dc:1"]\n'
        "[worker]\nconcurrency = 5\n"  # the worker's table: the server leaves it alone
    )
    config = load_config({"config": str(config_file)}, env)
    assert not config.metrics.jobs
    assert config.metrics.statsd == "127.0.0.1:8125"
    assert config.metrics.statsd_tags == "env:prod,dc:1"
    config = load_config({"config": str(config_file)}, {**env, "CONVEYOR_METRICS_JOBS": "true"})
    assert config.metrics.jobs  # the environment wins over the file
    config_file.write_text("[metrics]\nstatsd_port = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'statsd_port' in \\[metrics\\]"):
        load_config({"config": str(config_file)}, env)
