"""Lua scripts of the Redis store: loaded from ``store/redis/lua/*.lua`` and run with EVALSHA.

Every script gets ``_lib.lua`` (shared helpers) prepended. EVALSHA falls back to EVAL (which
also caches the script) after a ``NOSCRIPT`` reply, e.g. after Redis restarted or a Cluster
failover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, Protocol

from redis.exceptions import NoScriptError

__all__ = ["Script", "load_scripts"]

Arg = str | bytes | int | float


class _Evaluator(Protocol):
    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any: ...


class Script:
    """One Lua script. Calling it runs it atomically on the node owning its keys."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: _Evaluator, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


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
