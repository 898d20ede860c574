"""``conveyor server``: parse options, then call ``conveyor.server.run_forever``."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.config import ConfigError, load_config
from conveyor.logs import configure_logging

__all__ = ["server_command"]


@click.command("server")
@click.option(
    "--bind",
    metavar="HOST:PORT",
    help="Address of the Faktory protocol listener. [default: 127.0.0.1:7419; env CONVEYOR_BIND]",
)
@click.option(
    "--web-bind",
    metavar="HOST:PORT",
    help='Address of the web dashboard; "off" or "0" disables it. '
    "[default: 127.0.0.1:7420; env CONVEYOR_WEB_BIND]",
)
@click.option(
    "--web-read-only/--no-web-read-only",
    default=None,
    help="Dashboard shows everything and changes nothing. [default: off; env "
    "CONVEYOR_WEB_READ_ONLY]",
)
@click.option(
    "--web-root-path",
    metavar="PATH",
    help="Serve the dashboard under this prefix behind a reverse proxy, e.g. /conveyor. "
    "[env CONVEYOR_WEB_ROOT_PATH]",
)
@click.option(
    "--storage",
    metavar="URL",
    help="sqlite:///path.db, memory://, redis://host:port/db, redis+cluster://h1:p1,h2:p2, "
    "redis+sentinel://s1:p1,s2:p2/service/db or redis+unix:///path/redis.sock. "
    "[default: a SQLite file in $CONVEYOR_DATA_DIR or $XDG_DATA_HOME/conveyor; "
    "env CONVEYOR_STORAGE]",
)
@click.option(
    "--password",
    metavar="PW",
    help="Require this password from clients; a value starting with / is a file holding it. "
    "[env CONVEYOR_PASSWORD or FAKTORY_PASSWORD]",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate: serve TLS (1.2+) with --tls-key. [env CONVEYOR_TLS_CERT]",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM private key for --tls-cert. [env CONVEYOR_TLS_KEY]",
)
@click.option(
    "--max-connections",
    type=int,
    help="Refuse connections above this count. [default: 10000; env CONVEYOR_MAX_CONNECTIONS]",
)
@click.option(
    "--backpressure",
    type=int,
    metavar="N",
    help="Refuse a PUSH to any queue holding N jobs or more (0: no limit; [queues] in the "
    "TOML sets it per queue). [default: 0; env CONVEYOR_BACKPRESSURE]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Logging verbosity. [default: info; env CONVEYOR_LOG_LEVEL]",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="text, or json: one JSON object per line. [default: text; env CONVEYOR_LOG_FORMAT]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with [server] and [lifecycle] tables (see docs/configuration.md). "
    "Flags override the environment, which overrides the file. [env CONVEYOR_CONFIG]",
)
def server_command(
    bind: str | None,
    web_bind: str | None,
    web_read_only: bool | None,
    web_root_path: str | None,
    storage: str | None,
    password: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_connections: int | None,
    backpressure: int | None,
    log_level: str | None,
    log_format: str | None,
    config_file: Path | None,
) -> None:
    """Run the job server: the Faktory protocol on --bind and the dashboard on --web-bind.

    SIGTERM or Ctrl-C stops it gracefully: commands in flight are answered and the store is
    closed cleanly.
    """
    flags = {
        "bind": bind,
        "web_bind": web_bind,
        "web_read_only": web_read_only,
        "web_root_path": web_root_path,
        "storage": storage,
        "password": password,
        "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None,
        "max_connections": max_connections,
        "backpressure": backpressure,
        "log_level": log_level,
        "log_format": log_format,
        "config": str(config_file) if config_file else None,
    }
    try:
        config = load_config(flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(config.log_level, config.log_format)
    from conveyor.errors import StoreError
    from conveyor.server.app import run_forever

    try:
        run_forever(config, reload=lambda: load_config(flags))
    except (OSError, StoreError) as exc:  # a port is taken, the database cannot be opened
        raise CannotStart(str(exc)) from None
    except ValueError as exc:  # open_store rejects the storage URL
        raise click.UsageError(str(exc)) from None


class CannotStart(click.ClickException):
    """One line on stderr and exit code 2: what cannot be used, and the flag to change."""

    exit_code = 2
