"""The ``conveyor`` command: a thin shell over the library.

Each subcommand lives beside what it runs (``conveyor.server.cli``, ``conveyor.worker.cli``,
...) and is imported only when used, so ``conveyor --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# name -> "module:attribute" of a click.Command
SUBCOMMANDS = {
    "backup": "conveyor.server.backup_cli:backup_command",
    "server": "conveyor.server.cli:server_command",
    "worker": "conveyor.worker.cli:worker_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                return None  # that part of conveyor is not built yet
            raise
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conveyor-jobs", prog_name="conveyor")
def main() -> None:
    """conveyor: background jobs for Python that any language can use."""
