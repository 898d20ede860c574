"""``conveyor cron ls|show|add|pause|resume|delete|run``: a thin shell over ``CRON``.

Each verb sends one ``CRON <subcommand> <json>`` (docs/protocol.md) with conveyor's client
and prints the reply as a table, or as JSON with ``--json``. Exit status: 0 done, 1 the
server refused (the message is printed), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from conveyor.client import Client
from conveyor.errors import ConveyorError

__all__ = ["cron_group"]

URL_HELP = "Server URL. [default: $CONVEYOR_URL, $FAKTORY_URL or tcp://localhost:7419]"


def _call(url: str | None, subcommand: str, args: dict[str, Any] | None = None) -> Any:
    async def run() -> Any:
        async with await Client.connect(url) as client:
            return await client.cron(subcommand, args)

    try:
        return asyncio.run(run())
    except ConveyorError as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from None


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _when(text: str | None) -> str:
    return (text or "").replace("T", " ").replace("Z", "")


def _state(entry: dict[str, Any]) -> str:
    if entry.get("paused"):
        return "paused"
    if entry.get("last_error") and entry["runs"] and entry["runs"][0].get("state") == "error":
        return "error"
    return "active"


@click.group("cron")
def cron_group() -> None:
    """Periodic jobs run by the server (docs/cron.md)."""


@cron_group.command("ls")
@click.option("--url", envvar="CONVEYOR_URL", help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def ls_command(url: str | None, as_json: bool) -> None:
    """List the entries: from files, added at run time, and declared in code."""
    entries = _call(url, "list")["entries"]
    if as_json:
        _print_json(entries)
        return
    table = Table("ID", "Source", "Schedule", "Job", "Next run (UTC)", "Last run", "State")
    for entry in entries:
        last = entry["runs"][0] if entry["runs"] else None
        last_text = ""
        if last is not None:
            last_text = f"{_when(last['tick'])} {last.get('outcome', last['state'])}"
        table.add_row(
            entry["id"],
            entry["source"],
            f"{entry['schedule']}\n[dim]{entry['description']}[/dim]",
            f"{entry['job']['type']} → {entry['job'].get('queue', 'default')}",
            _when(entry["next_runs"][0] if entry["next_runs"] else ""),
            last_text,
            _state(entry),
        )
    Console().print(table)


@cron_group.command("show")
@click.argument("entry_id")
@click.option("--url", envvar="CONVEYOR_URL", help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def show_command(entry_id: str, url: str | None, as_json: bool) -> None:
    """One entry: its job, next runs and last runs with how each job ended."""
    entry = _call(url, "get", {"id": entry_id})
    if as_json:
        _print_json(entry)
        return
    console = Console()
    console.print(f"[bold]{entry['id']}[/bold] ({entry['source']}, {_state(entry)})")
    console.print(f"schedule  {entry['schedule']}  [dim]{entry['description']}[/dim]")
    console.print(f"tz        {entry['tz']}    missed: {entry['missed']}")
    console.print(f"job       {json.dumps(entry['job'])}")
    console.print("next runs " + ", ".join(_when(t) for t in entry["next_runs"]))
    if entry.get("last_error"):
        error = entry["last_error"]
        console.print(f"[red]last error at {_when(error['tick'])}: {error['error']}[/red]")
    runs = Table("Tick", "Kind", "Jid", "Enqueued at", "Outcome")
    for run in entry["runs"]:
        outcome = run.get("outcome") or run["state"]
        if run.get("error") or run.get("outcome_error"):
            outcome += f": {run.get('error') or run.get('outcome_error')}"
        runs.add_row(
            _when(run["tick"]), run["kind"], run["jid"], _when(run.get("enqueued_at")), outcome
        )
    console.print(runs)


@cron_group.command("add")
@click.argument("schedule")
@click.argument("jobtype")
@click.option("--id", "entry_id", help="Entry id [default: derived from its content].")
@click.option("--args", "args_json", default="[]", help="The job's args, a JSON array.")
@click.option("--queue", default="default", show_default=True)
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of the schedule.")
@click.option("--missed", type=click.Choice(["one", "skip"]), default="one", show_default=True)
@click.option("--retry", type=int, help="The job's retry count [default: the server's].")
@click.option("--reserve-for", type=int, help="The job's reservation, in seconds.")
@click.option("--custom", "custom_json", help="The job's custom hash, a JSON object.")
@click.option("--url", envvar="CONVEYOR_URL", help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def add_command(
    schedule: str,
    jobtype: str,
    entry_id: str | None,
    args_json: str,
    queue: str,
    tz: str,
    missed: str,
    retry: int | None,
    reserve_for: int | None,
    custom_json: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Add an entry (or replace the run-time entry with its id), e.g.
    ``conveyor cron add "*/5 * * * *" Cleanup --args '[7]'``."""
    job: dict[str, Any] = {"type": jobtype, "queue": queue, "args": _json_arg(args_json, "--args")}
    if retry is not None:
        job["retry"] = retry
    if reserve_for is not None:
        job["reserve_for"] = reserve_for
    if custom_json:
        job["custom"] = _json_arg(custom_json, "--custom")
    entry: dict[str, Any] = {"schedule": schedule, "tz": tz, "missed": missed, "job": job}
    if entry_id:
        entry["id"] = entry_id
    added = _call(url, "add", entry)
    if as_json:
        _print_json(added)
    else:
        click.echo(f"added {added['id']}: {added['description']}; next run {added['next_runs'][0]}")


def _json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None


def _simple(name: str, subcommand: str, done: str, help_text: str) -> None:
    @cron_group.command(name, help=help_text)
    @click.argument("entry_id")
    @click.option("--url", envvar="CONVEYOR_URL", help=URL_HELP)
    @click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
    def command(entry_id: str, url: str | None, as_json: bool) -> None:
        reply = _call(url, subcommand, {"id": entry_id})
        if as_json:
            _print_json(reply)
        elif subcommand == "run":
            click.echo(f"{done} {entry_id}: jid {reply['jid']}")
        else:
            click.echo(f"{done} {entry_id}")


_simple("pause", "pause", "paused", "Pause an entry (file entries too): its ticks are skipped.")
_simple("resume", "resume", "resumed", "Resume a paused entry; the ticks it skipped stay skipped.")
_simple("delete", "delete", "deleted", "Delete a run-time entry and its history.")
_simple("run", "run", "enqueued", "Enqueue the entry's job now, whatever its schedule.")
