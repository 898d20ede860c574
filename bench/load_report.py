"""The load-shape comparison as Markdown: every run, medians, ratios from the same run, profiles.

No ratio is ever taken against a figure recorded elsewhere: a server that was not run in this
run has no ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bench.report import ratio, spread

if TYPE_CHECKING:
    from bench.load_shape import Plan, Sample

LABELS = {
    "conveyor-sqlite": "conveyor, SQLite store",
    "conveyor-redis": "conveyor, Redis store",
    "conveyor-redis-unix": "conveyor, Redis store (Unix socket)",
    "conveyor-memory": "conveyor, memory store (stores nothing)",
    "conveyor-floor": "Python floor (bench/fwp_floor.py: no conveyor, stores nothing)",
    "faktory": "real Faktory (its Redis)",
}
# issue 16: twice, and at least equal (on Redis over TCP or through its socket, as Faktory's)
GOALS = {"conveyor-sqlite": 2.0, "conveyor-redis": 1.0, "conveyor-redis-unix": 1.0}


def _per_job(seconds: float | None, jobs: int) -> float | None:
    return None if seconds is None else seconds / jobs * 1e6


def _total(s: Sample) -> float:
    return s.server_cpu_s + (s.store_cpu_s or 0.0)


def _cells(samples: Sequence[Sample], key: Callable[[Sample], float | None]) -> str:
    values = [v for s in samples if (v := key(s)) is not None]
    return spread(values) if values else "—"


def _group(samples: Sequence[Sample]) -> dict[tuple[str, str], list[Sample]]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        if s.error is None:
            groups.setdefault((s.target, s.driver), []).append(s)
    return groups


def summary(plan: Plan, samples: Sequence[Sample]) -> list[str]:
    lines = [
        "| server | driver | jobs/s | server CPU µs/job | its Redis µs/job | server total "
        "µs/job | driver CPU µs/job |",
        "|---|---|---|---|---|---|---|",
    ]
    for (target, driver), group in _group(samples).items():
        lines.append(
            f"| {LABELS.get(target, target)} | {driver} | {_cells(group, lambda s: s.jobs_per_s)} "
            f"| {_cells(group, lambda s: _per_job(s.server_cpu_s, s.jobs))} "
            f"| {_cells(group, lambda s: _per_job(s.store_cpu_s, s.jobs))} "
            f"| {_cells(group, lambda s: _per_job(_total(s), s.jobs))} "
            f"| {_cells(group, lambda s: _per_job(s.driver_cpu_s, s.jobs))} |"
        )
    return lines


def versus_faktory(plan: Plan, samples: Sequence[Sample]) -> list[str]:
    groups = _group(samples)
    if "faktory" not in plan.targets:
        return [
            "Real Faktory was not run here (no `--faktory-bin`), so there is no ratio against "
            "it: the comparison with Faktory is pending until it runs beside conveyor."
        ]
    lines = [
        "| driver | conveyor store | jobs/s, conveyor ÷ Faktory | goal | met | server CPU per "
        "job, conveyor ÷ Faktory (its Redis included on both sides when there is one) |",
        "|---|---|---|---|---|---|",
    ]
    for driver in plan.drivers:
        theirs = groups.get(("faktory", driver), [])
        for target in (t for t in plan.targets if t != "faktory"):
            ours = groups.get((target, driver), [])
            if not ours or not theirs:
                lines.append(f"| {driver} | {LABELS[target]} | — (a run failed) | | | |")
                continue
            rate = statistics.median(s.jobs_per_s for s in ours) / statistics.median(
                s.jobs_per_s for s in theirs
            )
            cost = ratio(
                statistics.median(_total(s) / s.jobs for s in ours),
                statistics.median(_total(s) / s.jobs for s in theirs),
            )
            goal = GOALS.get(target)  # the memory store and the floor keep nothing: no goal
            wanted = "—" if goal is None else f"≥ {goal:g}x"
            met = "—" if goal is None else ("yes" if rate >= goal else "**no**")
            lines.append(
                f"| {driver} | {LABELS[target]} | {rate:.2f}x | {wanted} | {met} | {cost} |"
            )
    return lines


def every_run(samples: Sequence[Sample]) -> list[str]:
    lines = [
        "| round | server | driver | jobs/s | seconds | server µs/job | its Redis µs/job "
        "| driver µs/job | load avg before | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in samples:
        store = _per_job(s.store_cpu_s, s.jobs)
        lines.append(
            f"| {s.round} | {LABELS.get(s.target, s.target)} | {s.driver} | {s.jobs_per_s:,.0f} "
            f"| {s.seconds:.2f} | {_per_job(s.server_cpu_s, s.jobs):.0f} "
            f"| {'—' if store is None else f'{store:.0f}'} "
            f"| {_per_job(s.driver_cpu_s, s.jobs):.0f} | {s.load_avg:.2f} "
            f"| {('**failed**: ' + s.error) if s.error else ''} |"
        )
    return lines


def markdown(plan: Plan, samples: Sequence[Sample], conditions: list[str]) -> str:
    loads = [s.load_avg for s in samples]
    noise = (
        f"- 1-minute load average before each run: {min(loads):.2f} to {max(loads):.2f} "
        "(2 cores; other work on the machine shows up here)"
        if loads
        else ""
    )
    parts = [
        "### Faktory's load-test shape: conveyor beside real Faktory",
        "",
        f"{plan.jobs:,} jobs, {plan.connections} connections ({plan.connections // 2} PUSH, "
        f"{plan.connections - plan.connections // 2} FETCH + ACK, 1 % FAIL), 5 queues, one "
        f"command in flight per connection; each server started fresh for each run, "
        f"{plan.rounds} alternating rounds; median (min-max).",
        "",
        *conditions,
        noise,
        "",
        *summary(plan, samples),
        "",
        *versus_faktory(plan, samples),
        "",
        "Every run, in the order run:",
        "",
        *every_run(samples),
        "",
    ]
    return "\n".join(parts)
