"""The redis-py clients of a store: one Redis, the master a Sentinel names, or a Cluster.

None of them retries a command on its own: a command whose reply was lost may have run, and
only ``calls.Caller`` knows whether sending it again is safe.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url as parse_redis_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from conveyor.store.redis.codec import RedisURL

__all__ = ["Clients"]


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


class Clients:
    """Builds the main client and the pub/sub clients for one URL."""

    def __init__(self, url: RedisURL) -> None:
        self._url = url
        self._sentinel: Sentinel | None = None
        self._sentinel_clients: list[Redis] = []

    def _options(self) -> dict[str, Any]:
        url = self._url
        # Let redis-py type the query options (socket_timeout=3 -> 3.0) as from_url would.
        typed = parse_redis_url("redis://h/0?" + urlencode(url.options))
        options = {k: v for k, v in typed.items() if k not in ("host", "port", "db")}
        options.update(ssl=url.tls, username=url.username, password=url.password)
        return options

    def main(self) -> Any:
        url = self._url
        if url.cluster:
            nodes = [ClusterNode(host, port) for host, port in url.nodes]
            return RedisCluster(startup_nodes=nodes, retry=_no_retry(), **self._options())
        if url.sentinel:
            return self._master()
        return Redis.from_url(url.client_url, retry=_no_retry())

    def _master(self, **overrides: Any) -> Redis:
        url = self._url
        options = self._options()
        if self._sentinel is None:
            # The sentinels get the socket and TLS settings, and their own credentials.
            shared = {k: v for k, v in options.items() if k.startswith(("socket_", "ssl")) and v}
            self._sentinel = Sentinel(
                url.nodes, sentinel_kwargs={**shared, **url.sentinel_auth, "retry": _no_retry()}
            )
            # Sentinel.discover_master reorders its list of clients while other tasks await
            # them, and concurrent calls can drop one from the list: keep our own to close.
            self._sentinel_clients = list(self._sentinel.sentinels)
        options.update(retry=_no_retry(), **overrides)
        master: Redis = self._sentinel.master_for(url.service, db=url.db, **options)
        return master

    async def subscriber(self, main: Any, channel: str) -> Redis:
        """A dedicated client for pub/sub: to the node owning ``channel`` on a Cluster."""
        url = self._url
        if url.cluster:
            await main.initialize()
            node = main.get_node_from_key(channel)
            return Redis(host=node.host, port=node.port, retry=_no_retry(), **self._options())
        if url.sentinel:
            return self._master(socket_timeout=None)
        return Redis.from_url(url.client_url, retry=_no_retry(), socket_timeout=None)

    async def aclose(self) -> None:
        clients, self._sentinel_clients, self._sentinel = self._sentinel_clients, [], None
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
