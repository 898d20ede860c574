"""One FWP connection: an ``asyncio.Protocol`` around the sans-IO codec.

``data_received`` frames lines and queues them; one runner task per busy connection takes
them in order, so replies go out strictly in order and a waiting FETCH does not block the
event loop. At an idle connection, PUSH, ACK and a FETCH that finds a job are answered in
``data_received`` itself (``_answer_now``: no task, no future; a PUSH may answer a waiting
FETCH there and then), a PUSH's ``+OK`` once the commit that holds its job is settled
(``_unpark``). Reading pauses while too much is queued, and the runner waits while the
socket's send buffer is full, so a peer can make us hold only a bounded amount of data.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, cast

from conveyor.errors import LineTooLong, StoreError
from conveyor.manager import ClientInfo, Manager, ServerStats
from conveyor.manager.ahead import Rhythm
from conveyor.protocol import (
    OK,
    Hello,
    LineBuffer,
    decode_hello,
    error,
    greeting,
    new_challenge,
    split_command,
)
from conveyor.server.commands import COMMANDS, NOW, SENT, Soon
from conveyor.server.failures import error_reply
from conveyor.server.guard import MAX_CHECKS_PER_ADDRESS, Verdict
from conveyor.server.states import ConnState, advance
from conveyor.store.base import Durability

if TYPE_CHECKING:
    from conveyor.server.app import FaktoryServer

__all__ = ["Connection"]

log = logging.getLogger("conveyor.server")

HELLO_MAX_LINE_BYTES = 64 * 1024
PIPELINE_HIGH_BYTES = 8 * 1024 * 1024
PIPELINE_HIGH_LINES = 4096
FLUSH_BYTES = 64 * 1024  # replies to pipelined commands are sent together up to this size

LINGER_SECONDS = 2.0  # after refused input, how long we read and drop the rest
IDLE_CHECKS = 4  # looks per idle timeout: an idle connection closes within 1.25 timeouts

_WAITING = (b"FETCH", b"RESULT", b"CANCELS")
"""Commands that may wait long (for a job, a result, a cancel notice): earlier replies go
out first, a lost peer stops them."""

# Queued in place of input that is refused, to answer in order (then the connection closes).
_TOO_LONG = object()  # a line over max_line_bytes
_OVER_BUDGET = object()  # partial lines of all connections over max_partial_bytes


class _Begun:
    """Queued in place of a PUSH already done in ``data_received`` whose durability is an
    awaitable without ``when_done``: the runner answers it, in order, once ``rest`` is over."""

    __slots__ = ("rest",)

    def __init__(self, rest: Awaitable[None]) -> None:
        self.rest = rest


class Connection(asyncio.Protocol):
    def __init__(self, server: FaktoryServer) -> None:
        self.server = server
        self.state = ConnState.GREETING
        self.client = ClientInfo(close=self.close)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""  # the peer's IP: password failures are counted per address
        self._lines = LineBuffer(HELLO_MAX_LINE_BYTES)
        self._pending: deque[bytes | object] = deque()
        self._pending_bytes = 0
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._runner: asyncio.Task[None] | None = None
        self._parked: Durability | Soon | None = None  # a command answered when it settles
        self._park_done: asyncio.Future[None] | None = None  # for stop(), made on demand
        self._answering = False  # inside _answer_now
        self._fetching = False  # the runner is in a FETCH, FETCHB or CANCELS that may wait
        self._watching = False  # ... in a CANCELS, which only waits: shutdown cuts it short
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._registered = False
        self._challenge = new_challenge() if server.config.password else None
        self._deadline: asyncio.TimerHandle | None = None  # the handshake's, then idle checks
        self._partial = 0  # bytes of this connection's partial line in server.partial_bytes
        self._activity = 0  # lines read and replies sent; idle checks look for a change
        self._seen_activity = 0
        self._quiet_checks = 0
        self.rhythm = Rhythm()  # its FETCH/ACK pattern: the next job reserved ahead (Redis)

    # -------------------------------------------------------------- Session (for handlers)

    @property
    def manager(self) -> Manager:
        return self.server.manager

    def stats(self) -> ServerStats:
        return self.server.stats()

    def send_now(self, reply: bytes) -> bool:
        # Only a waiting FETCH or RESULT is answered this way, and the runner flushed
        # everything before it began to wait, so the reply keeps its place in the stream.
        if self.state is ConnState.CLOSED or self.transport is None:
            return False
        self.transport.write(reply)
        return True

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.address = str(peer[0]) if isinstance(peer, tuple) else self.peer
        self.server.connections.add(self)
        if self.server.closing:
            self.transport.close()
            return
        self.transport.write(greeting(self._challenge))
        timeout = self.server.config.handshake_timeout_seconds
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is ConnState.CLOSED:
            return
        if (
            state is ConnState.READY
            and self._runner is None
            and self._parked is None
            and not self._pending
            and not self._partial
            and not self._reading_paused
            and data.find(b"\n") == len(data) - 1
            and len(data) <= self._lines.max_line_bytes
            and not self.server.closing
        ):
            # One whole command on an idle connection: every client with one command in
            # flight sends just that. No buffer, no queue on the way to its answer.
            self._activity += 1
            command = data[:-2] if data[-2:-1] == b"\r" else data[:-1]
            answered = self._answer_line(command)
            if answered is True:
                self._flush()
                return
            if answered is False:
                self._pending_bytes += len(command)
            self._pending.append(command if answered is False else answered)
            self._runner = asyncio.get_running_loop().create_task(self._run())
            return
        self._lines.feed(data)
        try:
            while (line := self._lines.next_line()) is not None:
                if self.state is ConnState.GREETING and not self._pending:
                    # The HELLO line had the small handshake limit; commands get the full one.
                    self._lines.max_line_bytes = self.server.config.max_line_bytes
                self._pending.append(line)
                self._pending_bytes += len(line)
                self._activity += 1
        except LineTooLong:
            self._refuse_input(_TOO_LONG)
        if len(self._lines) != self._partial:
            self._count_partial()
        if self._pending_bytes > PIPELINE_HIGH_BYTES or len(self._pending) > PIPELINE_HIGH_LINES:
            self._pause_reading()
        if self._pending and self._runner is None and self._parked is None:
            if self.state is ConnState.READY and not self.server.closing:
                self._answer_now()
            if self._pending and self._parked is None:
                self._runner = asyncio.get_running_loop().create_task(self._run())

    def _count_partial(self) -> None:
        """Keep ``server.partial_bytes`` (what partial lines hold, all connections together)
        up to date, and refuse this connection's input when it pushes the total over the cap:
        a few clients sending long lines without a newline must not take all the memory."""
        held = len(self._lines)
        server = self.server
        server.partial_bytes += held - self._partial
        grew, self._partial = held > self._partial, held
        if grew and server.partial_bytes > server.config.max_partial_bytes:
            log.warning(
                "%s: partial lines of all connections hold %d bytes (max_partial_bytes %d); "
                "refusing this connection's",
                self.peer,
                server.partial_bytes,
                server.config.max_partial_bytes,
            )
            self._refuse_input(_OVER_BUDGET)

    def _refuse_input(self, reason: object) -> None:
        """Drop what is buffered, answer ``reason`` in turn, then close: nothing after a line
        we will not read whole can be framed reliably."""
        self._lines.release()
        self.server.partial_bytes -= self._partial
        self._partial = 0
        self._pending.append(reason)
        self._pause_reading()

    def _answer_now(self) -> None:
        """Answer the commands at the head of the queue right here, while each can be
        (``_answer_line``), not one task switch later: no task, no future. A command that
        must wait (a PUSH for its commit, a command on Redis for the reply) holds the ones
        after it; one that has to take the runner stops here."""
        pending = self._pending
        while pending and self._parked is None and not self._reading_paused:
            line = pending[0]
            if not isinstance(line, bytes):
                break
            answered = self._answer_line(line)
            if answered is False:
                break
            pending.popleft()
            self._pending_bytes -= len(line)
            if answered is not True:
                pending.appendleft(answered)
                break
        self._flush()

    def _answer_line(self, line: bytes) -> bool | _Begun:
        """Answer one command in this very step if it can be (``commands.NOW``): True once
        it is answered, or parked until its store settles it; False, with nothing done, when
        it has to take the runner; a ``_Begun`` for the runner to finish.

        A PUSH is done here and, when a FETCH waits for the job's queue, hands the job to it
        and writes its reply in this very step (docs/design/hand-off.md); the PUSH's own
        ``+OK`` waits for the commit that holds the job (``_unpark``). A FETCH that finds a
        job and an ACK are answered at once (on Redis: when Redis answers, ``_answered``).
        """
        verb, _, argument = line.partition(b" ")
        handler = NOW.get(verb)
        if handler is None:
            return False
        self._answering = True
        try:
            try:
                result = handler(self, argument)
            except Exception as exc:
                result = self._failure(line, exc)
            if result is None:
                return False
            self.server.command_count += 1
            if isinstance(result, bytes):
                self._write(result)
            elif isinstance(result, Durability):
                self._parked = result
                result.when_done(self._unpark)  # may answer at once (memory)
            elif isinstance(result, Soon):
                self._parked = result
                result.later.when_done(partial(self._answered, result, line))
            else:  # a wait we cannot watch: the runner awaits it
                return _Begun(result)
            return True
        finally:
            self._answering = False

    def _unpark(self, error: Exception | None) -> None:
        """The commit holding a PUSH done in ``_answer_now`` is settled: answer the PUSH, then
        let the runner take what came after it. Called by the store: it must not call the
        store (a failed commit settles from inside a store method)."""
        self._parked = None
        self._write(OK if error is None else self._failure(b"PUSH", error))
        self._resume()

    def _answered(
        self, soon: Soon, line: bytes, value: object, error: BaseException | None
    ) -> bool:
        """The store called back with the value of a command done in ``_answer_now``:
        answer it, or (a FETCH that found nothing) send it the long way. Returns whether
        the reply could be sent (a FETCH's jobs are given back when not)."""
        self._parked = None
        reply: bytes | None
        if error is not None:
            failed = error if isinstance(error, Exception) else StoreError(repr(error))
            reply = self._failure(line, failed)
        else:
            reply = soon.render(value)
        if reply is None:  # nothing to take now: the FETCH waits, through the runner
            self._pending.appendleft(line)
            self._pending_bytes += len(line)
            self.server.command_count -= 1  # counted again when it runs
            taken = True
        else:
            taken = self.state is not ConnState.CLOSED and self.transport is not None
            self._write(reply)
        self._resume()
        return taken

    def _resume(self) -> None:
        """After a parked command was answered: send, and let the runner take what came
        after it."""
        if self._answering:
            return  # settled at once: _answer_now goes on
        self._flush()
        if self._park_done is not None:
            if not self._park_done.done():
                self._park_done.set_result(None)
            self._park_done = None
        if self._runner is not None:
            return
        if self._pending and self.state is not ConnState.CLOSED:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        elif self.server.closing:
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; queued commands still run, their replies are dropped

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fetching and self._runner is not None:
            # Nobody will read the job a waiting FETCH would get: stop waiting, so it is not
            # reserved for a dead connection (and stuck there until its reservation expires).
            self._runner.cancel()
        self._set_closed()
        self._writable.set()
        self.rhythm.close()
        self.server.connections.discard(self)
        if self._registered:
            self._registered = False
            self.server.spawn(self.server.manager.disconnect(self.client))
        self._release()

    def _release(self) -> None:
        """Let go of what a closed connection holds, now rather than at the next full pass of
        the cycle collector: a partial line can be 16 MiB. The client record lives on in the
        manager until its disconnect, and must not keep this connection alive with it."""
        self._lines.release()
        self.server.partial_bytes -= self._partial
        self._partial = 0
        self._out.clear()
        self._out_bytes = 0
        if self._runner is None:  # else the runner drops what is left when it sees CLOSED
            self._drop_pending()
        self.client.close = None
        self.transport = None

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -------------------------------------------------------------- control

    def close(self) -> None:
        """Close after what was written is flushed (the heartbeat reaper and shutdown use it)."""
        self._flush()
        self._set_closed()
        if self.transport is not None:
            self.transport.close()

    def _close_lingering(self) -> None:
        """Close after refusing input the peer is still sending. A close with unread input
        makes the kernel answer with a reset, which can destroy our error reply on its way;
        so: the reply, end of our stream, then read and drop what comes until the peer
        closes too, for at most ``LINGER_SECONDS``."""
        transport = self.transport
        if transport is None or not transport.can_write_eof():  # TLS: no half-close
            self.close()
            return
        self._flush()
        self._set_closed()  # data_received drops everything from now on
        transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._deadline = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)

    def shutdown(self) -> None:
        """Server shutdown: close now if idle; a busy runner (or a command waiting for its
        store) closes after its command, except a CANCELS, which is cut short (it changes
        nothing; the worker asks again elsewhere)."""
        if self._runner is None and self._parked is None:
            self.close()
        elif self._watching and self._runner is not None:
            self._runner.cancel()

    @property
    def runner(self) -> asyncio.Future[None] | None:
        """What the server waits for before it closes this connection: the runner, or the
        PUSH waiting for its commit."""
        if self._runner is not None or self._parked is None:
            return self._runner
        if self._park_done is None:
            self._park_done = asyncio.get_running_loop().create_future()
        return self._park_done

    def _set_closed(self) -> None:
        if self.state is not ConnState.CLOSED:
            self.state = advance(self.state, ConnState.CLOSED)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _handshake_expired(self) -> None:
        if self.state in (ConnState.GREETING, ConnState.HELLO):
            log.debug("%s: no HELLO within the handshake deadline, closing", self.peer)
            self.close()

    def _watch_idle(self) -> None:
        """After HELLO: close the connection when, for ``idle_timeout_seconds``, it has sent
        no line and been sent no reply, and no command of its is at work (a waiting FETCH
        is; a reply the peer does not read is not). Checked a few times per timeout, so
        busy connections cost nothing per command."""
        timeout = self.server.config.idle_timeout_seconds
        if timeout > 0 and self.state is ConnState.READY:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(timeout / IDLE_CHECKS, self._check_idle)

    def _check_idle(self) -> None:
        self._deadline = None
        busy = self._runner is not None or self._parked is not None
        working = busy and self._writable.is_set()
        if working or self._activity != self._seen_activity:
            self._seen_activity = self._activity
            self._quiet_checks = 0
        else:
            self._quiet_checks += 1
            if self._quiet_checks >= IDLE_CHECKS:
                timeout = self.server.config.idle_timeout_seconds
                log.debug("%s: idle for %gs, closing", self.peer, timeout)
                if self._writable.is_set() or self.transport is None:
                    self.close()
                else:  # replies nobody reads: close() would wait for them forever
                    self.transport.abort()
                return
        self._watch_idle()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _write(self, data: bytes) -> None:
        if self.state is not ConnState.CLOSED:
            self._out.append(data)
            self._out_bytes += len(data)

    def _flush(self) -> None:
        """Send the replies gathered so far: one send for a whole pipelined burst."""
        if not self._out:
            return
        self._activity += 1
        if self.state is not ConnState.CLOSED and self.transport is not None:
            self.transport.write(self._out[0] if len(self._out) == 1 else b"".join(self._out))
        self._out.clear()
        self._out_bytes = 0

    # -------------------------------------------------------------- the runner

    async def _run(self) -> None:
        try:
            while self._pending and self.state is not ConnState.CLOSED:
                item = self._pending.popleft()
                if isinstance(item, bytes):
                    self._pending_bytes -= len(item)
                if self._reading_paused and not _refusal(item) and self._drained():
                    self._reading_paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                if isinstance(item, _Begun):
                    self._write(await self._finish(item))
                elif not await self._handle(item):
                    if _refusal(item):
                        self._close_lingering()
                    else:
                        self.close()
                    return
                if not self._pending or self._out_bytes > FLUSH_BYTES:
                    self._flush()
                if not self._writable.is_set():
                    await self._writable.wait()
        finally:
            self._runner = None
            self._flush()
            if self.server.closing and self.state is not ConnState.CLOSED:
                self.close()
            if self.state is ConnState.CLOSED:
                self._drop_pending()

    def _drop_pending(self) -> None:
        """Forget what a closed connection still had queued (a begun PUSH is stored and
        committed all the same: there is just nobody left to answer)."""
        self._pending.clear()
        self._pending_bytes = 0

    async def _finish(self, begun: _Begun) -> bytes:
        try:
            await begun.rest
        except Exception as exc:
            return self._failure(b"PUSH", exc)
        return OK

    def _drained(self) -> bool:
        return (
            self._pending_bytes < PIPELINE_HIGH_BYTES // 2
            and len(self._pending) < PIPELINE_HIGH_LINES // 2
        )

    async def _handle(self, item: bytes | object) -> bool:
        """Answer one queued line; False closes the connection."""
        if _refusal(item):
            if self.state is ConnState.READY:  # before HELLO, silently (as a bad HELLO)
                self._write(self._refusal_reply(item))
            return False
        assert isinstance(item, bytes)
        if self.state is ConnState.GREETING:
            return await self._hello(item)
        if self.server.closing:
            self._write(error("ERR", "shutdown in progress"))
            return False
        self._fetching = item.startswith(_WAITING)
        self._watching = item.startswith(b"CANCELS")
        if self._out and self._fetching:
            self._flush()  # a FETCH may wait for seconds; earlier replies must not wait with it
        try:
            reply = await self._dispatch(item)
        finally:
            self._fetching = self._watching = False
        if reply is None:
            return False
        if reply is not SENT:
            self._write(reply)
        return True

    def _refusal_reply(self, item: object) -> bytes:
        if item is _TOO_LONG:
            return error("ERR", f"line too long (max {self._lines.max_line_bytes} bytes)")
        limit = self.server.config.max_partial_bytes
        return error("ERR", f"server busy: partial lines of all connections over {limit} bytes")

    async def _hello(self, line: bytes) -> bool:
        hello = decode_hello(line)
        if hello is None:
            log.debug("%s: bad HELLO, closing", self.peer)
            return False  # silently, as Faktory
        self.state = advance(self.state, ConnState.HELLO)
        if not await self._password_ok(hello):
            return False
        client = self.client
        client.wid = hello.wid or ""
        client.hostname = hello.hostname or ""
        client.pid = hello.pid or 0
        client.labels = list(hello.labels or ())
        client.version = hello.v or 0
        client.username = hello.username or ""
        try:
            await self.server.manager.connect(client)
        except Exception:
            log.exception("%s: cannot register the client, closing", self.peer)
            return False
        if self.state is ConnState.CLOSED:  # dropped while registering
            self.server.spawn(self.server.manager.disconnect(client))
            return False
        self._registered = True
        self.state = advance(self.state, ConnState.READY)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._watch_idle()
        self._write(OK)
        count = len(self.server.connections)
        if count > self.server.config.max_connections:
            log.warning("too many connections: %d, refusing %s", count, self.peer)
            self._write(error("ERR", f"too many connections: {count}"))
            return False
        return True

    async def _password_ok(self, hello: Hello) -> bool:
        """Check the password (server/guard.py); on failure the error is written."""
        guard = self.server.guard
        if self._challenge is None or guard is None:
            return True
        verdict = await guard.check(hello, self._challenge, self.address, self._is_open)
        if verdict is Verdict.BUSY:
            log.warning(
                "%s: %d password checks from %s under way; refusing one more",
                self.peer,
                MAX_CHECKS_PER_ADDRESS,
                self.address,
            )
            self._write(
                error("ERR", f"too many password checks from {self.address} at once; try later")
            )
        elif verdict is Verdict.WRONG:
            self._write(error("ERR", "Invalid password"))
        return verdict is Verdict.OK and self._is_open()

    def _is_open(self) -> bool:
        return self.state is not ConnState.CLOSED

    async def _dispatch(self, line: bytes) -> bytes | None:
        verb, argument = split_command(line)
        handler = COMMANDS.get(verb.decode("latin-1"))
        if handler is None:
            return error("ERR", f"unknown command {verb.decode('utf-8', 'replace')}")
        self.server.command_count += 1
        try:
            return await handler(self, argument)
        except Exception as exc:
            return self._failure(line, exc)

    def _failure(self, line: bytes, exc: Exception) -> bytes:
        """The error reply for a command that raised ``exc`` (``failures.error_reply``)."""
        return error_reply(line, exc, self.peer, self.server.manager.store_trouble)


def _refusal(item: object) -> bool:
    return item is _TOO_LONG or item is _OVER_BUDGET
