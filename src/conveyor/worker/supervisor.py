"""``conveyor worker --processes N``: a parent that keeps N ``conveyor worker`` processes running.

The parent imports no app and runs no job: it starts the same command N times as fresh
processes (``docs/design/worker-processes.md`` says why), each with its own ``wid``, and

* forwards signals: TERM or INT asks every child to stop gracefully (TERM), a second TERM or
  INT makes them stop now (QUIT), TSTP makes them quiet. Children take a repeated TERM/INT as
  the same request, since a terminal or systemd may signal the whole group as well;
* restarts a child that dies after it was ready (the OOM killer, a crash), after a backoff of
  0.25-0.5 s doubling up to 30 s; not once the pool is quiet or stopping;
* stops the others and exits with the child's status when a child fails before it is ready (an
  app that does not import, a server that refuses us): another try would fail the same way;
* exits once every child has exited: 0 when all ended cleanly, else the first failure's status.

A child is *ready* once its signal handlers are installed and it is connected; it says so by
writing one byte to a pipe whose descriptor it finds in ``READY_FD_ENV``. A signal that comes
while a child is starting is sent once it is ready (a stop, TERM, is sent at once: before its
handlers exist it ends the child, which has no job yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.pool import Backoff

if TYPE_CHECKING:
    from conveyor.worker.runtime import Worker

__all__ = ["READY_FD_ENV", "Supervisor", "notify_ready", "stop_when_orphaned", "take_ready_fd"]

logger = logging.getLogger("conveyor.worker")

READY_FD_ENV = "CONVEYOR_WORKER_READY_FD"
"""Set in a child's environment: the pipe to write ``READY`` to. Its presence makes a child."""

READY = b"R"
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
"""A child that ran this long before dying is restarted after the shortest backoff again."""

ORPHAN_CHECK_SECONDS = 1.0


# -- the child's side ------------------------------------------------------------------------------


def take_ready_fd() -> int | None:
    """The ready pipe when this process is a supervised child, else None.

    Removed from the environment, so processes that jobs start do not inherit it.
    """
    value = os.environ.pop(READY_FD_ENV, None)
    return int(value) if value else None


def notify_ready(fd: int) -> None:
    """Tell the parent this child is ready: handlers installed, connected."""
    try:
        os.write(fd, READY)
    except OSError:  # the parent is gone; stop_when_orphaned notices
        pass
    finally:
        os.close(fd)


async def stop_when_orphaned(worker: Worker) -> None:
    """Stop gracefully if the parent dies (say, KILLed): no child keeps working on its own."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    logger.warning("the parent process %d is gone: stopping", parent)
    await worker.stop()


# -- the parent ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Child:
    process: asyncio.subprocess.Process
    ready_at: float | None = None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)


class Supervisor:
    """Runs ``command`` (a ``conveyor worker`` command line) ``processes`` times; see above."""

    def __init__(self, command: Sequence[str], processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.command = list(command)
        self.processes = processes
        self.quiet = False
        self.stop_requests = 0
        self._children: set[_Child] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Start the children, supervise them until all have exited; returns the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        logger.info("starting %d worker processes", self.processes)
        statuses = await asyncio.gather(*(self._keep_running() for _ in range(self.processes)))
        failed = [status for status in statuses if status != 0]
        return failed[0] if failed else 0

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGTSTP:
            logger.info("%s: the worker processes go quiet", sig.name)
            self.quiet = True
            self._forward_all()
        else:
            self._stop(f"{sig.name}")

    def _stop(self, reason: str) -> None:
        self.stop_requests += 1
        what = "stop" if self.stop_requests == 1 else "stop now"
        logger.info("%s: the worker processes %s", reason, what)
        self._stopping.set()
        self._forward_all()

    def _forward_all(self) -> None:
        for child in self._children:
            self._forward(child)

    def _forward(self, child: _Child) -> None:
        """Bring one child up to date with the pool's state."""
        if child.ready_at is None:
            if self.stop_requests:
                child.signal(signal.SIGTERM)
            elif self.quiet:  # a terminal's Ctrl-Z may have suspended it before its handlers
                child.signal(signal.SIGCONT)
            return
        if self.stop_requests:
            child.signal(signal.SIGTERM if self.stop_requests == 1 else signal.SIGQUIT)
        elif self.quiet:
            child.signal(signal.SIGTSTP)

    # -- one slot ------------------------------------------------------------------------------

    async def _keep_running(self) -> int:
        """Run one child, and another after each unexpected death; returns the exit status."""
        backoff = Backoff(RESTART_FIRST_SECONDS, RESTART_MAX_SECONDS)
        while True:
            child, ready = await self._start()
            self._children.add(child)
            try:
                if await _wait_ready(ready):
                    child.ready_at = time.monotonic()
                    self._forward(child)
                code = await child.process.wait()
            finally:
                self._children.discard(child)
            pid = child.process.pid
            if self.stop_requests:
                # One that was still starting had no job, however it ended (say, by our TERM).
                return 0 if child.ready_at is None else _exit_status(code)
            if child.ready_at is None:
                logger.error("worker process %d %s while starting", pid, _describe(code))
                self._stop(f"worker process {pid} failed")
                return _exit_status(code) or 1
            if code == 0:  # finished: --burst, or the server said terminate
                return 0
            if self.quiet:  # a quiet pool is winding down: no new process
                return _exit_status(code)
            if time.monotonic() - child.ready_at >= RESTART_RESET_SECONDS:
                backoff.reset()
            delay = backoff.next_delay()
            logger.warning(
                "worker process %d %s; starting another in %.1fs", pid, _describe(code), delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self.stop_requests:
                return 0
            if self.quiet:
                return _exit_status(code)

    async def _start(self) -> tuple[_Child, io.FileIO]:
        """Start one child; returns it and the read end of its ready pipe."""
        ready, write_fd = _ready_pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=subprocess.DEVNULL,
                env={**os.environ, READY_FD_ENV: str(write_fd)},
                pass_fds=(write_fd,),
            )
        except BaseException:
            ready.close()
            raise
        finally:
            os.close(write_fd)
        logger.debug("started worker process %d", process.pid)
        return _Child(process), ready


def _ready_pipe() -> tuple[io.FileIO, int]:
    read_fd, write_fd = os.pipe()
    return open(read_fd, "rb", buffering=0), write_fd  # closed by the transport reading it


async def _wait_ready(ready: io.FileIO) -> bool:
    """True once the child writes ``READY``; False when it exits first (end of file)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), ready)
    try:
        return await reader.read(1) == READY
    finally:
        transport.close()


def _exit_status(code: int) -> int:
    """A child's return code as a shell exit status (killed by signal N: 128 + N)."""
    return 128 - code if code < 0 else code


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
