"""Server configuration: command-line flags > environment > TOML file > defaults.

The TOML file (``--config path.toml`` or ``CONVEYOR_CONFIG``) has two tables::

    [server]
    bind = "127.0.0.1:7419"
    web_bind = "127.0.0.1:7420"        # "off" or "0" disables the dashboard
    web_read_only = false              # dashboard shows everything, changes nothing
    web_root_path = ""                 # e.g. "/conveyor" behind a reverse proxy
    storage = "sqlite:////var/lib/conveyor/conveyor.db"
    password = "s3cret"                # or "/run/secrets/pw": a path, read at startup
    tls_cert = "/etc/conveyor/cert.pem"
    tls_key = "/etc/conveyor/key.pem"
    max_connections = 10000
    idle_timeout_seconds = 120         # 0: connections may idle forever
    log_level = "info"

    [lifecycle]                        # every field of ManagerConfig, same names
    fetch_wait_seconds = 2.0

    [metrics]                          # every field of MetricsConfig, same names
    store_timing = false
    statsd = "127.0.0.1:8125"

Every key also has an environment variable ``CONVEYOR_<KEY_UPPERCASE>`` (``CONVEYOR_BIND``,
``CONVEYOR_FETCH_WAIT_SECONDS``, ...), ``[metrics]`` keys ``CONVEYOR_METRICS_<KEY>``;
``FAKTORY_PASSWORD`` and ``DD_DOGSTATSD_URL`` work as in Faktory.
docs/configuration.md lists them all with their defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.manager.config import ManagerConfig
from conveyor.metrics.config import METRICS_KEYS, MetricsConfig

if TYPE_CHECKING:
    from conveyor.manager.features import Feature

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_WEB_BIND",
    "ConfigError",
    "ServerConfig",
    "default_storage_url",
    "load_config",
    "parse_bind",
]

DEFAULT_BIND = "127.0.0.1:7419"
DEFAULT_WEB_BIND = "127.0.0.1:7420"
DISABLED_WORDS = frozenset({"0", "off", "no", "none", "false", "disabled"})
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``conveyor server`` needs. Defaults suit an embedded test server too."""

    host: str = "127.0.0.1"
    port: int = 7419
    web_host: str = "127.0.0.1"
    web_port: int | None = 7420
    """``None`` disables the web dashboard."""
    web_read_only: bool = False
    """The dashboard shows everything and refuses every change (HTTP 403)."""
    web_root_path: str = ""
    """Path prefix the dashboard is served under behind a reverse proxy (e.g. ``/conveyor``)."""
    storage: str = "memory://"
    password: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_connections: int = 10_000
    log_level: str = "info"
    log_format: str = "text"
    """``text`` or ``json`` (one object per line: ``conveyor.logs``)."""
    handshake_timeout_seconds: float = 2.0
    """A connection must send a valid HELLO within this time (Faktory: 2 s)."""
    max_line_bytes: int = 16 * 1024 * 1024
    """Longest command line accepted; a longer one is refused and the connection closed."""
    max_partial_bytes: int = 128 * 1024 * 1024
    """What the partial lines of all connections together may hold (a line still arriving,
    up to ``max_line_bytes`` each); the connection whose data would go over is refused."""
    idle_timeout_seconds: float = 120.0
    """After HELLO, a connection that sends nothing and is sent nothing for this long is
    closed (0: never). Workers BEAT every 15 s; pooled producer connections reconnect."""
    shutdown_grace_seconds: float = 5.0
    """On shutdown, how long commands in flight (a waiting FETCH) may take to finish."""
    manager: ManagerConfig = field(default_factory=ManagerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    features: Mapping[str, Any] = field(default_factory=dict)
    """The TOML tables the features read (``[queues]``, ``[throttles]``, ``[[cron]]``, ...),
    from the config file and its ``conf.d/*.toml``; see ``conveyor.manager.features``."""

    def build_features(self) -> list[Feature]:
        """Every feature, configured from ``features`` and checked against the job limits
        of ``manager``. Raises ``ConfigError``."""
        from conveyor.manager.features.registry import build_features

        return build_features(self.features, self.manager)

    @property
    def bind(self) -> str:
        return _format_bind(self.host, self.port)

    @property
    def web_bind(self) -> str | None:
        return None if self.web_port is None else _format_bind(self.web_host, self.web_port)


# key -> (ServerConfig fields it sets, kind); "bind" kinds fill host+port.
SERVER_KEYS: dict[str, str] = {
    "bind": "bind",
    "web_bind": "web_bind",
    "web_read_only": "bool",
    "web_root_path": "str",
    "storage": "str",
    "password": "password",
    "tls_cert": "path",
    "tls_key": "path",
    "max_connections": "int",
    "log_level": "log_level",
    "log_format": "log_format",
    "handshake_timeout_seconds": "float",
    "max_line_bytes": "int",
    "max_partial_bytes": "int",
    "idle_timeout_seconds": "float",
    "shutdown_grace_seconds": "float",
}
MANAGER_KEYS: dict[str, type] = {f.name: type(f.default) for f in dataclasses.fields(ManagerConfig)}
FEATURE_KEYS: dict[str, tuple[str, str]] = {"backpressure": ("queues", "backpressure")}
"""Flags (``--backpressure``) and variables (``CONVEYOR_BACKPRESSURE``) that set a key of a
feature's table (``[queues] backpressure``), over what the files say."""


def load_config(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Build the configuration; ``flags`` holds command-line values (``None`` = not given).

    Raises ``ConfigError`` with a message naming the bad setting and where it came from.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    config_path = flags.pop("config", None) or environ.get("CONVEYOR_CONFIG")
    server_raw: dict[str, tuple[Any, str]] = {}
    manager_raw: dict[str, tuple[Any, str]] = {}
    metrics_raw: dict[str, tuple[Any, str]] = {}
    features: dict[str, Any] = {}
    if config_path:
        features = _read_toml(Path(config_path), server_raw, manager_raw, metrics_raw)
    _feature_settings(features, flags, environ)
    for key in SERVER_KEYS:
        if (value := environ.get(f"CONVEYOR_{key.upper()}")) is not None:
            server_raw[key] = (value, f"CONVEYOR_{key.upper()}")
    if "CONVEYOR_PASSWORD" not in environ and "FAKTORY_PASSWORD" in environ:
        server_raw["password"] = (environ["FAKTORY_PASSWORD"], "FAKTORY_PASSWORD")
    for key in MANAGER_KEYS:
        if (value := environ.get(f"CONVEYOR_{key.upper()}")) is not None:
            manager_raw[key] = (value, f"CONVEYOR_{key.upper()}")
    _metrics_from_env(environ, metrics_raw)
    for key, value in flags.items():
        if key not in SERVER_KEYS:
            raise ConfigError(f"unknown option {key!r}")
        server_raw[key] = (value, "--" + key.replace("_", "-"))
    config = _build(server_raw, manager_raw, features, environ)
    return dataclasses.replace(config, metrics=_build_metrics(metrics_raw))


def _metrics_from_env(environ: Mapping[str, str], metrics_raw: dict[str, tuple[Any, str]]) -> None:
    dogstatsd = environ.get("DD_DOGSTATSD_URL", "").strip()
    if dogstatsd:
        metrics_raw["statsd"] = (dogstatsd.removeprefix("udp://"), "DD_DOGSTATSD_URL")
    for key in METRICS_KEYS:
        if (value := environ.get(f"CONVEYOR_METRICS_{key.upper()}")) is not None:
            metrics_raw[key] = (value, f"CONVEYOR_METRICS_{key.upper()}")


def _build_metrics(raw: dict[str, tuple[Any, str]]) -> MetricsConfig:
    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        kind = METRICS_KEYS[key]
        if kind is bool:
            values[key] = _as_bool(value, source)
        elif key == "statsd_tags" and isinstance(value, list):
            values[key] = ",".join(_as_str(tag, source) for tag in value)
        else:
            values[key] = _coerce(value, kind, source)
    metrics = MetricsConfig(**values)
    if metrics.statsd:
        parse_bind(metrics.statsd, "[metrics] statsd")
    if metrics.statsd_interval_seconds <= 0:
        raise ConfigError("[metrics] statsd_interval_seconds must be positive")
    return metrics


def _feature_settings(
    features: dict[str, Any], flags: dict[str, Any], environ: Mapping[str, str]
) -> None:
    """Apply the ``FEATURE_KEYS`` given as flags or environment variables (taken out of
    ``flags``): a flag wins over the environment, which wins over the files."""
    for key, (table, name) in FEATURE_KEYS.items():
        variable = f"CONVEYOR_{key.upper()}"
        if key in flags:
            raw, source = flags.pop(key), "--" + key.replace("_", "-")
        elif variable in environ:
            raw, source = environ[variable], variable
        else:
            continue
        section = features.setdefault(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{table}] must be a table")
        section[name] = _coerce(raw, int, source)


def _read_toml(
    path: Path,
    server_raw: dict[str, tuple[Any, str]],
    manager_raw: dict[str, tuple[Any, str]],
    metrics_raw: dict[str, tuple[Any, str]],
) -> dict[str, Any]:
    """Read the config file and the ``conf.d/*.toml`` files beside it into ``server_raw``,
    ``manager_raw`` and ``metrics_raw``; return the features' tables."""
    from conveyor.manager.features.registry import FEATURE_TABLES

    document = _merged_document(path)
    for table, known, target in (
        ("server", SERVER_KEYS, server_raw),
        ("lifecycle", MANAGER_KEYS, manager_raw),
        ("metrics", METRICS_KEYS, metrics_raw),
    ):
        section = document.pop(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        for key, value in section.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r} in [{table}]")
            target[key] = (value, f"{path} [{table}] {key}")
    document.pop("worker", None)  # conveyor worker's settings (conveyor.worker.settings)
    features = {name: document.pop(name) for name in list(document) if name in FEATURE_TABLES}
    if document:
        unknown = ", ".join(sorted(document))
        names = ("server", "lifecycle", "metrics", "worker", *FEATURE_TABLES)
        known_tables = ", ".join(f"[{name}]" for name in names)
        raise ConfigError(f"{path}: unknown table or key {unknown} (known: {known_tables})")
    return features


def _merged_document(path: Path) -> dict[str, Any]:
    """The config file merged with ``<its directory>/conf.d/*.toml`` in name order, as
    Faktory reads ``conf.d``: arrays of tables (``[[cron]]``) are concatenated and tables are
    merged, but one key set in two files is an error naming both."""
    document = _parse_toml(path)
    origin: dict[str, Path] = {}
    _note_origin(document, (), path, origin)
    conf_d = path.parent / "conf.d"
    for extra in sorted(conf_d.glob("*.toml")) if conf_d.is_dir() else ():
        _merge(document, _parse_toml(extra), (), extra, origin)
    return document


def _parse_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _note_origin(
    table: dict[str, Any], prefix: tuple[str, ...], path: Path, origin: dict[str, Path]
) -> None:
    for key, value in table.items():
        if isinstance(value, dict):
            _note_origin(value, (*prefix, key), path, origin)
        else:
            origin[".".join((*prefix, key))] = path


def _merge(
    into: dict[str, Any],
    extra: dict[str, Any],
    prefix: tuple[str, ...],
    path: Path,
    origin: dict[str, Path],
) -> None:
    for key, value in extra.items():
        dotted = ".".join((*prefix, key))
        current = into.get(key)
        if current is None:
            into[key] = value
            _note_origin({key: value}, prefix, path, origin)
        elif isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value, (*prefix, key), path, origin)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)  # [[cron]] entries of every file
        else:
            first = origin.get(dotted, "another file")
            raise ConfigError(f"{path}: {dotted} is set in {first} already")


