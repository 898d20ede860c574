"""A long fuzz run against a real ``conveyor server`` process (not part of the test suite).

    python -m bench.fuzz                       # 100,000 inputs, memory store
    python -m bench.fuzz --count 1000000 --seed 7 --connections 8 --storage sqlite
    python -m bench.fuzz --storage redis://127.0.0.1:6379/15 --password s3cret

Starts ``conveyor server`` on a free loopback port and throws generated input at it from
several connections at once: random bytes, every verb with random or mutated arguments, valid
jobs (whose replies are known), JSON nested far too deep, non-ASCII digits, backtracking
globs, lines over the line limit, random first lines (handshakes) and connections dropped in
the middle of a line. After each burst of lines it sends a sync line and checks that every line
got exactly one well-formed reply, in order, within ``--timeout``. It fails on:

* a crash: the server process exited;
* a hang: a reply (or the sync) did not come in time;
* a missing or extra reply, or a malformed one;
* ``-ERR internal error``, or a traceback in the server's log;
* a valid PUSH that was not answered ``+OK``.

The seed makes a run reproducible; failures print the lines that caused them. Exit code 0
when nothing failed. The tests run it with a small ``--count`` (tests/test_bench_smoke.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench._harness import free_port, rss_kb, wait_for_port

VERBS = ["PUSH", "PUSHB", "FETCH", "FETCHB", "ACK", "ACKB", "FAIL", "BEAT", "INFO", "FLUSH",
         "MUTATE", "QUEUE", "BATCH", "TRACK", "HELLO", "push", "END", "ADMIN", "CRON"]  # fmt: skip
ADMIN_OPS = ["ops", "history", "queue.list", "queue.inspect", "queue.clear", "job.list",
             "job.show", "job.retry", "job.kill", "nope"]  # fmt: skip
CRON_SUBCOMMANDS = ["LIST", "GET", "ADD", "PAUSE", "RESUME", "DELETE", "RUN", "list", "NOPE"]
SYNC = b"SYNC-fuzz"
SYNC_REPLY = b"-ERR unknown command SYNC-fuzz\r\n"
MAX_LINE_BYTES = 65_536  # the server runs with this line limit, so long lines are cheap
INTERNAL = b"-ERR internal error\r\n"
TIMES = ("2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z")  # due at once, and scheduled
JOB_KEYS = {"jid", "jobtype", "args", "queue", "custom", "at"}


# ------------------------------------------------------------------ generators


class Inputs:
    """Random inputs of every kind, from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, size: int = 12) -> str:
        alphabet = "abcAZ09 _-.:*?[]^\\\"'{}\u00e9\u0663\U0001f600\x00\t"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def value(self, depth: int = 0) -> object:
        kind = self.rng.randint(0, 9 if depth < 4 else 5)
        choices: list[object] = [None, True, self.rng.randint(-(2**70), 2**70),
                                 self.rng.uniform(-1e300, 1e300), self.text(), "",
                                 2**64 - 1, self.text(40)]  # fmt: skip
        if kind < len(choices):
            return choices[kind]
        if kind == 8:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        return {self.text(6): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}

    def jid(self) -> str:
        return f"fz-{self.rng.getrandbits(64):016x}"

    def job(self) -> dict[str, object]:
        job: dict[str, object] = {"jid": self.jid(), "jobtype": "Fuzz", "args": [self.value()]}
        if self.rng.random() < 0.5:
            job["queue"] = self.rng.choice(["fz", "fz.other", "fz-2"])
        if self.rng.random() < 0.2:
            job["custom"] = {"k": self.value()}
        if self.rng.random() < 0.1:
            job["at"] = self.rng.choice(TIMES)
        return job

    def broken_job(self) -> dict[str, object]:
        job = self.job()
        key = self.rng.choice(["jid", "jobtype", "args", "queue", "at", "retry", "reserve_for",
                               "custom", "failure", "backtrace"])  # fmt: skip
        if self.rng.random() < 0.3:
            job.pop(key, None)
        else:
            arabic_2024 = "\u0662\u0660\u0662\u0664-01-01T00:00:00Z"
            junk = [self.value(), arabic_2024, -1, 86_401, "", [], {"retry_count": "x"}, "a b!"]
            job[key] = self.rng.choice(junk)
        return job

    def deep(self) -> bytes:
        levels = self.rng.choice([63, 64, 65, 200, 985, 1000, 3000])
        opener, closer = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return opener * levels + b"1" * (opener == b"[") + closer * levels

    def argument(self, verb: str) -> bytes | None:
        roll = self.rng.random()
        if roll < 0.08:
            return None
        if roll < 0.2:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, 60)))
        if roll < 0.3:
            return _json(self.value())
        if roll < 0.38:
            deep = self.deep()
            return (
                b'{"jid":"fz-deep-1","jobtype":"D","args":[' + deep + b"]}"
                if verb == "PUSH"
                else deep
            )
        if roll < 0.42:
            return self.text(30).encode("utf-8", "replace")
        return self.shaped(verb)

    def shaped(self, verb: str) -> bytes:
        """An argument of the verb's own shape, often a little wrong."""
        rng = self.rng
        if verb == "PUSH":
            return _json(self.job() if rng.random() < 0.5 else self.broken_job())
        if verb == "PUSHB":
            elements = [rng.choice([self.job(), self.broken_job(), self.value()]) for _ in range(4)]
            return _json(elements)
        if verb in ("FETCH", "QUEUE"):
            sub = rng.choice(["", "PAUSE ", "RESUME ", "LATENCY ", "REMOVE ", "pause "])
            names = " ".join(rng.choice(["fz", "*", "fz-2", self.text(5)]) for _ in range(2))
            return ((sub if verb == "QUEUE" else "") + names).encode("utf-8", "replace")
        if verb == "FETCHB":
            count = rng.choice(["1", "3", "0", "1001", "\u0663", "+2", "x"])
            return f"{count} fz fz-2".encode()
        if verb in ("ACK", "FAIL", "BEAT"):
            key = "wid" if verb == "BEAT" else "jid"
            return _json({key: rng.choice([self.jid(), self.value()]), "message": self.value()})
        if verb == "ACKB":
            return _json([self.jid() for _ in range(rng.randint(0, 3))])
        if verb == "ADMIN":
            args = {rng.choice(["queue", "where", "jids", "limit", "x"]): self.value()}
            return f"{rng.choice(ADMIN_OPS)} ".encode() + _json(args)
        if verb == "CRON":
            entry = {"id": rng.choice(["fz", self.text(5)]), "schedule": rng.choice(
                ["* * * * *", "0 9 * * 1-5", "@hourly", self.text(9)]), "job": {"type": "Fuzz",
                "args": [self.value()]}}  # fmt: skip
            if rng.random() < 0.3:
                entry[rng.choice(["job", "tz", "missed", "x"])] = self.value()
            return f"{rng.choice(CRON_SUBCOMMANDS)} ".encode() + _json(entry)
        if verb == "MUTATE":
            pattern = rng.choice(["*a*a*a*a*a*a*a*b", "*fz*", "[", "[]", "[^]", "\\", "*?*",
                                  self.text(20), "*" + "?" * 300 + "c*"])  # fmt: skip
            flt = rng.choice([{"regexp": pattern}, {"jids": [self.jid()]}, {"jobtype": "Fuzz"}, {}])
            cmd = rng.choice(["kill", "discard", "requeue", "clear", "nope"])
            target = rng.choice(["scheduled", "retries", "dead", "working"])
            return _json({"cmd": cmd, "target": target, "filter": flt})
        return _json(self.value())

    def line(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.1:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(0, 100)))
        if roll < 0.11:
            return b"PUSH " + b"x" * (MAX_LINE_BYTES + 10)  # over the line limit
        verb = self.rng.choice(VERBS)
        argument = self.argument(verb)
        return verb.encode() + (b"" if argument is None else b" " + argument)


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _clean(line: bytes) -> bytes:
    return line.replace(b"\n", b" ")


