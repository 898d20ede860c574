"""Faktory's load-test shape, side by side: conveyor (SQLite, Redis) and real Faktory.

    python -m bench.load_shape                                   # conveyor's two stores
    python -m bench.load_shape --faktory-bin PATH --faktory-load-bin PATH --rounds 5
    python -m bench.load_shape --profile /tmp/prof               # then py-spy on conveyor

The workload is Faktory's own load generator (``test/load`` in contribsys/faktory, ``make
load``): 30,000 jobs over 10 connections, 5 PUSHing and 5 FETCHing + ACKing (1 % FAIL), 5
queues, one command in flight per connection, rate = jobs / wall time. Two drivers speak it:

- ``fwp_load``, our own small C program (``bench/fwp_load.c``, built here with the C
  compiler on first use): the same commands and job bytes as the tool, for a fraction of its
  CPU; its own CPU is measured (``wait4``) and reported, never subtracted;
- the real tool, when its binary is given (``--faktory-load-bin``).

Each server is started fresh for every run and stopped after it; runs alternate between the
servers (the order rotates each round) so drift on a shared machine hits all of them. Server
CPU comes from ``/proc/PID/stat`` (the process and its reaped children) before and after the
run: conveyor's server, the private ``redis-server`` of its Redis store, Faktory and the
``redis-server`` it starts as its child. Nothing here is a test; no timed assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import load_profile
from bench._harness import free_port, start_server, wait_for_port, write_doc
from bench.load_report import markdown
from bench.rows import ROOT

SOURCE = ROOT / "bench" / "fwp_load.c"
BUILD_DIR = ROOT / "bench" / ".build"
DOC_MARKERS = ("<!-- load-shape:start -->", "<!-- load-shape:end -->")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OURS, THE_TOOL = "fwp_load", "faktory load tool"


class DriverUnavailable(RuntimeError):
    """No C compiler to build ``fwp_load`` with."""


def build_driver(out_dir: Path = BUILD_DIR) -> Path:
    """Compile ``bench/fwp_load.c`` unless an up-to-date binary is already there."""
    binary = out_dir / "fwp_load"
    if binary.exists() and binary.stat().st_mtime >= SOURCE.stat().st_mtime:
        return binary
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise DriverUnavailable("no C compiler (cc or gcc) to build bench/fwp_load.c")
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"fwp_load.{os.getpid()}"
    subprocess.run(
        [compiler, "-O2", "-pthread", "-Wall", "-Wextra", "-o", str(partial), str(SOURCE)],
        check=True,
    )
    partial.replace(binary)  # atomic: two runs building at once never see half a binary
    return binary


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its children it has reaped (a Redis BGSAVE)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


@dataclass
class Running:
    """A server under test: its port, and the processes whose CPU is its cost."""

    port: int
    server_pid: int
    store_pid: int | None = None  # the redis-server behind it, if any


# -- servers -------------------------------------------------------------------------------------


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def redis_server(
    directory: Path, unix: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A private redis-server configured as docs/redis.md advises (AOF, fsync every second),
    and the store URL that reaches it: over TCP, or with ``unix`` through its Unix socket
    (``redis+unix://``), the way Faktory reaches the Redis it starts."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port, socket = free_port(), directory / "redis.sock"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction"]  # fmt: skip
    if unix:
        args += ["--unixsocket", str(socket), "--unixsocketperm", "700"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, "redis-server")
        yield process, f"redis+unix://{socket}" if unix else f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


@contextlib.contextmanager
def floor_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``bench/fwp_floor.py``: a Python FWP server doing nothing but answer (the floor)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.fwp_floor", "--port", str(port)]
    process = subprocess.Popen(args, cwd=ROOT)
    try:
        wait_for_port(port, process, "the floor server")
        yield process, port
    finally:
        _stop(process)


@contextlib.contextmanager
def conveyor(store: str, env: dict[str, str] | None) -> Iterator[Running]:
    if store == "floor":
        with floor_server() as (process, port):
            yield Running(port, process.pid)
        return
    if store in ("sqlite", "memory"):  # memory: no storage at all, the floor of the rest
        with start_server(None if store == "sqlite" else "memory://", env) as server:
            yield Running(server.port, server.process.pid)
        return
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-load-redis-") as tmp,
        redis_server(Path(tmp), unix=store == "redis-unix") as (redis, url),
        start_server(url, env) as server,
    ):
        yield Running(server.port, server.process.pid, redis.pid)


@contextlib.contextmanager
def faktory(binary: str) -> Iterator[Running]:
    """Real Faktory, development mode (no password), storage and config in a temp dir.

    Faktory starts its own redis-server as a child, on a Unix socket in the storage dir.
    """
    with tempfile.TemporaryDirectory(prefix="faktory-load-") as tmp:
        port, web = free_port(), free_port()
        (Path(tmp) / "conf").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAKTORY_")}
        args = [binary, "-b", f"127.0.0.1:{port}", "-w", f"127.0.0.1:{web}", "-e", "development",
                "-d", f"{tmp}/db", "-c", f"{tmp}/conf", "-l", "warn"]  # fmt: skip
        process = subprocess.Popen(
            args, env={**env, "HOME": tmp}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port, process, "faktory")
            redis = [p for p in children(process.pid) if "redis" in _comm(p)]
            yield Running(port, process.pid, redis[0] if redis else None)
        finally:
            _stop(process)


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
        return f.read().strip()
    return ""


# -- drivers -------------------------------------------------------------------------------------


@dataclass
class DriverRun:
    jobs_per_s: float
    seconds: float
    cpu_s: float
    detail: dict[str, object] = field(default_factory=dict)
    error: str | None = None


TOOL_LINE = re.compile(
    r"Processed (\d+) pushes and (\d+) pops in ([\d.]+) seconds, rate: ([\d.]+) jobs/s"
)


def _run(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str, float]:
    """Run a driver to its end; returns exit code, stdout, stderr and its CPU (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return process.returncode, out.read().decode(), err.read().decode(), cpu


def run_ours(
    binary: Path, port: int, jobs: int, connections: int, timeout: float, *extra: str
) -> DriverRun:
    """``fwp_load`` to its end; ``extra``: more of its flags (``--results``)."""
    args = [str(binary), "--port", str(port), "--jobs", str(jobs),
            "--connections", str(connections), "--timeout", str(timeout), *extra]  # fmt: skip
    code, out, err, cpu = _run(args, dict(os.environ), timeout + 30)
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return DriverRun(0.0, 0.0, cpu, error=f"fwp_load exited {code}: {err.strip()[-300:]}")
    error = None if code == 0 else f"fwp_load exited {code}: {err.strip()[-300:]}"
    return DriverRun(report["jobs_per_s"], report["seconds"], cpu, report, error)


def run_tool(binary: str, port: int, jobs: int, connections: int, timeout: float) -> DriverRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKTORY_")}
    env["FAKTORY_URL"] = f"tcp://127.0.0.1:{port}"
    code, out, err, cpu = _run([binary, str(jobs), str(connections)], env, timeout)
    match = TOOL_LINE.search(out)
    # the tool prints each error it meets and goes on; anything but its two lines is one
    noise = [line for line in out.splitlines() if line and not line.startswith(("Running", "Proc"))]
    if match is None:
        return DriverRun(0.0, 0.0, cpu, error=f"load tool exited {code}: {(out + err)[-300:]}")
    pushes, pops, seconds, rate = match.groups()
    detail: dict[str, object] = {"pushes": int(pushes), "fetches": int(pops), "errors": len(noise)}
    error = f"load tool printed {len(noise)} errors: {noise[0][:200]}" if noise else None
    return DriverRun(float(rate), float(seconds), cpu, detail, error)


# -- rounds --------------------------------------------------------------------------------------


@dataclass
class Sample:
    round: int
    target: str
    driver: str
    jobs: int
    jobs_per_s: float
    seconds: float
    server_cpu_s: float
    store_cpu_s: float | None
    driver_cpu_s: float
    load_avg: float
    """The 1-minute load average just before the server started (2 cores: 2.0 is full)."""
    detail: dict[str, object] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Plan:
    jobs: int = 30_000
    connections: int = 10
    rounds: int = 3
    timeout: float = 120.0
    targets: tuple[str, ...] = ("conveyor-sqlite", "conveyor-redis")
    drivers: tuple[str, ...] = (OURS,)
    faktory_bin: str | None = None
    faktory_load_bin: str | None = None
    env: dict[str, str] | None = None
    """Environment of conveyor's servers (PYTHONPATH of the tree measured)."""


def start(plan: Plan, target: str) -> contextlib.AbstractContextManager[Running]:
    if target == "faktory":
        assert plan.faktory_bin is not None
        return faktory(plan.faktory_bin)
    return conveyor(target.removeprefix("conveyor-"), plan.env)


def drive(plan: Plan, driver: str, port: int, binary: Path | None) -> DriverRun:
    if driver == OURS:
        assert binary is not None
        return run_ours(binary, port, plan.jobs, plan.connections, plan.timeout)
    assert plan.faktory_load_bin is not None
    return run_tool(plan.faktory_load_bin, port, plan.jobs, plan.connections, plan.timeout)


def one_run(plan: Plan, target: str, driver: str, index: int, binary: Path | None) -> Sample:
    load = os.getloadavg()[0]
    with start(plan, target) as server:
        pids = [server.server_pid, server.store_pid]
        before = [cpu_seconds(p) if p else 0.0 for p in pids]
        run = drive(plan, driver, server.port, binary)
        after = [cpu_seconds(p) if p else 0.0 for p in pids]
    server_cpu, store_cpu = (b - a for a, b in zip(before, after, strict=True))
    return Sample(
        index, target, driver, plan.jobs, run.jobs_per_s, run.seconds, server_cpu,
        store_cpu if server.store_pid else None, run.cpu_s, load, run.detail, run.error,
    )  # fmt: skip


def pairs(plan: Plan, index: int) -> list[tuple[str, str]]:
    """This round's runs: targets alternate within each driver; the order rotates per round."""
    order = [(t, d) for d in plan.drivers for t in plan.targets]
    shift = index % len(order)
    return order[shift:] + order[:shift]


def measure(plan: Plan, say: Callable[[str], None]) -> list[Sample]:
    binary = build_driver() if OURS in plan.drivers else None
    samples = []
    for index in range(plan.rounds):
        for target, driver in pairs(plan, index):
            sample = one_run(plan, target, driver, index + 1, binary)
            samples.append(sample)
            cost = (sample.server_cpu_s + (sample.store_cpu_s or 0.0)) / plan.jobs * 1e6
            say(
                f"round {index + 1} {target:16} {driver:17} {sample.jobs_per_s:8,.0f} jobs/s "
                f"server {cost:5.0f} µs/job  load {sample.load_avg:.2f}"
                + (f"  ERROR {sample.error}" if sample.error else "")
            )
    return samples


# -- command line --------------------------------------------------------------------------------


def _version(binary: str | None) -> str:
    if binary is None:
        return ""
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return next((ln for ln in (done.stdout + done.stderr).splitlines() if "Faktory" in ln), "?")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load_shape", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add = parser.add_argument
    add("--jobs", type=int, default=30_000, help="jobs per run (the tool's default)")
    add("--connections", type=int, default=10, help="even ones push, odd ones fetch")
    add("--rounds", type=int, default=3, help="alternating rounds")
    add("--timeout", type=float, default=120.0, help="longest run, seconds")
    add("--stores", default="sqlite,redis",
        help="conveyor's stores: sqlite, redis, redis-unix (its Redis through a Unix "
             "socket, as Faktory's), memory (keeps nothing), floor (bench/fwp_floor.py: a "
             "Python server that only answers)")  # fmt: skip
    add("--faktory-bin", help="a real Faktory server binary to compare with")
    add("--faktory-load-bin", help="Faktory's own load tool (test/load), built from source")
    add("--no-ours", action="store_true", help="skip fwp_load (only the real tool drives)")
    add("--tree", choices=("committed", "working"), default="committed",
        help="conveyor to measure: the last commit (default) or the working tree")  # fmt: skip
    add("--profile", type=Path, help="after the rounds, profile each conveyor store into DIR")
    add("--profilers", default="py-spy,perf",
        help="py-spy and/or perf (perf: only when installed)")  # fmt: skip
    add("--doc", type=Path, help="write the results block into this page (docs/benchmarks.md)")
    add("--json", type=Path, default=ROOT / "bench" / "results" / "load_shape.json")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace, env: dict[str, str] | None) -> Plan:
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    targets = tuple(f"conveyor-{s}" for s in stores) + (("faktory",) if args.faktory_bin else ())
    drivers = (() if args.no_ours else (OURS,)) + ((THE_TOOL,) if args.faktory_load_bin else ())
    if not drivers:
        raise SystemExit("no driver: drop --no-ours or give --faktory-load-bin")
    return Plan(args.jobs, args.connections, args.rounds, args.timeout, targets, drivers,
                args.faktory_bin, args.faktory_load_bin, env)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from bench.__main__ import conveyor_tree, environment_lines

    with conveyor_tree(args.tree) as src:
        plan = plan_from(args, {"PYTHONPATH": src} if src else None)
        samples = measure(plan, lambda text: print(f"[load] {text}", file=sys.stderr, flush=True))
        profiles = []
        wanted = [p.strip() for p in args.profilers.split(",") if p.strip()]
        for profiler in wanted if args.profile else ():
            if profiler == "perf" and load_profile.available("perf") is None:
                print("[load] perf is not installed: no perf profile", file=sys.stderr)
                continue
            for target in (t for t in plan.targets if t.startswith("conveyor")):
                print(f"[load] {profiler} on {target} ...", file=sys.stderr, flush=True)
                profiles.append(load_profile.record(plan, target, profiler, args.profile))
        conditions = environment_lines(src, ["python", "-m", "bench.load_shape", *sys.argv[1:]])
    faktory_version = _version(args.faktory_bin)
    if faktory_version:
        conditions.append(f"- real Faktory: {faktory_version} (`{args.faktory_bin}`)")
    body = markdown(plan, samples, conditions)
    for path, sample in profiles:
        body += "\n" + load_profile.markdown(path, sample)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(
        {"plan": {k: v for k, v in asdict(plan).items() if k != "env"},
         "samples": [asdict(s) for s in samples],
         "profiles": [{"path": str(p), "sample": asdict(s)} for p, s in profiles]}, indent=1,
    ))  # fmt: skip
    if args.doc:
        write_doc(args.doc, "\n" + body + "\n", DOC_MARKERS)
    print(body)


if __name__ == "__main__":
    main()
