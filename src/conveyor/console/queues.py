"""``conveyor queue ls|inspect|pause|resume|clear|remove``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from conveyor.client import Client
from conveyor.console.common import (
    EXIT_NOT_FOUND,
    Target,
    Unsupported,
    admin,
    emit_json,
    fail,
    plural,
    server_command,
)
from conveyor.console.render import duration, queue_table
from conveyor.errors import CommandError

__all__ = ["queue_group"]


@click.group("queue", context_settings={"help_option_names": ["-h", "--help"]})
def queue_group() -> None:
    """List, inspect, pause, resume, clear and remove queues."""


async def _queues(client: Client) -> list[dict[str, Any]]:
    """Every queue with size, latency and paused; from INFO and QUEUE LATENCY (paused None)
    when the server has no ADMIN extension (Faktory)."""
    try:
        listed: list[dict[str, Any]] = (await admin(client, "queue.list"))["queues"]
        return listed
    except Unsupported:
        sizes: dict[str, int] = (await client.info())["faktory"]["queues"]
        latency = await client.queue_latency(*sizes) if sizes else {}
        return [
            {"name": n, "size": s, "latency": latency.get(n, 0.0), "paused": None}
            for n, s in sorted(sizes.items())
        ]


@queue_group.command("ls")
@server_command
async def queue_ls(target: Target, client: Client) -> int:
    """Every queue: size, latency (age of its oldest job) and whether it is paused."""
    queues = await _queues(client)
    if target.as_json:
        emit_json(target, queues)
    elif not queues:
        target.out.print("No queues yet.")
    else:
        target.out.print(queue_table(queues))
    return 0


@queue_group.command("inspect")
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@server_command
async def queue_inspect(target: Target, client: Client, names: tuple[str, ...]) -> int:
    """A queue's size, latency and state, and how many of its jobs are busy, scheduled,
    retrying, dead or completed."""
    found, missing = [], []
    for name in names:
        try:
            found.append(await admin(client, "queue.inspect", {"queue": name}))
        except CommandError as exc:
            if not exc.message.startswith("no queue named"):
                raise
            missing.append(name)
    if target.as_json:
        emit_json(target, found)
    for info in [] if target.as_json else found:
        table = Table(box=None, show_header=False, title=f"[bold]{info['name']}[/]")
        table.add_column(style="dim")
        table.add_column(justify="right")
        table.add_row("state", "paused" if info["paused"] else "running")
        table.add_row("size", f"{info['size']:,}")
        table.add_row("latency", duration(info["latency"]))
        for key in ("busy", "scheduled", "retries", "dead", "completed"):
            if key in info:  # completed: servers with the completed set
                table.add_row(key, f"{info[key]:,}")
        target.out.print(table)
    for name in missing:
        target.err.print(f"no queue named {name}")
    return EXIT_NOT_FOUND if missing else 0


async def _checked(client: Client, names: tuple[str, ...], every: bool) -> tuple[list[str], int]:
    """The queues to act on and the exit code: unknown names are reported, not sent."""
    if every == bool(names):
        fail("name the queues, or pass --all")
    known = set((await client.info())["faktory"]["queues"])
    if every:
        return sorted(known), 0
    missing = [n for n in names if n not in known]
    for name in missing:
        click.echo(f"no queue named {name}", err=True)
    return [n for n in names if n in known], EXIT_NOT_FOUND if missing else 0


def _names_and_all(func: Any) -> Any:
    func = click.option("--all", "every", is_flag=True, help="Every queue.")(func)
    return click.argument("names", nargs=-1, metavar="QUEUE...")(func)


def _confirm(target: Target, yes: bool, question: str) -> None:
    if yes:
        return
    if not click.get_text_stream("stdin").isatty():
        fail(f"{question} Pass --yes to do it without asking.")
    if not click.confirm(question, default=False, err=True):
        fail("nothing changed", 1)


@queue_group.command("pause")
@_names_and_all
@server_command
async def queue_pause(target: Target, client: Client, names: tuple[str, ...], every: bool) -> int:
    """Stop handing out the queues' jobs (FWP QUEUE PAUSE); pushes still land."""
    chosen, code = await _checked(client, names, every)
    if chosen:
        await client.queue_pause(*chosen)
    _done(target, "paused", chosen)
    return code


@queue_group.command("resume")
@_names_and_all
@server_command
async def queue_resume(target: Target, client: Client, names: tuple[str, ...], every: bool) -> int:
    """Hand out the queues' jobs again (FWP QUEUE RESUME)."""
    chosen, code = await _checked(client, names, every)
    if chosen:
        await client.queue_resume(*chosen)
    _done(target, "resumed", chosen)
    return code


@queue_group.command("clear")
@_names_and_all
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@server_command
async def queue_clear(
    target: Target, client: Client, names: tuple[str, ...], every: bool, yes: bool
) -> int:
    """Delete every job waiting in the queues; the queues stay (paused, if they were)."""
    chosen, code = await _checked(client, names, every)
    if chosen:
        _confirm(target, yes, f"Delete every job waiting in {', '.join(chosen)}?")
    deleted = {n: (await admin(client, "queue.clear", {"queue": n}))["deleted"] for n in chosen}
    if target.as_json:
        emit_json(target, {"deleted": deleted})
    for name, count in deleted.items() if not target.as_json else ():
        target.out.print(f"Deleted {plural(count, 'job')} from {name}.")
    return code


@queue_group.command("remove")
@_names_and_all
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@server_command
async def queue_remove(
    target: Target, client: Client, names: tuple[str, ...], every: bool, yes: bool
) -> int:
    """Delete the queues and all their jobs (FWP QUEUE REMOVE)."""
    chosen, code = await _checked(client, names, every)
    if chosen:
        _confirm(target, yes, f"Remove {', '.join(chosen)} and all their jobs?")
        await client.queue_remove(*chosen)
    _done(target, "removed", chosen)
    return code


def _done(target: Target, verb: str, names: list[str]) -> None:
    if target.as_json:
        emit_json(target, {verb: names})
    elif names:
        target.out.print(f"{verb.capitalize()}: {', '.join(names)}.")
