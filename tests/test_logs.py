"""``conveyor.logs``: the JSON formatter and the rate-limited log, on real ``logging``."""

from __future__ import annotations

import io
import json
import logging

from conveyor.logs import JsonFormatter, RateLimitedLog
from tests.support.server import SpawnServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_pause_doubles_while_the_problem_lasts_and_resets_after() -> None:
    logger, stream = capture("conveyor.test.ratelimit")
    clock = Clock()
    trouble = RateLimitedLog(logger, first_seconds=1, max_seconds=4, clock=clock)
    written = []
    for step in range(100):  # 10 s of a problem every 0.1 s
        clock.now = 100.0 + step * 0.1
        if trouble.problem("store down: %s", "refused"):
            written.append(round(clock.now - 100.0, 1))
    # pauses of 1, 2, 4, then 4 (the cap) seconds
    assert written == [0.0, 1.0, 3.0, 7.0]
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ERROR store down: refused"
    assert lines[1] == "ERROR store down: refused (9 similar messages suppressed)"
    assert lines[3] == "ERROR store down: refused (39 similar messages suppressed)"
    trouble.ok("store is back")
    assert stream.getvalue().splitlines()[-1] == (
        "WARNING store is back (29 similar messages suppressed)"
    )
    clock.now += 0.5
    assert trouble.problem("store down again")  # a new episode: written at once


def test_quiet_for_longer_than_the_cap_starts_a_new_episode() -> None:
    logger, stream = capture("conveyor.test.quiet")
    clock = Clock()
    trouble = RateLimitedLog(logger, first_seconds=1, max_seconds=4, clock=clock)
    assert trouble.problem("a")
    clock.now += 0.5
    assert not trouble.problem("a")
    clock.now += 10
    assert trouble.problem("a")
    clock.now += 1.1  # the pause is back to the first one
    assert trouble.problem("a")
    assert "1 similar messages suppressed" in stream.getvalue().splitlines()[1]


def test_json_lines_carry_the_extra_fields_and_the_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("conveyor.test.json")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        raise ValueError('bad <input> "quoted"')
    except ValueError as exc:
        logger.error("job %s failed", "j1", extra={"jid": "j1", "duration_ms": 1.5}, exc_info=exc)
    record = json.loads(stream.getvalue())
    assert record["message"] == "job j1 failed"
    assert record["level"] == "error"
    assert record["logger"] == "conveyor.test.json"
    assert record["jid"] == "j1"
    assert record["duration_ms"] == 1.5
    assert record["time"].endswith("Z")
    assert 'ValueError: bad <input> "quoted"' in record["traceback"]
    assert "\n" not in stream.getvalue().rstrip("\n")


def test_the_server_logs_json_lines(spawn_server: SpawnServer) -> None:
    server = spawn_server(env={"CONVEYOR_LOG_FORMAT": "json", "CONVEYOR_LOG_LEVEL": "info"})
    assert server.terminate() == 0
    records = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    messages = [r["message"] for r in records]
    assert any(m.startswith("FWP server listening on tcp://127.0.0.1:") for m in messages)
    assert {r["logger"] for r in records} >= {"conveyor.server"}
    assert all(r["level"] == "info" for r in records)
