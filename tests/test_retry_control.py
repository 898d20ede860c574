"""Retry control without a server: the policy's answers to SkipRetry, RetryAfter and a backoff,
the backoff policies, and the local rate limiter with a fixed clock."""

from __future__ import annotations

import pytest

import conveyor
from conveyor.job import Job, encode_job
from conveyor.manager.lifecycle import ASYNQ_NAMES, TRANSITIONS, JobState, check_transition
from conveyor.manager.retry import NO_CONTROL, FailureReport, RetryControl, RetryPolicy
from conveyor.store.base import FailOutcome, SortedSet
from conveyor.worker.ratelimit import RateLimit, RateLimiter

NOW = 1_700_000_000.0
REPORT = FailureReport("E", "m", ())


def fail(policy: RetryPolicy, job: Job, control: RetryControl = NO_CONTROL) -> FailOutcome:
    policy.record(job, REPORT, NOW, control)
    return policy.outcome(job, NOW, encode_job, control)


def test_skip_retry_kills_at_once_whatever_is_left() -> None:
    policy = RetryPolicy(dead_ttl_seconds=100)
    job = Job(jid="j", jobtype="T", retry=5)
    outcome = fail(policy, job, RetryControl(skip=True))
    assert outcome.target is SortedSet.DEAD
    assert job.failure is not None
    assert (job.failure["retry_count"], job.failure["remaining"]) == (0, 5)
    discarded = fail(policy, Job(jid="k", jobtype="T", retry=0), RetryControl(skip=True))
    assert discarded.target is None


def test_retry_after_does_not_count_and_keeps_earlier_counts() -> None:
    policy = RetryPolicy(dead_ttl_seconds=100, backoff=lambda count: 10.0)
    job = Job(jid="j", jobtype="T", retry=1)
    later = RetryControl(retry_after=30)
    outcome = fail(policy, job, later)
    assert outcome.target is SortedSet.RETRIES
    assert outcome.score == NOW + 30
    assert job.failure is not None
    assert "retry_count" not in job.failure
    assert "remaining" not in job.failure
    fail(policy, job)  # counted: the first retry
    assert (job.failure["retry_count"], job.failure["remaining"]) == (0, 1)
    for _ in range(3):
        outcome = fail(policy, job, later)  # never dead: no retry is used
        assert outcome.target is SortedSet.RETRIES
    assert (job.failure["retry_count"], job.failure["remaining"]) == (0, 1)
    assert fail(policy, job).target is SortedSet.DEAD
    # even a job without retries waits rather than being dropped by a rate limit
    assert fail(policy, Job(jid="z", retry=0), later).target is SortedSet.RETRIES


def test_backoff_replaces_the_delay_of_a_counted_retry() -> None:
    policy = RetryPolicy(dead_ttl_seconds=100)
    job = Job(jid="j", jobtype="T", retry=3)
    outcome = fail(policy, job, RetryControl(backoff=42.5))
    assert outcome.score == NOW + 42.5
    assert job.failure is not None
    assert job.failure["retry_count"] == 0
    assert job.failure["next_at"] == "2023-11-14T22:14:02.5Z"


@pytest.mark.parametrize(
    "fields",
    [
        {"retry_after": -1},
        {"retry_after": 367 * 86_400},
        {"backoff": float("nan")},
        {"backoff": float("inf")},
        {"skip": True, "retry_after": 1},
    ],
)
def test_unusable_retry_control_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"seconds|contradict"):
        RetryControl(**fields)  # type: ignore[arg-type]


