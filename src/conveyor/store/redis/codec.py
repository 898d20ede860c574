"""Byte layouts of the Redis store, its URL syntax, and listing filters.

Values stored in Redis (the Lua scripts in ``store/redis/lua/`` use the same layouts, see
``_lib.lua``)::

    lp(s)        b"<byte length>:" + s        a length-prefixed field: any byte is allowed
    queue entry  b"<reserve_for>:" + lp(jid) + payload
    reservation  lp(queue) + lp(wid) + payload
    set data     lp(queue) + lp(jobtype) + payload

A queued job is one LIST element: the payload plus a header of ~30 bytes, which keeps Redis
memory per job low (see ``docs/redis.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from conveyor.store.base import QueuedJob, SetEntry

__all__ = [
    "RedisURL",
    "decode_entry",
    "decode_fields",
    "encode_entry",
    "encode_set_data",
    "lp",
    "parse_url",
    "score_arg",
]

DEFAULT_NAMESPACE = "conveyor"
DEFAULT_WORKER_TTL_SECONDS = 3600


def lp(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"%d:%s" % (len(raw), raw)


def encode_entry(job: QueuedJob) -> bytes:
    return b"%d:" % job.reserve_for + lp(job.jid) + job.payload


def decode_fields(data: bytes, count: int, pos: int = 0) -> tuple[list[str], bytes]:
    """Read ``count`` length-prefixed fields from ``data``; return them and the rest."""
    out: list[str] = []
    for _ in range(count):
        colon = data.index(b":", pos)
        size = int(data[pos:colon])
        out.append(data[colon + 1 : colon + 1 + size].decode())
        pos = colon + 1 + size
    return out, data[pos:]


def decode_entry(queue: str, entry: bytes) -> QueuedJob:
    colon = entry.index(b":")
    (jid,), payload = decode_fields(entry, 1, colon + 1)
    return QueuedJob(queue=queue, jid=jid, payload=payload, reserve_for=int(entry[:colon]))


def encode_set_data(entry: SetEntry) -> bytes:
    return lp(entry.queue) + lp(entry.jobtype) + entry.payload


def decode_set_entry(jid: bytes, score: bytes | float, data: bytes) -> SetEntry:
    (queue, jobtype), payload = decode_fields(data, 2)
    return SetEntry(
        score=float(score), jid=jid.decode(), payload=payload, queue=queue, jobtype=jobtype
    )


def score_arg(score: float) -> str:
    """A float as Redis should read it: ``repr`` is the shortest exact round-trip form."""
    return repr(float(score))


_P = TypeVar("_P", bound=asyncio.BaseProtocol)

SCHEMES = (
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+unix",
)
DEFAULT_RETRY_FOR_SECONDS = 5.0
DEFAULT_WAIT_TIMEOUT_MS = 1000
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed storage URL.

    * ``redis://[user:pass@]host:port/db`` and ``rediss://...`` (TLS): one Redis server.
    * ``redis+cluster://[user:pass@]host1:port1,host2:port2`` and ``rediss+cluster://...``:
      a Redis Cluster, given by any of its nodes (a seed list).
    * ``redis+unix://[user:pass@]/path/to/redis.sock[?db=N]``: one Redis server on this
      machine through its Unix socket (``unixsocket`` in redis.conf), without TCP on the
      way, as Faktory talks to the Redis it starts.
    * ``redis+sentinel://[user:pass@]host1:port1,host2:port2/service[/db]`` and
      ``rediss+sentinel://...``: the master Redis Sentinel names ``service``, found through
      any of the sentinels listed (``user:pass`` is for the master; ``sentinel_username`` and
      ``sentinel_password`` for the sentinels, if they ask for one).

    Query parameters ``namespace`` (default ``conveyor``), ``worker_ttl`` (seconds a worker
    record outlives its last heartbeat), ``retry_for`` (seconds to keep retrying a write whose
    reply was lost), ``wait_replicas`` and ``wait_timeout`` (WAIT for that many replicas, that
    many milliseconds, before a durable write counts as done) are ours; the others go to
    redis-py (e.g. ``ssl_ca_certs``, ``ssl_cert_reqs``, ``socket_timeout``).
    """

    url: str
    cluster: bool
    tls: bool
    nodes: list[tuple[str, int]]
    namespace: str = DEFAULT_NAMESPACE
    worker_ttl: int = DEFAULT_WORKER_TTL_SECONDS
    username: str | None = None
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sentinel: bool = False
    service: str = ""
    db: int = 0
    retry_for: float = DEFAULT_RETRY_FOR_SECONDS
    wait_replicas: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS
    sentinel_auth: dict[str, str] = field(default_factory=dict)
    socket: str | None = None
    """The path of Redis's Unix socket (``redis+unix://``); ``nodes`` is empty then."""

    @property
    def client_url(self) -> str:
        """The URL for ``redis.asyncio.Redis.from_url`` without our own parameters."""
        parts = urlsplit(self.url)
        if self.socket is not None:  # redis-py's spelling: unix://[user:pass@]/path?db=N
            query = urlencode({**self.options, "db": self.db})
            return f"unix://{parts.netloc}{parts.path}?{query}"  # urlunsplit drops the //
        return urlunsplit(parts._replace(query=urlencode(self.options)))

    def open_connection(
        self, factory: Callable[[], _P]
    ) -> Coroutine[Any, Any, tuple[asyncio.BaseTransport, _P]]:
        """A raw connection to the server (the first node): through its Unix socket or TCP."""
        loop = asyncio.get_running_loop()
        if self.socket is not None:
            return loop.create_unix_connection(factory, self.socket)
        host, port = self.nodes[0]
        return loop.create_connection(factory, host, port)

    @property
    def where(self) -> str:
        """Where Redis is, for error messages."""
        if self.socket is not None:
            return self.socket
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{self.service} (sentinels {nodes})" if self.sentinel else nodes


