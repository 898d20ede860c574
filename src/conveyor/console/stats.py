"""``conveyor stats`` (FWP INFO) and ``conveyor push`` (FWP PUSH): standard commands, so both
work against any Faktory server too."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from conveyor.client import Client, new_jid
from conveyor.console.common import Target, Unsupported, admin, emit_json, fail, server_command
from conveyor.console.render import duration
from conveyor.protocol.info import summary
from conveyor.timefmt import format_time

__all__ = ["parse_duration", "push_command", "stats_command"]

# What the terminal shows of protocol.info.summary: Faktory's seven numbers, which fit 80
# columns (the web dashboard also shows cancelled and aggregating).
SUMMARY = ("processed", "failed", "busy", "enqueued", "retries", "scheduled", "dead")


@click.command("stats", context_settings={"help_option_names": ["-h", "--help"]})
@server_command
async def stats_command(target: Target, client: Client) -> int:
    """The server's numbers (FWP INFO): totals, sets, queues and today's history.

    With --json, the INFO document exactly as the server sent it.
    """
    info = await client.info()
    if target.as_json:
        emit_json(target, info)
        return 0
    numbers = summary(info)
    table = Table(box=None, header_style="bold")
    for name in SUMMARY:
        table.add_column(name.upper(), justify="right")
    table.add_row(*(f"{numbers[name]:,}" for name in SUMMARY))
    target.out.print(table)
    server = info.get("server", {})
    target.out.print(
        f"[dim]{server.get('description', 'server')} · up {duration(server.get('uptime', 0))} · "
        f"{server.get('connections', 0)} connections · {server.get('used_memory_mb', 0)} MB[/]",
        soft_wrap=True,
    )
    try:
        today = (await admin(client, "history", {"days": 1}))["history"][-1]
        target.out.print(
            f"[dim]today ({today['day']} UTC): {today['processed']:,} processed, "
            f"{today['failed']:,} failed[/]"
        )
    except Unsupported:
        pass  # a Faktory server: INFO is all there is
    sizes: dict[str, int] = info.get("faktory", {}).get("queues", {})
    if sizes:
        latency = await client.queue_latency(*sizes)
        queues = [
            {"name": n, "size": s, "latency": latency.get(n, 0.0)} for n, s in sorted(sizes.items())
        ]
        target.out.print()
        target.out.print(_without_state(queues))  # INFO has no paused flags: `queue ls` has
    return 0


def _without_state(queues: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("QUEUE")
    table.add_column("SIZE", justify="right")
    table.add_column("LATENCY", justify="right")
    for q in queues:
        table.add_row(q["name"], f"{q['size']:,}", duration(q["latency"]))
    return table


_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
    r"(?:(\d+(?:\.\d+)?)s)?"
)


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2d``: seconds, or numbers with d/h/m/s units."""
    text = text.strip()
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90, 90s, 5m, 1h30m, 2d")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _parse_at(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-24T18:00:00Z"
        ) from None
    return when if when.tzinfo else when.astimezone()  # a naive time is local time


@click.command("push", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("jobtype")
@click.argument("args", required=False, default="[]", metavar="[ARGS]")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option("--at", "at", metavar="TIME", help="Run at this time (ISO 8601).")
@click.option("--in", "delay", metavar="DURATION", help="Run after this long: 90s, 5m, 1h30m, 2d.")
@click.option("--retry", type=int, help="Retries before the job goes to the dead set.")
@click.option("--reserve-for", type=int, metavar="SECONDS", help="How long a worker may take.")
@click.option("--custom", metavar="JSON", help="The job's custom object, as JSON.")
@click.option("--jid", help="The job id. [default: a random one]")
@server_command
async def push_command(
    target: Target,
    client: Client,
    jobtype: str,
    args: str,
    queue: str,
    at: str | None,
    delay: str | None,
    retry: int | None,
    reserve_for: int | None,
    custom: str | None,
    jid: str | None,
) -> int:
    """Push one job (FWP PUSH). ARGS is a JSON array: conveyor push Email '["a@b.c", 2]'."""
    job = _job(jobtype, args, queue, at, delay, retry, reserve_for, custom, jid)
    await client.push(job)
    if target.as_json:
        emit_json(target, job)
    else:
        when = f" at {job['at']}" if "at" in job else ""
        target.out.print(
            job["jid"]
            if not target.out.is_terminal
            else f"Pushed {jobtype} {job['jid']} to {queue}{when}."
        )
    return 0


def _job(
    jobtype: str,
    args: str,
    queue: str,
    at: str | None,
    delay: str | None,
    retry: int | None,
    reserve_for: int | None,
    custom: str | None,
    jid: str | None,
) -> dict[str, Any]:
    try:
        values = json.loads(args)
    except ValueError as exc:
        fail(f"ARGS must be a JSON array, e.g. '[\"a@b.c\", 2]': {exc}")
    if not isinstance(values, list):
        fail(f"ARGS must be a JSON array of the job's arguments, e.g. '[{args}]'")
    job: dict[str, Any] = {"jid": jid or new_jid(), "jobtype": jobtype, "args": values}
    job["queue"] = queue
    if at and delay:
        fail("--at and --in both say when: give one")
    try:
        if at:
            job["at"] = format_time(_parse_at(at).timestamp())
        elif delay:
            job["at"] = format_time((datetime.now(UTC) + parse_duration(delay)).timestamp())
    except ValueError as exc:
        fail(str(exc))
    if retry is not None:
        job["retry"] = retry
    if reserve_for is not None:
        job["reserve_for"] = reserve_for
    if custom:
        try:
            job["custom"] = json.loads(custom)
        except ValueError as exc:
            fail(f"--custom must be a JSON object: {exc}")
        if not isinstance(job["custom"], dict):
            fail("--custom must be a JSON object")
    return job
