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

The parent is one ``select`` loop over a self-pipe of signal numbers and the children's ready
pipes, without asyncio, and it imports nothing of the worker runtime: it stays about as small as
a bare Python with click (``docs/design/worker-processes.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.backoff import Backoff

if TYPE_CHECKING:
    from conveyor.worker.runtime import Worker

__all__ = ["READY_FD_ENV", "Supervisor", "notify_ready", "stop_when_orphaned", "take_ready_fd"]

logger = logging.getLogger("conveyor.worker")

SLOT_ENV = "CONVEYOR_WORKER_SLOT"
"""Set in a child's environment: its slot number, 0 .. N-1 (``conveyor.metrics.worker``)."""
READY_FD_ENV = "CONVEYOR_WORKER_READY_FD"
"""Set in a child's environment: the pipe to write ``READY`` to. Its presence makes a child."""

READY = b"R"
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
"""A child that ran this long before dying is restarted after the shortest backoff again."""

ORPHAN_CHECK_SECONDS = 1.0

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP)


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
    import asyncio  # here, not above: the parent imports this module and does without asyncio

    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
    logger.warning("the parent process %d is gone: stopping", parent)
    await worker.stop()


# -- the parent ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Child:
    process: subprocess.Popen[bytes]
    ready_fd: int | None
    """The read end of the ready pipe, until the child writes ``READY`` or closes it."""
    ready_at: float | None = None

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)  # does nothing once the child has been reaped


@dataclass(eq=False)
class _Slot:
    """One of the N places a child runs in: its child, or when the next one starts, or its end."""

    backoff: Backoff
    child: _Child | None = None
    restart_at: float | None = None
    """Set while waiting to replace a child that died: ``time.monotonic()`` to start the next."""
    died_status: int = 0
    """The status of the child that died, should the slot end instead of starting another."""
    status: int | None = None
    """The slot's exit status, once it has ended."""


class Supervisor:
    """Runs ``command`` (a ``conveyor worker`` command line) ``processes`` times; see above."""

    def __init__(self, command: Sequence[str], processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.command = list(command)
        self.processes = processes
        self.quiet = False
        self.stop_requests = 0
        self._slots = [
            _Slot(Backoff(RESTART_FIRST_SECONDS, RESTART_MAX_SECONDS)) for _ in range(processes)
        ]

    def run(self) -> int:
        """Start the children, supervise them until all have exited; returns the exit status."""
        with _signal_pipe((*FORWARDED_SIGNALS, signal.SIGCHLD)) as signal_fd:
            logger.info("starting %d worker processes", self.processes)
            for slot in self._slots:
                self._start(slot)
            while any(slot.status is None for slot in self._slots):
                self._step(signal_fd)
        failed = [status for slot in self._slots if (status := slot.status)]
        return failed[0] if failed else 0

    def _step(self, signal_fd: int) -> None:
        """Wait for a signal, a ready pipe or the next restart, then act on what happened."""
        starting = {c.ready_fd: c for c in self._children() if c.ready_fd is not None}
        readable, _, _ = select.select([signal_fd, *starting], [], [], self._next_restart_in())
        if signal_fd in readable:
            for number in os.read(signal_fd, 256):
                if number != signal.SIGCHLD:  # an exit is found by polling, below
                    self._on_signal(signal.Signals(number))
        for fd in readable:
            if fd in starting:
                self._read_ready(starting[fd])
        for slot in self._slots:
            if slot.child is not None and (code := slot.child.process.poll()) is not None:
                self._ended(slot, code)
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._restart(slot)

    def _children(self) -> list[_Child]:
        return [slot.child for slot in self._slots if slot.child is not None]

    def _next_restart_in(self) -> float | None:
        """Seconds until the next child is due to start again; None when none is."""
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

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
        for slot in self._slots:
            if slot.restart_at is not None:  # no child to stop, and none to start now
                slot.restart_at = None
                slot.status = 0
        self._forward_all()

    def _forward_all(self) -> None:
        for child in self._children():
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

    def _start(self, slot: _Slot) -> None:
        index = self._slots.index(slot)  # the child's number: its --metrics-bind port offset
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                env={**os.environ, READY_FD_ENV: str(write_fd), SLOT_ENV: str(index)},
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)  # read once select says so, and once more at its exit
        logger.debug("started worker process %d", process.pid)
        slot.child = _Child(process, read_fd)

    def _read_ready(self, child: _Child) -> None:
        """Take the child's ``READY``; at end of file (it exited first) it stays not ready."""
        assert child.ready_fd is not None
        try:
            data = os.read(child.ready_fd, 1)
        except BlockingIOError:  # nothing written, and the write end is still open somewhere
            return
        os.close(child.ready_fd)
        child.ready_fd = None
        if data == READY:
            child.ready_at = time.monotonic()
            self._forward(child)

    def _ended(self, slot: _Slot, code: int) -> None:
        """The slot's child exited: end the slot (a start-up failure ends the pool) or restart."""
        child, slot.child = slot.child, None
        assert child is not None
        if child.ready_fd is not None:  # READY may be waiting in the pipe: it counts
            self._read_ready(child)
            if child.ready_fd is not None:  # still open in a process the child started
                os.close(child.ready_fd)
        pid = child.process.pid
        if self.stop_requests:
            # One that was still starting had no job, however it ended (say, by our TERM).
            slot.status = 0 if child.ready_at is None else _exit_status(code)
        elif child.ready_at is None:
            logger.error("worker process %d %s while starting", pid, _describe(code))
            slot.status = _exit_status(code) or 1
            self._stop(f"worker process {pid} failed")
        elif code == 0 or self.quiet:
            # It finished (--burst, or the server said terminate), or a quiet pool is winding
            # down: no new process.
            slot.status = _exit_status(code)
        else:
            if time.monotonic() - child.ready_at >= RESTART_RESET_SECONDS:
                slot.backoff.reset()
            delay = slot.backoff.next_delay()
            logger.warning(
                "worker process %d %s; starting another in %.1fs", pid, _describe(code), delay
            )
            slot.restart_at = time.monotonic() + delay
            slot.died_status = _exit_status(code)

    def _restart(self, slot: _Slot) -> None:
        """The backoff is over: start another child, unless the pool went quiet meanwhile."""
        slot.restart_at = None
        if self.quiet:
            slot.status = slot.died_status
        else:
            self._start(slot)


@contextlib.contextmanager
def _signal_pipe(signals: Sequence[signal.Signals]) -> Iterator[int]:
    """While open, each of ``signals`` writes its number to the pipe returned, for the loop.

    Python's C-level handler writes the byte (``signal.set_wakeup_fd``), before the Python
    handler runs; the Python handler, a no-op, is what makes the signal caught, not fatal.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd)
    previous = {sig: signal.signal(sig, _caught) for sig in signals}
    try:
        yield read_fd
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)


def _caught(signum: int, frame: object) -> None:
    pass


def _exit_status(code: int) -> int:
    """A child's return code as a shell exit status (killed by signal N: 128 + N)."""
    return 128 - code if code < 0 else code


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"