def _build(
    server_raw: dict[str, tuple[Any, str]],
    manager_raw: dict[str, tuple[Any, str]],
    features: dict[str, Any],
    environ: Mapping[str, str],
) -> ServerConfig:
    values: dict[str, Any] = {}
    for key, (raw, source) in server_raw.items():
        kind = SERVER_KEYS[key]
        if kind == "bind":
            values["host"], values["port"] = parse_bind(_as_str(raw, source), source)
        elif kind == "web_bind":
            text = _as_str(raw, source).strip()
            if text.lower() in DISABLED_WORDS or not text:
                values["web_port"] = None
            else:
                values["web_host"], values["web_port"] = parse_bind(text, source)
        elif kind == "password":
            values["password"] = _resolve_password(_as_str(raw, source), source)
        elif kind == "path":
            values[key] = Path(_as_str(raw, source)).expanduser()
        elif kind == "bool":
            values[key] = _as_bool(raw, source)
        elif kind == "log_level":
            values[key] = _log_level(_as_str(raw, source), source)
        elif kind == "log_format":
            values[key] = _log_format(_as_str(raw, source), source)
        else:
            values[key] = _coerce(raw, {"str": str, "int": int, "float": float}[kind], source)
    lifecycle = {
        key: _coerce(raw, MANAGER_KEYS[key], src) for key, (raw, src) in manager_raw.items()
    }
    values["manager"] = ManagerConfig(**lifecycle)
    values["features"] = features
    if "storage" not in values:
        values["storage"] = default_storage_url(environ)
    config = ServerConfig(**values)
    _check(config)
    config.build_features()  # a bad feature setting stops the start (or a reload) here
    return config


