"""A real, small filesystem that tests can fill up: an 8 MiB tmpfs mounted for one test.

Fixture ``small_disk``: a mounted ``SmallDisk`` (``.path`` is its root); ``fill()`` takes every
free byte with a filler file, so the next write that needs a new block fails with ENOSPC,
exactly as on a full disk; ``free()`` deletes the filler. Unmounted at teardown.

Mounting needs root (or password-less sudo). Without it the test is skipped locally with the
reason, and FAILS when ``CI=true`` (tests/support/services.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import require

_CHUNK = 64 * 1024
_PAGE = 4096


def _privileged(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    return subprocess.run(command, capture_output=True, timeout=30, check=False)


class SmallDisk:
    def __init__(self, path: Path, size_mib: int = 8) -> None:
        self.path = path
        self.size_mib = size_mib
        self.filler = path / "filler"
        self.mounted = False

    def mount(self) -> str:
        """Mount the tmpfs; returns "" on success, else why it could not."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            done = _privileged(
                ["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m", "tmpfs", str(self.path)]
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
        if done.returncode != 0:
            return done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        self.mounted = True
        return ""

    def unmount(self) -> None:
        if self.mounted:
            _privileged(["umount", "-l", str(self.path)])
            self.mounted = False

    def fill(self) -> int:
        """Write the filler until the filesystem is full; returns the bytes it took."""
        written = 0
        with open(self.filler, "ab", buffering=0) as out:
            for size in (_CHUNK, _PAGE, 512, 1):
                block = b"\0" * size
                while True:
                    try:
                        written += out.write(block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "small-disk")
    problem = disk.mount()
    require(not problem, f"cannot mount an 8 MiB tmpfs (needs root): {problem}")
    try:
        yield disk
    finally:
        disk.free()
        disk.unmount()
