"""``python -m bench``: conveyor against its Python peers, side by side, in one run.

    python -m bench                      # everything (~15 min); rewrites docs/benchmarks.md
    python -m bench --conveyor-only --jobs 200 --repeat 1 --doc /tmp/b.md --plots /tmp/b

Starts a private redis-server (for the peers and for the shared job body's counter) and a
private ``conveyor server`` (SQLite store), installs the peers into ``bench/.venv-peers`` on
first use, runs every workload on every row, and writes the table, the ratios and the plots.
Nothing here is a test: there are no timed assertions anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from bench import report, server_memory
from bench._harness import RESULTS_MARKERS, free_port, rss_kb, start_server, write_doc
from bench.rows import (
    PEER_VENV,
    ROOT,
    STORE_LABELS,
    Row,
    conveyor_rows,
    ensure_peer_venv,
    peer_rows,
)
from bench.runner import RowResult, Runner, Settings, log_dir, row_bulk_api

START, END = RESULTS_MARKERS
PEER_PACKAGES = ("rq", "arq", "dramatiq", "celery", "saq", "taskiq", "taskiq-redis", "huey",
                 "streaq", "redis")  # fmt: skip


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def conveyor_tree(which: str) -> Iterator[str | None]:
    """The conveyor to measure: the last commit (default) or the working tree as it is.

    Other engineers edit src/ while a 15-minute run goes on; a half-saved module must not
    crash the worker mid-run, so by default the server and worker run a ``git archive HEAD``.
    """
    if which == "working":
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-src-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "HEAD", "src/conveyor"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield str(Path(tmp) / "src")


def _conveyor_source(src: str | None) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"commit {commit}" if src else f"working tree on top of {commit}"


def environment_lines(src: str | None, command: list[str]) -> list[str]:
    """Date, machine, versions and the command: the conditions every results block states."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor()
    )  # fmt: skip
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return [
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; conveyor {metadata.version('conveyor-jobs')} "
        f"({_conveyor_source(src)}); "
        f"redis-server {next((w[2:] for w in redis_version if w.startswith('v=')), '?')}",
        f"- command: `{shlex.join(command)}`",
    ]


def environment(rows: list[Row], src: str | None) -> list[str]:
    lines = environment_lines(src, ["python", "-m", "bench", *sys.argv[1:]])
    if any(not r.is_conveyor for r in rows):
        listing = subprocess.run(
            [str(PEER_VENV / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        versions = {p["name"].lower(): p["version"] for p in json.loads(listing)}
        pinned = ", ".join(f"{n} {versions.get(n, '?')}" for n in PEER_PACKAGES)
        lines.append(f"- peers (bench/.venv-peers): {pinned}")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--jobs", type=int, default=20_000, help="no-op jobs per enqueue/process run")
    add("--sleep-jobs", type=int, default=2_000, help="10 ms jobs per sleep run")
    add("--latency-jobs", type=int, default=500, help="probes per latency run, 5 ms apart")
    add("--repeat", type=int, default=3, help="runs of each workload (median, min, max)")
    add("--timeout", type=float, default=20.0, help="longest processing run, seconds")
    add("--sleep-timeout", type=float, default=10.0, help="longest sleep run, seconds")
    add("--conveyor-concurrency", type=int, default=64, help="conveyor worker -c")
    add("--conveyor-processes", type=int, default=1, help="conveyor worker --processes")
    add("--no-conveyor-pool", dest="conveyor_pool", action="store_false",
        help="skip the extra two-process conveyor row")  # fmt: skip
    add("--conveyor-stores", default="sqlite,redis",
        help="conveyor rows by server store (sqlite, redis); the first is compared")  # fmt: skip
    add("--memory-jobs", type=int, default=1_000_000,
        help="jobs queued to measure server memory (0: skip)")  # fmt: skip
    add("--tree", choices=("committed", "working"), default="committed",
        help="measure conveyor's last commit (default) or the working tree")  # fmt: skip
    add("--conveyor-only", action="store_true", help="skip the peers (no peer virtualenv)")
    add("--only", default="", help="comma-separated row names to run (conveyor always runs)")
    add("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    add("--plots", type=Path, default=ROOT / "docs" / "benchmarks")
    add("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with conveyor_tree(args.tree) as src:
        run(args, src)


def run(args: argparse.Namespace, src: str | None) -> None:
    stores = tuple(s.strip() for s in args.conveyor_stores.split(",") if s.strip())
    rows = conveyor_rows(
        stores, args.conveyor_concurrency, args.conveyor_processes, args.conveyor_pool
    )
    if not args.conveyor_only:
        wanted = {n.strip().lower() for n in args.only.split(",") if n.strip()}
        rows += [r for r in peer_rows() if not wanted or r.name.lower() in wanted]
        ensure_peer_venv()
    settings = Settings(args.jobs, args.sleep_jobs, args.latency_jobs, args.repeat, args.timeout)
    logs = log_dir()
    results: list[RowResult] = []
    server_env = {"PYTHONPATH": src} if src else None
    with redis_server() as redis_url, contextlib.ExitStack() as servers:
        # conveyor's Redis store gets database 1 of the peers' redis-server (they use 0)
        storage = {"sqlite": None, "redis": redis_url.rsplit("/", 1)[0] + "/1"}
        started_servers = {
            store: servers.enter_context(start_server(storage[store], extra_env=server_env))
            for store in stores
        }
        runner = Runner(
            redis_url, {k: v.url for k, v in started_servers.items()}, settings, logs, src
        )
        for row in rows:
            started = time.perf_counter()
            print(f"[bench] {row.name} ...", file=sys.stderr, flush=True)
            results.append(runner.run_row(row, row_bulk_api(row)))
            status = results[-1].error or "ok"
            print(f"[bench]   {time.perf_counter() - started:.0f} s, {status}", file=sys.stderr)
        server_rss = {k: rss_kb(v.process.pid) / 1024 for k, v in started_servers.items()}
    memory = None
    if args.memory_jobs:
        print(f"[bench] server memory, {args.memory_jobs:,} jobs queued ...", file=sys.stderr)
        memory = server_memory.run(args.memory_jobs, server_env)
    body = "\n".join(["", *environment(rows, src), ""]) + "\n" + report.markdown(results, memory)
    body += (
        "\nconveyor server RSS at the end of the run: "
        + ", ".join(f"{STORE_LABELS[store]} {mib:.1f} MiB" for store, mib in server_rss.items())
        + ".\n"
    )
    pictures = report.plots(results, args.plots)
    body += "\n" + "".join(
        f"![{p.stem}]({os.path.relpath(p, args.doc.parent)})\n" for p in pictures
    )
    write_doc(args.doc, body + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"results": [asdict(r) for r in results],
         "server_rss_mb": server_rss, "worker_logs": str(logs),
         "server_memory": asdict(memory) if memory else None}, indent=1
    ))  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
