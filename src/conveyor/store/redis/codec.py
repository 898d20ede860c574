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

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

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


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed storage URL.

    * ``redis://[user:pass@]host:port/db`` and ``rediss://...`` (TLS): one Redis server.
    * ``redis+cluster://[user:pass@]host1:port1,host2:port2`` and ``rediss+cluster://...``:
      a Redis Cluster, given by any of its nodes (a seed list).

    Query parameters ``namespace`` (default ``conveyor``) and ``worker_ttl`` (seconds a worker
    record outlives its last heartbeat) are ours; the others go to redis-py (e.g.
    ``ssl_ca_certs``, ``ssl_cert_reqs``, ``socket_timeout``).
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

    @property
    def client_url(self) -> str:
        """The URL for ``redis.asyncio.Redis.from_url`` without our own parameters."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(query=urlencode(self.options)))


def parse_url(url: str) -> RedisURL:
    """Parse a Redis storage URL; raises ``ValueError`` with a clear message when malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError(f"not a Redis URL: {url!r}")
    query = dict(parse_qsl(parts.query))
    namespace = query.pop("namespace", DEFAULT_NAMESPACE)
    if not namespace or any(c in namespace for c in "{}"):
        raise ValueError(f"namespace {namespace!r} must be non-empty and have no braces")
    try:
        worker_ttl = int(query.pop("worker_ttl", DEFAULT_WORKER_TTL_SECONDS))
    except ValueError:
        raise ValueError(f"worker_ttl must be a whole number of seconds in {url!r}") from None
    cluster = scheme.endswith("+cluster")
    netloc = parts.netloc.rpartition("@")[2]
    nodes = [_parse_node(node, url) for node in netloc.split(",") if node]
    if not nodes:
        nodes = [("localhost", 6379)]
    if not cluster and len(nodes) > 1:
        raise ValueError(f"several hosts need redis+cluster:// (a Cluster seed list): {url!r}")
    if cluster and parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"Redis Cluster has only database 0: {url!r}")
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
    )


def _parse_node(node: str, url: str) -> tuple[str, int]:
    host, sep, port = node.rpartition(":")
    if not sep:
        host, port = node, "6379"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad port {port!r} in {url!r}") from None
    return host.strip("[]") or "localhost", number