def _closes(line: bytes) -> bool:
    """The server closes the connection after this line (END, or one over the limit)."""
    return line.split(b" ")[0] == b"END" or len(line) > MAX_LINE_BYTES


# ------------------------------------------------------------------ one connection


@dataclass
class Tally:
    lines: int = 0
    failures: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def fail(self, what: str, lines: list[bytes]) -> None:
        shown = [line[:200] for line in lines]
        self.failures.append(f"{what}; lines: {shown!r}")


async def _read_reply(reader: asyncio.StreamReader, within: float) -> bytes:
    line = await asyncio.wait_for(reader.readline(), within)
    if line.startswith(b"$") and line != b"$-1\r\n" and line[1:-2].isdigit():
        line += await asyncio.wait_for(reader.readexactly(int(line[1:-2]) + 2), within)
    return line


class Fuzzer:
    def __init__(self, port: int, password: str, timeout: float, tally: Tally) -> None:
        self.port = port
        self.password = password
        self.timeout = timeout
        self.tally = tally

    async def login(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection past HELLO (as a worker, so BEAT means something)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 24)
        greeting = await asyncio.wait_for(reader.readline(), self.timeout)
        fields: dict[str, object] = {"v": 2, "hostname": "fuzz", "wid": "fz-worker"}
        if self.password:
            from conveyor.protocol import hash_password

            challenge = json.loads(greeting[4:])
            fields["pwdhash"] = hash_password(self.password, challenge["s"], challenge["i"])
        writer.write(b"HELLO " + _json(fields) + b"\r\n")
        reply = await asyncio.wait_for(reader.readline(), self.timeout)
        if reply != b"+OK\r\n":
            raise RuntimeError(f"cannot log in: {reply!r}")
        return reader, writer

    async def handshake(self, first: bytes) -> None:
        """A new connection whose first line is ``first``: +OK or a silent close, only."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await asyncio.wait_for(reader.readline(), self.timeout)
            writer.write(first + b"\r\n")
            reply = await asyncio.wait_for(reader.read(100), self.timeout)
        except TimeoutError:
            self.tally.fail("no answer to a first line (hang)", [first])
            return
        finally:
            writer.close()
        refused = reply.startswith((b"-ERR Invalid password", b"-ERR too many password checks"))
        if reply not in (b"+OK\r\n", b"") and not (self.password and refused):
            self.tally.fail(f"handshake answered {reply[:200]!r}", [first])

    async def run(self, inputs: Inputs, count: int) -> None:
        reader, writer = await self.login()
        done = 0
        while done < count:
            roll = inputs.rng.random()
            if roll < 0.01:  # a random first line on a new connection
                first = inputs.line() if roll < 0.005 else b"HELLO " + _json(inputs.value())
                await self.handshake(_clean(first))
                self.tally.kinds["(handshake)"] += 1
                done += 1
                continue
            if roll < 0.015:  # half a line, then gone
                _, dropped = await self.login()
                dropped.write(_clean(inputs.line())[:50])
                dropped.close()
                self.tally.kinds["(dropped)"] += 1
                done += 1
                continue
            burst = [_clean(inputs.line()) for _ in range(inputs.rng.randint(1, 8))]
            reader, writer, sent = await self.burst(burst, reader, writer)
            done += sent  # lines after an END or a long line are not sent
        writer.close()

    async def burst(
        self, burst: list[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        """Send the lines and a sync; check one reply each. Returns a usable connection and
        how many lines were sent."""
        closing = next((n for n, line in enumerate(burst) if _closes(line)), None)
        sent = burst if closing is None else burst[: closing + 1]
        self.tally.lines += len(sent)
        tail = SYNC + b"\r\n" if closing is None else b""
        writer.write(b"".join(line + b"\r\n" for line in sent) + tail)
        try:
            for line in sent:
                reply = await _read_reply(reader, self.timeout)
                self.check(line, reply, sent)
            if closing is None:
                sync = await _read_reply(reader, self.timeout)
                if sync != SYNC_REPLY:
                    self.tally.fail(f"expected the sync reply, got {sync[:200]!r}", sent)
                return reader, writer, len(sent)
        except TimeoutError:
            self.tally.fail("no reply in time (hang)", sent)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.tally.fail(f"connection broke: {exc!r}", sent)
        writer.close()
        return (*await self.login(), len(sent))

    def check(self, line: bytes, reply: bytes, burst: list[bytes]) -> None:
        verb = line.split(b" ")[0]
        self.tally.kinds[verb.decode("latin-1")[:10]] += 1
        if verb == b"END":
            if reply != b"":
                self.tally.fail(f"END answered {reply[:100]!r}", burst)
            return
        if len(line) > MAX_LINE_BYTES:
            if not reply.startswith(b"-ERR line too long"):
                self.tally.fail(f"a long line answered {reply[:100]!r}", burst)
            return
        if reply == INTERNAL:
            self.tally.fail("internal error", [line])
        elif reply[:1] not in (b"+", b"-", b"$") or not reply.endswith(b"\r\n"):
            self.tally.fail(f"malformed reply {reply[:200]!r}", [line])
        elif _valid_push(line) and reply != b"+OK\r\n":
            self.tally.fail(f"a valid PUSH answered {reply[:200]!r}", [line])


def _valid_push(line: bytes) -> bool:
    """A PUSH of ``Inputs.job()`` untouched (``broken_job`` always changes or drops a field)."""
    if not line.startswith(b'PUSH {"jid": "fz-'):
        return False
    try:
        job = json.loads(line[5:])
    except ValueError:
        return False
    custom = job.get("custom", {"k": None})
    return (
        job.get("jobtype") == "Fuzz"
        and {"jid", "jobtype", "args"} <= set(job) <= JOB_KEYS
        and isinstance(job["args"], list)
        and job.get("queue", "fz") in ("fz", "fz.other", "fz-2")
        and job.get("at", TIMES[0]) in TIMES
        and isinstance(custom, dict)
        and set(custom) == {"k"}
    )


# ------------------------------------------------------------------ the run


def start(storage: str, password: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "CONVEYOR_FETCH_WAIT_SECONDS": "0.01",
        "CONVEYOR_MAX_LINE_BYTES": str(MAX_LINE_BYTES),
        "CONVEYOR_PASSWORD": password,
    }
    args = [sys.executable, "-m", "conveyor", "server", "--bind", f"127.0.0.1:{port}",
            "--web-bind", "off", "--storage", storage, "--log-level", "info"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for_port(port, process)
    return process, port


async def fuzz(args: argparse.Namespace, port: int, tally: Tally) -> None:
    each = max(1, args.count // args.connections)
    fuzzers = [Fuzzer(port, args.password, args.timeout, tally) for _ in range(args.connections)]
    await asyncio.gather(
        *(f.run(Inputs(args.seed * 1000 + n), each) for n, f in enumerate(fuzzers))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs to send in all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--storage", default="memory", help="memory, sqlite or a redis:// URL")
    parser.add_argument("--password", default="", help="run the server with this password")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait a reply")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conveyor-fuzz-") as tmp:
        storage = {"memory": "memory://", "sqlite": f"sqlite:///{tmp}/fuzz.db"}.get(
            args.storage, args.storage
        )
        log = Path(tmp) / "server.log"
        process, port = start(storage, args.password, log)
        tally = Tally()
        started = time.monotonic()
        try:
            asyncio.run(fuzz(args, port, tally))
        finally:
            alive = process.poll() is None
            rss = rss_kb(process.pid) / 1024 if alive else 0.0
            process.terminate()
            process.wait(15)
        seconds = time.monotonic() - started
        text = log.read_text(errors="replace")
    if not alive:
        tally.failures.append(f"the server died (exit {process.returncode})")
    for marker in ("Traceback", "internal error"):
        if marker in text:
            at = text.index(marker)
            tally.failures.append(f"server log has {marker!r}: {text[max(0, at - 300) : at + 700]}")
    others = tally.kinds["(handshake)"] + tally.kinds["(dropped)"]
    print(f"{tally.lines} command lines and {others} handshakes or dropped connections in "
          f"{seconds:.1f} s over {args.connections} connections (seed {args.seed}, {storage}); "
          f"server RSS at the end {rss:.0f} MiB")  # fmt: skip
    print("most sent:", ", ".join(f"{k} {n}" for k, n in tally.kinds.most_common(12)))
    for failure in tally.failures[:20]:
        print("FAIL:", failure)
    print(f"{len(tally.failures)} failures")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
