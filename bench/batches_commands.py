"""What a plain, a batch and a tracked job cost Redis in commands: the round trips (EVALSHA
or FCALL: one script a round trip) and the commands those scripts run, per job, from INFO
commandstats around the same push -> fetch -> ack workload as ``bench.batches_ab``; with
``--callgrind``, also the instructions Redis ran per job (redis-server under valgrind's
callgrind, zeroed before and dumped after each variant). Counts, not times: the same on a
loaded machine as on a quiet one.

    python -m bench.batches_commands                          # this checkout
    python -m bench.batches_commands --baseline /work/main/src --callgrind
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis
from rich.console import Console
from rich.table import Table

from bench._harness import free_port, start_server
from bench.batches_ab import new_batch, round_trip, variants
from bench.redis_servers import redis_server

ROUND_TRIPS = ("evalsha", "fcall")


class Callgrind:
    """A redis-server under callgrind (AOF on, as ``redis_servers.redis_server``)."""

    def __init__(self, process: subprocess.Popen[bytes], folder: pathlib.Path) -> None:
        self.process = process
        self.folder = folder
        self.dumps = 0

    def _control(self, option: str) -> None:
        subprocess.run(["callgrind_control", option, str(self.process.pid)], check=True,
                       stdout=subprocess.DEVNULL, timeout=60)  # fmt: skip

    def zero(self) -> None:
        self._control("-z")

    def instructions(self) -> int:
        """Instructions Redis ran since the last ``zero``."""
        self._control("-d")
        self.dumps += 1
        dump = self.folder / f"cg.{self.process.pid}.{self.dumps}"
        for line in dump.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {dump}")


@contextlib.contextmanager
def redis_callgrind() -> Iterator[tuple[str, Callgrind]]:
    if shutil.which("valgrind") is None or shutil.which("redis-server") is None:
        raise SystemExit("--callgrind needs valgrind and redis-server")
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-callgrind-") as tmp:
        port = free_port()
        args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p",
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(300):  # valgrind takes a few seconds to start Redis
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            client.close()
            yield f"redis://127.0.0.1:{port}/0", Callgrind(process, pathlib.Path(tmp))
        finally:
            process.terminate()
            process.wait(60)


def _calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def measure(jobs: int, src: str | None, callgrind: bool) -> dict[str, dict[str, float]]:
    """Commands per job by variant (and ``instructions``, with ``callgrind``), against a
    server running ``src`` (None: this one)."""
    found: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        grind: Callgrind | None = None
        if callgrind:
            url, grind = stack.enter_context(redis_callgrind())
        else:
            url = stack.enter_context(redis_server())
        server = stack.enter_context(start_server(url, {"PYTHONPATH": src} if src else None))
        client = redis.Redis.from_url(url)
        bid = asyncio.run(new_batch(server.url))
        for name, (target, custom) in variants(server.url, bid).items():
            # scripts loaded, queues known, and past 128 marks and batch jobs: their hash and
            # sorted set are then hash tables and skip lists, as in any real Redis (a small
            # listpack costs each lookup a scan, far more than a job's steady cost)
            asyncio.run(round_trip(target, 200, custom, 1))
            before = _calls(client)
            if grind is not None:
                grind.zero()
            asyncio.run(round_trip(target, jobs, custom, 1))
            ran = grind.instructions() if grind is not None else 0
            after = _calls(client)
            found[name] = {
                command: (count - before.get(command, 0)) / jobs
                for command, count in after.items()
                if command != "info" and count - before.get(command, 0) >= jobs / 100
            }
            if grind is not None:  # less INFO's own (one, ~0.1% of a variant's)
                found[name]["instructions"] = ran / jobs
        client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--baseline", help="the src/ directory of another checkout")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count Redis's instructions (valgrind; slow)")  # fmt: skip
    args = parser.parse_args()
    trees = {"": None, " (baseline)": args.baseline} if args.baseline else {"": None}
    table = Table(title=f"Redis commands per job, {args.jobs} jobs a variant, one connection")
    columns = ["variant", "round trips (EVALSHA, FCALL)", "commands in all"]
    columns += ["instructions"] if args.callgrind else []
    for column in [*columns, "of which"]:
        table.add_column(column, justify="left" if column in ("variant", "of which") else "right")
    for suffix, src in trees.items():
        for name, calls in measure(args.jobs, src, args.callgrind).items():
            ran = calls.pop("instructions", 0.0)
            detail = " ".join(f"{c}={n:.1f}" for c, n in sorted(calls.items()))
            row = [name + suffix, f"{sum(calls.get(c, 0) for c in ROUND_TRIPS):.2f}"]
            row.append(f"{sum(calls.values()):.1f}")
            row += [f"{ran / 1000:,.0f}k"] if args.callgrind else []
            table.add_row(*row, detail)
    Console().print(table)


if __name__ == "__main__":
    main()
