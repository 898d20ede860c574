"""``conveyor worker``'s settings from a TOML file's ``[worker]`` table and the environment.

Precedence, as for the server: command-line flags > environment > TOML file > defaults. The
file is ``--config path.toml`` or ``CONVEYOR_CONFIG`` (the same file as the server's may hold
both; each reads its own tables)::

    [worker]
    app = "myapp.jobs:app"
    url = "tcp+tls://:s3cret@jobs.internal:7419"
    concurrency = 20
    queues = ["critical:3", "default:1"]
    labels = ["blue"]
    processes = 2
    grace = 25.0
    rate_limit = "100/s"
    log_format = "json"
    metrics_bind = "127.0.0.1:9191"
    tls_ca = "/etc/conveyor/ca.pem"

Every key is also ``CONVEYOR_WORKER_<KEY>`` in the environment (lists separated by spaces),
except the server URL, which stays ``CONVEYOR_URL`` (or ``FAKTORY_URL``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "WORKER_KEYS", "SettingsError", "env_name", "read_worker_table"]

ENV_PREFIX = "CONVEYOR_WORKER_"

WORKER_KEYS: dict[str, str] = {
    # TOML key -> the click parameter it sets
    "app": "app_path",
    "url": "url",
    "concurrency": "concurrency",
    "queues": "queues",
    "labels": "labels",
    "processes": "processes",
    "burst": "burst",
    "batch": "batch",
    "grace": "grace",
    "heartbeat": "heartbeat",
    "threads": "threads",
    "rate_limit": "rate_limit",
    "log_level": "log_level",
    "log_format": "log_format",
    "metrics_bind": "metrics_bind",
    "tls_ca": "tls_ca",
}
LIST_KEYS = frozenset({"queues", "labels"})


class SettingsError(ValueError):
    """The file is missing, not TOML, or its ``[worker]`` table has an unknown key."""


def env_name(key: str) -> str:
    return "CONVEYOR_URL" if key == "url" else ENV_PREFIX + key.upper()


def read_worker_table(path: Path) -> dict[str, Any]:
    """The ``[worker]`` table as click's ``default_map`` (parameter name -> value)."""
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    table = document.get("worker", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: [worker] must be a table")
    defaults: dict[str, Any] = {}
    for key, value in table.items():
        if key not in WORKER_KEYS:
            known = ", ".join(sorted(WORKER_KEYS))
            raise SettingsError(f"{path}: unknown key {key!r} in [worker] (known: {known})")
        if key in LIST_KEYS:
            value = value.split() if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{path}: [worker] {key} must be a list of strings")
        defaults[WORKER_KEYS[key]] = value
    return defaults
