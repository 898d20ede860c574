"""The Redis store (``redis://``, ``rediss://``, ``redis+cluster://``, ``redis+sentinel://``,
``redis+unix://``): many conveyor servers over one Redis, a Redis Cluster, or the master a
Sentinel names.

* ``store.py``: the job lifecycle (the ``Store`` contract of ``conveyor.store.base``), each
  transition one Lua script;
* ``codec.py``: URLs, key names (Cluster hash tags) and the value layouts the scripts share;
* ``scripts.py``: loading ``lua/*.lua`` (``_lib.lua`` prepended);
* ``calls.py``: running them, and what a lost reply means: every write takes a per-call token,
  so a retry changes nothing (docs/design/idempotency.md);
* ``connect.py``: the redis-py clients (one Redis, a Sentinel's master, a Cluster), none of
  which re-sends a command on its own;
* ``release.py``: giving back jobs a reserve took for a FETCH that never got them;
* ``wakeup.py``: the pub/sub subscriber that wakes FETCHes when another server pushes;
* one module per further capability, mixed into ``RedisStore``.
"""

from conveyor.store.redis.store import RedisStore

__all__ = ["RedisStore"]
