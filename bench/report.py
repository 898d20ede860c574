"""Turns the samples into the comparison: medians with min-max, conveyor/peer ratios, plots."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.runner import RowResult
from bench.server_memory import MemoryResult, describe

PAGE_CACHE_MIB = 32.0  # PRAGMA cache_size of the SQLite store
FLAT_MARGIN_MIB = 16.0
"""Server growth with a million queued jobs counted as flat: the page cache plus this."""


def spread(samples: Sequence[float], digits: int = 0) -> str:
    """``median (min-max)``; one sample prints alone; none prints a dash."""
    if not samples:
        return "—"
    fmt = f"{{:,.{digits}f}}"
    mid = fmt.format(statistics.median(samples))
    if len(samples) == 1:
        return mid
    return f"{mid} ({fmt.format(min(samples))}-{fmt.format(max(samples))})"


def med(samples: Sequence[float]) -> float | None:
    return statistics.median(samples) if samples else None


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    value = ours / theirs
    return f"{value:,.2f}x" if value < 10 else f"{value:,.0f}x"


def best_enqueue(result: RowResult) -> float | None:
    """A peer without a bulk API enqueues fastest one by one: compare bulk against that."""
    return med(result.bulk) or med(result.enqueue)


@dataclass
class Column:
    title: str
    samples: Callable[[RowResult], Sequence[float]]
    digits: int = 0
    versus: Callable[[RowResult], float | None] | None = None


THROUGHPUT = [
    Column("enqueue one by one, jobs/s", lambda r: r.enqueue),
    Column("bulk enqueue, jobs/s", lambda r: r.bulk, versus=best_enqueue),
    Column("process 20k no-op, jobs/s", lambda r: r.process),
    Column("10 ms sleep jobs, jobs/s", lambda r: r.sleep),
]
LATENCY = [
    Column("p50 ms", lambda r: r.p50, 2),
    Column("p95 ms", lambda r: r.p95, 2),
    Column("p99 ms", lambda r: r.p99, 2),
    Column("worker peak RSS, MiB", lambda r: r.rss_mb, 1),
    Column("worker peak PSS, MiB", lambda r: r.pss_mb, 1),
]


def _table(results: list[RowResult], columns: list[Column]) -> list[str]:
    ours = results[0]
    head = ["library"]
    for c in columns:
        head += [c.title, "conveyor ÷ peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"**{r.name}**" if r is ours else r.name]
        for c in columns:
            text = spread(c.samples(r), c.digits)
            if c.versus is not None and not c.samples(r) and c.versus(r) is not None:
                text = "— (none; one by one used for the ratio)"
            theirs = c.versus(r) if c.versus else med(c.samples(r))
            cells += [text, "1" if r is ours else ratio(med(c.samples(ours)), theirs)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def configurations(results: list[RowResult]) -> list[str]:
    lines = ["| library | worker configuration | bulk API | notes |", "|---|---|---|---|"]
    for r in results:
        notes = "; ".join([*r.notes, *([f"**failed**: {r.error}"] if r.error else [])])
        lines.append(f"| {r.name} | {r.config} | {r.bulk_api or '—'} | {notes or ''} |")
    return lines


def _rss(result: RowResult) -> Sequence[float]:
    return result.rss_mb


def _pss(result: RowResult) -> Sequence[float]:
    return result.pss_mb


def targets(results: list[RowResult], memory: MemoryResult | None = None) -> list[str]:
    """conveyor's first row (its default store) against the peers, as issue 6 words them."""
    ours, peers = results[0], [r for r in results if not r.store and not r.error]
    lines = ["| target (issue 6) | measured | met |", "|---|---|---|"]

    def fastest(key: Callable[[RowResult], float | None]) -> tuple[str, float | None]:
        scored = [(r.name, key(r)) for r in peers if key(r) is not None]
        return max(scored, key=lambda s: s[1] or 0.0) if scored else ("—", None)

    def row(text: str, mine: float | None, theirs: float | None, goal: float) -> None:
        value = mine / theirs if mine is not None and theirs else None
        met = "—" if value is None else ("yes" if value >= goal else "**no**")
        lines.append(f"| {text} | {'—' if value is None else f'{value:.2f}x'} | {met} |")

    name, rate = fastest(lambda r: med(r.process))
    row(f"processing ≥ 2x the fastest peer ({name})", med(ours.process), rate, 2.0)
    name, rate = fastest(best_enqueue)
    row(f"bulk enqueue ≥ 5x the fastest peer ({name})", med(ours.bulk), rate, 5.0)
    p99s = [(r.name, med(r.p99)) for r in peers if r.p99]
    if p99s and ours.p99:
        best_name, best = min(p99s, key=lambda s: s[1] or 0.0)
        mine = med(ours.p99) or 0.0
        met = "yes" if mine <= (best or 0) else "**no**"
        lines.append(
            f"| lowest p99 latency (best peer {best_name}: {best:.2f} ms) | {mine:.2f} ms | {met} |"
        )
        lines.append(
            f"| p99 latency ≤ 1 ms | {mine:.2f} ms | {'yes' if mine <= 1.0 else '**no**'} |"
        )
    for label, samples in (("RSS", _rss), ("PSS", _pss)):
        values = [v for r in peers if (v := med(samples(r))) is not None]
        mine = med(samples(ours))
        if values and mine is not None:
            median_peer = statistics.median(values)
            met = "yes" if mine <= median_peer else "**no**"
            lines.append(
                f"| worker memory ({label}) ≤ the median peer ({median_peer:.1f} MiB) "
                f"| {mine:.1f} MiB | {met} |"
            )
    if memory is not None:
        limit = PAGE_CACHE_MIB + FLAT_MARGIN_MIB
        met = "yes" if memory.growth_mib <= limit else "**no**"
        lines.append(
            f"| server memory flat with {memory.jobs:,} jobs queued (growth ≤ the "
            f"{PAGE_CACHE_MIB:.0f} MiB page cache + {FLAT_MARGIN_MIB:.0f}) "
            f"| +{memory.growth_mib:.1f} MiB | {met} |"
        )
    return lines


