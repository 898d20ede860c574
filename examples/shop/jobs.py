"""An example conveyor app: typed jobs, per-job options, hooks and middleware.

Run a server, a worker, and push some jobs (from the repository root):

    conveyor server &
    conveyor worker examples.shop.jobs:app --queue critical:3 --queue default:1 &
    python -m examples.shop.produce
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import msgspec

import conveyor

app = conveyor.App()  # CONVEYOR_URL / FAKTORY_URL, else tcp://localhost:7419
log = logging.getLogger("shop")
SENT: list[str] = []  # what the jobs did, so the example's test can check it


# -- payloads: any language can push them as one JSON object in args[0] -----------------------


@dataclasses.dataclass
class Email:
    to: str
    subject: str
    body: str = ""


class Order(msgspec.Struct):
    id: int
    items: list[str]
    total_cents: int


# -- jobs ----------------------------------------------------------------------------------------


@app.job(queue="critical", retry=5, timeout=30)
async def send_email(msg: Email) -> None:
    """A typed async job: args == [{"to": ..., "subject": ..., "body": ...}]."""
    await asyncio.sleep(0)  # an SMTP call would go here
    SENT.append(f"email to {msg.to}: {msg.subject}")
    conveyor.current_job().logger.info("sent %r", msg.subject)


billing = app.group("billing")


@billing.job(retry=10, custom={"team": "payments"})
async def charge(order: Order) -> None:
    SENT.append(f"charged order {order.id}: {order.total_cents} cents")
    await send_email.push(Email("buyer@example.com", f"Receipt for order {order.id}"))


@app.job
def resize_image(path: str, width: int) -> None:
    """A plain def: runs in the worker's thread pool. args == [path, width]."""
    time.sleep(0.01)  # CPU or blocking I/O is fine here
    SENT.append(f"resized {path} to {width}px")


# -- middleware and hooks -----------------------------------------------------------------------


def timing(call_next: conveyor.Handler) -> conveyor.Handler:
    """App-level middleware: wraps every job."""

    async def run(ctx: conveyor.JobContext) -> Any:
        started = time.perf_counter()
        try:
            return await call_next(ctx)
        finally:
            ctx.logger.info("took %.1f ms", (time.perf_counter() - started) * 1000)

    return run


app.use(timing)


@billing.use
def audit(call_next: conveyor.Handler) -> conveyor.Handler:
    """Group-level middleware: only around the billing jobs."""

    async def run(ctx: conveyor.JobContext) -> Any:
        ctx.logger.info("audit: %s for team %s", ctx.jobtype, ctx.custom.get("team"))
        return await call_next(ctx)

    return run


@app.after
def count_failures(ctx: conveyor.JobContext, error: BaseException | None) -> None:
    if error is not None:
        log.warning("%s failed (attempt %d): %s", ctx.jobtype, ctx.retry_count + 1, error)
