"""Shared pieces of the benchmarks: a private ``conveyor server`` process and statistics."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ServerProcess",
    "free_port",
    "percentile",
    "rss_kb",
    "start_server",
    "wait_for_port",
    "write_doc",
]
RESULTS_MARKERS = ("<!-- results:start -->", "<!-- results:end -->")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    process: subprocess.Popen[bytes],
    name: str = "conveyor server",
    timeout: float = 20.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} did not listen on {port}")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    storage: str

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@contextlib.contextmanager
def start_server(
    storage: str | None = None, extra_env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run ``conveyor server`` on a free port; SQLite in a temp dir unless ``storage`` says."""
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        storage = storage or f"sqlite:///{Path(tmp) / 'bench.db'}"
        port = free_port()
        env = {**os.environ, **(extra_env or {})}
        args = [
            sys.executable,
            "-m",
            "conveyor",
            "server",
            "--bind",
            f"127.0.0.1:{port}",
            "--web-bind",
            "off",
            "--storage",
            storage,
            "--log-level",
            "warning",
        ]
        process = subprocess.Popen(args, env=env)
        try:
            wait_for_port(port, process)
            yield ServerProcess(process, port, storage)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(samples: Sequence[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def write_doc(path: Path, body: str, markers: tuple[str, str] = RESULTS_MARKERS) -> None:
    """Replace the generated block of a page, keeping the hand-written text around it."""
    start, end = markers
    block = f"{start}\n{body}{end}\n"
    if path.exists() and start in (text := path.read_text()) and end in text:
        head, rest = text.split(start, 1)
        path.write_text(head + block + "\n" + rest.split(end, 1)[1].lstrip("\n"))
    elif path.exists():
        path.write_text(path.read_text().rstrip("\n") + "\n\n" + block)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Benchmarks: conveyor and its Python peers\n\n{block}")
