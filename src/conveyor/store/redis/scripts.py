"""Lua scripts of the Redis store: loaded from ``store/redis/lua/*.lua``.

Every script gets ``_lib.lua`` (shared helpers) prepended. ``calls.Caller`` runs them with
EVALSHA, falling back to EVAL (which also caches the script) after a ``NOSCRIPT`` reply, e.g.
after Redis restarted or a failover.
"""

from __future__ import annotations

import hashlib
from importlib import resources

__all__ = ["Script", "load_scripts"]


class Script:
    """One Lua script. ``sha`` is the SHA1 EVALSHA calls it by."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def load_scripts() -> dict[str, Script]:
    """Every script of ``store/redis/lua/`` by name (file name without ``.lua``)."""
    folder = resources.files("conveyor.store.redis") / "lua"
    lib = (folder / "_lib.lua").read_text()
    scripts: dict[str, Script] = {}
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".lua") and not name.startswith("_"):
            scripts[name[:-4]] = Script(name[:-4], lib + "\n" + item.read_text())
    return scripts
