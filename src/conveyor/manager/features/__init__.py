"""Features beyond OSS Faktory, one module each: ``manager/features/<feature>.py``.

A feature is a ``Feature``: manager middleware (``manager/middleware.py``) on the push, fetch,
ack and fail hook points, plus what else it needs of the following, each optional:

* its **TOML tables** (``tables``), read from the server's config file and the ``conf.d/*.toml``
  files beside it, validated by ``from_config`` (a ``ConfigError`` names the table and key)
  and taken again on SIGHUP by ``reconfigure``: a feature is switched on and tuned from
  configuration, never by editing the server;
* **background loops** (``loops``), run by the manager like its own, on every server;
* **gates** (``wants_push``, ``wants_fetch``, ``wants_ack``, ``wants_acked``): a feature that
  only acts on jobs carrying certain ``custom`` keys (or jids) says so, and every other job
  keeps the plain paths (docs/design/hand-off.md);
* hooks beyond the chains: ``push_many`` (pushed jobs taken together, a PUSHB in one store
  step), ``acked`` (what an ACK ended, returned by the ACK itself, with ``ack_ends`` for
  records that move in that same step), ``removed`` (jobs deleted, killed, purged, expired,
  cancelled), and the ``queue_limits`` it puts on queues (``manager/flow.py``), plus its
  ``info`` section of INFO.

Its storage is a store capability (``conveyor.store.records`` and the like), never a backend's
client. Every feature class is listed once, in ``registry.FEATURES``. The layout and the rules
for adding one: docs/design/layout.md.
"""

from conveyor.manager.features.base import Feature, Loop

__all__ = ["Feature", "Loop"]
