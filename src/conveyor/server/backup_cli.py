"""``conveyor backup OUT``: an online backup of the server's SQLite database."""

from __future__ import annotations

from pathlib import Path

import click

from conveyor.config import ConfigError, load_config

__all__ = ["backup_command"]


@click.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--storage",
    metavar="URL",
    help="The server's sqlite:/// URL. [default: as conveyor server finds it: --config, "
    "CONVEYOR_STORAGE, the data directory]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The server's TOML file, to find its storage. [env CONVEYOR_CONFIG]",
)
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
def backup_command(
    target: Path, storage: str | None, config_file: Path | None, force: bool
) -> None:
    """Copy the SQLite database to TARGET while the server keeps running.

    The copy is one consistent snapshot, checked and fsynced before it replaces TARGET.
    Restore: stop the server, put the copy at the database's path (delete any -wal and -shm
    files beside it), start the server. See docs/operations.md.
    """
    from conveyor.store.sqlite.backup import BackupError, backup
    from conveyor.store.sqlite.db import SQLiteOptions

    try:
        flags = {"storage": storage, "config": str(config_file) if config_file else None}
        config = load_config(flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    scheme = config.storage.partition("://")[0]
    if scheme != "sqlite":
        hint = {
            "memory": "an in-memory store has nothing on disk to back up",
            "redis": "back Redis up with its own tools (BGSAVE or AOF; docs/redis.md)",
            "rediss": "back Redis up with its own tools (BGSAVE or AOF; docs/redis.md)",
        }.get(scheme, "only sqlite:/// storage can be backed up this way")
        raise click.UsageError(f"storage {scheme}://: {hint}")
    try:
        path = SQLiteOptions.from_url(config.storage).path
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if path == ":memory:":
        raise click.UsageError("sqlite:///:memory: has nothing on disk to back up")
    try:
        report = backup(Path(path), target, overwrite=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"backed up {report.source} to {report.target}: "
        f"{report.size_bytes / 1048576:.1f} MiB, schema {report.schema_version}, integrity ok"
    )
