"""``Client``: one FWP connection, one command in flight, one round trip per command.

The bytes are handled by the sans-IO ``conveyor.protocol`` (``ReplyReader``); this module only
moves them over an asyncio stream. Higher layers (pools, reconnects, typed jobs, workers) are
built on top of it and are not its business.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import msgspec

from conveyor.client._lines import (
    CRLF,
    CRON_OPS,
    CRON_VERB,
    decode_errors,
    decode_jids,
    decode_jobs,
    decode_latency,
    decode_object,
    decode_objects,
    encode,
    fetchb_line,
    queue_names,
    run_seconds,
    word,
)
from conveyor.client._url import ServerAddress, resolve_url
from conveyor.errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConveyorError,
    ProtocolError,
)
from conveyor.job import Job, encode_job
from conveyor.protocol.auth import PROTOCOL_VERSION, hash_password
from conveyor.protocol.replies import Reply, ReplyKind, ReplyReader

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "Client", "fetch_jobs"]

# Must stay above the server's FETCH wait (2 s in Faktory) or an idle FETCH would time out.
DEFAULT_TIMEOUT_SECONDS = 10.0
_READ_BYTES = 256 * 1024
_HANDSHAKE = "the handshake"
_REPLY = "the reply"


class Client:
    """One connection to a conveyor (or Faktory) server. Create it with ``await Client.connect()``.

    Every method sends one command and waits for its reply. Error replies raise the matching
    ``CommandError`` subclass (``JobNotFound``, ``NotUnique``, ...). A timeout, a dropped
    connection or a cancelled call closes the connection (the reply stream can no longer be
    trusted) and raises ``ConnectError`` (or re-raises the cancellation).

    A ``Client`` is not safe for concurrent use by several tasks: one command is in flight at a
    time, so a second concurrent call raises ``RuntimeError``. Use one client per task or a pool.
    """

    __slots__ = (
        "_busy",
        "_closed",
        "_reader",
        "_replies",
        "_writer",
        "address",
        "timeout",
        "wid",
    )

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: ServerAddress,
        *,
        wid: str | None,
        timeout: float | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._replies = ReplyReader()
        self._busy = False
        self._closed = False
        self.address = address
        self.wid = wid
        self.timeout = timeout

    # -- connection lifecycle ---------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        wid: str | None = None,
        hostname: str | None = None,
        pid: int | None = None,
        labels: Iterable[str] = (),
        password: str | None = None,
        tls: ssl.SSLContext | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,  # noqa: ASYNC109 - kept per command
        environ: Mapping[str, str] | None = None,
    ) -> Client:
        """Connect and complete the ``HI``/``HELLO`` handshake.

        ``url`` defaults to the environment (``CONVEYOR_URL``, ``FAKTORY_URL``, ...; see
        ``resolve_url``). Pass ``wid`` to register as a worker process (needed for ``beat``).
        ``tls`` is an ``ssl.SSLContext``, ``True`` for the default context, or ``None`` to
        follow the URL scheme (``tcp+tls://``).
        """
        address = resolve_url(url, environ)
        context = _tls_context(tls, address.tls)
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    address.host,
                    address.port,
                    ssl=context,
                    server_hostname=address.host if context is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {address.url}: {exc or 'timed out'}") from exc
        client = cls(reader, writer, address, wid=wid, timeout=timeout)
        hello: dict[str, Any] = {
            "hostname": hostname if hostname is not None else socket.gethostname(),
            "pid": pid if pid is not None else os.getpid(),
            "v": PROTOCOL_VERSION,
        }
        if wid:
            hello["wid"] = wid
            hello["labels"] = list(labels)
        if address.username:
            hello["username"] = address.username
        try:
            await client._handshake(hello, password if password is not None else address.password)
        except BaseException:
            client._abort()
            raise
        return client

    async def _handshake(self, hello: dict[str, Any], password: str | None) -> None:
        greeting = await self._receive(_HANDSHAKE)
        if greeting.kind is not ReplyKind.SIMPLE or not greeting.text.startswith("HI "):
            raise ProtocolError(f"expected a +HI greeting, got {greeting!r}")
        try:
            challenge = decode_object(greeting.text[3:])
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"bad +HI greeting {greeting.text!r}") from exc
        if "s" in challenge:
            if not password:
                raise AuthenticationError(
                    f"{self.address.url} requires a password: put it in the URL "
                    "(tcp://:PASSWORD@host:port), in FAKTORY_PASSWORD, or pass password="
                )
            iterations = int(challenge.get("i") or 1)
            hello["pwdhash"] = hash_password(password, str(challenge["s"]), iterations)
        self._writer.write(b"HELLO " + encode(hello) + CRLF)
        reply = await self._receive(_HANDSHAKE)
        if reply.kind is ReplyKind.ERROR:
            if "invalid password" in reply.text.lower():
                raise AuthenticationError(f"{self.address.url} refused the password")
            raise CommandError.from_reply(reply.text)
        if reply.kind is not ReplyKind.OK:
            raise ProtocolError(f"expected +OK to HELLO, got {reply!r}")

    async def close(self) -> None:
        """Say ``END`` and close the connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        writer = self._writer
        try:
            if not self._busy:
                writer.write(b"END\r\n")
            writer.close()
            async with asyncio.timeout(self.timeout):  # a TLS close waits for the peer
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # the server may drop the socket first, which is what END asks for anyway

    def _abort(self) -> None:
        self._closed = True
        self._writer.close()

    @property
    def closed(self) -> bool:
        """Closed by us, or by the server (seen as end of stream without reading: a server
        closes idle connections, and this one would fail at its next command)."""
        return self._closed or self._reader.at_eof() or self._writer.is_closing()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- one round trip ---------------------------------------------------------------------

    async def raw(self, line: bytes) -> Reply:
        """Send one command line (without its terminator) and return the reply as it came.

        Error replies are returned, not raised: this is for tests and debugging.
        """
        return await self._roundtrip(line + CRLF)

    async def _call(self, line: bytes, read_timeout: float | None = None) -> Reply:
        """One command; ``read_timeout``: a longer read timeout for a command that waits."""
        reply = await self._roundtrip(line, read_timeout)
        if reply.kind is ReplyKind.ERROR:
            raise CommandError.from_reply(reply.text)
        return reply

    def _claim(self) -> None:
        """Take the connection for one exchange; ``_busy`` is cleared when it is done."""
        if self._busy:
            raise RuntimeError("a Client runs one command at a time; use one client per task")
        if self._closed:
            raise ConnectError(f"the connection to {self.address.url} is closed")
        self._busy = True

    async def _roundtrip(self, line: bytes, read_timeout: float | None = None) -> Reply:
        self._claim()
        try:
            self._writer.write(line)
            return await self._receive(_REPLY, read_timeout)
        finally:
            self._busy = False

    async def _receive(self, waiting_for: str, read_timeout: float | None = None) -> Reply:
        """The next reply; on any failure the connection is closed, as its stream is lost."""
        replies = self._replies
        timeout = self.timeout if read_timeout is None or self.timeout is None else read_timeout
        try:
            reply = replies.next_reply()
            if reply is not None:
                return reply
            async with asyncio.timeout(timeout):
                while reply is None:
                    data = await self._reader.read(_READ_BYTES)
                    if not data:
                        raise ConnectError(
                            f"{self.address.url} closed the connection "
                            f"while we waited for {waiting_for}"
                        )
                    replies.feed(data)
                    reply = replies.next_reply()
            return reply
        except ConveyorError:
            self._abort()
            raise
        except TimeoutError:
            self._abort()
            raise ConnectError(
                f"timed out after {timeout}s waiting for {waiting_for} from {self.address.url}"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            self._abort()
            raise ConnectError(f"connection to {self.address.url} failed: {exc}") from exc
        except BaseException:  # cancelled mid-reply: the next reply would be this one's
            self._abort()
            raise

    # -- producer commands --------------------------------------------------------------------

    async def push(self, job: Mapping[str, Any] | Job) -> str:
        """``PUSH`` one job; returns its jid (a random one is added when a mapping has none)."""
        if isinstance(job, Job):
            jid, payload = job.jid, encode_job(job)
        else:
            jid = job.get("jid") or ""
            if not jid:
                jid = new_jid()
                job = {"jid": jid, **job}
            payload = encode(job)
        await self._call(b"PUSH " + payload + CRLF)
        return str(jid)

    async def push_bulk(self, jobs: Sequence[Mapping[str, Any] | Job]) -> dict[str, str]:
        """``PUSHB`` several jobs in one round trip; returns ``{jid: error}`` for failures only."""
        reply = await self._call(b"PUSHB " + encode(jobs) + CRLF)
        return decode_errors(reply.data) if reply.kind is ReplyKind.BULK else {}

    async def push_bulk_chunks(
        self,
        chunks: Sequence[Sequence[Mapping[str, Any] | Job] | bytes],
        into: list[dict[str, str] | CommandError],
        in_flight: int = 2,
    ) -> None:
        """``PUSHB`` each chunk, with up to ``in_flight`` commands sent ahead of their replies.
        A chunk is a sequence of jobs, or ``bytes``: their JSON array, encoded already.

        The server answers one connection's commands in order, so the chunks are enqueued in
        order, while it works on one chunk the next is already on its way. Each chunk's outcome
        (``{jid: error}``, or the ``CommandError`` that refused the whole chunk) is appended to
        ``into`` as its reply arrives: if the connection breaks, ``into`` tells the caller which
        chunks were answered, so it can resume with the rest.
        """
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self._claim()
        try:
            sent = answered = 0
            while answered < len(chunks):
                while sent < len(chunks) and sent - answered < in_flight:
                    chunk = chunks[sent]
                    body = chunk if isinstance(chunk, bytes) else encode(chunk)
                    self._writer.write(b"PUSHB " + body + CRLF)
                    sent += 1
                reply = await self._receive(_REPLY)
                answered += 1
                if reply.kind is ReplyKind.ERROR:
                    into.append(CommandError.from_reply(reply.text))
                else:
                    into.append(decode_errors(reply.data) if reply.kind is ReplyKind.BULK else {})
        finally:
            self._busy = False

    # -- consumer commands --------------------------------------------------------------------

    async def fetch(self, *queues: str) -> dict[str, Any] | None:
        """``FETCH`` from the queues in priority order; ``None`` when the server had no job."""
        reply = await self._call(b"FETCH " + queue_names(queues) + CRLF)
        return decode_object(reply.data) if reply.kind is ReplyKind.BULK else None

    async def fetch_many(self, count: int, *queues: str) -> list[dict[str, Any]]:
        """``FETCHB`` (conveyor extension): up to ``count`` jobs in one round trip."""
        reply = await self._call(fetchb_line(count, queues))
        return decode_objects(reply.data) if reply.kind is ReplyKind.BULK else []

    async def ack(
        self, jid: str, duration: float | None = None, *, result: bytes | None = None
    ) -> None:
        """``ACK``: the job succeeded. Unknown jids are fine (Faktory semantics).

        Conveyor extension keys, which Faktory ignores (docs/protocol.md): ``duration``, how
        long the job ran in seconds, for the server's metrics; ``result``, the handler's value
        as JSON, for a job that asked for it (sent as a JSON string)."""
        fields = {"jid": jid}
        if duration is not None:
            fields["duration"] = run_seconds(duration)
        if result is not None:
            fields["result"] = result.decode()
        await self._call(b"ACK " + encode(fields) + CRLF)

    async def ack_many(
        self,
        jids: Sequence[str],
        durations: Sequence[float | None] | None = None,
        results: Sequence[bytes | None] | None = None,
    ) -> None:
        """``ACKB`` (conveyor extension): acknowledge several jobs in one round trip.
        ``durations``: how long each job ran, in seconds (``None`` for one that was not
        timed); ``results``: each job's result as JSON (``None``: none); both in the order of
        ``jids``."""
        if durations is None and results is None:
            await self._call(b"ACKB " + encode(jids) + CRLF)
            return
        runs = durations if durations is not None else [None] * len(jids)
        values = results if results is not None else [None] * len(jids)
        items: list[str | dict[str, Any]] = []
        for jid, run, value in zip(jids, runs, values, strict=True):
            if run is None and value is None:
                items.append(jid)
                continue
            # ACKB is ours: its durations are numbers (ACK's are strings, for Faktory)
            item: dict[str, Any] = {"jid": jid}
            if run is not None:
                item["duration"] = run
            if value is not None:
                item["result"] = value.decode()
            items.append(item)
        await self._call(b"ACKB " + encode(items) + CRLF)

    async def fail(
        self,
        jid: str,
        errtype: str,
        message: str,
        backtrace: Sequence[str] = (),
        duration: float | None = None,
        *,
        skip_retry: bool = False,
        retry_after: float | None = None,
        backoff: float | None = None,
    ) -> None:
        """``FAIL``: the job failed; the server retries it or moves it to the dead set.

        Conveyor extensions (a Faktory server ignores them): ``duration`` as for ``ack``;
        ``skip_retry`` sends it to the dead set now; ``retry_after`` retries it in that many
        seconds without counting a retry; ``backoff`` is the delay of this retry, if it is
        retried."""
        payload: dict[str, Any] = {
            "jid": jid, "errtype": errtype, "message": message, "backtrace": backtrace
        }  # fmt: skip
        if duration is not None:
            payload["duration"] = run_seconds(duration)
        if skip_retry:
            payload["skip_retry"] = True
        if retry_after is not None:
            payload["retry_after"] = retry_after
        if backoff is not None:
            payload["backoff"] = backoff
        await self._call(b"FAIL " + encode(payload) + CRLF)

    async def result(self, jid: str, wait: float = 0.0) -> dict[str, Any] | None:
        """``RESULT`` (conveyor extension): how the job ended, as the server stores it
        (``{"state": "succeeded", "result": ...}`` or ``{"state": "failed", "errtype": ...}``),
        waiting up to ``wait`` seconds for it; None when it is not known by then."""
        line = b"RESULT " + encode({"jid": jid, "wait": wait}) + CRLF
        reply = await self._call(line, None if self.timeout is None else self.timeout + wait)
        return decode_object(reply.data) if reply.kind is ReplyKind.BULK else None

    async def beat(self, rss_kb: int = 0, state: str | None = None) -> str:
        """``BEAT`` for this client's ``wid``; returns the state the server wants:
        ``"running"``, ``"quiet"`` or ``"terminate"``. ``state`` reports our own state."""
        if not self.wid:
            raise ValueError("beat() needs a worker id: connect with wid=...")
        payload: dict[str, Any] = {"wid": self.wid, "rss_kb": rss_kb}
        if state is not None:
            payload["current_state"] = state
        reply = await self._call(b"BEAT " + encode(payload) + CRLF)
        if reply.kind is ReplyKind.OK:
            return "running"
        # Faktory answers a state change with a bulk string; older mocks use a simple one.
        body = reply.data if reply.kind is ReplyKind.BULK else reply.text.encode()
        return str(decode_object(body)["state"])

    # -- administration -----------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """``INFO``: server, queue and set statistics (Faktory's INFO JSON)."""
        reply = await self._call(b"INFO\r\n")
        return decode_object(reply.data)

    async def flush(self) -> None:
        """``FLUSH``: delete every job, queue, set and counter. For tests."""
        await self._call(b"FLUSH\r\n")

    async def mutate(self, cmd: str, target: str, filter: Mapping[str, Any] | None = None) -> None:
        """``MUTATE``: ``cmd`` clear|kill|discard|requeue on ``target`` scheduled|retries|dead.

        ``filter`` may hold ``jids``, ``jobtype`` and ``regexp`` (a glob); leave it out to
        match everything.
        """
        operation: dict[str, Any] = {"cmd": cmd, "target": target}
        if filter is not None:
            operation["filter"] = filter
        # Faktory splits the MUTATE line on spaces; compact JSON only has spaces inside
        # strings, and "\u0020" is the same string to every JSON parser.
        payload = encode(operation).replace(b" ", b"\\u0020")
        await self._call(b"MUTATE " + payload + CRLF)

    async def queue_pause(self, *names: str) -> None:
        """``QUEUE PAUSE``: stop handing out jobs from these queues (``"*"`` = all)."""
        await self._call(b"QUEUE PAUSE " + queue_names(names) + CRLF)

    async def queue_resume(self, *names: str) -> None:
        """``QUEUE RESUME``: undo ``queue_pause`` (``"*"`` = all)."""
        await self._call(b"QUEUE RESUME " + queue_names(names) + CRLF)

    async def queue_remove(self, *names: str) -> None:
        """``QUEUE REMOVE``: delete these queues and ALL their jobs (``"*"`` = all)."""
        await self._call(b"QUEUE REMOVE " + queue_names(names) + CRLF)

    async def queue_latency(self, *names: str) -> dict[str, float]:
        """``QUEUE LATENCY``: seconds since the oldest job of each queue was enqueued."""
        reply = await self._call(b"QUEUE LATENCY " + queue_names(names) + CRLF)
        return decode_latency(reply.data)

    async def admin(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """``ADMIN <op> {args}`` (conveyor extension): inspect and act on jobs, queues and
        workers; returns the decoded JSON reply. ``admin("ops")`` lists the operations.
        A Faktory server answers ``CommandError("unknown command ADMIN")``."""
        if not op or any(c.isspace() for c in op):
            raise ValueError(f"invalid ADMIN operation {op!r}")
        line = b"ADMIN " + op.encode()
        if args:
            line += b" " + encode(args)
        reply = await self._call(line + CRLF)
        return msgspec.json.decode(reply.data) if reply.kind is ReplyKind.BULK else None

    async def cron(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Manage the server's periodic jobs: ``ADMIN cron.<op>`` (a conveyor extension,
        docs/protocol.md). ``op``: ``list``, ``show`` (or ``get``), ``add``, ``pause``,
        ``resume``, ``delete`` or ``run``; ``args`` the entry (add) or ``{"id": ...}``.
        Returns the reply's JSON; a refused change raises ``CommandError``. A conveyor server
        of the first release, which has only the ``CRON`` verb, is sent that instead."""
        name = CRON_OPS.get(op.lower(), op.lower())
        try:
            return await self.admin(f"cron.{name}", args)
        except CommandError as exc:
            if name not in CRON_VERB or not exc.message.startswith("unknown ADMIN operation"):
                raise
        line = b"CRON " + ("get" if name == "show" else name).upper().encode()
        if args is not None:
            line += b" " + encode(args)
        reply = await self._call(line + CRLF)
        return msgspec.json.decode(reply.data)

    async def cancel(self, jids: Sequence[str]) -> list[dict[str, Any]]:
        """Cancel jobs wherever they are (``ADMIN job.cancel``, a conveyor extension,
        docs/cancellation.md): one report per distinct jid, in order, each with ``jid``,
        ``outcome`` (``cancelled``, ``already``, ``finished``, ``unknown``, ``moving`` or
        ``refused``),
        ``was`` (where the job was) and ``message``."""
        reply = await self.admin("job.cancel", {"jids": list(jids)})
        return list(reply["jobs"])

    async def cancels(self, wait: float = 2.0) -> list[str]:
        """``CANCELS`` (conveyor extension): wait up to ``wait`` seconds for jobs of this
        worker (``wid``) to be cancelled while they run; returns their jids (or ``[]``)."""
        reply = await self._call(b"CANCELS " + encode({"wait": wait}) + CRLF)
        return decode_jids(reply.data)

    # -- Faktory Enterprise: batches and tracking ----------------------------------------------

    async def batch_new(self, spec: Mapping[str, Any]) -> str:
        """``BATCH NEW {spec}``: ``description``, ``parent_bid``, ``success`` and/or
        ``complete`` (callback jobs); returns the new bid."""
        reply = await self._call(b"BATCH NEW " + encode(spec) + CRLF)
        return reply.data.decode()

    async def batch_open(self, bid: str) -> str:
        """``BATCH OPEN <bid>``: reopen a batch to add jobs or children; returns the bid."""
        reply = await self._call(b"BATCH OPEN " + word(bid) + CRLF)
        return reply.data.decode()

    async def batch_commit(self, bid: str) -> None:
        """``BATCH COMMIT <bid>``: the batch's callbacks may fire from now on."""
        await self._call(b"BATCH COMMIT " + word(bid) + CRLF)

    async def batch_status(self, bid: str) -> dict[str, Any]:
        """``BATCH STATUS <bid>``: counters and callback states (``CommandError`` when the
        batch does not exist, or has expired)."""
        reply = await self._call(b"BATCH STATUS " + word(bid) + CRLF)
        return decode_object(reply.data)

    async def batch_child(self, bid: str, child: str) -> None:
        """``BATCH CHILD <bid> <child>`` (fossas/faktory-plugins, conveyor): make ``child``
        a child batch of ``bid``."""
        await self._call(b"BATCH CHILD " + word(bid) + b" " + word(child) + CRLF)

    async def track_get(self, jid: str) -> dict[str, Any]:
        """``TRACK GET <jid>``: ``{"jid","state","updated_at","percent"?,"desc"?}``."""
        reply = await self._call(b"TRACK GET " + word(jid) + CRLF)
        return decode_object(reply.data)

    async def track_set(
        self,
        jid: str,
        *,
        percent: int | None = None,
        desc: str | None = None,
        reserve_until: str | None = None,
    ) -> None:
        """``TRACK SET``: the job's progress; ``reserve_until`` (RFC 3339, at most 24 h ahead)
        extends its reservation."""
        fields: dict[str, Any] = {"jid": jid}
        if percent is not None:
            fields["percent"] = percent
        if desc is not None:
            fields["desc"] = desc
        if reserve_until is not None:
            fields["reserve_until"] = reserve_until
        await self._call(b"TRACK SET " + encode(fields) + CRLF)


async def fetch_jobs(client: Client, count: int, *queues: str) -> list[Job]:
    """``Client.fetch_many``, decoded in one pass straight into ``Job`` structs (the worker's).

    A function rather than a method so that ``SyncClient`` keeps mirroring ``Client`` exactly.
    """
    reply = await client._call(fetchb_line(count, queues))
    return decode_jobs(reply.data) if reply.kind is ReplyKind.BULK else []


def new_jid() -> str:
    """A fresh job id: 32 lowercase hex characters, as the other Python clients make."""
    return uuid.uuid4().hex


def _tls_context(tls: ssl.SSLContext | bool | None, from_url: bool) -> ssl.SSLContext | None:
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls or (tls is None and from_url):
        return ssl.create_default_context()
    return None
