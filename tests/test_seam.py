"""The plugin seam: what a plugin gets (a context, never the Monitor), the controls behind it,
the config section a plugin owns, and one owner per piece of state."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from bulletproof.config import Config, config_model, parse_config
from bulletproof.config_sections import plugin_sections
from bulletproof.controls import Controls
from bulletproof.errors import ConfigError, InvalidTransition, PathError, UnknownProfile
from bulletproof.models import JobState
from bulletproof.plugins import PluginContext
from bulletproof.service import Monitor
from exporter.plugin import ExporterPlugin
from exporter.settings import ApiSettings
from tests.conftest import until
from tests.test_service import drop, finished


def _controls() -> list[str]:
    return [name for name, member in vars(Controls).items()
            if inspect.isfunction(member) and not name.startswith("_")]


def test_the_monitor_implements_every_control_with_the_same_signature() -> None:
    names = _controls()
    assert {"pause_queue", "enqueue_path", "update_config", "record_audit"} <= set(names)
    for name in names:
        declared = inspect.signature(getattr(Controls, name))
        implemented = inspect.signature(getattr(Monitor, name))
        assert implemented == declared, name
        assert (inspect.iscoroutinefunction(getattr(Controls, name))
                == inspect.iscoroutinefunction(getattr(Monitor, name))), name


async def test_a_plugin_gets_the_context_not_the_monitor(config_factory, monitor_factory) -> None:
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    context = monitor.context()
    assert isinstance(context, PluginContext)
    assert context.bus is monitor.bus and context.view is monitor.view
    plugin = ExporterPlugin(context)
    assert not any(isinstance(v, Monitor) for v in vars(plugin).values())
    context.controls.pause_queue()
    assert context.view.paused and context.view.paused_since is not None


async def test_enqueue_takes_a_relative_path_and_the_rule_priority(
        config_factory, monitor_factory, clip_cache) -> None:
    config, path = config_factory(rules=[{"extensions": ["mp4"], "profile": "h264_mp4", "priority": 5}])
    monitor = await monitor_factory(config, path)
    monitor.pause_queue()
    incoming = config.monitor_folder[0].path
    drop(clip_cache(), incoming, "sub/a.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    monitor.clear_queue()
    job = monitor.enqueue_path("sub/a.mp4")
    assert job.source_path == str(incoming / "sub" / "a.mp4") and job.priority == 5
    with pytest.raises(InvalidTransition):  # the same version waits in the queue
        monitor.enqueue_path("sub/a.mp4")
    with pytest.raises(UnknownProfile) as info:
        monitor.enqueue_path("sub/a.mp4", profile="nope")
    assert "h264_mp4" in info.value.known
    for bad in ("../a.mp4", "sub/../../a.mp4", "a\x00b.mp4", "x" * 4000 + ".mp4"):
        with pytest.raises(PathError):
            monitor.enqueue_path(bad)


async def test_enqueue_refuses_a_version_whose_older_job_is_unfinished(
        config_factory, monitor_factory, clip_cache) -> None:
    # The newest job of the file version is finished, an older one is queued again: still refused.
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    clip = drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: finished(monitor), timeout=60)
    first = monitor.view.list_jobs()[0][0]
    assert first.state is JobState.COMPLETED
    monitor.pause_queue()
    second = monitor.enqueue_path(str(clip))
    monitor.cancel_job(second.id)
    monitor.retry_job(first.id)
    with pytest.raises(InvalidTransition) as info:
        monitor.enqueue_path(str(clip))
    assert info.value.job_id == first.id


async def test_pause_state_has_one_owner_that_the_pool_and_view_read(
        config_factory, monitor_factory, clip_cache) -> None:
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    monitor.queue.pause()  # the owner alone: the pool must not start the job, the view shows it
    assert monitor.view.paused and monitor.view.paused_since == monitor.queue.paused_since
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    monitor.pool.wake()
    await until(lambda: monitor.pool.busy_count() == 0)
    assert monitor.view.counts()[JobState.QUEUED] == 1
    monitor.resume_queue()
    await until(lambda: finished(monitor), timeout=60)


def test_the_api_section_is_the_exporters_and_an_unclaimed_section_is_unknown(tmp_path: Path) -> None:
    assert plugin_sections() == {"api": ApiSettings}
    assert "api" not in Config.model_fields and "api" in config_model().model_fields
    base = {"monitor_folder": str(tmp_path / "in"), "output_folder": str(tmp_path / "out")}
    config = parse_config({**base, "api": {"listen": "127.0.0.1:9"}}, base_dir=tmp_path)
    assert isinstance(config, Config) and isinstance(config.api, ApiSettings)
    assert config.api.port == 9
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "api": {"listen": "nope"}, "graphs": {}}, base_dir=tmp_path)
    issues = {i.location: i.message for i in info.value.issues}
    assert issues["graphs"].startswith("unknown key") and "api.listen" in issues