def _check(config: ServerConfig) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    for path in (config.tls_cert, config.tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    if config.max_connections < 1:
        raise ConfigError("max_connections must be at least 1")
    if config.max_line_bytes < 1024:
        raise ConfigError("max_line_bytes must be at least 1024")
    if config.max_partial_bytes < config.max_line_bytes:
        raise ConfigError("max_partial_bytes must be at least max_line_bytes")
    if config.idle_timeout_seconds < 0:
        raise ConfigError("idle_timeout_seconds must not be negative (0 disables it)")
    if config.handshake_timeout_seconds <= 0:
        raise ConfigError("handshake_timeout_seconds must be positive")
    if config.shutdown_grace_seconds < 0:
        raise ConfigError("shutdown_grace_seconds must not be negative")
    if "://" not in config.storage:
        raise ConfigError(
            f"storage {config.storage!r} is not a URL: use sqlite:///path.db, memory:// "
            "or redis://host:port/0"
        )


def parse_bind(text: str, source: str = "bind") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces) -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ConfigError(f"{source}: expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{source}: port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: port {port} is out of range 0-65535")
    return host, port


def _format_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolve_password(value: str, source: str) -> str:
    """As Faktory: a value starting with ``/`` names a file holding the password."""
    if not value.startswith("/"):
        return value
    try:
        return Path(value).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read password file {value}: {exc.strerror}") from None


