"""``conveyor dash``: a live terminal dashboard over one FWP connection (textual).

The main screen shows the seven numbers, processed and failed per second as sparklines, the
queues (size, latency, paused) and the workers; it polls INFO and ``ADMIN`` every
``--refresh`` seconds. Enter on a queue lists its jobs, Enter on a job shows it; ``p``
pauses or resumes the queue under the cursor; ``r``/``s``/``d``/``b`` list the retries,
scheduled, dead and busy jobs. Escape goes back, ``q`` quits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any, ClassVar

import click
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Sparkline, Static

from conveyor.client import Client
from conveyor.console.common import (
    EXIT_CONNECT,
    EXIT_UNSUPPORTED,
    Target,
    Unsupported,
    admin,
    fail,
    plural,
)
from conveyor.console.render import duration, relative
from conveyor.console.stats import SUMMARY
from conveyor.errors import ConveyorError
from conveyor.protocol.info import summary

__all__ = ["Dashboard", "dash_command"]

HISTORY_POINTS = 60
"""Rate samples the sparklines keep (a minute at the default refresh)."""
LIST_LIMIT = 200
"""Jobs a list screen shows (the newest or next ones): the dashboard is a glance, not a pager."""


class Feed:
    """The dashboard's one connection: one command at a time, whoever asks."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = asyncio.Lock()

    async def info(self) -> dict[str, Any]:
        async with self._lock:
            return await self.client.info()

    async def admin(self, op: str, args: dict[str, Any] | None = None) -> Any:
        async with self._lock:
            return await admin(self.client, op, args)

    async def pause(self, name: str, paused: bool) -> None:
        async with self._lock:
            if paused:
                await self.client.queue_pause(name)
            else:
                await self.client.queue_resume(name)


