"""Running another Faktory client as a subprocess that prints its result as JSON."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from tests.support.services import require, require_binary

NODE_PROJECT = Path(__file__).parent.parent / "interop" / "node"


def client_environ(url: str, **env: str) -> dict[str, str]:
    """This process's environment without stray FAKTORY_*/CONVEYOR_* settings, plus ours."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FAKTORY_", "CONVEYOR_"))}
    environ.update(FAKTORY_URL=url, **env)
    return environ


async def run_json(
    *command: str, env: dict[str, str], cwd: Path | None = None, within: float = 45.0
) -> dict[str, Any]:
    """Run ``command``; it must exit 0, and its last stdout line is the JSON result."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def run_node(script: str, *args: str, url: str, **env: str) -> dict[str, Any]:
    """Run a script of tests/interop/node (npm faktory-worker) against ``url``."""
    node = require_binary("node")
    require(
        (NODE_PROJECT / "node_modules" / "faktory-worker").is_dir(),
        f"faktory-worker is not installed: run `npm ci` in {NODE_PROJECT}",
    )
    return await run_json(node, script, *args, env=client_environ(url, **env), cwd=NODE_PROJECT)
