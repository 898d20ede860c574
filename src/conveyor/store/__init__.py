"""Storage backends behind one contract (``base.Store``), chosen by URL.

* ``memory://`` -- in-process, for tests and experiments; nothing survives a restart.
* ``sqlite:///path/to/file.db`` -- the durable default; ``sqlite:///:memory:`` for tests.
* ``redis://host:port/db``, ``rediss://...`` -- many servers over one Redis (or a Cluster:
  ``redis+cluster://``, or the master of a Sentinel service: ``redis+sentinel://``; a local
  one through its Unix socket: ``redis+unix:///path/to/redis.sock``).

Drivers are imported lazily, so a SQLite user never imports the Redis client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor.store.base import Store

__all__ = ["Store", "open_store"]


def open_store(url: str) -> Store:
    """Build (not yet open) the store a URL names. Raises ``ValueError`` for unknown schemes."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from conveyor.store.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from conveyor.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme.partition("+")[0] in ("redis", "rediss"):
        try:
            from conveyor.store.redis import RedisStore
        except ImportError as exc:  # the Redis store lands with its own issue
            raise ValueError(f"the Redis store is not available: {exc}") from None
        return RedisStore.from_url(url)
    raise ValueError(
        f"unknown storage URL {url!r}: use sqlite:///path/to/file.db, memory:// or redis://host:port"
    )
