"""The manager's own cost of a PUSH and a FETCH+ACK, with and without the admission features.

    python -m bench.admission_micro                                  # the targets, 7 rounds
    python -m bench.admission_micro --baseline /tmp/main/src         # + plain paths vs main

``bench/admission_bench.py`` measures whole servers over loopback, where the machine's load
(and the client) move the numbers by 2x between rounds. This measures the manager alone, in
one process over a SQLite file, in CPU seconds of that process (``time.process_time``): what
the server spends per job, which other processes on the machine disturb far less. Each round
runs every variant in a fresh subprocess, in turn; the table shows medians and ratios.

"plain" is a manager with the default features and no limits configured (the paths that must
not slow down); "other" is a plain queue of a manager whose ``TABLES`` limit other queues, the
reference of the features' workloads. PUSH, FETCH and ACK take the path the server's take
(``push_now``, ``fetch_now``, ``ack_now``, else the long way). Each job's push or FETCH+ACK
waits for its own commit here (one at a time) only where the long way awaits it, unlike a
server's group commit: what a job writes weighs more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TABLES = {
    "throttles": {"throttled": {"concurrency": 100000, "timeout": 600}},
    "queues": {"paced": {"rate_limit": 1000000, "burst": 1000000}},
}


def _payload(queue: str, n: int, custom: dict[str, object] | None = None) -> bytes:
    job: dict[str, object] = {"jid": uuid.uuid4().hex, "jobtype": "Noop", "args": [n, "a"]}
    job["queue"] = queue
    if custom:
        job["custom"] = custom
    return json.dumps(job).encode()


async def _measure(kind: str, ops: int, directory: str) -> dict[str, float]:
    """A manager with the default features (the paths with no limit configured), then, for the
    branch, one configured with ``TABLES`` (limited queues beside plain ones)."""
    from conveyor.manager import Manager, ManagerConfig
    from conveyor.store import open_store

    plain = Manager(open_store(f"sqlite:///{directory}/plain.db"), ManagerConfig())
    results = await _run_plans(plain, ops, [("push", "plain", None), ("fetch", "plain", None)])
    if kind == "branch":
        from conveyor.manager.features.registry import build_features

        store = open_store(f"sqlite:///{directory}/limited.db")
        limited = Manager(store, ManagerConfig(), features=build_features(TABLES))
        plans = [
            ("push", "other", None),
            ("fetch", "other", None),
            ("push", "unique", {"unique_for": 3600}),
            ("push", "throttled", None),
            ("fetch", "throttled", None),
            ("push", "paced", None),
            ("fetch", "paced", None),
        ]
        results.update(await _run_plans(limited, ops, plans))
    return results


async def _run_plans(
    manager: Any, ops: int, plans: list[tuple[str, str, dict[str, object] | None]]
) -> dict[str, float]:
    await manager.start()
    results: dict[str, float] = {}
    for what, queue, custom in plans:
        if what == "push":
            payloads = [_payload(queue, n, custom) for n in range(ops)]
            started = time.process_time()
            for payload in payloads:
                rest = manager.push_now(payload)
                await (rest if rest is not None else manager.push(payload))
            results[f"push {queue}"] = (time.process_time() - started) / ops
        else:
            started = time.process_time()
            for _ in range(ops):
                job = await _fetch(manager, queue)
                assert job is not None
                await _ack(manager, json.loads(job)["jid"])
            results[f"fetch+ack {queue}"] = (time.process_time() - started) / ops
    await manager.stop()
    return results


async def _settled(later: Any) -> Any:
    future = asyncio.get_running_loop().create_future()

    def done(value: Any, error: BaseException | None) -> bool:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
        return True

    later.when_done(done)
    return await future


async def _fetch(manager: Any, queue: str) -> bytes | None:
    """A FETCH as the server answers it: at once where the manager can (``fetch_now``), else
    the long way (a code without ``fetch_now`` takes the long way every time)."""
    now = getattr(manager, "fetch_now", None)
    jobs = now([queue], "w1", 1) if now is not None else None
    if jobs is not None and not isinstance(jobs, list):
        jobs = await _settled(jobs)
    if jobs:
        job: bytes = jobs[0]
        return job
    return await manager.fetch([queue], "w1", wait=0)  # type: ignore[no-any-return]


async def _ack(manager: Any, jid: str) -> None:
    """An ACK as the server answers it (``ack_now``, else the long way)."""
    now = getattr(manager, "ack_now", None)
    done = now(jid) if now is not None else None
    if done is None:
        await manager.ack(jid)
    elif not isinstance(done, int):
        await _settled(done)


def _worker(kind: str, ops: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(asyncio.run(_measure(kind, ops, directory))))


def _run(kind: str, ops: int, pythonpath: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [sys.executable, "-m", "bench.admission_micro", "--worker", kind, "--ops", str(ops)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--baseline", default=None, help="src directory of the code to compare")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.ops)
        return
    samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        variants = [("branch", None)]
        if args.baseline:
            variants.insert(0, ("main", str(Path(args.baseline).resolve())))
        for label, path in variants:
            kind = "branch" if label == "branch" else "baseline"
            for name, value in _run(kind, args.ops, path).items():
                samples.setdefault(f"{name} ({label})", []).append(value)
    median = {name: statistics.median(values) for name, values in samples.items()}
    rows = [
        ("push plain (branch)", "push plain (main)", "not slower"),
        ("fetch+ack plain (branch)", "fetch+ack plain (main)", "not slower"),
        ("push unique (branch)", "push other (branch)", "<= 1.3x"),
        ("fetch+ack throttled (branch)", "fetch+ack other (branch)", "throughput >= 0.8x"),
        ("fetch+ack paced (branch)", "fetch+ack other (branch)", "throughput >= 0.8x"),
    ]
    title = f"manager CPU per job, SQLite, median of {args.rounds} rounds (ratio: of each round's)"
    table = Table(title=title)
    for column in ("workload", "CPU per job", "rounds", "vs", "CPU ratio", "target"):
        table.add_column(column, justify="left" if column in ("workload", "vs") else "right")
    for name in sorted(median):
        reference = next((r for n, r, _t in rows if n == name and r in median), None)
        target = next((t for n, r, t in rows if n == name and r in median), "")
        ratio = ""
        if reference:  # the median of the rounds' own ratios: each round's pair ran together
            pairs = zip(samples[name], samples[reference], strict=True)
            ratio = f"{statistics.median(a / b for a, b in pairs):.2f}x"
        rounds = " ".join(f"{v * 1e6:.0f}" for v in samples[name])
        table.add_row(name, f"{median[name] * 1e6:.1f} us", rounds, reference or "", ratio, target)
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
