"""The FWP command table: each handler parses its argument, calls the manager, encodes the reply.

No rules and no storage here (STYLE.md §2). Replies and error texts follow Faktory 1.10
byte for byte (faktory.md §1.3), except where Faktory answers ``internal error`` to a missing
argument: we say what is missing. ``FETCHB``, ``ACKB``, ``RESULT``, ``ADMIN``, ``CRON`` and
``CANCELS`` are conveyor extensions, as are the extra keys of ACK (``result``) and FAIL
(``skip_retry``, ``retry_after``, ``backoff``): docs/protocol.md.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import msgspec

from conveyor.errors import CommandError
from conveyor.manager import ClientInfo, Manager, ServerStats, WorkerState
from conveyor.manager.ahead import Rhythm
from conveyor.manager.features.results import MAX_WAIT_SECONDS
from conveyor.manager.later import Later
from conveyor.manager.retry import RetryControl
from conveyor.metrics.jobs import parse_duration
from conveyor.protocol import NULL_BULK, OK, bulk
from conveyor.server.admin import run_admin
from conveyor.store.base import JobFilter

__all__ = [
    "COMMANDS",
    "MAX_FETCHB_COUNT",
    "NOW",
    "SENT",
    "Handler",
    "NowHandler",
    "Session",
    "Soon",
]

MAX_FETCHB_COUNT = 1000
QUEUE_SUBCOMMANDS = ("PAUSE", "RESUME", "REMOVE", "LATENCY")


class Session(Protocol):
    """What a handler may use of its connection."""

    @property
    def manager(self) -> Manager: ...

    @property
    def client(self) -> ClientInfo: ...

    def stats(self) -> ServerStats: ...

    @property
    def rhythm(self) -> Rhythm:
        """Its FETCH and ACK pattern (manager/ahead.py)."""

    def send_now(self, reply: bytes) -> bool:
        """Write ``reply`` at once, from outside the handler: a waiting FETCH answered by the
        PUSH that handed it a job (the handler then returns ``SENT``). False, with nothing
        written, when the connection is closing."""


# A handler returns the reply bytes, or None to close the connection without a reply (END).
Handler = Callable[[Session, bytes], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class Soon:
    """The reply to a command whose store answers later (``manager/later.py``): ``render``
    makes it from the value; None from ``render`` (a FETCH that found nothing) sends the
    command the long way after all."""

    later: Later[Any]
    render: Callable[[Any], bytes | None]


# A command answered without a task (``NOW``): the reply; or the wait for a write's
# durability, after which the reply is +OK; or a ``Soon``; or None when the command has to
# take the long way (its ``Handler``), with nothing done.
NowHandler = Callable[[Session, bytes], bytes | Awaitable[None] | Soon | None]

SENT = b""
"""What a handler returns when its reply has already gone out through ``Session.send_now``."""


class FailArgs(msgspec.Struct):
    jid: str = ""
    errtype: str | None = None
    message: str | None = None
    backtrace: list[str] | None = None
    # extensions (docs/protocol.md), which Faktory ignores: the run time in seconds, and
    # retry control
    duration: str | float | None = None
    skip_retry: bool | None = None
    retry_after: float | str | None = None
    backoff: float | str | None = None


class AckItem(msgspec.Struct):
    """An ACKB item that is not a bare jid: what ACK takes (``duration`` may be a number;
    ``result`` is the job's result as a JSON text)."""

    jid: str
    duration: str | float | None = None
    result: str | None = None


class ResultArgs(msgspec.Struct, forbid_unknown_fields=True):
    jid: str
    wait: float = 0.0


class BeatArgs(msgspec.Struct):
    wid: str = ""
    current_state: str | None = None
    rss_kb: int | None = None


class FilterArgs(msgspec.Struct):
    jids: list[str] | None = None
    regexp: str | None = None
    jobtype: str | None = None


class CancelsArgs(msgspec.Struct, forbid_unknown_fields=True):
    wait: float = 2.0


class MutateArgs(msgspec.Struct):
    cmd: str = ""
    target: str = ""
    filter: FilterArgs | None = None


_ack_decoder = msgspec.json.Decoder(dict[str, str])
_fail_decoder = msgspec.json.Decoder(FailArgs)
_result_decoder = msgspec.json.Decoder(ResultArgs)
_beat_decoder = msgspec.json.Decoder(BeatArgs)
_mutate_decoder = msgspec.json.Decoder(MutateArgs)
_cancels_decoder = msgspec.json.Decoder(CancelsArgs)
_ackb_decoder = msgspec.json.Decoder(list[str | AckItem])
_encoder = msgspec.json.Encoder(order="sorted")

# msgspec has no nesting limit of its own: JSON nested ~1000 levels deep (even in a key it
# would skip) ends its recursion with a RecursionError, which is bad input like any other.
_BAD_JSON = (msgspec.DecodeError, RecursionError)


def _why(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _text(argument: bytes) -> str:
    try:
        return argument.decode()
    except UnicodeDecodeError:
        raise CommandError("command is not valid UTF-8") from None


def _names(argument: bytes) -> list[str]:
    return _text(argument).split()


async def end(session: Session, argument: bytes) -> bytes | None:
    return None


async def push(session: Session, argument: bytes) -> bytes | None:
    await session.manager.push(argument)
    return OK


async def push_bulk(session: Session, argument: bytes) -> bytes | None:
    errors = await session.manager.push_bulk(argument)
    return bulk(_encoder.encode(errors)) if errors else bulk(b"{}")


async def fetch(session: Session, argument: bytes) -> bytes | None:
    session.rhythm.broken()
    queues = _names(argument)
    if not queues:
        raise CommandError("must call fetch with at least one queue")
    return await _fetch(session, queues, 1, lambda jobs: bulk(jobs[0]))


async def fetch_many(session: Session, argument: bytes) -> bytes | None:
    """Extension: ``FETCHB <count> <q1> [q2 ...]`` -> a JSON array of up to count jobs."""
    session.rhythm.broken()
    words = _names(argument)
    if len(words) < 2:
        raise CommandError("FETCHB needs a count and at least one queue: FETCHB <count> <q1> ...")
    # ASCII digits only: int() would also take Arabic-Indic digits, "+5", "1_0" and " 5".
    count = int(words[0]) if words[0].isascii() and words[0].isdigit() else 0
    if not 1 <= count <= MAX_FETCHB_COUNT:
        raise CommandError(f"FETCHB count must be an integer from 1 to {MAX_FETCHB_COUNT}")
    return await _fetch(session, words[1:], count, lambda jobs: bulk(b"[" + b",".join(jobs) + b"]"))


async def _fetch(
    session: Session, queues: list[str], count: int, reply: Callable[[list[bytes]], bytes]
) -> bytes:
    """FETCH and FETCHB: the jobs found, or those a PUSH hands off while this one waits
    (answered there and then: docs/design/hand-off.md)."""
    handed = False

    def deliver(jobs: list[bytes]) -> bool:
        nonlocal handed
        handed = session.send_now(reply(jobs))
        return handed

    jobs = await session.manager.fetch_many(queues, session.client.wid, count, deliver=deliver)
    if handed:
        return SENT
    return reply(jobs) if jobs else NULL_BULK


def _ack_args(argument: bytes) -> tuple[str, float | None, bytes | None]:
    """The jid of an ACK, the run time its worker reported and the job's result (extensions:
    ``result`` carries the handler's value as a JSON text in a string, since Faktory's ACK
    takes string values only, and ignores extra keys), if any."""
    if not argument:
        raise CommandError('invalid ACK: missing argument, expected ACK {"jid":"..."}')
    try:
        fields = _ack_decoder.decode(argument)
    except _BAD_JSON:
        fields = {}
    jid = fields.get("jid")
    if jid is None:
        raise CommandError(f"invalid ACK {_text(argument)}")
    result = fields.get("result")
    return jid, parse_duration(fields.get("duration")), None if result is None else result.encode()


async def ack(session: Session, argument: bytes) -> bytes | None:
    """``ACK {"jid":"..."}``, and the extension keys ``duration`` and ``result``."""
    await session.manager.ack(*_ack_args(argument))
    return OK


def _ok(_value: object) -> bytes:
    return OK


def ack_now(session: Session, argument: bytes) -> bytes | Soon | None:
    manager = session.manager
    done = manager.ack_now(*_ack_args(argument))
    if isinstance(done, Later):
        # Redis: the next FETCH's reserve goes right behind this ACK (manager/ahead.py)
        session.rhythm.acked(manager, session.client.wid)
        return Soon(done, _ok)
    return None if done is None else OK


def push_now(session: Session, argument: bytes) -> Awaitable[None] | Soon | None:
    rest = session.manager.push_now(argument)
    return Soon(rest, _ok) if isinstance(rest, Later) else rest


def fetch_now(session: Session, argument: bytes) -> bytes | Soon | None:
    """A FETCH that finds a job at once; one that would wait takes the long way."""
    queues = _names(argument)
    if not queues:
        raise CommandError("must call fetch with at least one queue")
    rhythm = session.rhythm
    wid = session.client.wid
    jobs: list[bytes] | Later[list[bytes]] | None = rhythm.fetch(queues, wid)
    if jobs is None:
        jobs = session.manager.fetch_now(queues, wid, 1)
    if isinstance(jobs, Later):
        return Soon(jobs, partial(_one_job, rhythm))
    return _one_job(rhythm, jobs)


def _one_job(rhythm: Rhythm, jobs: list[bytes] | None) -> bytes | None:
    """A FETCH's reply; None when it found nothing (it waits, the long way)."""
    rhythm.found(jobs)
    return bulk(jobs[0]) if jobs else None


async def ack_many(session: Session, argument: bytes) -> bytes | None:
    """Extension: ``ACKB ["jid1",{"jid":"jid2","duration":"0.25","result":"[1,2]"}]`` ->
    ``+OK``: each item a jid, or what ACK takes."""
    try:
        items = _ackb_decoder.decode(argument)
    except _BAD_JSON as exc:
        raise CommandError(f"invalid ACKB: expected a JSON array of jids ({_why(exc)})") from None
    jids: list[str] = []
    durations: dict[str, float] = {}
    results: dict[str, bytes] = {}
    for item in items:
        if isinstance(item, str):
            jids.append(item)
            continue
        jids.append(item.jid)
        seconds = parse_duration(item.duration)
        if seconds is not None:
            durations[item.jid] = seconds
        if item.result is not None:
            results[item.jid] = item.result.encode()
    await session.manager.ack_many(jids, durations, results or None)
    return OK


async def fail(session: Session, argument: bytes) -> bytes | None:
    if not argument:
        raise CommandError('invalid FAIL: missing argument, expected FAIL {"jid":"...",...}')
    try:
        args = _fail_decoder.decode(argument)
    except _BAD_JSON:
        raise CommandError(f"invalid FAIL {_text(argument)}") from None
    if not args.jid:
        raise CommandError("missing JID")
    await session.manager.fail(
        args.jid,
        args.errtype or "",
        args.message or "",
        args.backtrace or (),
        parse_duration(args.duration),
        _control(args),
    )
    return OK


def _control(args: FailArgs) -> RetryControl:
    """The retry control a FAIL's extension keys ask for."""
    try:
        return RetryControl(
            skip=bool(args.skip_retry),
            retry_after=_seconds("retry_after", args.retry_after),
            backoff=_seconds("backoff", args.backoff),
        )
    except ValueError as exc:
        raise CommandError(f"invalid FAIL: {exc}") from None


def _seconds(name: str, value: float | str | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    try:
        return float(value)
    except ValueError:
        raise CommandError(f"invalid FAIL: {name} must be a number of seconds") from None


async def result(session: Session, argument: bytes) -> bytes | None:
    """Extension: ``RESULT {"jid":"...","wait":10}`` -> the job's outcome as JSON, waiting up
    to ``wait`` seconds for it (woken by the ACK or FAIL that stores it), or ``$-1``."""
    if not argument:
        raise CommandError('RESULT needs an argument: RESULT {"jid":"...","wait":seconds}')
    try:
        args = _result_decoder.decode(argument)
    except _BAD_JSON as exc:  # msgspec.ValidationError is a DecodeError
        raise CommandError(f"invalid RESULT: {_why(exc)}") from None
    if not args.jid:
        raise CommandError("invalid RESULT: jid must not be empty")
    if not (0 <= args.wait <= MAX_WAIT_SECONDS):
        raise CommandError(f"invalid RESULT: wait must be from 0 to {MAX_WAIT_SECONDS:g} seconds")
    feature = session.manager.results
    if feature is None:
        raise CommandError("results are not available on this server")
    sent = False

    def deliver(body: bytes) -> bool:  # from the ACK's step (a waiting RESULT, as a FETCH)
        nonlocal sent
        sent = session.send_now(bulk(body))
        return sent

    outcome = await feature.wait(args.jid, args.wait, deliver)
    if sent:
        return SENT
    return NULL_BULK if outcome is None else bulk(msgspec.json.encode(outcome))


async def beat(session: Session, argument: bytes) -> bytes | None:
    if not argument:
        raise CommandError('invalid BEAT: missing argument, expected BEAT {"wid":"..."}')
    try:
        args = _beat_decoder.decode(argument)
    except _BAD_JSON:
        raise CommandError(f"invalid BEAT {_text(argument)}") from None
    state = await session.manager.beat(args.wid, args.rss_kb or 0, args.current_state)
    if state == WorkerState.RUNNING:
        return OK
    return bulk(b'{"state":"' + state.encode() + b'"}')


async def info(session: Session, argument: bytes) -> bytes | None:
    return bulk(msgspec.json.encode(await session.manager.info(session.stats())))


async def flush(session: Session, argument: bytes) -> bytes | None:
    await session.manager.flush()
    return OK


async def mutate(session: Session, argument: bytes) -> bytes | None:
    # Faktory splits on every space and so rejects JSON containing one; we split at the first.
    if not argument.strip():
        raise CommandError("invalid format")
    try:
        args = _mutate_decoder.decode(argument)
    except _BAD_JSON as exc:
        raise CommandError(f"invalid JSON: {_why(exc)}") from None
    flt = None
    if args.filter is not None:
        flt = JobFilter(
            jids=tuple(args.filter.jids or ()),
            jobtype=args.filter.jobtype or None,
            pattern=args.filter.regexp or None,
        )
    await session.manager.mutate(args.cmd, args.target, flt)
    return OK


async def queue(session: Session, argument: bytes) -> bytes | None:
    words = _names(argument)
    if not words:
        raise CommandError("QUEUE needs a subcommand: PAUSE, RESUME, REMOVE or LATENCY")
    subcommand, names = words[0].upper(), words[1:]
    if subcommand not in QUEUE_SUBCOMMANDS:
        raise CommandError(f"no such QUEUE subcommand: {subcommand}")
    if not names:
        hint = "" if subcommand == "LATENCY" else " or *"
        raise CommandError(f"QUEUE {subcommand} needs at least one queue name{hint}")
    manager = session.manager
    if subcommand == "LATENCY":
        if "*" in names:
            raise CommandError("QUEUE LATENCY does not support wildcards")
        return bulk(_latency_json(await manager.queue_latency(names)))
    if names[0] == "*":
        names = ["*"]
    if subcommand == "PAUSE":
        await manager.pause_queues(names)
    elif subcommand == "RESUME":
        await manager.resume_queues(names)
    else:
        await manager.remove_queues(names)
    return OK


def _latency_json(latencies: dict[str, float]) -> bytes:
    """Like Go's json.Marshal of map[string]float64: sorted keys, ``0`` rather than ``0.0``."""
    items = (
        _encoder.encode(name) + b":" + _go_float(value).encode()
        for name, value in sorted(latencies.items())
    )
    return b"{" + b",".join(items) + b"}"


def _go_float(value: float) -> str:
    if not math.isfinite(value):
        return "0"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


async def admin(session: Session, argument: bytes) -> bytes | None:
    """Extension: ``ADMIN <op> [{json}]`` -> a JSON document (conveyor.server.admin)."""
    return bulk(await run_admin(session.manager, argument))


async def cron(session: Session, argument: bytes) -> bytes | None:
    """``CRON <subcommand> [<json>]``: the first release's cron verb, an alias of the
    ``ADMIN cron.*`` operations for one more release (docs/protocol.md)."""
    from conveyor.manager.features.cron import CronFeature

    subcommand, _, payload = argument.strip().partition(b" ")
    if not subcommand:
        raise CommandError("CRON needs a subcommand: LIST, GET, ADD, PAUSE, RESUME, DELETE, RUN")
    feature = session.manager.feature(CronFeature)
    return bulk(msgspec.json.encode(await feature.command(_text(subcommand).upper(), payload)))


async def cancels(session: Session, argument: bytes) -> bytes | None:
    """Extension: ``CANCELS [{"wait": seconds}]`` -> a JSON array of the jids of this worker's
    running jobs that were cancelled (docs/cancellation.md); waits up to ``wait`` for one."""
    from conveyor.manager.features.cancellation import CancelFeature

    try:
        args = _cancels_decoder.decode(argument) if argument.strip() else CancelsArgs()
    except (*_BAD_JSON, msgspec.ValidationError) as exc:
        why = exc if isinstance(exc, msgspec.ValidationError) else _why(exc)
        raise CommandError(f'invalid CANCELS: expected {{"wait": <seconds>}} ({why})') from None
    feature = session.manager.feature(CancelFeature)
    return bulk(_encoder.encode(await feature.watch(session.client, args.wait)))


BATCH_SUBCOMMANDS = ("NEW", "OPEN", "COMMIT", "STATUS", "CHILD")


async def batch(session: Session, argument: bytes) -> bytes | None:
    """Faktory Enterprise's ``BATCH NEW|OPEN|COMMIT|STATUS`` and fossas' ``CHILD``."""
    from conveyor.manager.features.batches import BatchFeature

    subcommand, _, rest = argument.strip().partition(b" ")
    verb = _text(subcommand).upper()
    if verb not in BATCH_SUBCOMMANDS:
        if not verb:
            raise CommandError("BATCH needs a subcommand: NEW, OPEN, COMMIT, STATUS or CHILD")
        raise CommandError(f"no such BATCH subcommand: {verb}")
    feature = session.manager.feature(BatchFeature)
    if verb == "NEW":
        return bulk((await feature.new_batch(rest.strip())).encode())
    words = _names(rest)
    wanted = 2 if verb == "CHILD" else 1
    if len(words) != wanted:
        usage = "<bid> <child_bid>" if verb == "CHILD" else "<bid>"
        raise CommandError(f"BATCH {verb} takes {usage}")
    if verb == "OPEN":
        return bulk((await feature.reopen(words[0])).encode())
    if verb == "COMMIT":
        await feature.commit(words[0])
        return OK
    if verb == "CHILD":
        await feature.adopt(words[0], words[1])
        return OK
    return bulk(msgspec.json.encode(await feature.status(words[0])))


async def track(session: Session, argument: bytes) -> bytes | None:
    """Faktory Enterprise's ``TRACK GET <jid>`` and ``TRACK SET {json}``."""
    from conveyor.manager.features.batches import BatchFeature

    subcommand, _, rest = argument.strip().partition(b" ")
    verb = _text(subcommand).upper()
    feature = session.manager.feature(BatchFeature)
    if verb == "GET":
        words = _names(rest)
        if len(words) != 1:
            raise CommandError("TRACK GET takes <jid>")
        return bulk(msgspec.json.encode(await feature.track_get(words[0])))
    if verb == "SET":
        await feature.track_set(rest.strip())
        return OK
    raise CommandError("TRACK needs a subcommand: GET <jid> or SET {json}")


COMMANDS: dict[str, Handler] = {
    "END": end,
    "PUSH": push,
    "PUSHB": push_bulk,
    "FETCH": fetch,
    "ACK": ack,
    "FAIL": fail,
    "BEAT": beat,
    "INFO": info,
    "FLUSH": flush,
    "MUTATE": mutate,
    "QUEUE": queue,
    "BATCH": batch,
    "TRACK": track,
    # conveyor extensions (docs/protocol.md)
    "FETCHB": fetch_many,
    "ACKB": ack_many,
    "RESULT": result,
    "ADMIN": admin,
    "CRON": cron,
    "CANCELS": cancels,
}

NOW: dict[bytes, NowHandler] = {b"PUSH": push_now, b"FETCH": fetch_now, b"ACK": ack_now}
"""The commands that may be answered in the step that read them (docs/design/hand-off.md)."""
