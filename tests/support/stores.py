"""Every Store backend behind one fixture, so one contract suite runs against all of them.

``backend_store`` is parametrised over ``STORE_BACKENDS``: ``memory``, ``sqlite`` (a real file in
``tmp_path``), ``redis`` and ``valkey`` (the Redis store on a private redis-server, then on a
valkey-server, from ``tests.support.services``). The Redis
param skips locally (and fails in CI) while ``conveyor.store.redis`` cannot be imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.store import Store, open_store
from tests.support.services import require

STORE_BACKENDS = ("memory", "sqlite", "redis", "valkey")


def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty store of ``backend`` for one test."""
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if backend in ("redis", "valkey"):
        require(
            importlib.util.find_spec("conveyor.store.redis") is not None,
            "conveyor.store.redis is not built yet",
        )
        url: str = request.getfixturevalue(f"{backend}_url")  # the Redis store on either
        return url
    raise ValueError(f"unknown store backend {backend!r}")


@pytest.fixture(params=STORE_BACKENDS)
async def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store of each backend in turn; closed after the test."""
    store = open_store(store_url(request.param, tmp_path, request))
    await store.open()
    subscribed = getattr(store, "wait_subscribed", None)
    if subscribed is not None:  # Redis: its first wake-ups of every known queue are over
        await subscribed()
    try:
        yield store
    finally:
        await store.close()