class JobScreen(ModalScreen[None]):
    """One job: where it is and its whole payload."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss", "Back")]

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        job = self.job
        where = job.get("where") or ""
        with VerticalScroll(id="job"):
            yield Label(f"[b]{job['jobtype']}[/b] {job['jid']}", id="job-title")
            yield Static(f"{where} · queue {job['queue']}".strip(" ·"), id="job-where")
            if job.get("error"):
                yield Static(f"[red]{job['error']}[/red]", id="job-error")
            yield Static(json.dumps(job["job"], indent=2, ensure_ascii=False), id="job-payload")


class JobsScreen(Screen[None]):
    """The jobs of a queue, a set or the busy list; Enter shows one."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, feed: Feed, where: str, title: str) -> None:
        super().__init__()
        self.feed = feed
        self.where = where
        self.title_text = title
        self.jobs: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Label(self.title_text, id="jobs-title")
        yield DataTable(id="jobs", cursor_type="row")
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one("#jobs", DataTable)
        table.add_columns("JID", "JOBTYPE", "QUEUE", "WHEN", "ARGS / ERROR")
        await self.load()

    async def load(self) -> None:
        listed = await self.feed.admin("job.list", {"where": self.where, "limit": LIST_LIMIT})
        table = self.query_one("#jobs", DataTable)
        table.clear()
        self.jobs = {job["jid"]: job for job in listed["jobs"]}
        now = _now()
        for job in listed["jobs"]:
            when = job.get("at") or job.get("failed_at") or job.get("enqueued_at") or ""
            detail = job.get("error") or job.get("args", "")
            table.add_row(
                job["jid"],
                job["jobtype"],
                job["queue"],
                relative(when, now) if when else "",
                detail,
                key=job["jid"],
            )
        total = listed["total"]
        count = plural(total if total is not None else len(listed["jobs"]), "job")
        self.query_one("#jobs-title", Label).update(f"{self.title_text} · {count}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        job = self.jobs.get(str(event.row_key.value))
        if job is not None:
            where = {"busy": "working"}.get(self.where, self.where)
            if where not in ("working", "retries", "scheduled", "dead"):
                where = "queued"
            self.app.push_screen(JobScreen({**job, "where": where}))


class Dashboard(App[int]):
    """The main screen: numbers, rates, queues and workers, refreshed every ``refresh`` s."""

    TITLE = "conveyor dash"
    CSS = """
    #numbers { height: 3; }
    .number { width: 1fr; content-align: center middle; border: round $primary-darken-2; }
    #rates { height: 6; }
    .rate { width: 1fr; }
    Sparkline { height: 3; }
    #failed-rate > .sparkline--max-color { color: $error; }
    #tables { height: 1fr; }
    #queues, #workers { width: 1fr; }
    #status { height: 1; color: $text-muted; }
    #job { padding: 1 2; background: $surface; border: round $primary; margin: 2 4; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("p", "toggle_pause", "Pause/resume queue"),
        Binding("r", "open_set('retries')", "Retries"),
        Binding("s", "open_set('scheduled')", "Scheduled"),
        Binding("d", "open_set('dead')", "Dead"),
        Binding("b", "open_set('busy')", "Busy"),
        Binding("ctrl+r", "refresh_now", "Refresh", show=False),
    ]

    def __init__(self, feed: Feed, refresh: float = 2.0) -> None:
        super().__init__()
        self.feed = feed
        self.refresh_seconds = refresh
        self.processed_rate: deque[float] = deque([0.0], maxlen=HISTORY_POINTS)
        self.failed_rate: deque[float] = deque([0.0], maxlen=HISTORY_POINTS)
        self.queues: dict[str, dict[str, Any]] = {}
        self._last: tuple[float, int, int] | None = None
        self.polls = 0

    def compose(self) -> ComposeResult:
        with Horizontal(id="numbers"):
            for name in SUMMARY:
                yield Static(name, id=f"n-{name}", classes="number")
        with Horizontal(id="rates"):
            with Vertical(classes="rate"):
                yield Label("processed/s", id="processed-label")
                yield Sparkline([0.0], id="processed-rate")
            with Vertical(classes="rate"):
                yield Label("failed/s", id="failed-label")
                yield Sparkline([0.0], id="failed-rate")
        with Horizontal(id="tables"):
            yield DataTable(id="queues", cursor_type="row")
            yield DataTable(id="workers", cursor_type="row")
        yield Static("", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#queues", DataTable).add_columns("QUEUE", "SIZE", "LATENCY", "STATE")
        self.query_one("#workers", DataTable).add_columns("WORKER", "HOST", "STATE", "BUSY")
        self.query_one("#queues", DataTable).focus()
        await self.poll()
        self.set_interval(self.refresh_seconds, self.poll)

    async def poll(self) -> None:
        try:
            info = await self.feed.info()
            queues = (await self.feed.admin("queue.list"))["queues"]
            workers = (await self.feed.admin("worker.list"))["workers"]
        except Unsupported as exc:
            self.exit(return_code=EXIT_UNSUPPORTED, message=str(exc))
            return
        except ConveyorError as exc:
            self.query_one("#status", Static).update(f"[red]{exc}[/red]")
            return
        self._show_numbers(info)
        self._show_queues(queues)
        self._show_workers(workers)
        server = info.get("server", {})
        self.query_one("#status", Static).update(
            f"{self.feed.client.address.url} · {server.get('description', '')} · up "
            f"{duration(server.get('uptime', 0))} · every {self.refresh_seconds:g}s"
        )
        self.polls += 1

    def _show_numbers(self, info: dict[str, Any]) -> None:
        numbers = summary(info)
        for name in SUMMARY:
            self.query_one(f"#n-{name}", Static).update(f"{name}\n[b]{numbers[name]:,}[/b]")
        now = _monotonic()
        if self._last is not None:
            then, processed, failed = self._last
            elapsed = max(now - then, 1e-3)
            self.processed_rate.append(max(0.0, (numbers["processed"] - processed) / elapsed))
            self.failed_rate.append(max(0.0, (numbers["failed"] - failed) / elapsed))
        self._last = (now, numbers["processed"], numbers["failed"])
        self.query_one("#processed-rate", Sparkline).data = list(self.processed_rate)
        self.query_one("#failed-rate", Sparkline).data = list(self.failed_rate)
        self.query_one("#processed-label", Label).update(
            f"processed/s [b]{self.processed_rate[-1]:,.1f}[/b]"
        )
        self.query_one("#failed-label", Label).update(
            f"failed/s [b]{self.failed_rate[-1]:,.1f}[/b]"
        )

    def _show_queues(self, queues: list[dict[str, Any]]) -> None:
        self.queues = {q["name"]: q for q in queues}
        table = self.query_one("#queues", DataTable)
        row = table.cursor_row
        table.clear()
        for q in queues:
            state = "[yellow]paused[/yellow]" if q["paused"] else "running"
            table.add_row(q["name"], f"{q['size']:,}", duration(q["latency"]), state, key=q["name"])
        if queues:
            table.move_cursor(row=min(row, len(queues) - 1))

    def _show_workers(self, workers: list[dict[str, Any]]) -> None:
        table = self.query_one("#workers", DataTable)
        table.clear()
        for w in workers:
            table.add_row(w["wid"], w["hostname"], w["state"], str(w["busy"]), key=w["wid"])

    def _queue_under_cursor(self) -> str | None:
        table = self.query_one("#queues", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return str(key.value)

    async def action_toggle_pause(self) -> None:
        name = self._queue_under_cursor()
        if name is None or name not in self.queues:
            return
        paused = not self.queues[name]["paused"]
        await self.feed.pause(name, paused)
        self.notify(f"Queue {name} {'paused' if paused else 'resumed'}.")
        await self.poll()

    async def action_refresh_now(self) -> None:
        await self.poll()

    def action_open_set(self, where: str) -> None:
        self.push_screen(JobsScreen(self.feed, where, where.capitalize()))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "queues":
            name = str(event.row_key.value)
            self.push_screen(JobsScreen(self.feed, name, f"Queue {name}"))


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


def _now() -> float:
    return time.time()


async def _run_dash(target: Target, refresh: float) -> int:
    try:
        client = await target.connect()
    except (ConveyorError, ValueError) as exc:
        target.err.print(f"[bold red]error:[/] {exc}")
        return EXIT_CONNECT
    try:
        app = Dashboard(Feed(client), refresh)
        await app.run_async()
        return app.return_code or 0
    finally:
        await client.close()


@click.command("dash", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", metavar="URL", help="The server. [env CONVEYOR_URL, else FAKTORY_URL]")
@click.option("--password", metavar="PW", envvar="CONVEYOR_PASSWORD", help="The password.")
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between updates.",
)
def dash_command(url: str | None, password: str | None, refresh: float) -> None:
    """A live dashboard in the terminal: rates, queues, workers; browse queues and jobs.

    Keys: arrows move, Enter opens, Escape goes back, p pauses/resumes the queue under the
    cursor, r/s/d/b list retries/scheduled/dead/busy jobs, q quits.
    """
    if refresh <= 0:
        fail("--refresh must be positive")
    target = Target(url, password, 10.0, as_json=False)
    raise SystemExit(asyncio.run(_run_dash(target, refresh)))
