"""``conveyor job ls|show|result|retry|kill|delete|cancel``: jobs wherever they are (ADMIN
job.*, RESULT)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.table import Table

from conveyor.backtraces import trim
from conveyor.client import Client
from conveyor.console.common import (
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    Target,
    admin,
    chunks,
    emit_json,
    fail,
    plural,
    progress,
    result_of,
    server_command,
)
from conveyor.console.render import job_table

__all__ = ["job_group"]

PAGE = 1000
"""Jobs per ADMIN request: the server's limit (MAX_ADMIN_ITEMS)."""


@click.group("job", context_settings={"help_option_names": ["-h", "--help"]})
def job_group() -> None:
    """List, show, retry, kill, delete and cancel jobs."""


def _filters(func: Any) -> Any:
    func = click.option("--jobtype", metavar="TYPE", help="Only jobs of this jobtype.")(func)
    return click.option(
        "--search", metavar="TEXT", help="Only jobs whose payload contains TEXT (any case)."
    )(func)


async def _list(
    client: Client, where: str, jobtype: str | None, search: str | None, limit: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` jobs (all when None), page by page, and the server's total."""
    jobs: list[dict[str, Any]] = []
    total: int | None = None
    while limit is None or len(jobs) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(jobs))
        args = {"where": where, "offset": len(jobs), "limit": want}
        args.update({k: v for k, v in (("jobtype", jobtype), ("search", search)) if v})
        page = await admin(client, "job.list", args)
        jobs.extend(page["jobs"])
        total = page["total"]
        if len(page["jobs"]) < want:
            break
    return jobs, total


@job_group.command("ls")
@click.argument("where", metavar="QUEUE|retries|scheduled|dead|completed|busy")
@_filters
@click.option("--limit", type=click.IntRange(min=0), default=25, show_default=True)
@server_command
async def job_ls(
    target: Target,
    client: Client,
    where: str,
    jobtype: str | None,
    search: str | None,
    limit: int,
) -> int:
    """The jobs of a queue, a set (retries, scheduled, dead, completed) or being worked on
    (busy)."""
    jobs, total = await _list(client, where, jobtype, search, limit)
    if target.as_json:
        emit_json(target, {"where": where, "total": total, "jobs": jobs})
        return 0
    if not jobs:
        target.out.print(f"No jobs in {where}{' match the filters' if jobtype or search else ''}.")
        return 0
    target.out.print(job_table(where, jobs))
    shown = plural(len(jobs), "job")
    if total is None:
        target.out.print(f"[dim]{shown} shown[/]")
    else:
        target.out.print(f"[dim]{shown} shown of {total:,}[/]")
    return 0


@job_group.command("show")
@click.argument("jids", nargs=-1, required=True, metavar="JID...")
@server_command
async def job_show(target: Target, client: Client, jids: tuple[str, ...]) -> int:
    """Where each job is now and its whole payload."""
    shown: list[dict[str, Any] | None] = []
    for part in chunks(jids, PAGE):
        shown.extend((await admin(client, "job.show", {"jids": list(part)}))["jobs"])
    missing = [jid for jid, job in zip(jids, shown, strict=True) if job is None]
    if target.as_json:
        emit_json(target, shown)
    else:
        for job in shown:
            if job is not None:
                _print_job(target, job)
    for jid in missing:
        target.err.print(f"no job {jid} (it may have run, or been deleted)")
    return EXIT_NOT_FOUND if missing else 0


def _print_job(target: Target, job: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, title=f"[bold]{job['jobtype']}[/] {job['jid']}")
    table.add_column(style="dim")
    table.add_column()
    state = job.get("state") or job["where"]
    asynq = job.get("asynq_state")
    shown = state + (f" ({asynq})" if asynq and asynq != state else "")
    worker = job.get("wid") if job["where"] == "working" else None
    table.add_row("state", shown + (f" by {worker}" if worker else "") + f", queue {job['queue']}")
    if job.get("at"):
        table.add_row(job.get("at_means") or "at", str(job["at"]))
    reservation = job.get("reservation")
    if isinstance(reservation, dict):
        table.add_row("reserved", f"{reservation['reserved_at']} until {reservation['expires_at']}")
    for key, value in (job.get("details") or {}).items():
        table.add_row(key.replace("_", " "), str(value))
    for key in ("created_at", "enqueued_at", "failed_at", "error"):
        if job.get(key):
            table.add_row(key.replace("_", " "), str(job[key]))
    if job.get("batch"):
        role = f" ({job['batch_role']} callback)" if job.get("batch_role") else ""
        table.add_row("batch", f"{job['batch']}{role}")
    tracking = job.get("tracking")
    if tracking:
        shown = tracking["state"]
        if "percent" in tracking:
            shown += f", {tracking['percent']}%"
        if tracking.get("desc"):
            shown += f": {tracking['desc']}"
        table.add_row("tracking", shown)
    after = job["job"].get("custom", {}).get("after") if job["where"] == "waiting" else None
    if after:
        table.add_row("waits for", ", ".join(str(jid) for jid in after))
    if "result" in job:
        table.add_row("result", json.dumps(job["result"], ensure_ascii=False))
    target.out.print(table)
    failure = job["job"].get("failure")
    lines = failure.get("backtrace") if isinstance(failure, dict) else None
    if isinstance(lines, list) and lines:
        shown, hidden = trim([str(line) for line in lines])
        target.out.print("\n".join(shown), markup=False, highlight=False)
        if hidden:
            target.out.print(
                f"[dim]({plural(hidden, 'frame')} of conveyor's worker hidden; "
                "--json has the whole backtrace)[/]"
            )
    target.out.print_json(json.dumps(job["job"], ensure_ascii=False), indent=2)


@job_group.command("result")
@click.argument("jid")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=3600),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the job to finish.",
)
@server_command
async def job_result(target: Target, client: Client, jid: str, wait: float) -> int:
    """The result of a job that asked for one (result_ttl, retain), or its error if it died.

    Exit 0 with the result (JSON), 5 if the job failed, 3 if no result is known (yet)."""
    outcome = await result_of(client, jid, wait)
    if target.as_json:
        emit_json(target, outcome)
    if outcome is None:
        if not target.as_json:
            target.err.print(f"no result for {jid} (not finished, or it asked for none)")
        return EXIT_NOT_FOUND
    if outcome.get("state") != "succeeded":
        if not target.as_json:
            error = f"{outcome.get('errtype', '')}: {outcome.get('message', '')}"
            target.err.print(f"job {jid} {outcome.get('state')}: {error}", markup=False)
            lines = [str(line) for line in outcome.get("backtrace") or []]
            if lines:
                target.err.print("\n".join(trim(lines)[0]), markup=False, highlight=False)
        return EXIT_JOB_FAILED
    if not target.as_json:
        target.out.print_json(json.dumps(outcome.get("result"), ensure_ascii=False))
    return 0


def _act(action: str, verb: str, what: str) -> Any:
    @job_group.command(
        action,
        help=f"{what}. Name the jobs by jid (- reads jids from stdin, one a line), or choose "
        "them with --all and the filters.",
    )
    @click.argument("jids", nargs=-1, metavar="[JID...|-]")
    @click.option(
        "--all",
        "where",
        metavar="SET|QUEUE",
        help="Every job of a set (retries, scheduled, dead) or queue matching the filters.",
    )
    @_filters
    @click.option("-y", "--yes", is_flag=True, help="With --all: do not ask for confirmation.")
    @server_command
    async def command(
        target: Target,
        client: Client,
        jids: tuple[str, ...],
        where: str | None,
        jobtype: str | None,
        search: str | None,
        yes: bool,
    ) -> int:
        chosen = await _chosen(client, jids, where, jobtype, search)
        if where is not None and chosen and not yes:
            _confirm(f"{action.capitalize()} {plural(len(chosen), 'job')} of {where}?")
        return await _apply(target, client, action, verb, chosen)

    return command


async def _chosen(
    client: Client,
    jids: tuple[str, ...],
    where: str | None,
    jobtype: str | None,
    search: str | None,
) -> list[str]:
    if where is None:
        if jobtype or search:
            fail("--jobtype and --search choose jobs with --all")
        if jids == ("-",):
            jids = tuple(line.strip() for line in sys.stdin if line.strip())
        elif not jids:
            fail("name the jobs (JID..., or - for stdin), or choose them with --all")
        return list(dict.fromkeys(jids))
    if jids:
        fail("name the jobs or choose them with --all, not both")
    jobs, _total = await _list(client, where, jobtype, search, None)
    return [job["jid"] for job in jobs]


def _confirm(question: str) -> None:
    if not click.get_text_stream("stdin").isatty():
        fail(f"{question} Pass --yes to do it without asking.")
    if not click.confirm(question, default=False, err=True):
        fail("nothing changed", 1)


async def _apply(target: Target, client: Client, action: str, verb: str, jids: list[str]) -> int:
    changed = 0
    refused: dict[str, str] = {}
    with progress(target, len(jids), f"{action.capitalize()} jobs") as advance:
        for part in chunks(jids, PAGE):
            report = await admin(client, f"job.{action}", {"jids": list(part)})
            changed += report["changed"]
            refused.update(report["refused"])
            advance(len(part))
    if target.as_json:
        emit_json(target, {"asked": len(jids), "changed": changed, "refused": refused})
    else:
        target.out.print(f"{verb.capitalize()} {plural(changed, 'job')}.")
        for jid, why in refused.items():
            target.err.print(f"{jid}: {why}")
        moved = len(jids) - len(refused) - changed
        if moved > 0:
            target.err.print(f"{plural(moved, 'job')} moved on meanwhile and were left alone.")
    return EXIT_NOT_FOUND if refused else 0


job_retry = _act(
    "retry", "retried", "Enqueue retrying, scheduled or dead jobs now, at the end of their queue"
)
job_kill = _act("kill", "killed", "Move retrying or scheduled jobs to the dead set")
job_delete = _act("delete", "deleted", "Delete jobs: queued, retrying, scheduled or dead")


@job_group.command("cancel")
@click.argument("jids", nargs=-1, required=True, metavar="JID...|-")
@server_command
async def job_cancel(target: Target, client: Client, jids: tuple[str, ...]) -> int:
    """Cancel jobs wherever they are: a queued, scheduled, retrying or aggregating job is
    removed, a running one is stopped by its worker. Each ends as cancelled (never retried);
    a finished or unknown job is reported, and the exit code is then 3. - reads jids from
    stdin, one a line."""
    chosen = await _chosen(client, jids, None, None, None)
    reports: list[dict[str, Any]] = []
    with progress(target, len(chosen), "Cancel jobs") as advance:
        for part in chunks(chosen, PAGE):
            reports += (await admin(client, "job.cancel", {"jids": list(part)}))["jobs"]
            advance(len(part))
    cancelled = [r for r in reports if r["outcome"] in ("cancelled", "already")]
    if target.as_json:
        emit_json(target, {"asked": len(chosen), "jobs": reports})
    else:
        now = sum(1 for r in reports if r["outcome"] == "cancelled")
        target.out.print(f"Cancelled {plural(now, 'job')}.")
        for report in reports:
            line = f"{report['jid']}: {report['message']}"
            if report["outcome"] == "cancelled":
                target.out.print(line, markup=False, highlight=False)
            elif report["outcome"] != "already":
                target.err.print(line, markup=False, highlight=False)
    return 0 if len(cancelled) == len(reports) else EXIT_NOT_FOUND
