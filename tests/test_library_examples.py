"""The example app in ``examples/shop`` works as its docstrings say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples.shop import jobs, produce

import conveyor.testing
from tests.support.server import RunningServer

ROOT = Path(__file__).resolve().parent.parent


async def test_example_producer_and_worker(server: RunningServer) -> None:
    jobs.app.url = server.url
    jobs.SENT.clear()
    jids = await produce.produce_async()
    assert len(jids) == 6
    worker = await conveyor.testing.drain(jobs.app, queues=["critical", "default"])
    await jobs.app.aclose()
    assert worker.failed == 0
    assert sorted(jobs.SENT) == [
        "charged order 1: 1200 cents",
        "email to ada@example.com: Welcome",
        "email to buyer@example.com: Receipt for order 1",
        "resized img0.png to 128px",
        "resized img1.png to 128px",
        "resized img2.png to 128px",
    ]
    found = await server.manager.locate(jids[2])  # pushed with in_=5 minutes
    assert found is not None
    assert found.where == "scheduled"


def test_example_tests_pass() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/shop"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