def markdown(results: list[RowResult], memory: MemoryResult | None = None) -> str:
    parts = [
        "### Throughput (higher is better; conveyor ÷ peer > 1 means conveyor is faster)",
        "",
        *_table(results, THROUGHPUT),
        "",
        "### Latency with idle workers and memory (lower is better; conveyor ÷ peer < 1 "
        "means conveyor is better)",
        "",
        *_table(results, LATENCY),
        "",
        *(
            ["### Server memory with queued jobs (SQLite store)", "", describe(memory) + ".", ""]
            if memory is not None
            else []
        ),
        "### Against the targets",
        "",
        *targets(results, memory),
        "",
        "### Configurations",
        "",
        *configurations(results),
    ]
    return "\n".join(parts) + "\n"


def plots(results: list[RowResult], out_dir: Path) -> list[Path]:
    """Bar charts with min-max whiskers; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    charts = [
        ("throughput.png", "No-op jobs processed per second (start to last job)", "process",
         "jobs/s", False),
        ("enqueue.png", "Enqueue, jobs/s (bulk API where there is one)", "enqueue_best",
         "jobs/s", True),
        ("latency.png", "Enqueue → start, p99 ms, idle workers", "p99", "ms", True),
        ("memory.png", "Peak PSS of the worker processes, MiB (shared pages split)", "pss_mb",
         "MiB", False),
    ]  # fmt: skip
    written = []
    for filename, title, attr, unit, log in charts:
        names, mids, lows, highs = [], [], [], []
        for r in results:
            samples = (r.bulk or r.enqueue) if attr == "enqueue_best" else getattr(r, attr)
            if not samples:
                continue
            names.append(r.name)
            mid = statistics.median(samples)
            mids.append(mid)
            lows.append(mid - min(samples))
            highs.append(max(samples) - mid)
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
        colors = ["#d9480f" if n.startswith("conveyor") else "#868e96" for n in names]
        ax.barh(names, mids, xerr=[lows, highs], color=colors, capsize=3)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log") if min(mids) > 0 else None
        ax.set_title(title)
        ax.set_xlabel(unit)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
