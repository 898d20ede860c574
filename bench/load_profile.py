"""Profiles of conveyor's server under the load shape: py-spy (Python) and perf (CPU, kernel).

Each profile is one extra run of ``fwp_load`` with the profiler attached; its rate is shown
but never counted with the measured rounds.

- **py-spy** (``--native``) names the Python function behind each sample, but samples wall
  time: a thread that is runnable yet waiting for a core (the driver it just woke runs on
  it) still counts, usually inside the ``write`` that woke the other side. Read it for what
  Python does per job, on a quiet machine.
- **perf** (``cpu-clock``, when ``perf`` is installed) samples only the CPU the server really
  used, kernel included, but sees Python as ``_PyEval_EvalFrameDefault``. Read it for the
  split between the kernel (socket writes, SQLite's file writes and locks), the interpreter
  and SQLite.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.load_report import LABELS

if TYPE_CHECKING:
    from bench.load_shape import Plan, Sample

PROFILERS = ("py-spy", "perf")


def available(profiler: str) -> str | None:
    if profiler == "py-spy":
        found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        return found if Path(found).exists() else None
    return shutil.which("perf")


def record(plan: Plan, target: str, profiler: str, out_dir: Path) -> tuple[Path, Sample]:
    """One run of our driver with ``profiler`` attached to conveyor's server process."""
    from bench.load_shape import OURS, Sample, build_driver, cpu_seconds, drive, start

    binary = available(profiler)
    if binary is None:
        raise SystemExit(f"{profiler} is not installed (py-spy: pip install -e '.[bench]')")
    driver = build_driver()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{target}.{'pyspy.txt' if profiler == 'py-spy' else 'perf.data'}"
    with start(plan, target) as server:
        pid = str(server.server_pid)
        args = (
            [binary, "record", "--pid", pid, "--rate", "250", "--native", "--format", "raw",
             "--output", str(output)]
            if profiler == "py-spy"
            else [binary, "record", "-F", "999", "-e", "cpu-clock", "-g", "-p", pid,
                  "-o", str(output)]
        )  # fmt: skip
        spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # the profiler attaches
        before = cpu_seconds(server.server_pid)
        run = drive(plan, OURS, server.port, driver)
        server_cpu = cpu_seconds(server.server_pid) - before
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=120)
    sample = Sample(
        0, target, f"{OURS} under {profiler}", plan.jobs, run.jobs_per_s, run.seconds,
        server_cpu, None, run.cpu_s, 0.0, run.detail, run.error,
    )  # fmt: skip
    return output, sample


def markdown(path: Path, sample: Sample, top: int = 15) -> str:
    title = (
        f"#### {sample.driver.split(' under ')[-1]}: {LABELS.get(sample.target, sample.target)} "
        f"({sample.jobs_per_s:,.0f} jobs/s while profiled, server "
        f"{sample.server_cpu_s / sample.jobs * 1e6:.0f} µs/job; `{path}`)"
    )
    body = py_spy_tables(path, top) if path.suffix == ".txt" else perf_tables(path, top)
    return title + "\n\n" + body


# -- py-spy --------------------------------------------------------------------------------------

LINE_NUMBER = re.compile(r":\d+\)$")


def _frame(raw: str) -> str:
    """``run (conveyor/server/app.py:120)`` -> ``run (conveyor/server/app.py)``."""
    return LINE_NUMBER.sub(")", raw.strip())


WAITS = ("pthread_cond_wait", "pthread_cond_timedwait", "PyThread_acquire_lock_timed",
         "epoll_pwait", "epoll_wait", "take_gil", "Event.wait")  # fmt: skip
"""Frames of a thread that waits (a lock, the GIL, an idle loop): py-spy still samples some."""


@dataclass
class Stacks:
    own: Counter[str] = field(default_factory=Counter)
    """By the innermost frame, native ones included."""
    total: Counter[str] = field(default_factory=Counter)
    """By every function on the stack."""
    ours: Counter[str] = field(default_factory=Counter)
    """By the innermost conveyor function: what conveyor code the time was spent for."""
    samples: int = 0
    waits: int = 0
    """Samples left out because the thread was waiting."""


def stack_counts(path: Path) -> Stacks:
    stacks = Stacks()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        n = int(count)
        if any(f.startswith(WAITS) for f in frames):
            stacks.waits += n
            continue
        stacks.samples += n
        stacks.own[frames[-1]] += n
        for frame in set(frames):
            stacks.total[frame] += n
        inner = next((f for f in reversed(frames) if "conveyor/" in f), "(outside conveyor)")
        stacks.ours[inner] += n
    return stacks


def py_spy_tables(path: Path, top: int) -> str:
    stacks = stack_counts(path)
    samples = stacks.samples
    if not samples:
        return "py-spy recorded nothing.\n"
    columns = [
        ("self", stacks.own.most_common(top)),
        ("innermost conveyor function", stacks.ours.most_common(top)),
        ("total (on the stack)",
         [(f, n) for f, n in stacks.total.most_common() if "conveyor/" in f]),
    ]  # fmt: skip
    lines = [
        f"{samples:,} samples of running threads ({stacks.waits:,} more, of threads waiting "
        "for a lock, the GIL or the event loop's poll, are left out).",
        "",
        "| " + " | ".join(f"% | {name}" for name, _ in columns) + " |",
        "|" + "---|" * (2 * len(columns)),
    ]
    for i in range(top):
        cells = []
        for _, ranked in columns:
            if i < len(ranked):
                frame, n = ranked[i]
                cells.append(f"{n / samples:.1%} | `{frame}`")
            else:
                cells.append(" | ")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- perf ----------------------------------------------------------------------------------------

PERF_ROW = re.compile(r"^\s*([\d.]+)%\s+(?:([\d.]+)%\s+)?(.+?)\s*$")
SYSCALLS = re.compile(r"\[k\] (__x64_sys_\w+|ksys_\w+)$")


def _perf_report(path: Path, *options: str) -> list[tuple[float, str]]:
    done = subprocess.run(
        ["perf", "report", "-i", str(path), "--stdio", "-g", "none", *options],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("#") or not (match := PERF_ROW.match(line)):
            continue
        rows.append((float(match.group(1)), re.sub(r"\s+", " ", match.group(3))))
    return rows


def perf_tables(path: Path, top: int) -> str:
    if shutil.which("perf") is None:
        return "perf is not installed here.\n"
    by_dso = _perf_report(path, "--no-children", "--sort", "dso")
    by_symbol = _perf_report(path, "--no-children", "--sort", "dso,sym")
    syscalls = [
        (share, name)
        for share, name in _perf_report(path, "--children", "--sort", "sym")
        if SYSCALLS.search(name)
    ]
    lines = [
        "Where the CPU went, by library: "
        + ", ".join(f"{name} {share:.1f} %" for share, name in by_dso[:8])
        + ".",
        "",
        "| self % | symbol | | kernel, with callees % | system call |",
        "|---|---|---|---|---|",
    ]
    for i in range(top):
        left = by_symbol[i] if i < len(by_symbol) else None
        right = syscalls[i] if i < len(syscalls) else None
        lines.append(
            "| "
            + (f"{left[0]:.1f} | `{left[1]}`" if left else " | ")
            + " | | "
            + (f"{right[0]:.1f} | `{right[1].split('] ')[-1]}`" if right else " | ")
            + " |"
        )
    return "\n".join(lines) + "\n"
