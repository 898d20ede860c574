"""What every inspector command shares: the connection options, running one async call
against the server, exit codes, and the two outputs (rich for people, ``--json`` for scripts).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from conveyor.client import Client
from conveyor.errors import AuthenticationError, CommandError, ConnectError, ProtocolError
from conveyor.manager.views import plural

__all__ = [
    "EXIT_CONNECT",
    "EXIT_JOB_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNSUPPORTED",
    "EXIT_USAGE",
    "Target",
    "admin",
    "emit_json",
    "fail",
    "plural",
    "progress",
    "result_of",
    "server_command",
]

EXIT_OK = 0
EXIT_CONNECT = 1
"""Could not connect, authenticate, or keep the connection (as ``conveyor worker``)."""
EXIT_USAGE = 2
"""Bad arguments (click's own code)."""
EXIT_NOT_FOUND = 3
"""The server refused the request, or something named does not exist or could not be done."""
EXIT_UNSUPPORTED = 4
"""The server does not have the conveyor extension the command needs (e.g. it is Faktory)."""
EXIT_JOB_FAILED = 5
"""``job result``: the job died; its error is shown."""

P = ParamSpec("P")
R = TypeVar("R")


class Unsupported(Exception):
    """The server answered ``unknown command ADMIN`` or ``unknown ADMIN operation``."""


class Target:
    """Where the command goes and how it talks: the options every inspector command takes."""

    def __init__(self, url: str | None, password: str | None, timeout: float, as_json: bool):
        self.url = url
        self.password = password
        self.timeout = timeout
        self.as_json = as_json
        # emoji off: rich would print the jid cron:heartbeat:... with a heart in it
        self.out = Console(highlight=False, soft_wrap=False, emoji=False)
        self.err = Console(stderr=True, highlight=False, emoji=False)

    async def connect(self) -> Client:
        return await Client.connect(self.url, password=self.password, timeout=self.timeout)


def server_command(
    func: Callable[..., Awaitable[int | None]],
) -> Callable[..., None]:
    """Add ``--url``, ``--password``, ``--timeout`` and ``--json`` to an async command body
    ``func(target, client, **options)``; connect, run it, map errors to exit codes."""

    @click.option(
        "--url",
        metavar="URL",
        help="The server: tcp://[:PASSWORD@]HOST:PORT or tcp+tls://... [env CONVEYOR_URL, "
        "else FAKTORY_URL; default tcp://localhost:7419]",
    )
    @click.option(
        "--password",
        metavar="PW",
        envvar="CONVEYOR_PASSWORD",
        help="The server's password, if not in the URL. [env CONVEYOR_PASSWORD or "
        "FAKTORY_PASSWORD]",
    )
    @click.option(
        "--timeout", type=float, default=10.0, show_default=True, help="Seconds per command."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @functools.wraps(func)
    def command(
        url: str | None, password: str | None, timeout: float, as_json: bool, **options: Any
    ) -> None:
        target = Target(url, password, timeout, as_json)
        code = asyncio.run(_run(target, func, options))
        sys.exit(code or EXIT_OK)

    return command


async def _run(
    target: Target, func: Callable[..., Awaitable[int | None]], options: dict[str, Any]
) -> int | None:
    try:
        client = await target.connect()
    except AuthenticationError as exc:
        return _report(target, EXIT_CONNECT, f"cannot authenticate: {exc}")
    except (ConnectError, ProtocolError, ValueError) as exc:
        return _report(target, EXIT_CONNECT, str(exc))
    try:
        return await func(target, client, **options)
    except Unsupported as exc:
        return _report(target, EXIT_UNSUPPORTED, str(exc))
    except CommandError as exc:
        return _report(target, EXIT_NOT_FOUND, f"the server refused: {exc.message}")
    except (ConnectError, ProtocolError) as exc:
        return _report(target, EXIT_CONNECT, str(exc))
    finally:
        await client.close()


def _report(target: Target, code: int, message: str) -> int:
    target.err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop with ``message`` on stderr and ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


async def admin(client: Client, op: str, args: Mapping[str, Any] | None = None) -> Any:
    """``Client.admin``, with a server that lacks the extension (or this operation) turned
    into ``Unsupported`` with a message that says so."""
    try:
        return await client.admin(op, args)
    except CommandError as exc:
        text = exc.message
        if text.startswith("unknown command ADMIN"):
            raise Unsupported(
                f"{client.address.url} does not support conveyor's ADMIN extension, which "
                f"this command needs (is it a Faktory server?); INFO-based commands such as "
                "`conveyor stats` and `conveyor queue pause|resume|remove` still work"
            ) from None
        if text.startswith("unknown ADMIN operation"):
            raise Unsupported(
                f"{client.address.url} is a conveyor server without the {op!r} operation "
                "(an older version?)"
            ) from None
        raise


async def result_of(client: Client, jid: str, wait: float) -> dict[str, Any] | None:
    """``Client.result``, with a server that lacks ``RESULT`` turned into ``Unsupported``."""
    try:
        return await client.result(jid, wait)
    except CommandError as exc:
        if exc.message.startswith("unknown command RESULT"):
            raise Unsupported(
                f"{client.address.url} does not support conveyor's RESULT extension (is it a "
                "Faktory server?)"
            ) from None
        raise


def emit_json(target: Target, value: Any) -> None:
    target.out.file.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def progress(target: Target, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for a long bulk operation; ``advance(n)`` moves it. Shown
    only on a terminal and only when the work takes more than one request."""
    bar = Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=target.err,
        transient=True,
        disable=target.as_json or not target.err.is_terminal,
    )
    task = bar.add_task(what, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
