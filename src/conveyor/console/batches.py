"""``conveyor batch ls|show``: batches, their progress, callbacks, children and jobs
(``ADMIN batch.*``; ``show`` falls back to ``BATCH STATUS`` on a Faktory Enterprise server)."""

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
    plural,
    server_command,
)
from conveyor.errors import CommandError

__all__ = ["batch_group"]

_STATES = {"": "-", "1": "enqueued", "2": "done"}


@click.group("batch", context_settings={"help_option_names": ["-h", "--help"]})
def batch_group() -> None:
    """List and show batches."""


def _callbacks(batch: dict[str, Any]) -> str:
    parts = []
    for kind in ("complete", "success"):
        callback = batch.get(kind)
        if callback is not None:
            parts.append(f"{kind} {_STATES.get(callback['state'], callback['state'])}")
    return ", ".join(parts)


def _progress(batch: dict[str, Any]) -> str:
    total, succeeded, failed = batch["total"], batch["succeeded"], batch["failed"]
    text = f"{succeeded:,}/{total:,} succeeded"
    if failed:
        text += f", [red]{failed:,} failed[/]"
    return text


@batch_group.command("ls")
@click.option("--search", metavar="TEXT", help="Only batches whose bid or description has TEXT.")
@click.option("--limit", type=click.IntRange(min=0, max=1000), default=25, show_default=True)
@server_command
async def batch_ls(target: Target, client: Client, search: str | None, limit: int) -> int:
    """Batches, newest first: progress, callbacks and whether they are committed."""
    listing = await admin(client, "batch.list", {"search": search or "", "limit": limit})
    batches = listing["batches"]
    if target.as_json:
        emit_json(target, listing)
        return 0
    if not batches:
        target.out.print("No batches" + (" match the search." if search else " yet."))
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("BID", "DESCRIPTION", "PROGRESS", "PENDING", "CALLBACKS", "STATE"):
        table.add_column(column)
    for b in batches:
        state = "committed" if b["committed"] else "[yellow]open[/]"
        table.add_row(
            b["bid"], b["description"], _progress(b), f"{b['pending']:,}", _callbacks(b), state
        )
    target.out.print(table)
    shown = plural(len(batches), "batch", "batches")
    target.out.print(f"[dim]{shown} shown of {listing['total']:,}[/]")
    return 0


@batch_group.command("show")
@click.argument("bid")
@click.option("--jobs", type=click.IntRange(min=0, max=1000), default=20, show_default=True,
              help="How many of its jobs to list.")  # fmt: skip
@server_command
async def batch_show(target: Target, client: Client, bid: str, jobs: int) -> int:
    """A batch: counters, callbacks, expiry, children and its first jobs."""
    try:
        shown = await admin(client, "batch.show", {"bid": bid, "limit": jobs})
    except Unsupported:  # Faktory Enterprise: what BATCH STATUS says
        shown = await client.batch_status(bid)
    except CommandError as exc:
        if exc.message.startswith("no such batch"):
            target.err.print(exc.message)
            return EXIT_NOT_FOUND
        raise
    if target.as_json:
        emit_json(target, shown)
        return 0
    table = Table(box=None, show_header=False, title=f"[bold]batch[/] {shown['bid']}")
    table.add_column(style="dim")
    table.add_column()
    for key in ("description", "parent_bid", "created_at", "committed_at", "expires_at"):
        if shown.get(key):
            table.add_row(key.replace("_", " "), str(shown[key]))
    table.add_row("jobs", f"{shown['total']:,} total, {shown['pending']:,} pending, "
                  f"{shown['failed']:,} failed")  # fmt: skip
    if "committed" in shown:
        table.add_row("state", "committed" if shown["committed"] else "open")
        table.add_row("callbacks", _callbacks(shown) or "-")
        table.add_row("children", f"{shown['children']} ({shown['children_pending']} pending)")
    else:
        table.add_row("complete_st", shown["complete_st"] or '""')
        table.add_row("success_st", shown["success_st"] or '""')
    target.out.print(table)
    for child in shown.get("children_batches", []):
        target.out.print(f"  child {child['bid']}: {_progress(child)} {_callbacks(child)}")
    if shown.get("jobs"):
        listing = Table(box=None, header_style="bold")
        for column in ("JID", "STATE", "UPDATED"):
            listing.add_column(column)
        for job in shown["jobs"]:
            listing.add_row(job["jid"], job["state"], job["updated_at"])
        target.out.print(listing)
        target.out.print(f"[dim]{plural(len(shown['jobs']), 'job')} shown of "
                         f"{shown['jobs_total']:,}[/]")  # fmt: skip
    return 0