def _log_level(value: str, source: str) -> str:
    level = value.strip().lower()
    level = "warning" if level == "warn" else level
    if level not in LOG_LEVELS:
        raise ConfigError(f"{source}: log level must be one of {', '.join(LOG_LEVELS)}")
    return level


def _log_format(value: str, source: str) -> str:
    text = value.strip().lower()
    if text not in ("text", "json"):
        raise ConfigError(f"{source}: log format must be text or json, got {value!r}")
    return text


def _as_str(value: Any, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: expected a string, got {value!r}")
    return value


def _as_bool(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{source}: expected true or false, got {value!r}")


def _coerce(value: Any, kind: type, source: str) -> Any:
    if kind is str:
        return _as_str(value, source)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{source}: expected a number, got {value!r}")
    try:
        number = kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{source}: expected {noun}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ConfigError(f"{source}: expected an integer, got {value!r}")
    return number


def default_storage_url(environ: Mapping[str, str] | None = None) -> str:
    """A SQLite file under ``$CONVEYOR_DATA_DIR`` or ``$XDG_DATA_HOME/conveyor`` (created)."""
    environ = os.environ if environ is None else environ
    if directory := environ.get("CONVEYOR_DATA_DIR"):
        base = Path(directory).expanduser()
    else:
        xdg = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = Path(xdg).expanduser() / "conveyor"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {base}: {exc.strerror}") from None
    return f"sqlite:///{base / 'conveyor.db'}"