def parse_url(url: str) -> RedisURL:
    """Parse a Redis storage URL; raises ``ValueError`` with a clear message when malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {url!r}")
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", DEFAULT_NAMESPACE)
    if not namespace or any(c in namespace for c in "{}"):
        raise ValueError(f"namespace {namespace!r} must be non-empty and have no braces")
    worker_ttl = _number(query, "worker_ttl", DEFAULT_WORKER_TTL_SECONDS, url)
    retry_for = float(_number(query, "retry_for", DEFAULT_RETRY_FOR_SECONDS, url))
    wait_replicas = _number(query, "wait_replicas", 0, url)
    wait_timeout = _number(query, "wait_timeout", DEFAULT_WAIT_TIMEOUT_MS, url)
    sentinel_auth = {
        key[len("sentinel_") :]: query.pop(key)
        for key in ("sentinel_username", "sentinel_password")
        if key in query
    }
    if scheme == "redis+unix":
        netloc = parts.netloc.rpartition("@")[2]
        if netloc or not parts.path.strip("/"):
            raise ValueError(
                f"a redis+unix URL names a socket path and no host: redis+unix:///path/to/redis.sock"
                f" ({url!r})"
            )
        socket, db = parts.path, _db([query.pop("db", "0")], url)
        cluster = sentinel = False
        nodes: list[tuple[str, int]] = []
        service = ""
    else:
        socket = None
        cluster = scheme.endswith("+cluster")
        sentinel = scheme.endswith("+sentinel")
        nodes, service, db = _network(parts, url, cluster, sentinel)
    if cluster and wait_replicas:
        raise ValueError(f"wait_replicas is not supported on a Redis Cluster: {url!r}")
    return RedisURL(
        url=url,
        cluster=cluster,
        tls=scheme.startswith("rediss"),
        nodes=nodes,
        namespace=namespace,
        worker_ttl=worker_ttl,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        options=query,
        sentinel=sentinel,
        service=service,
        db=db,
        retry_for=retry_for,
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout,
        sentinel_auth=sentinel_auth,
        socket=socket,
    )


def _network(
    parts: SplitResult, url: str, cluster: bool, sentinel: bool
) -> tuple[list[tuple[str, int]], str, int]:
    """The nodes, sentinel service and database of a URL over TCP."""
    netloc = parts.netloc.rpartition("@")[2]
    default_port = SENTINEL_PORT if sentinel else 6379
    nodes = [_parse_node(node, url, default_port) for node in netloc.split(",") if node]
    if not nodes:
        nodes = [("localhost", default_port)]
    if not (cluster or sentinel) and len(nodes) > 1:
        raise ValueError(
            "several hosts need redis+cluster:// (a Cluster seed list) or redis+sentinel:// "
            f"(sentinels): {url!r}"
        )
    path = [p for p in parts.path.split("/") if p]
    service = ""
    if sentinel:
        if not path or len(path) > 2:
            raise ValueError(
                f"a sentinel URL names its service (redis+sentinel://h:p/service/db): {url!r}"
            )
        service, path = unquote(path[0]), path[1:]
    db = _db(path, url)
    if cluster and (db != 0 or len(path) > 1):
        raise ValueError(f"Redis Cluster has only database 0: {url!r}")
    return nodes, service, db


def _number(query: dict[str, str], name: str, default: float, url: str) -> Any:
    """Pop a non-negative number parameter (an int unless ``default`` is a float)."""
    raw = query.pop(name, None)
    if raw is None:
        return default
    try:
        value = float(raw) if isinstance(default, float) else int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a non-negative number in {url!r}, not {raw!r}")
    return value


def _db(path: list[str], url: str) -> int:
    if not path:
        return 0
    try:
        return int(path[0])
    except ValueError:
        raise ValueError(f"bad database number {path[0]!r} in {url!r}") from None


def _parse_node(node: str, url: str, default_port: int) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep or (host.startswith("[") and not host.endswith("]")):
        host, port = node, str(default_port)
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad port {port!r} in {url!r}") from None
    return host.strip("[]") or "localhost", number
