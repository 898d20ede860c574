"""Sending script calls to Redis, and what a lost reply means (docs/design/idempotency.md).

When a connection dies after a command was sent and before its reply arrived, the command may
or may not have run. Sending it again blindly (what a client-side retry does) runs a PUSH or a
reserve twice. So the clients are built with no retry of their own, and:

* a call that never left (the connection could not be made) failed: nothing was written;
* a script whose second run changes nothing (reads, ``extend``) is sent once more at once;
* every other write carries a **token**: a key of its own, ``{ns}:op:<random>``, passed as
  KEYS[1]. The first attempt to run records its result there (``_lib.lua``); a retry of the same
  call, or a first attempt that arrives late, finds it and returns the result, changing
  nothing. Such a write is retried with back-off for ``retry_for`` seconds; if no attempt gets
  an answer, ``OutcomeUnknown`` says so.

A durable write can also wait for replicas (``?wait_replicas=N``): WAIT is sent with it on the
same connection, and fewer confirmations than asked is an error that says what happened.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.errors import StoreError
from conveyor.store.redis.codec import RedisURL
from conveyor.store.redis.pipe import Answer, Lost, NotSent, Pipe, usable
from conveyor.store.redis.scripts import Script

__all__ = ["CONNECTION_ERRORS", "Caller", "OutcomeUnknown", "reraise_cancellation"]

log = logging.getLogger(__name__)

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors after which the command may or may not have reached Redis."""
PIPE_LOST = CONNECTION_ERRORS
"""Replies through the pipe that mean the same (redis-py counts LOADING as one)."""

RETRY_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Pauses before each retry of a write whose reply was lost (the last one repeats)."""

MIN_TOKEN_TTL_SECONDS = 30
TOKENS_PER_DRAW = 256


_CLIENT_REPR = re.compile(r"<redis\.asyncio\.client\.Redis\(.*?,host=([^,]+),port=(\d+),.*?\)> - ")


def describe(exc: BaseException) -> str:
    """An error's text, without the client reprs redis-py's Sentinel puts in "No master
    found" (one per sentinel, hundreds of characters each): just each sentinel's address."""
    return _CLIENT_REPR.sub(r"\1:\2 ", str(exc))


Send = Callable[..., Awaitable[Any]]
"""Sends one command and returns its reply (an error reply raises)."""


def _not_there(error: BaseException) -> bool:
    """Redis refused a script call without running it because it does not have the script or
    function (NOSCRIPT, "Function not found"), or cannot call functions (FCALL unknown, not
    allowed): send it again once that is dealt with (``Caller._send``)."""
    if isinstance(error, NoScriptError):
        return True
    if not isinstance(error, ResponseError):
        return False
    text = str(error)
    return text.startswith("Function not found") or _no_fcall(text)


def _no_fcall(text: str) -> bool:
    """An error saying FCALL (or FUNCTION) is not a command here or not allowed to us."""
    return _NO_FCALL.match(text.lower()) is not None


_NO_FCALL = re.compile(
    r"(unknown command|this user has no permissions to run the) ['`](fcall|function)\b"
)


class OutcomeUnknown(StoreError):
    """A write was sent, its reply was lost, and no retry got an answer in time."""


def _why(exc: BaseException) -> BaseException:
    """What to report of a failed attempt: the pipe's own errors say it themselves; the
    markers of ``_attempt`` carry it as their cause."""
    return exc if isinstance(exc, (NotSent, Lost)) else (exc.__cause__ or exc)


class _NotSent(Exception):
    """The command never left: no connection could be made."""


class _Lost(Exception):
    """The command was sent (maybe only in part) and no reply came back."""


