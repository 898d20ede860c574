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
    "stats": "conveyor.console.stats:stats_command",
    "push": "conveyor.console.stats:push_command",
    "queue": "conveyor.console.queues:queue_group",
    "job": "conveyor.console.jobs:job_group",
    "group": "conveyor.console.groups:group_group",
    "dash": "conveyor.console.dash:dash_command",
    "cron": "conveyor.console.cron:cron_group",
    "batch": "conveyor.console.batches:batch_group",
}
WORKER_INSPECTOR = "conveyor.console.workers:worker_group"
"""``conveyor worker ls|quiet|stop`` inspect workers; any other ``conveyor worker ...`` runs one."""
WORKER_VERBS = ("ls", "quiet", "stop")


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        return None if target is None else _load(target)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name == "worker" and rest and rest[0] in WORKER_VERBS:
            command = _load(WORKER_INSPECTOR)
        return name, command, rest


def _load(target: str) -> click.Command | None:
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


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="conveyor worker ls|quiet|stop lists and signals the connected workers. "
    "Every command: docs/cli.md.",
)
@click.version_option(package_name="conveyor-jobs", prog_name="conveyor")
def main() -> None:
    """conveyor: background jobs for Python that any language can use."""
