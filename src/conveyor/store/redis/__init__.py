"""The Redis store (``redis://``, ``rediss://``, ``redis+cluster://``): many conveyor servers
over one Redis or a Redis Cluster.

* ``store.py``: the job lifecycle (the ``Store`` contract of ``conveyor.store.base``), each
  transition one Lua script;
* ``codec.py``: URLs, key names (Cluster hash tags) and the value layouts the scripts share;
* ``scripts.py``: loading ``lua/*.lua`` (``_lib.lua`` prepended) and running them;
* ``wakeup.py``: the pub/sub subscriber that wakes FETCHes when another server pushes;
* one module per further capability, mixed into ``RedisStore``.
"""

from conveyor.store.redis.store import RedisStore

__all__ = ["RedisStore"]
