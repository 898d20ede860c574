"""Configuration precedence and validation: flags > environment > TOML file > defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conveyor.config import ConfigError, ServerConfig, default_storage_url, load_config
from conveyor.manager import ManagerConfig


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults(tmp_path: Path) -> None:
    config = load_config({}, {"CONVEYOR_DATA_DIR": str(tmp_path / "data")})
    assert (config.host, config.port) == ("127.0.0.1", 7419)
    assert config.web_bind == "127.0.0.1:7420"
    assert config.storage == f"sqlite:///{tmp_path / 'data' / 'conveyor.db'}"
    assert (tmp_path / "data").is_dir()
    assert config.max_connections == 10_000
    assert config.manager == ManagerConfig()
    assert config.password == ""


def test_default_storage_follows_xdg(tmp_path: Path) -> None:
    url = default_storage_url({"XDG_DATA_HOME": str(tmp_path)})
    assert url == f"sqlite:///{tmp_path / 'conveyor' / 'conveyor.db'}"
    assert url.startswith("sqlite:////")  # absolute path, SQLAlchemy style


def test_precedence_flags_env_file(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "c.toml",
        '[server]\nbind = "0.0.0.0:1000"\nweb_bind = "127.0.0.1:2000"\nstorage = "memory://"\n'
        "max_connections = 5\n[lifecycle]\nfetch_wait_seconds = 0.5\ndefault_retry = 3\n",
    )
    env = {"CONVEYOR_BIND": "127.0.0.2:1001", "CONVEYOR_DEFAULT_RETRY": "7"}
    config = load_config({"config": toml}, env)
    assert (config.host, config.port) == ("127.0.0.2", 1001)
    assert config.web_port == 2000
    assert config.max_connections == 5
    assert config.manager.fetch_wait_seconds == 0.5
    assert config.manager.default_retry == 7
    config = load_config({"config": toml, "bind": "[::1]:1002", "web_bind": "off"}, env)
    assert (config.host, config.port, config.bind) == ("::1", 1002, "[::1]:1002")
    assert config.web_port is None
    assert config.web_bind is None


def test_connection_limits_from_env_and_file(tmp_path: Path) -> None:
    defaults = load_config({"storage": "memory://"}, {})
    assert (defaults.idle_timeout_seconds, defaults.max_partial_bytes) == (120.0, 128 << 20)
    toml = write(tmp_path / "c.toml", "[server]\nidle_timeout_seconds = 0\n")
    env = {"CONVEYOR_MAX_PARTIAL_BYTES": "33554432", "CONVEYOR_CONFIG": toml}
    config = load_config({"storage": "memory://"}, env)
    assert (config.idle_timeout_seconds, config.max_partial_bytes) == (0.0, 32 << 20)


def test_config_file_from_env(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", '[server]\nstorage = "memory://"\nlog_level = "WARN"\n')
    config = load_config({}, {"CONVEYOR_CONFIG": toml})
    assert config.log_level == "warning"


def test_passwords(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", "  from-file \n")
    base = {"CONVEYOR_STORAGE": "memory://"}
    assert load_config({}, {**base, "FAKTORY_PASSWORD": "f"}).password == "f"
    assert load_config({}, {**base, "FAKTORY_PASSWORD": secret}).password == "from-file"
    both = {**base, "FAKTORY_PASSWORD": "f", "CONVEYOR_PASSWORD": "c"}
    assert load_config({}, both).password == "c"
    assert load_config({"password": "flag"}, both).password == "flag"
    with pytest.raises(ConfigError, match="cannot read password file"):
        load_config({"password": str(tmp_path / "nope")}, base)


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"bind": "7419"}, {}, "--bind: expected HOST:PORT"),
        ({"bind": "h:x"}, {}, "port must be a number"),
        ({"bind": "h:70000"}, {}, "out of range"),
        ({}, {"CONVEYOR_MAX_CONNECTIONS": "many"}, "CONVEYOR_MAX_CONNECTIONS: expected an integer"),
        (
            {},
            {"CONVEYOR_FETCH_WAIT_SECONDS": "x"},
            "CONVEYOR_FETCH_WAIT_SECONDS: expected a number",
        ),
        ({"max_connections": 0}, {}, "max_connections must be at least 1"),
        ({"storage": "just-a-path.db"}, {}, "is not a URL"),
        ({"log_level": "loud"}, {}, "log level must be one of"),
        ({"tls_key": "/nope.pem"}, {}, "TLS needs both"),
        ({"tls_key": "/nope.pem", "tls_cert": "/nope2.pem"}, {}, "does not exist"),
        ({}, {"CONVEYOR_IDLE_TIMEOUT_SECONDS": "-1"}, "idle_timeout_seconds must not be"),
        (
            {},
            {"CONVEYOR_MAX_PARTIAL_BYTES": "1048576"},
            "max_partial_bytes must be at least max_line_bytes",
        ),
    ],
)
def test_bad_values(flags: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"storage": "memory://", **flags}, env)


def test_bad_toml(tmp_path: Path) -> None:
    cases = {
        "x = [": "is not valid TOML",
        "[server]\nnope = 1\n": "unknown key 'nope' in [server]",
        "[lifecycle]\nnope = 1\n": "unknown key 'nope' in [lifecycle]",
        "[other]\n": "unknown table or key other",
        "[lifecycle]\ndefault_retry = 2.5\n": "expected an integer",
        "[lifecycle]\ndefault_retry = true\n": "expected a number",
        "[server]\nbind = 7419\n": "expected a string",
        "server = 1\n": "must be a table",
    }
    for index, (text, message) in enumerate(cases.items()):
        path = write(tmp_path / f"{index}.toml", text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config({"config": path}, {"CONVEYOR_STORAGE": "memory://"})


def test_embedded_defaults() -> None:
    config = ServerConfig()
    assert config.storage == "memory://"
    assert config.handshake_timeout_seconds == 2.0
    assert config.max_line_bytes == 16 * 1024 * 1024


def test_configuration_doc_lists_every_setting() -> None:
    import dataclasses

    from conveyor.config import SERVER_KEYS

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for field in dataclasses.fields(ManagerConfig):
        assert f"`{field.name}`" in doc, field.name
        assert f"`CONVEYOR_{field.name.upper()}`" in doc, field.name
    for key in SERVER_KEYS:
        assert f"`{key}`" in doc, key
