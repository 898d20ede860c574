"""The deployment files in deploy/, checked as far as this machine allows: there is no Docker
engine here, so the images are not built. Each file is parsed; every path it copies or mounts
exists; every command it runs is a valid ``conveyor`` command line; every setting it passes is
one conveyor reads; the systemd units pass ``systemd-analyze verify``."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from conveyor.cli import main as conveyor_cli
from conveyor.config import DISABLED_WORDS, MANAGER_KEYS, SERVER_KEYS, load_config
from conveyor.metrics.config import METRICS_KEYS
from conveyor.web.app import ROUTES
from conveyor.web.security import PUBLIC_PATHS
from conveyor.worker.settings import WORKER_KEYS, env_name, read_worker_table
from tests.support.services import require_binary

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"

KNOWN_ENV = (
    {f"CONVEYOR_{key.upper()}" for key in (*SERVER_KEYS, *MANAGER_KEYS)}
    | {f"CONVEYOR_METRICS_{key.upper()}" for key in METRICS_KEYS}
    | {env_name(key) for key in WORKER_KEYS}
    | {"CONVEYOR_CONFIG", "CONVEYOR_DATA_DIR", "CONVEYOR_URL", "FAKTORY_URL", "FAKTORY_PASSWORD"}
    | {"CONVEYOR_PASSWORD", "DD_DOGSTATSD_URL", "PYTHONUNBUFFERED", "PYTHONPATH"}
)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, f"{dockerfile}: a continuation runs off the end"
    parsed = []
    for line in joined:
        word, _, rest = line.partition(" ")
        parsed.append((word.upper(), rest.strip()))
    return parsed


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not the exec form: {arguments}"
    return [str(v) for v in value]


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(arguments))


def parses(argv: list[str]) -> click.Context:
    """``argv`` (without the program name) is a valid conveyor command line."""
    name, *rest = argv
    command = conveyor_cli.get_command(click.Context(conveyor_cli), name)
    assert command is not None, f"no conveyor command {name!r}"
    return command.make_context(name, list(rest))


def test_server_image() -> None:
    steps = instructions(DEPLOY / "Dockerfile")
    stages = [args.split()[-1] for word, args in steps if word == "FROM" and " AS " in args]
    for word, args in steps:
        if word == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            if "--from=" in args:
                assert args.split("--from=")[1].split()[0] in stages
                continue
            for source in parts[:-1]:  # the build context is the repository root
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
    env = {k: v for word, args in steps if word == "ENV" for k, v in env_pairs(args).items()}
    assert set(env) <= KNOWN_ENV, set(env) - KNOWN_ENV
    config = load_config({}, {**env, "CONVEYOR_DATA_DIR": "/tmp"})
    exposed = {int(p) for word, args in steps if word == "EXPOSE" for p in args.split()}
    assert exposed == {config.port, config.web_port}
    assert config.host == config.web_host == "0.0.0.0"
    (health,) = [args for word, args in steps if word == "HEALTHCHECK"]
    path = health.split(f":{config.web_port}")[1].split("'")[0]
    assert path in PUBLIC_PATHS
    assert any(getattr(route, "path", None) == path for route in ROUTES)
    entrypoint = exec_form(next(a for w, a in steps if w == "ENTRYPOINT"))
    command = exec_form(next(a for w, a in steps if w == "CMD"))
    assert entrypoint == ["conveyor"]
    parses(command)


def test_worker_image_recipe() -> None:
    steps = instructions(DEPLOY / "worker.Dockerfile")
    env = {k: v for word, args in steps if word == "ENV" for k, v in env_pairs(args).items()}
    assert set(env) <= KNOWN_ENV, set(env) - KNOWN_ENV
    assert env["CONVEYOR_WORKER_LOG_FORMAT"] in ("text", "json")
    port = int(env["CONVEYOR_WORKER_METRICS_BIND"].rsplit(":", 1)[1])
    assert [int(a) for w, a in steps if w == "EXPOSE"] == [port]
    argv = [*exec_form(next(a for w, a in steps if w == "ENTRYPOINT"))[1:]]
    argv += exec_form(next(a for w, a in steps if w == "CMD"))
    assert parses(argv).params["app_path"] == "myapp.jobs:app"


def test_compose_file() -> None:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = document["services"]
    assert set(services) == {"redis", "conveyor", "worker"}
    build = services["conveyor"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for name, service in services.items():
        for key in service.get("environment", {}):
            assert name == "redis" or key in KNOWN_ENV, f"{name}: {key}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}: no such path"
        for dependency in service.get("depends_on", []):
            assert dependency in services
    assert set(document.get("volumes", {})) >= {"redis-data"}
    storage = services["conveyor"]["environment"]["CONVEYOR_STORAGE"]
    assert storage.startswith("redis://redis:")
    worker = services["worker"]
    assert worker["image"] == services["conveyor"]["image"]
    context = parses(worker["command"])
    assert context.params["app_path"] == "examples.shop.jobs:app"
    mounted = dict(v.split(":")[:2] for v in worker["volumes"])
    assert mounted["../examples"] == f"{worker['working_dir']}/examples"
    assert worker["environment"]["CONVEYOR_URL"] == "tcp://conveyor:7419"
    from conveyor.worker.cli import load_app

    assert load_app("examples.shop.jobs:app").jobs  # the app the worker service runs


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / name)
    return parser


@pytest.mark.parametrize(
    ("name", "command"), [("conveyor.service", "server"), ("conveyor-worker.service", "worker")]
)
def test_systemd_units(name: str, command: str, tmp_path: Path) -> None:
    service = unit(name)["Service"]
    program, *argv = shlex.split(service["ExecStart"])
    assert program.endswith("/bin/conveyor")
    assert argv[0] == command
    at = argv.index("--config") + 1
    assert argv[at] == "/etc/conveyor/conveyor.toml"
    argv[at] = str(DEPLOY / "conveyor.toml")  # the example of that file
    parses(argv)
    if command == "worker":
        assert service["KillMode"] == "mixed"  # TERM to the parent only: it forwards it
        assert float(service["TimeoutStopSec"]) > 25.0  # more than the default grace
    # systemd's own check, on copies whose programs exist on this machine
    analyze = require_binary("systemd-analyze")
    text = (DEPLOY / "systemd" / name).read_text().replace(program, shutil.which("true") or "")
    text = text.replace("WorkingDirectory=/opt/myapp", f"WorkingDirectory={tmp_path}")
    copy = tmp_path / name
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr  # no unknown keys, no bad values


def test_example_config_file(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    text = (DEPLOY / "conveyor.toml").read_text().replace("/etc/conveyor/password", str(password))
    config_file = tmp_path / "conveyor.toml"
    config_file.write_text(text)
    config = load_config({"config": str(config_file)}, {})
    assert config.password == "s3cret"
    assert config.storage == "sqlite:////var/lib/conveyor/conveyor.db"
    assert config.web_bind is not None
    assert config.web_bind.lower() not in DISABLED_WORDS
    worker = read_worker_table(config_file)
    assert worker["app_path"] == "myapp.jobs:app"
    assert worker["queues"] == ["critical:3", "default:1"]
