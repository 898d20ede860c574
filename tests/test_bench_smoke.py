"""The benchmark driver's conveyor-only path runs end to end with a tiny N (no timings checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import END, START, write_doc
from bench.report import ratio, spread

from tests.support.services import require_binary

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("enqueue", "bulk", "process", "steady", "sleep", "p50", "p95", "p99", "rss_mb",
             "pss_mb")  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("redis-server")
    out = tmp_path_factory.mktemp("bench")
    args = [
        sys.executable, "-m", "bench", "--conveyor-only", "--jobs", "200", "--sleep-jobs", "40",
        "--latency-jobs", "20", "--repeat", "1", "--timeout", "20",
        "--memory-jobs", "3000",
        "--doc", str(out / "benchmarks.md"), "--plots", str(out / "plots"),
        "--json", str(out / "results.json"),
    ]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.timeout(120)
def test_conveyor_only_run_fills_every_workload(smoke_run: Path) -> None:
    data = json.loads((smoke_run / "results.json").read_text())
    rows = data["results"]
    assert [(row["name"], row["store"]) for row in rows] == [
        ("conveyor", "sqlite"),
        ("conveyor (Redis store)", "redis"),
        ("conveyor (2 processes)", "sqlite"),
    ]
    assert "`conveyor worker --processes 2 -c 32`" in rows[2]["config"]
    for row in rows:
        assert row["error"] is None
        for workload in WORKLOADS:
            assert len(row[workload]) == 1, (row["name"], workload)
            assert row[workload][0] > 0, (row["name"], workload)
    memory = data["server_memory"]
    assert memory["jobs"] == 3000
    assert memory["empty_mib"] > 0
    assert memory["queued_mib"] > 0
    assert memory["db_bytes"] > 3000 * 100  # every job is in the file, payload and all


@pytest.mark.timeout(120)
def test_conveyor_only_run_writes_well_formed_tables_and_plots(smoke_run: Path) -> None:
    page = (smoke_run / "benchmarks.md").read_text()
    assert START in page
    assert END in page
    tables = [line for line in page.splitlines() if line.startswith("|")]
    assert any(line.startswith("| **conveyor** |") for line in tables)
    assert any(line.startswith("| conveyor (Redis store) |") for line in tables)
    assert "Faktory" not in page  # the load shape runs beside real Faktory: bench.load_shape
    headers = [line for line in tables if line.startswith("| library |")]
    assert len(headers) == 3  # throughput, latency+memory, configurations
    for header in headers[:2]:
        block = page.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
        width = header.count("|")
        assert all(line.count("|") == width for line in block if line.startswith("|"))
    assert "with 3,000 jobs queued" in page
    for name in ("throughput", "enqueue", "latency", "memory"):
        picture = smoke_run / "plots" / f"{name}.png"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in page


def test_write_doc_keeps_the_hand_written_text(tmp_path: Path) -> None:
    page = tmp_path / "b.md"
    write_doc(page, "first\n")
    page.write_text("intro\n" + page.read_text().split("\n", 2)[2] + "analysis\n")
    write_doc(page, "second\n")
    text = page.read_text()
    assert text.startswith("intro\n")
    assert text.endswith("analysis\n")
    assert "second" in text
    assert "first" not in text
    assert f"{END}\n\nanalysis\n" in text  # a blank line before the text that follows


def test_spread_and_ratio_formatting() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2 (1-3)"
    assert spread([1.234], 2) == "1.23"
    assert spread([]) == "—"
    assert ratio(6.0, 2.0) == "3.00x"
    assert ratio(500.0, 2.0) == "250x"
    assert ratio(1.0, None) == "—"
    assert ratio(1.0, 0.0) == "—"


@pytest.mark.timeout(120)
def test_fuzz_run_finds_nothing_wrong() -> None:
    """``python -m bench.fuzz`` end to end with a small count (the long run is not a test)."""
    args = [sys.executable, "-m", "bench.fuzz", "--count", "600", "--seed", "11"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert done.stdout.strip().endswith("0 failures")


@pytest.mark.timeout(120)
def test_results_bench_runs_every_mode() -> None:
    """``python -m bench.results_bench`` end to end with a tiny N (no timings checked): every
    mode's row is there and the RESULT latency lines were measured, quiet and loaded."""
    args = [sys.executable, "-m", "bench.results_bench", "--jobs", "200", "--repeat", "1",
            "--latency-jobs", "5"]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    for mode in ("off", "results", "retain"):
        assert f"│ {mode} " in done.stdout, done.stdout
    text = " ".join(done.stdout.split())  # rich wraps long lines
    for load in ("quiet", "loaded"):
        assert f"ACK -> waiting RESULT answered, {load}, this checkout: p50" in text, text


@pytest.mark.timeout(120)
def test_results_micro_runs_every_mode() -> None:
    """``python -m bench.results_micro`` end to end with a tiny N: a row per workload and
    mode, each with its ratio to off."""
    args = [sys.executable, "-m", "bench.results_micro", "--jobs", "200", "--rounds", "1"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    for workload in ("FETCH+ACK", "FETCHB/ACKB x100"):
        for mode in ("off", "results", "retain"):
            assert f"│ {workload} {mode} " in done.stdout, done.stdout
    assert "│  1.00x │" in done.stdout


@pytest.mark.timeout(120)
def test_latency_raw_runs_both_sides_on_every_store() -> None:
    """``python -m bench.latency_raw`` end to end with a few probes (no timings checked): a
    line per round, side and store, then each side's medians."""
    require_binary("redis-server")
    args = [sys.executable, "-m", "bench.latency_raw", "--a", "working", "--b", "working",
            "--stores", "sqlite,redis", "--rounds", "1", "--probes", "20"]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    for key in ("A:sqlite", "B:sqlite", "A:redis", "B:redis"):
        assert f"[latency] round 1 {key} p50 " in done.stdout, done.stdout
        assert f"  {key}" in done.stdout.split("medians of the rounds")[1], done.stdout
