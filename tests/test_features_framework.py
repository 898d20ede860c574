"""The feature framework (``conveyor.manager.features``): configuration from the TOML file and
its ``conf.d/``, the PUSH fast-path gate, background loops, and reload on SIGHUP."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import pytest

from conveyor.config import ConfigError, ServerConfig, load_config
from conveyor.job import Job
from conveyor.manager import Manager, ManagerConfig, PushContext
from conveyor.manager.features import Feature, Loop, registry
from conveyor.manager.middleware import Next
from conveyor.server.app import run
from conveyor.store import open_store
from tests.support.manager import encode, job


class Marker(Feature):
    """A test feature: tags the jobs that carry ``custom.mark`` and counts its loop's runs."""

    name = "marker"
    tables = ("marker",)

    def __init__(self, tag: str = "default") -> None:
        self.tag = tag
        self.loop_runs = 0
        self.seen: list[str] = []

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> Self:
        table = tables.get("marker", {})
        tag = table.get("tag", "default")
        if not isinstance(tag, str):
            raise ConfigError(f"[marker] tag must be a string, not {tag!r}")
        return cls(tag)

    def reconfigure(self, new: Self) -> None:
        self.tag = new.tag

    def wants_push(self, job: Job) -> bool:
        return bool(job.custom and "mark" in job.custom)

    async def push(self, ctx: PushContext, call_next: Next) -> None:
        self.seen.append(ctx.job.jid)
        if ctx.job.custom is not None and "mark" in ctx.job.custom:
            ctx.job.custom["mark"] = self.tag
        await call_next()

    def loops(self) -> list[Loop]:
        return [Loop("marker", 0.01, self._tick)]

    async def _tick(self) -> None:
        self.loop_runs += 1


@pytest.fixture
def marker_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "FEATURES", (Marker,))
    monkeypatch.setattr(registry, "FEATURE_TABLES", frozenset({"marker"}))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.usefixtures("marker_registered")
def test_feature_tables_come_from_the_file_and_conf_d_merged(tmp_path: Path) -> None:
    config_file = write(tmp_path / "conveyor.toml", '[marker]\ntag = "a"\n[[marker.rules]]\nn=1\n')
    write(tmp_path / "conf.d" / "10-more.toml", "[[marker.rules]]\nn = 2\n")
    write(tmp_path / "conf.d" / "20-other.toml", '[marker.extra]\nx = "y"\n')
    config = load_config({"config": str(config_file)}, environ={})
    assert config.features == {
        "marker": {"tag": "a", "rules": [{"n": 1}, {"n": 2}], "extra": {"x": "y"}}
    }
    (feature,) = config.build_features()
    assert isinstance(feature, Marker)
    assert feature.tag == "a"


@pytest.mark.usefixtures("marker_registered")
def test_one_key_set_in_two_files_names_both(tmp_path: Path) -> None:
    config_file = write(tmp_path / "conveyor.toml", '[marker]\ntag = "a"\n')
    clash = write(tmp_path / "conf.d" / "clash.toml", '[marker]\ntag = "b"\n')
    with pytest.raises(ConfigError) as caught:
        load_config({"config": str(config_file)}, environ={})
    assert str(caught.value) == f"{clash}: marker.tag is set in {config_file} already"


@pytest.mark.usefixtures("marker_registered")
def test_a_bad_feature_value_stops_loading_with_the_features_message(tmp_path: Path) -> None:
    config_file = write(tmp_path / "conveyor.toml", "[marker]\ntag = 5\n")
    with pytest.raises(ConfigError, match=r"\[marker\] tag must be a string, not 5"):
        load_config({"config": str(config_file)}, environ={})


@pytest.mark.usefixtures("marker_registered")
def test_unknown_tables_are_refused_with_the_known_ones_listed(tmp_path: Path) -> None:
    config_file = write(tmp_path / "conveyor.toml", "[throttle]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown table or key throttle \(known: .*\[marker\]"):
        load_config({"config": str(config_file)}, environ={})


async def test_jobs_no_feature_wants_skip_its_hook_and_the_others_run_it_at_once() -> None:
    marker = Marker("tagged")
    manager = Manager(open_store("memory://"), ManagerConfig(), features=[marker])
    await manager.start()
    try:
        plain = job()
        durable = manager.push_now(encode(plain))  # done at once; what is left: the commit
        assert durable is not None
        await durable
        assert marker.seen == []
        marked = job(custom={"mark": "?"})
        durable = manager.push_now(encode(marked))  # the hook ran in this very step
        assert durable is not None
        assert marker.seen == [marked["jid"]]
        await durable
        fetched = [await manager.fetch(["default"], wait=0) for _ in range(2)]
        assert [item is not None for item in fetched] == [True, True]
        assert b'"mark":"tagged"' in (fetched[1] or b"")
    finally:
        await manager.stop()


async def test_feature_loops_run_with_the_managers_own() -> None:
    marker = Marker()
    manager = Manager(open_store("memory://"), ManagerConfig(), features=[marker])
    await manager.start()
    try:
        await asyncio.sleep(0.1)
        assert marker.loop_runs >= 3
    finally:
        await manager.stop()
    runs = marker.loop_runs
    await asyncio.sleep(0.05)
    assert marker.loop_runs == runs  # stopped with the manager


@pytest.mark.usefixtures("marker_registered")
async def test_sighup_reloads_feature_settings_and_keeps_them_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_file = write(tmp_path / "conveyor.toml", '[marker]\ntag = "first"\n')
    flags = {"config": str(config_file), "bind": "127.0.0.1:0", "web_bind": "off"}
    config = load_config({**flags, "storage": "memory://"}, environ={})
    stop = asyncio.Event()
    started: list[Manager] = []
    original_start = Manager.start

    async def spy_start(self: Manager) -> None:
        started.append(self)
        await original_start(self)

    def reload() -> ServerConfig:
        return load_config({**flags, "storage": "memory://"}, environ={})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Manager, "start", spy_start)
        server = asyncio.create_task(run(config, stop=stop, reload=reload))
        while not started:
            await asyncio.sleep(0.01)
        (feature,) = started[0].features
        assert isinstance(feature, Marker)
        assert feature.tag == "first"

        write(config_file, '[marker]\ntag = "second"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if feature.tag == "second":
                break
            await asyncio.sleep(0.01)
        assert feature.tag == "second"

        write(config_file, "[marker]\ntag = 7\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.1)
        assert feature.tag == "second"
        assert "configuration not reloaded, the old settings stay" in caplog.text
        stop.set()
        await server
