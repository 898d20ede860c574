"""``conveyor worker ls|quiet|stop``: the worker processes (ADMIN worker.*).

``conveyor worker APP`` runs a worker; ``conveyor.cli`` sends ``worker ls|quiet|stop`` here.
"""

from __future__ import annotations

import click

from conveyor.client import Client
from conveyor.console.common import (
    EXIT_NOT_FOUND,
    Target,
    admin,
    emit_json,
    fail,
    plural,
    server_command,
)
from conveyor.console.render import worker_table

__all__ = ["VERBS", "worker_group"]

VERBS = ("ls", "quiet", "stop")


@click.group("worker", context_settings={"help_option_names": ["-h", "--help"]})
def worker_group() -> None:
    """List worker processes, and quiet or stop them (as the dashboard's Busy page does)."""


@worker_group.command("ls")
@server_command
async def worker_ls(target: Target, client: Client) -> int:
    """Every connected worker process: host, pid, state, busy jobs, memory, last heartbeat."""
    workers = (await admin(client, "worker.list"))["workers"]
    if target.as_json:
        emit_json(target, workers)
    elif not workers:
        target.out.print("No workers connected.")
    else:
        target.out.print(worker_table(workers))
        busy = sum(w["busy"] for w in workers)
        target.out.print(f"[dim]{plural(len(workers), 'worker')}, {plural(busy, 'busy job')}[/]")
    return 0


def _signal(name: str, op: str, done: str, help_text: str) -> click.Command:
    @worker_group.command(name, help=help_text)
    @click.argument("wids", nargs=-1, metavar="WID...")
    @click.option("--all", "every", is_flag=True, help="Every worker.")
    @server_command
    async def command(target: Target, client: Client, wids: tuple[str, ...], every: bool) -> int:
        if every == bool(wids):
            fail("name the workers (WID...), or pass --all")
        chosen = list(dict.fromkeys(wids))
        args = {"all": True} if every else {"wids": chosen}
        signalled = (await admin(client, op, args))["signalled"]
        if target.as_json:
            emit_json(target, {"signalled": signalled})
        else:
            target.out.print(f"{done} {plural(signalled, 'worker')}.")
        missing = len(chosen) - signalled
        if missing > 0:
            target.err.print(f"{plural(missing, 'worker')} not connected (see conveyor worker ls).")
            return EXIT_NOT_FOUND
        return 0

    return command


worker_quiet = _signal(
    "quiet",
    "worker.quiet",
    "Quieted",
    "Quiet workers: they fetch no more jobs and finish the running ones (like SIGTSTP).",
)
worker_stop = _signal(
    "stop",
    "worker.stop",
    "Stopped",
    "Stop workers: they finish or fail their running jobs within their grace period and "
    "exit (like SIGTERM).",
)
