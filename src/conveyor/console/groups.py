"""``conveyor group ls|show``: the aggregating groups (ADMIN group.*, docs/aggregation.md)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from conveyor.client import Client
from conveyor.console.common import Target, admin, emit_json, plural, server_command
from conveyor.console.render import duration, job_table

__all__ = ["group_group"]

PAGE = 1000


@click.group("group", context_settings={"help_option_names": ["-h", "--help"]})
def group_group() -> None:
    """List the aggregating groups and the jobs waiting in them."""


@group_group.command("ls")
@click.option("--limit", type=click.IntRange(min=0, max=PAGE), default=25, show_default=True)
@server_command
async def group_ls(target: Target, client: Client, limit: int) -> int:
    """Every aggregating group, soonest due first: its size, its oldest job, when it is due."""
    page = await admin(client, "group.list", {"limit": limit})
    if target.as_json:
        emit_json(target, page)
        return 0
    if not page["groups"]:
        target.out.print("No jobs are waiting in aggregating groups.")
        return 0
    target.out.print(_groups_table(page["groups"]))
    target.out.print(f"[dim]{plural(len(page['groups']), 'group')} shown of {page['total']:,}[/]")
    return 0


def _groups_table(groups: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for header in ("QUEUE", "JOBTYPE", "GROUP"):
        table.add_column(header, no_wrap=True)
    for header in ("SIZE", "OLDEST", "DUE IN"):
        table.add_column(header, justify="right")
    for g in groups:
        size = f"{g['size']:,}/{g['max_size']:,}"
        due = duration(g["due_in"]) if g["due_in"] > 0 else "now"
        table.add_row(
            g["queue"], g["jobtype"], g["group"], size, duration(g["oldest_seconds"]), due
        )
    return table


@group_group.command("show")
@click.argument("jobtype")
@click.argument("group")
@click.option("--queue", default="default", show_default=True, help="The group's queue.")
@click.option("--limit", type=click.IntRange(min=0, max=PAGE), default=25, show_default=True)
@server_command
async def group_show(
    target: Target, client: Client, jobtype: str, group: str, queue: str, limit: int
) -> int:
    """One group and the jobs waiting in it, oldest first."""
    args = {"jobtype": jobtype, "group": group, "queue": queue, "limit": limit}
    view = await admin(client, "group.show", args)
    if target.as_json:
        emit_json(target, view)
        return 0
    target.out.print(_groups_table([view["group"]]))
    target.out.print(job_table("group members", view["members"]))  # added_at, not enqueued_at
    return 0
