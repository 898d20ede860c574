"""Server CPU per unique PUSH against a plain one, this tree against another, side by side.

    python -m bench.unique_ab --baseline /tmp/main-src/src          # 16 rounds of 10,000 jobs

``admission_bench`` starts a fresh server for each round and runs its workloads one after
the other, so on a shared machine a round's pair meets different loads. Here both servers
(``--baseline``'s code and this tree's) stay up for the whole run, and each round pushes
``--jobs`` plain and ``--jobs`` unique jobs (``custom.unique_for``) to each, in short bursts
whose order alternates from round to round (which tree first, which kind first); the server's
CPU seconds per job come from ``/proc`` (``admission_bench.push_rate``). Shown: the medians,
and the median of each round's own ratios. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics

from bench._harness import start_server
from bench.admission_bench import push_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--baseline", required=True, help="src directory of the code to compare")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    cpu: dict[tuple[str, bool], list[float]] = {}
    with (
        start_server(extra_env={"PYTHONPATH": args.baseline}) as main_server,
        start_server() as branch_server,
    ):
        servers = {"main": main_server, "branch": branch_server}
        for number in range(args.rounds):
            trees = ["main", "branch"] if number % 2 == 0 else ["branch", "main"]
            kinds = (False, True) if number % 4 < 2 else (True, False)
            for tree in trees:
                server = servers[tree]
                for unique in kinds:
                    per_job: list[float] = []
                    pid = server.process.pid
                    asyncio.run(push_rate(server.url, args.jobs, 8, unique, per_job, pid))
                    cpu.setdefault((tree, unique), []).append(per_job[0] * 1e6)

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(y / x for x, y in zip(a, b, strict=True))

    print(f"server CPU per PUSH, median of {args.rounds} rounds of {args.jobs:,} jobs each")
    for tree in ("main", "branch"):
        plain, locked = cpu[tree, False], cpu[tree, True]
        print(
            f"  {tree:>6}: plain {statistics.median(plain):5.1f} us, unique"
            f" {statistics.median(locked):5.1f} us, unique/plain {ratio(plain, locked):.3f}x"
        )
    for with_lock in (False, True):
        kind = "unique" if with_lock else "plain"
        change = ratio(cpu["main", with_lock], cpu["branch", with_lock])
        print(f"  {kind} PUSH, branch/main: {change:.3f}x")


if __name__ == "__main__":
    main()
