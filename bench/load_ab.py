"""A/B of conveyor trees on Faktory's load-test shape, interleaved in one run.

    python -m bench.load_ab --a main --b working --stores sqlite --rounds 5
    python -m bench.load_ab --a main --b HEAD --stores sqlite,redis \\
        --faktory-bin /path/faktory --rounds 5
    python -m bench.load_ab --a main --b working --stores sqlite,redis --modes off,results

Each tree (a git ref, or ``working`` for the working tree as it is) is extracted once; every
round runs ``fwp_load`` (bench/fwp_load.c) against a fresh server of each tree and store, and
of real Faktory when its binary is given, in an order that rotates each round, so drift on a
shared machine falls on every side. Prints the median jobs/s and server CPU per job (with the
store's redis-server, if any) of each, and B against A: what one optimisation changes is read
from one such run. Nothing here is a test; no timed assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.load_shape import Running, build_driver, conveyor, cpu_seconds, faktory, run_ours
from bench.rows import ROOT

MODES = {"off": (), "results": ("--results",)}
"""``--modes``: the driver's flags of each. ``results``: every job asks for its result
(``custom.result_ttl``) and every ACK carries one, as conveyor's worker sends it (issue 14:
results on against off, the same driver, the same run)."""


@contextlib.contextmanager
def tree(ref: str) -> Iterator[str]:
    """A PYTHONPATH holding conveyor as of ``ref`` (``working``: the working tree)."""
    if ref == "working":
        yield str(ROOT / "src")
        return
    with tempfile.TemporaryDirectory(prefix="conveyor-ab-") as tmp:
        archive = subprocess.run(
            ["git", "archive", ref, "src/conveyor"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield str(Path(tmp) / "src")


def _server(
    target: str, paths: dict[str, str], faktory_bin: str | None
) -> contextlib.AbstractContextManager[Running]:
    if target == "faktory":
        assert faktory_bin is not None
        return faktory(faktory_bin)
    side, store, _mode = target.split(":")
    return conveyor(store, {"PYTHONPATH": paths[side]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--a", default="main", help="git ref, or 'working'")
    parser.add_argument("--b", default="working", help="git ref, or 'working'")
    parser.add_argument("--stores", default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--faktory-bin")
    parser.add_argument("--modes", default="off", help="off, results, or both: off,results")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown --modes {', '.join(sorted(unknown))}: choose from off, results")
    targets = [f"{side}:{store}:{mode}" for store in stores for mode in modes for side in "AB"]
    if args.faktory_bin:
        targets.append("faktory")
    binary = build_driver()
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in targets}
    with tree(args.a) as path_a, tree(args.b) as path_b:
        paths = {"A": path_a, "B": path_b}
        for index in range(args.rounds):
            order = targets[index % len(targets) :] + targets[: index % len(targets)]
            for target in order:
                load = os.getloadavg()[0]
                with _server(target, paths, args.faktory_bin) as server:
                    pids = [p for p in (server.server_pid, server.store_pid) if p]
                    before = sum(cpu_seconds(p) for p in pids)
                    flags = MODES[target.rsplit(":", 1)[1]] if target != "faktory" else ()
                    run = run_ours(binary, server.port, args.jobs, args.connections, 120.0, *flags)
                    cpu = sum(cpu_seconds(p) for p in pids) - before
                per_job = cpu / args.jobs * 1e6
                results[target].append((run.jobs_per_s, per_job))
                print(f"[ab] round {index + 1} {target:18} {run.jobs_per_s:8,.0f} jobs/s "
                      f"{per_job:5.0f} µs/job  load {load:.2f}"
                      + (f"  ERROR {run.error}" if run.error else ""),
                      file=sys.stderr, flush=True)  # fmt: skip
    print(f"A = {args.a}, B = {args.b}; {args.rounds} rounds, medians (min-max)")
    medians: dict[str, tuple[float, float]] = {}
    for target, runs in results.items():
        rates, costs = [r for r, _ in runs], [c for _, c in runs]
        medians[target] = (statistics.median(rates), statistics.median(costs))
        print(f"  {target:18} {medians[target][0]:8,.0f} jobs/s ({min(rates):,.0f}-"
              f"{max(rates):,.0f})  {medians[target][1]:5.0f} µs/job ({min(costs):.0f}-"
              f"{max(costs):.0f})")  # fmt: skip
    for store in stores:
        for mode in modes:
            (rate_a, cost_a), (rate_b, cost_b) = (
                medians[f"A:{store}:{mode}"],
                medians[f"B:{store}:{mode}"],
            )
            line = (f"  {store} {mode}: B/A jobs/s {rate_b / rate_a:.2f}x, "
                    f"µs/job {cost_a:.0f} -> {cost_b:.0f}")  # fmt: skip
            if "faktory" in medians:
                rate_f = medians["faktory"][0]
                line += f"; vs Faktory A {rate_a / rate_f:.2f}x, B {rate_b / rate_f:.2f}x"
            print(line)
        if "off" in modes and "results" in modes:
            for side in "AB":
                (rate_off, cost_off), (rate_on, cost_on) = (
                    medians[f"{side}:{store}:off"],
                    medians[f"{side}:{store}:results"],
                )
                print(f"  {store} {side}: results ÷ off jobs/s {rate_on / rate_off:.2f}x, "
                      f"µs/job {cost_off:.0f} -> {cost_on:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