def test_backoff_policies() -> None:
    exponential = conveyor.Exponential(base=2, max=100, factor=3)
    assert [exponential(n) for n in range(6)] == [2, 6, 18, 54, 100, 100]
    jittered = conveyor.Exponential(base=10, max=10, jitter=0.5)
    assert all(5 <= jittered(0) <= 10 for _ in range(50))
    assert conveyor.Fixed(7)(0) == conveyor.Fixed(7)(9) == 7
    with pytest.raises(ValueError, match="base > 0"):
        conveyor.Exponential(base=0)
    with pytest.raises(ValueError, match="jitter"):
        conveyor.Exponential(jitter=2)
    with pytest.raises(ValueError, match="seconds >= 0"):
        conveyor.Fixed(-1)


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [("10/s", 10, 1), ("100/m", 100, 60), ("5/h", 5, 3600), ("2/day", 2, 86400), ("3/10s", 3, 10)],
)
def test_rate_limits_parse(text: str, count: float, seconds: float) -> None:
    limit = RateLimit.parse(text)
    assert (limit.count, limit.per_seconds) == (count, seconds)


@pytest.mark.parametrize("text", ["10", "10/x", "/s", "0/s", "-1/s", "ten/s"])
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.parse(text)


def test_rate_limiter_spaces_jobs_and_keeps_each_ones_slot() -> None:
    now = [100.0]
    limiter = RateLimiter(RateLimit.parse("10/s"), clock=lambda: now[0])
    assert limiter.admit("a") == 0
    waits = [limiter.admit(jid) for jid in "bcd"]
    assert waits == pytest.approx([0.1, 0.2, 0.3])  # the crowd is spread, not sent back at once
    now[0] += 0.1
    assert limiter.admit("b") == 0  # back at its slot: runs without taking another one
    assert limiter.admit("c") == pytest.approx(0.1)  # early: told to wait the rest
    now[0] += 0.3
    assert limiter.admit("c") == 0
    assert limiter.admit("d") == 0
    assert limiter.admit("e") == 0  # the slots are used: a newcomer is next
    assert limiter.admit("f") == pytest.approx(0.1)


def test_rate_limiter_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimit(count=2, per_seconds=1, burst=3), clock=lambda: now[0])
    assert [limiter.admit(j) for j in "abc"] == [0, 0, 0]
    assert limiter.admit("d") == pytest.approx(0.5)


def test_lifecycle_table_names_every_state_and_asynqs() -> None:
    assert set(ASYNQ_NAMES.values()) == {
        "pending",
        "scheduled",
        "active",
        "retry",
        "archived",
        "completed",
        "aggregating",
        "cancelled",
    }
    assert check_transition(JobState.WORKING, JobState.COMPLETED).startswith("ack of a job")
    assert check_transition("completed", "discarded")
    with pytest.raises(ValueError, match="from completed to queued"):
        check_transition(JobState.COMPLETED, JobState.QUEUED)
    reachable = {target for _, target in TRANSITIONS} | {source for source, _ in TRANSITIONS}
    assert reachable == set(JobState)  # every state of the table is one a job can be in
    for source in ("queued", "scheduled", "retries", "aggregating", "working"):
        assert check_transition(source, JobState.CANCELLED).startswith("cancelled")
    with pytest.raises(ValueError, match="from dead to cancelled"):
        check_transition(JobState.DEAD, JobState.CANCELLED)  # finished: nothing to cancel


def test_the_job_log_says_when_a_job_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    from conveyor.worker.execute import Outcome
    from conveyor.worker.joblog import describe_failure, log_outcome

    job = Job(jid="j1", jobtype="geocode", queue="default", retry=5)
    later = Outcome.failed(job, conveyor.RetryAfter(0.1, "rate limit 10/1s reached"), 0)
    assert describe_failure(later) == {"outcome": "later", "retry_in_seconds": 0.1}
    backed = Outcome.failed(job, OSError("down"), 0)
    backed.backoff = 40.0
    assert describe_failure(backed)["retry_in_seconds"] == 40.0
    skipped = Outcome.failed(job, conveyor.SkipRetry("no"), 0)
    assert describe_failure(skipped) == {"outcome": "dead"}
    with caplog.at_level("INFO", logger="conveyor.worker.jobs"):
        log_outcome(later)
    (record,) = caplog.records
    assert record.levelname == "INFO"
    assert record.getMessage().endswith("retry in 100.0ms, not counted")
    assert record.exc_info is None
