"""What a plain, a batch and a tracked job cost Redis in commands: the round trips (EVALSHA:
one script a round trip) and the commands those scripts run, per job, from INFO commandstats
around the same push -> fetch -> ack workload as ``bench.batches_ab``. Counts, not times: the
same on a loaded machine as on a quiet one.

    python -m bench.batches_commands                          # this checkout
    python -m bench.batches_commands --baseline /work/main/src
"""

from __future__ import annotations

import argparse
import asyncio

import redis
from rich.console import Console
from rich.table import Table

from bench._harness import start_server
from bench.batches_ab import new_batch, round_trip, variants
from bench.redis_servers import redis_server


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def measure(jobs: int, src: str | None) -> dict[str, dict[str, float]]:
    """Commands per job by variant, against a server running ``src`` (None: this one)."""
    found: dict[str, dict[str, float]] = {}
    with redis_server() as url, start_server(url, {"PYTHONPATH": src} if src else None) as server:
        client = redis.Redis.from_url(url)
        bid = asyncio.run(new_batch(server.url))
        for name, (target, custom) in variants(server.url, bid).items():
            asyncio.run(round_trip(target, 40, custom, 1))  # scripts loaded, queues known
            before = _calls(client)
            asyncio.run(round_trip(target, jobs, custom, 1))
            after = _calls(client)
            found[name] = {
                command: (count - before.get(command, 0)) / jobs
                for command, count in after.items()
                if command != "info" and count - before.get(command, 0) >= jobs / 100
            }
        client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--baseline", help="the src/ directory of another checkout")
    args = parser.parse_args()
    trees = {"": None, " (baseline)": args.baseline} if args.baseline else {"": None}
    table = Table(title=f"Redis commands per job, {args.jobs} jobs a variant, one connection")
    for column in ("variant", "round trips (EVALSHA)", "commands in all", "of which"):
        table.add_column(column, justify="left" if column in ("variant", "of which") else "right")
    for suffix, src in trees.items():
        for name, calls in measure(args.jobs, src).items():
            detail = " ".join(f"{c}={n:.1f}" for c, n in sorted(calls.items()) if c != "evalsha")
            total = sum(calls.values())
            table.add_row(name + suffix, f"{calls.get('evalsha', 0):.2f}", f"{total:.1f}", detail)
    Console().print(table)


if __name__ == "__main__":
    main()
