"""``conveyor cron ls|show|add|pause|resume|delete|run``: the server's periodic jobs
(ADMIN cron.*), with the options, outputs and exit codes of every inspector command."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from conveyor.client import Client
from conveyor.console.common import Target, admin, emit_json, server_command

__all__ = ["cron_group"]


@click.group("cron", context_settings={"help_option_names": ["-h", "--help"]})
def cron_group() -> None:
    """Periodic jobs run by the server (docs/cron.md)."""


def _when(text: str | None) -> str:
    return (text or "").replace("T", " ").replace("Z", "")


def _state(entry: dict[str, Any]) -> str:
    if entry.get("paused"):
        return "[yellow]paused[/]"
    if entry.get("last_error") and entry["runs"] and entry["runs"][0].get("state") == "error":
        return "[red]error[/]"
    return "active"


def entry_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "SOURCE", "SCHEDULE", "JOB", "NEXT RUN (UTC)", "LAST RUN", "STATE"):
        table.add_column(column, no_wrap=column == "ID")
    for entry in entries:
        last = entry["runs"][0] if entry["runs"] else None
        last_text = ""
        if last is not None:
            last_text = f"{_when(last['tick'])} {last.get('outcome') or last['state']}"
        job = entry["job"]
        table.add_row(
            escape(entry["id"]),
            entry["source"],
            f"{escape(entry['schedule'])}\n[dim]{escape(entry['description'])}[/dim]",
            escape(f"{job['type']} → {job.get('queue', 'default')}"),
            _when(entry["next_runs"][0] if entry["next_runs"] else ""),
            last_text,
            _state(entry),
        )
    return table


@cron_group.command("ls")
@server_command
async def cron_ls(target: Target, client: Client) -> int:
    """List the entries: from files, added at run time, and declared in code."""
    entries = (await admin(client, "cron.list"))["entries"]
    if target.as_json:
        emit_json(target, entries)
    elif not entries:
        target.out.print("No cron entries.")
    else:
        target.out.print(entry_table(entries))
    return 0


@cron_group.command("show")
@click.argument("entry_id", metavar="ID")
@server_command
async def cron_show(target: Target, client: Client, entry_id: str) -> int:
    """One entry: its job, next runs and last runs with how each job ended."""
    entry = await admin(client, "cron.show", {"id": entry_id})
    if target.as_json:
        emit_json(target, entry)
        return 0
    out = target.out
    out.print(f"[bold]{escape(entry['id'])}[/bold] ({entry['source']}, {_state(entry)})")
    out.print(f"schedule  {escape(entry['schedule'])}  [dim]{escape(entry['description'])}[/]")
    out.print(f"tz        {entry['tz']}    missed: {entry['missed']}")
    out.print(f"job       {json.dumps(entry['job'])}", markup=False)
    out.print("next runs " + ", ".join(_when(t) for t in entry["next_runs"]))
    if entry.get("last_error"):
        error = entry["last_error"]
        out.print(f"[red]last error at {_when(error['tick'])}:[/] {escape(error['error'])}")
    runs = Table("TICK", "KIND", "JID", "ENQUEUED AT", "OUTCOME", box=None, header_style="bold")
    for run in entry["runs"]:
        outcome = run.get("outcome") or run["state"]
        if run.get("error") or run.get("outcome_error"):
            outcome += f": {run.get('error') or run.get('outcome_error')}"
        runs.add_row(
            _when(run["tick"]),
            run["kind"],
            escape(run["jid"]),
            _when(run.get("enqueued_at")),
            escape(outcome),
        )
    out.print(runs)
    return 0


def _json_option(kind: type, what: str) -> Any:
    """A click callback that parses an option's JSON (exit 2 before connecting when it is
    not JSON, or not ``kind``)."""

    def parse(ctx: click.Context, param: click.Parameter, text: str | None) -> Any:
        if text is None:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}") from None
        if not isinstance(value, kind):
            raise click.BadParameter(f"must be a JSON {what}")
        return value

    return parse


@cron_group.command("add")
@click.argument("schedule")
@click.argument("jobtype")
@click.option("--id", "entry_id", help="Entry id [default: derived from its content].")
@click.option(
    "--args", "job_args", default="[]", callback=_json_option(list, "array"),
    help="The job's args, a JSON array.",
)  # fmt: skip
@click.option("--queue", default="default", show_default=True)
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of the schedule.")
@click.option("--missed", type=click.Choice(["one", "skip"]), default="one", show_default=True)
@click.option("--retry", type=int, help="The job's retry count [default: the server's].")
@click.option("--reserve-for", type=int, help="The job's reservation, in seconds.")
@click.option(
    "--custom", callback=_json_option(dict, "object"), help="The job's custom hash, a JSON object."
)
@server_command
async def cron_add(
    target: Target,
    client: Client,
    schedule: str,
    jobtype: str,
    entry_id: str | None,
    job_args: list[Any],
    queue: str,
    tz: str,
    missed: str,
    retry: int | None,
    reserve_for: int | None,
    custom: dict[str, Any] | None,
) -> int:
    """Add an entry, or replace the run-time entry of its id.

    e.g. conveyor cron add "*/5 * * * *" Cleanup --args '[7]' --queue maintenance
    """
    job: dict[str, Any] = {"type": jobtype, "queue": queue, "args": job_args}
    if retry is not None:
        job["retry"] = retry
    if reserve_for is not None:
        job["reserve_for"] = reserve_for
    if custom:
        job["custom"] = custom
    entry: dict[str, Any] = {"schedule": schedule, "tz": tz, "missed": missed, "job": job}
    if entry_id:
        entry["id"] = entry_id
    added = await admin(client, "cron.add", entry)
    if target.as_json:
        emit_json(target, added)
    else:
        next_run = added["next_runs"][0] if added["next_runs"] else "none"
        target.out.print(
            f"added {added['id']}: {added['description']}; next run {next_run}", markup=False
        )
    return 0


def _by_id(name: str, op: str, done: str, help_text: str) -> click.Command:
    @cron_group.command(name, help=help_text)
    @click.argument("entry_id", metavar="ID")
    @server_command
    async def command(target: Target, client: Client, entry_id: str) -> int:
        reply = await admin(client, op, {"id": entry_id})
        if target.as_json:
            emit_json(target, reply)
        elif op == "cron.run":
            target.out.print(f"{done} {entry_id}: jid {reply['jid']}", markup=False)
        else:
            target.out.print(f"{done} {entry_id}", markup=False)
        return 0

    return command


cron_pause = _by_id(
    "pause", "cron.pause", "paused", "Pause an entry (file entries too): its ticks are skipped."
)
cron_resume = _by_id(
    "resume", "cron.resume", "resumed", "Resume a paused entry; the ticks it skipped stay skipped."
)
cron_delete = _by_id("delete", "cron.delete", "deleted", "Delete a run-time entry and its history.")
cron_run = _by_id(
    "run", "cron.run", "enqueued", "Enqueue the entry's job now, whatever its schedule."
)
