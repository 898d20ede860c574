"""The worker's cancel channel: one connection waiting in ``CANCELS`` (docs/cancellation.md).

The server answers it with the jids of this worker's running jobs that were cancelled, at once
when there are any, else after ``CANCEL_WAIT_SECONDS``; the worker stops each one
(``Worker._cancel``). A lost channel is opened again a second or more later: during a server
restart that is soon enough, and no reconnect lands on a server that is closing its listener
(docs/design/cancel-aggregate.md). A server without the extension ends the channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from conveyor.backoff import Backoff
from conveyor.client import Client
from conveyor.errors import CommandError
from conveyor.pool import CONNECTION_ERRORS

__all__ = ["CANCEL_WAIT_SECONDS", "watch_cancels"]

logger = logging.getLogger("conveyor.worker")

CANCEL_WAIT_SECONDS = 2.0
"""How long one ``CANCELS`` waits on the server (an idle worker sends one this often)."""
CANCEL_RECONNECT_SECONDS = 1.0


async def watch_cancels(
    client: Client | None,
    connect: Callable[[], Awaitable[Client]],
    cancel: Callable[[str], None],
) -> None:
    """Wait in ``CANCELS`` on ``client`` (reconnecting with ``connect``) and call ``cancel``
    with each jid the server names, until cancelled; closes the connection at the end."""
    backoff = Backoff(CANCEL_RECONNECT_SECONDS)
    try:
        while True:
            try:
                if client is None or client.closed:
                    client = await connect()
                jids = await client.cancels(CANCEL_WAIT_SECONDS)
            except CommandError as exc:
                if exc.message.startswith("unknown command"):
                    logger.info("the server cannot tell us of cancelled jobs: %s", exc)
                    return
                logger.warning("CANCELS failed: %s", exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            except CONNECTION_ERRORS as exc:
                delay = backoff.next_delay()
                logger.warning("cancel channel lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            for jid in jids:
                cancel(jid)
    finally:
        if client is not None:
            await client.close()
