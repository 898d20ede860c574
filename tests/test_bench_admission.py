"""bench/admission_bench.py and bench/admission_micro.py run every workload with a tiny N (no
timings checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_admission_bench_measures_every_workload() -> None:
    args = [sys.executable, "-m", "bench.admission_bench", "--jobs", "300", "--repeat", "1"]
    args += ["--wait-seconds", "0.3"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    for workload in (
        "PUSH unique_for",
        "FETCH+ACK throttled",
        "FETCH+ACK rate-limited",
        "CPU waiting, throttle full",
        "CPU waiting, bucket empty",
    ):
        assert workload in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_admission_micro_bench_measures_every_path() -> None:
    args = [sys.executable, "-m", "bench.admission_micro", "--rounds", "1", "--ops", "100"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    for workload in ("push unique", "fetch+ack throttled", "fetch+ack paced"):
        assert workload in done.stdout, done.stdout