def reraise_cancellation() -> None:
    """Raise a cancellation that was swallowed on the way.

    On Python 3.11 ``asyncio.wait_for`` returns the inner result, dropping a CancelledError,
    when the awaited future finishes in the same loop iteration as the cancel (fixed in 3.12);
    redis-py awaits ``wait_for`` on every command. A pending cancellation is raised again here,
    so cancelling a task that uses the store always works."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Caller:
    """Runs the store's scripts on one client (``Redis``, a Sentinel master, or a Cluster)."""

    def __init__(self, client: Any, url: RedisURL, prefix: str) -> None:
        self.client = client
        self.cluster = url.cluster
        self.where = url.where
        self.retry_for = url.retry_for
        self.token_ttl = max(MIN_TOKEN_TTL_SECONDS, math.ceil(3 * url.retry_for))
        self._wait = (url.wait_replicas, url.wait_timeout_ms) if url.wait_replicas else None
        self._prefix = prefix + "op:"
        self._tokens: Iterator[str] = iter(())
        # scripts go through a connection of our own where it can serve the URL (pipe.py)
        self._pipe = Pipe(url) if usable(url) else None
        self._going_on: set[asyncio.Task[None]] = set()  # write_soon calls retried in a task
        # FCALL for the scripts of a function library (scripts.py) until Redis refuses it;
        # never on a Cluster, where a library would have to be loaded on every primary
        self._functions = not url.cluster

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.close()

    def new_token(self) -> str:
        """A fresh token key for one write call (64 random bits, drawn 256 at a time: one
        ``getrandom`` per call was a system call per job and script)."""
        token = next(self._tokens, None)
        if token is None:
            raw = secrets.token_hex(8 * TOKENS_PER_DRAW)
            self._tokens = iter([raw[i : i + 16] for i in range(0, len(raw), 16)])
            token = next(self._tokens)
        return self._prefix + token

    # ------------------------------------------------------------------ errors

    def unreachable(self, op: str, exc: BaseException, *, wrote: bool = False) -> StoreError:
        detail = "" if wrote else ", nothing written"
        return StoreError(f"Redis at {self.where} is unreachable ({op}{detail}): {describe(exc)}")

    def failed(self, op: str, exc: BaseException) -> StoreError:
        return StoreError(f"Redis at {self.where} failed ({op}): {describe(exc)}")

    def _unknown(self, op: str, exc: BaseException) -> OutcomeUnknown:
        return OutcomeUnknown(
            f"Redis at {self.where} lost the reply to {op} and no retry got an answer within "
            f"{self.retry_for:g}s: outcome unknown, it may or may not have been done "
            f"({describe(exc)})"
        )

    # ------------------------------------------------------------------ calls

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        """A script whose second run changes nothing: sent again at once after a lost reply."""
        for last in (False, True):
            try:
                result = await self._attempt(script, keys, args, wait=False)
            except (_NotSent, _Lost) as exc:
                if last or isinstance(exc, _NotSent):
                    raise self.unreachable(script.name, exc.__cause__ or exc, wrote=True) from exc
                continue
            except RedisError as exc:
                raise self.failed(script.name, exc) from exc
            reraise_cancellation()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def write(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any] = (),
        *,
        token: str | None = None,
        durable: bool = False,
        first: BaseException | None = None,
    ) -> Any:
        """A write that takes a token (KEYS[1]; ARGV[1] its TTL, ARGV[2] the attempt number).

        Retried with the same token while its outcome is unknown, for ``retry_for`` seconds.
        Raises ``StoreError`` when nothing was written, ``OutcomeUnknown`` when that is not
        known. ``first``: the first attempt was made already (``write_soon``) and ended with
        this error; go on from there."""
        token = token or self.new_token()
        wait = durable and self._wait is not None
        pipe = self._pipe if not wait else None
        lost: BaseException | None = None  # why the outcome is unknown, once it is
        last: BaseException | None = None
        deadline = 0.0
        for attempt in itertools.count(1):
            try:
                if first is not None:
                    error, first = first, None
                    raise error
                if pipe is not None:  # the usual case, without a frame more
                    ttl = self.token_ttl
                    result = await self._send(
                        pipe.call, pipe.call, script, [token, *keys], [ttl, attempt, *args]
                    )
                else:
                    result = await self._attempt(
                        script, [token, *keys], [self.token_ttl, attempt, *args], wait=wait
                    )
            except (_NotSent, NotSent) as exc:
                if lost is None:
                    raise self.unreachable(script.name, _why(exc)) from exc
                last = _why(exc)
            except (_Lost, Lost, *PIPE_LOST) as exc:
                lost = last = _why(exc)
            except RedisError as exc:
                if lost is None:  # Redis refused the command: nothing was written
                    raise self.failed(script.name, exc) from exc
                last = exc  # a retry refused (LOADING after a restart, READONLY, ...): retry
            else:
                reraise_cancellation()
                return result
            if attempt == 1:
                deadline = time.monotonic() + self.retry_for
            pause = RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)]
            if time.monotonic() + pause >= deadline:
                assert last is not None  # every way here set it
                raise self._unknown(script.name, last)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def write_soon(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        done: Answer,
        *,
        token: str | None = None,
        durable: bool = False,
    ) -> bool:
        """``write`` with a callback: the first attempt goes out through the pipe and
        ``done(result, None)`` is called from its reply's own step, without a task. Anything
        but a plain answer (a lost reply, NOSCRIPT, an error) goes on in a task running
        ``write`` from there, which calls ``done(result, None)`` or ``done(None, error)``.
        False, with nothing sent, where the pipe cannot take it now (``Pipe.send``) or a
        durable write must WAIT: the caller awaits ``write`` instead."""
        pipe = self._pipe
        if pipe is None or (durable and self._wait is not None):
            return False
        token = token or self.new_token()

        def answered(result: Any, error: BaseException | None) -> None:
            if error is None:
                done(result, None)
                return
            # NOSCRIPT (or no function): Redis refused, nothing ran; write() starts over
            first = None if _not_there(error) else error
            task = asyncio.get_running_loop().create_task(
                self._go_on(script, keys, args, token, first, done)
            )
            self._going_on.add(task)
            task.add_done_callback(self._going_on.discard)

        command = self._command(script, [token, *keys], [self.token_ttl, 1, *args])
        return pipe.send(answered, *command)

    def run_soon(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], done: Answer
    ) -> bool:
        """``run`` with a callback (as ``write_soon``, for a script whose second run changes
        nothing: no token): the first attempt goes out through the pipe; anything but a plain
        answer goes on in a task running ``run``. False, with nothing sent, where the pipe
        cannot take it now."""
        pipe = self._pipe
        if pipe is None:
            return False

        def answered(result: Any, error: BaseException | None) -> None:
            if error is None:
                done(result, None)
                return

            async def again() -> None:
                try:
                    value = await self.run(script, keys, args)
                except BaseException as exc:  # a cancelled one too: its caller must hear of it
                    done(None, exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    done(value, None)

            task = asyncio.get_running_loop().create_task(again())
            self._going_on.add(task)
            task.add_done_callback(self._going_on.discard)

        return pipe.send(answered, *self._command(script, keys, args))

    async def _go_on(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        token: str,
        first: BaseException | None,
        done: Answer,
    ) -> None:
        try:
            result = await self.write(script, keys, args, token=token, first=first)
        except BaseException as exc:  # a cancelled one too: its caller must hear of it
            done(None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            done(result, None)

    def _command(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The first command to try for a script call: FCALL of its function, or EVALSHA."""
        if script.function is not None and self._functions:
            return ("FCALL", script.function, len(keys), *keys, *args)
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    async def _send(
        self, send: Send, plain: Send, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """A script call through ``send``; when Redis did not run it for want of the script
        (NOSCRIPT) or its function, sent again with EVAL or after loading its library
        (through ``plain``: no WAIT), once. Anything else raises as it came."""
        command = self._command(script, keys, args)
        try:
            return await send(*command)
        except ResponseError as exc:
            if not _not_there(exc):
                raise
            if command[0] == "FCALL":
                await self._load(plain, script, exc)
        if command[0] == "FCALL" and self._functions:
            return await send(*command)
        return await send("EVAL", script.source, len(keys), *keys, *args)

    async def _load(self, plain: Send, script: Script, refused: ResponseError) -> None:
        """After FCALL of ``script`` was refused: load its library, or call scripts with
        EVALSHA from now on where Redis has no functions for us (before 7.0, FCALL renamed
        away or denied by an ACL)."""
        assert script.library is not None
        if not _no_fcall(str(refused)):
            try:
                await plain("FUNCTION", "LOAD", script.library)
                return
            except ResponseError as exc:
                if "already exists" in str(exc):  # another server loaded it just now
                    return
                refused = exc
        self._functions = False
        log.warning(
            "Redis at %s refused Lua functions (%s): calling the scripts with EVALSHA",
            self.where,
            describe(refused),
        )

    async def _attempt(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], *, wait: bool
    ) -> Any:
        if self.cluster:
            return await self._attempt_cluster(script, keys, args)
        if self._pipe is not None and not wait:
            return await self._attempt_pipe(self._pipe, script, keys, args)
        pool = self.client.connection_pool
        try:
            conn = await pool.get_connection()
        except CONNECTION_ERRORS as exc:
            raise _NotSent() from exc

        async def send(*command: Any) -> Any:
            return await self._exchange(conn, script.name, command, wait)

        async def plain(*command: Any) -> Any:
            return await self._exchange(conn, script.name, command, False)

        try:
            return await self._send(send, plain, script, keys, args)
        except ResponseError:
            raise  # Redis answered: the connection is fine
        except BaseException as exc:
            await conn.disconnect(nowait=True)
            if isinstance(exc, CONNECTION_ERRORS):
                raise _Lost() from exc
            raise
        finally:
            await pool.release(conn)

    async def _attempt_pipe(
        self, pipe: Pipe, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:
            return await self._send(pipe.call, pipe.call, script, keys, args)
        except NotSent as exc:
            raise _NotSent() from exc
        except (Lost, *CONNECTION_ERRORS) as exc:  # redis-py counts LOADING as one too
            raise _Lost() from exc

    async def _exchange(self, conn: Any, op: str, command: tuple[Any, ...], wait: bool) -> Any:
        commands: list[tuple[Any, ...]] = [command]
        if wait:
            assert self._wait is not None
            commands.append(("WAIT", *self._wait))
        await conn.send_packed_command(conn.pack_commands(commands))
        try:
            result = await conn.read_response()
        except ResponseError:
            if wait:
                await conn.read_response()  # WAIT's reply, so the connection stays usable
            raise
        if wait:
            self._check_replicas(op, await conn.read_response())
        return result

    def _check_replicas(self, op: str, confirmed: Any) -> None:
        assert self._wait is not None
        wanted, timeout_ms = self._wait
        if int(confirmed) < wanted:
            raise StoreError(
                f"Redis at {self.where}: {op} is done on the master, but only {confirmed} of "
                f"{wanted} replicas confirmed it within {timeout_ms} ms; it would be lost if the "
                "master failed now"
            )

    async def _attempt_cluster(
        self, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        # The Cluster client follows MOVED/ASK itself (Redis refused the command there) and is
        # built without retries, so it never sends a command a second time on its own. Whether a
        # connection error happened before or after the command left is not known here.
        send = self.client.execute_command
        try:
            return await self._send(send, send, script, keys, args)
        except CONNECTION_ERRORS as exc:
            raise _Lost() from exc
