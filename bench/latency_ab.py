"""A/B of conveyor trees on idle-worker latency: an idle FETCH woken by a PUSH, interleaved.

    python -m bench.latency_ab --a main --b working --stores sqlite,redis --rounds 5

Each round starts a fresh server of each tree and store, in turn, and runs
``bench.server_bench``'s wake-up workload on it (probes 5 ms apart, push sent -> job
fetched, conveyor's own client in this process); prints the medians over the rounds of each
round's p50, p95 and p99. Nothing here is a test; no timed assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._harness import percentile, start_server
from bench.load_ab import tree
from bench.load_shape import redis_server
from bench.server_bench import bench_wakeup


@contextlib.contextmanager
def _server(store: str, path: str) -> Iterator[str]:
    env = {"PYTHONPATH": path}
    if store == "sqlite":
        with start_server(None, env) as server:
            yield server.url
        return
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-latency-") as tmp,
        redis_server(Path(tmp)) as (_redis, port),
        start_server(f"redis://127.0.0.1:{port}/0", env) as server,
    ):
        yield server.url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--a", default="main", help="git ref, or 'working'")
    parser.add_argument("--b", default="working", help="git ref, or 'working'")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probes", type=int, default=500)
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tree(args.a) as path_a, tree(args.b) as path_b:
        sides = [("A", path_a), ("B", path_b)]
        for index in range(args.rounds):
            for store in stores:
                for side, path in sides if index % 2 == 0 else sides[::-1]:
                    with _server(store, path) as url:
                        result = asyncio.run(bench_wakeup(url, args.probes, 0.005))
                    ms = result.latencies_ms
                    figure = (percentile(ms, 0.5), percentile(ms, 0.95), percentile(ms, 0.99))
                    figures.setdefault((side, store), []).append(figure)
                    print(f"[latency] round {index + 1} {side}:{store} p50 {figure[0]:.2f} "
                          f"p95 {figure[1]:.2f} p99 {figure[2]:.2f} ms", flush=True)  # fmt: skip
    print(f"A = {args.a}, B = {args.b}; {args.rounds} rounds of {args.probes} probes 5 ms "
          "apart; medians of the rounds (min-max), ms")  # fmt: skip
    for (side, store), runs in figures.items():
        cells = []
        for i, name in enumerate(("p50", "p95", "p99")):
            values = [r[i] for r in runs]
            cells.append(f"{name} {statistics.median(values):.2f} ({min(values):.2f}-"
                         f"{max(values):.2f})")  # fmt: skip
        print(f"  {side}:{store:7} " + "  ".join(cells))


if __name__ == "__main__":
    main()
