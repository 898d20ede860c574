"""Servers with the admission features configured, on every store backend.

* ``backend_url``: a fresh, empty store URL of each backend in turn (memory, SQLite, Redis);
* ``feature_server``: ``await feature_server(url, {"throttles": {...}})`` a started server
  whose features are built from those TOML tables (as ``conveyor server`` builds them);
* ``worker``: ``await worker(wid)`` a connection to the test module's ``server`` that said
  HELLO as worker ``wid``; ``push`` pushes jobs to a queue over it;
* ``conn``-style helpers: ``bulk_json`` reads a bulk reply.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conveyor.manager import ManagerConfig
from conveyor.manager.features.registry import build_features
from tests.support.server import TEST_TIMINGS, MakeServer, RawClient, RawConnect, RunningServer
from tests.support.stores import STORE_BACKENDS, store_url

FeatureServer = Callable[..., Awaitable[RunningServer]]
Connect = Callable[[str], Awaitable[RawClient]]
OK = b"+OK\r\n"


@pytest.fixture(params=STORE_BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, tmp_path, request)


@pytest.fixture
def feature_server(make_server: MakeServer) -> FeatureServer:
    async def start(
        storage_url: str,
        tables: Mapping[str, Any] | None = None,
        config: ManagerConfig | None = None,
        **timings: Any,
    ) -> RunningServer:
        config = dataclasses.replace(config or TEST_TIMINGS, **timings)
        features = build_features(dict(tables or {}))
        return await make_server(storage_url, config=config, features=features)

    return start


def job(**fields: Any) -> dict[str, Any]:
    return {"jid": uuid.uuid4().hex, "jobtype": "T", "args": [1], **fields}


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def bulk_json(reply: bytes) -> Any:
    header, _, body = reply.partition(b"\r\n")
    assert header.startswith(b"$"), reply
    assert int(header[1:]) == len(body) - 2
    return msgspec.json.decode(body[:-2])


@pytest.fixture
def worker(server: RunningServer, raw_client: RawConnect) -> Connect:
    """Connections to the module's ``server`` fixture, each a worker of its own (HELLO)."""

    async def connect(wid: str) -> RawClient:
        hello = encode({"v": 2, "wid": wid, "hostname": "h", "pid": 1})
        return await raw_client(server.port, hello=hello)

    return connect


async def push(client: RawClient, queue: str, count: int = 1, **fields: Any) -> list[str]:
    """Push ``count`` jobs to ``queue``, each answered +OK; their jids."""
    jids = []
    for _ in range(count):
        pushed = job(queue=queue, **fields)
        assert await client.call(b"PUSH " + encode(pushed)) == OK
        jids.append(pushed["jid"])
    return jids
