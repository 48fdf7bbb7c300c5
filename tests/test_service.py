"""The monitor end to end: real folders, real ffmpeg, real SQLite; controls and failure paths."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import yaml

from bulletproof import events as ev
from bulletproof.config import load_config
from bulletproof.errors import ConfigError, InvalidTransition, JobNotFound, PathError
from bulletproof.models import FailureReason, IgnoreReason, JobState, QueueTrigger
from bulletproof.samples import make_corrupt_clip
from tests.conftest import until


def drop(clip: Path, incoming: Path, name: str) -> Path:
    """Copy a clip into the watch folder under `name` (sub-folders allowed)."""
    target = incoming / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, target)
    return target


def finished(monitor, n: int = 1) -> bool:
    counts = monitor.view.counts()
    return counts[JobState.COMPLETED] + counts[JobState.FAILED] + counts[JobState.CANCELLED] >= n


def record(monitor) -> list[ev.Event]:
    seen: list[ev.Event] = []
    monitor.bus.subscribe(seen.append)
    return seen


@pytest.mark.parametrize(("profile", "name", "suffix"), [
    ("h264_mp4", "a.mp4", ".mp4"), ("web_720p", "a.mp4", ".mp4"),
    ("hevc_mkv", "a.mp4", ".mkv"), ("aac_m4a", "a.mp4", ".m4a"),
])
async def test_each_builtin_profile_end_to_end(profile, name, suffix, config_factory, monitor_factory,
                                               clip_cache, ffmpeg_binaries) -> None:
    config, _ = config_factory(rules=[{"profile": profile}])
    monitor = await monitor_factory(config)
    drop(clip_cache(), config.monitor_folder[0].path, f"sub/{name}")
    await until(lambda: finished(monitor), timeout=30)
    job = monitor.view.list_jobs()[0][0]
    assert job.state is JobState.COMPLETED, job.error
    out = config.output_folder / "sub" / f"a{suffix}"
    assert Path(job.output_path) == out and out.stat().st_size == job.output_bytes > 0
    assert job.media_duration == pytest.approx(1.0, abs=0.2)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporaries left


async def test_inputs_that_must_fail_or_be_ignored(config_factory, monitor_factory, tmp_path) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    seen = record(monitor)
    incoming = config.monitor_folder[0].path
    make_corrupt_clip(incoming / "corrupt.mp4")
    (incoming / "empty.mp4").write_bytes(b"")
    (incoming / "text.mp4").write_text("just text\n")
    (incoming / "readme.txt").write_text("no rule matches me\n")
    await until(lambda: finished(monitor, 3), timeout=30)
    jobs = {j.rel_path: j for j in monitor.view.list_jobs()[0]}
    assert set(jobs) == {"corrupt.mp4", "empty.mp4", "text.mp4"}
    for job in jobs.values():
        assert job.state is JobState.FAILED and job.reason is FailureReason.INPUT_INVALID
        assert job.error and job.attempts == 1  # not a transient failure: no retry
    assert jobs["corrupt.mp4"].stderr_tail
    ignored = [e for e in seen if isinstance(e, ev.FileIgnored)]
    assert [(Path(e.path).name, e.reason) for e in ignored] == [("readme.txt", IgnoreReason.NO_RULE)]
    assert list(config.output_folder.iterdir()) == []


@pytest.mark.parametrize("name", ["with space.mp4", "ünïcødé ✓.mp4", "new\nline.mp4", "-leading.mp4",
                                  "colon:name.mp4"])
async def test_odd_file_names(name, config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    drop(clip_cache(), config.monitor_folder[0].path, name)
    await until(lambda: finished(monitor), timeout=30)
    job = monitor.view.list_jobs()[0][0]
    assert job.state is JobState.COMPLETED, job.error
    assert job.rel_path == name and Path(job.output_path).name == Path(name).stem + ".mp4"
    assert Path(job.output_path).exists()


async def test_slow_copy_is_picked_up_once_complete(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory(stability_seconds=1)
    monitor = await monitor_factory(config)
    data = clip_cache(seconds=2).read_bytes()
    target = config.monitor_folder[0].path / "slow.mp4"
    chunks = [data[i:i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
    with open(target, "wb") as handle:
        for chunk in chunks:  # about 3 s of writing, a chunk every 0.4 s
            handle.write(chunk)
            handle.flush()
            await asyncio.sleep(0.4)
            assert monitor.view.counts()[JobState.QUEUED] + monitor.view.busy_workers() == 0
    await until(lambda: finished(monitor), timeout=30)
    job = monitor.view.list_jobs()[0][0]
    assert job.state is JobState.COMPLETED and job.size == len(data)
    assert job.media_duration == pytest.approx(2.0, abs=0.2)


async def test_burst_of_files_is_queued_exactly_once(config_factory, monitor_factory) -> None:
    config, _ = config_factory(rules=[{"profile": "h264_mp4", "extensions": ["mp4"]}], rescan_interval=1)
    monitor = await monitor_factory(config)
    monitor.pause_queue()
    incoming = config.monitor_folder[0].path
    for i in range(300):
        (incoming / f"f{i:03d}.mp4").write_bytes(b"x" * (i + 1))
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 300, timeout=30)
    scans = monitor.watcher.scans  # two more rescans must not queue anything twice
    await until(lambda: monitor.watcher.scans >= scans + 2 and monitor.watcher.pending_count() == 0)
    assert monitor.view.counts()[JobState.QUEUED] == 300
    assert monitor.clear_queue() == 300
    assert monitor.view.counts()[JobState.CANCELLED] == 300


async def test_queue_pause_keeps_queueing_and_resume_runs(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    seen = record(monitor)
    monitor.pause_queue()
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    await asyncio.sleep(1.2)
    assert monitor.view.busy_workers() == 0 and monitor.view.paused
    monitor.resume_queue()
    await until(lambda: finished(monitor), timeout=30)
    kinds = [type(e) for e in seen]
    assert kinds.index(ev.QueuePaused) < kinds.index(ev.JobQueued) < kinds.index(ev.QueueResumed)


async def test_pause_persists_across_restart(config_factory, monitor_factory) -> None:
    config, _ = config_factory()
    first = await monitor_factory(config)
    first.pause_queue()
    await first.stop()
    second = await monitor_factory(config)
    assert second.view.paused and second.view.paused_since is not None


async def test_cancel_pause_resume_retry_running_job(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    drop(clip_cache(seconds=20, size="640x480"), config.monitor_folder[0].path, "long.mp4")
    job = (await until(lambda: monitor.view.list_jobs(states=[JobState.PROCESSING])[0]))[0]
    assert monitor.pause_job(job.id).state is JobState.PAUSED
    with pytest.raises(InvalidTransition):
        monitor.pause_job(job.id)
    await until(lambda: monitor.view.workers()[0].paused)
    assert monitor.resume_job(job.id).state is JobState.PROCESSING
    monitor.cancel_job(job.id)
    await until(lambda: monitor.view.get_job(job.id).state is JobState.CANCELLED, timeout=15)
    assert list(config.output_folder.iterdir()) == []  # nothing half-written
    retried = monitor.retry_job(job.id)
    assert retried.state is JobState.QUEUED and retried.attempts == 0
    monitor.cancel_job(job.id)  # queued or already running: both cancel
    await until(lambda: monitor.view.get_job(job.id).state is JobState.CANCELLED, timeout=15)


async def test_queue_controls(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    monitor.pause_queue()
    incoming = config.monitor_folder[0].path
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        drop(clip_cache(), incoming, name)
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 3)
    a, b, c = sorted(monitor.view.queued(), key=lambda j: j.id)
    monitor.prioritize_job(c.id)
    assert [j.id for j in monitor.view.queued()] == [c.id, a.id, b.id]
    monitor.cancel_job(a.id)
    with pytest.raises(InvalidTransition):
        monitor.cancel_job(a.id)
    with pytest.raises(InvalidTransition):
        monitor.delete_job(b.id)
    monitor.delete_job(a.id)
    with pytest.raises(JobNotFound):
        monitor.view.get_job(a.id)
    with pytest.raises(JobNotFound):
        monitor.retry_job(12345)
    assert monitor.clear_queue() == 2


async def test_retry_failed_in_bulk(config_factory, monitor_factory) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    seen = record(monitor)
    for i in range(3):
        make_corrupt_clip(config.monitor_folder[0].path / f"bad{i}.mp4")
    await until(lambda: monitor.view.counts()[JobState.FAILED] == 3, timeout=30)
    monitor.pause_queue()
    assert len(monitor.retry_failed()) == 3
    assert monitor.view.counts()[JobState.QUEUED] == 3
    triggers = [e.trigger for e in seen if isinstance(e, ev.JobQueued)]
    assert triggers.count(QueueTrigger.MANUAL_RETRY) == 3


async def test_transient_failure_is_retried_with_backoff(config_factory, monitor_factory, clip_cache,
                                                        tmp_path) -> None:
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    config, _ = config_factory(output_folder="blocker/out", retry={"max_attempts": 3, "backoff_seconds": 0.2})
    monitor = await monitor_factory(config)
    seen = record(monitor)
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: monitor.view.counts()[JobState.FAILED] == 1, timeout=30)
    job = monitor.view.list_jobs()[0][0]
    assert job.reason is FailureReason.OUTPUT_ERROR and job.attempts == 3
    finishes = [e for e in seen if isinstance(e, ev.JobFinished)]
    assert [e.will_retry for e in finishes] == [True, True, False]


async def test_enqueue_path(config_factory, monitor_factory, clip_cache, tmp_path) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    monitor.pause_queue()
    incoming = config.monitor_folder[0].path
    clip = drop(clip_cache(), incoming, "a.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    with pytest.raises(InvalidTransition):  # already queued
        monitor.enqueue_path(str(clip))
    with pytest.raises(PathError, match="not inside a watch folder"):
        monitor.enqueue_path(str(tmp_path / "elsewhere.mp4"))
    with pytest.raises(PathError, match="not inside a watch folder"):
        monitor.enqueue_path(str(incoming / ".." / "monitor.yaml"))
    with pytest.raises(PathError, match="not a file"):
        monitor.enqueue_path(str(incoming / "missing.mp4"))
    with pytest.raises(PathError, match="unknown profile"):
        monitor.enqueue_path(str(clip), profile="nope")
    monitor.clear_queue()
    job = monitor.enqueue_path(str(clip), profile="aac_m4a", priority=3)
    assert job.profile == "aac_m4a" and job.priority == 3 and job.rule == "api"


async def test_outputs_inside_the_watch_folder_are_never_picked_up(config_factory, monitor_factory,
                                                                  clip_cache) -> None:
    config, _ = config_factory(output_folder="incoming/done", output_template="{stem}.{ext}")
    monitor = await monitor_factory(config)
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: finished(monitor), timeout=30)
    scans = monitor.watcher.scans  # a rescan later, still one job
    await until(lambda: monitor.watcher.scans > scans and monitor.watcher.pending_count() == 0)
    assert monitor.view.list_jobs()[1] == 1
    assert (config.output_folder / "a.mp4").exists()


async def test_completed_file_is_not_redone_after_restart(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    first = await monitor_factory(config)
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: finished(first), timeout=30)
    await first.stop()
    second = await monitor_factory(config)
    seen = record(second)
    second.watcher.rescan_now()
    await until(lambda: any(isinstance(e, ev.FileIgnored) for e in seen), timeout=10)
    assert [e.reason for e in seen if isinstance(e, ev.FileIgnored)] == [IgnoreReason.ALREADY_DONE]
    assert second.view.list_jobs()[1] == 1


@pytest.mark.parametrize("action", ["move", "delete"])
async def test_source_after_success(action, config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory(on_success=action, done_folder="done")
    monitor = await monitor_factory(config)
    source = drop(clip_cache(), config.monitor_folder[0].path, "sub/a.mp4")
    await until(lambda: finished(monitor), timeout=30)
    assert not source.exists()
    assert (config.done_folder / "sub" / "a.mp4").exists() is (action == "move")


async def test_reload_applies_or_rejects(config_factory, monitor_factory) -> None:
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    seen = record(monitor)
    text = path.read_text()
    path.write_text(text.replace("max_workers: 1", "max_workers: 3"))
    await monitor.reload_config()
    assert monitor.view.max_workers == 3 and len(monitor.view.workers()) == 3
    path.write_text(text.replace("max_workers: 1", "max_workers: -4"))
    with pytest.raises(ConfigError):
        await monitor.reload_config()
    assert monitor.view.max_workers == 3 and monitor.view.config_status()[0] is False
    assert [e.success for e in seen if isinstance(e, ev.ConfigReloaded)] == [True, False]


async def test_reload_rejects_a_profile_whose_encoder_ffmpeg_lacks(config_factory, monitor_factory) -> None:
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    data = yaml.safe_load(path.read_text())
    data["profiles"] = {"fast": {"video_codec": "h264_nvenc_typo"}}
    data["rules"] = [{"profile": "fast"}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        await monitor.reload_config()
    (issue,) = info.value.issues
    assert issue.location == "profiles.fast.video_codec"
    assert "unknown video encoder 'h264_nvenc_typo'" in issue.message
    assert [r.profile for r in monitor.config.rules] == ["aac_m4a", "h264_mp4"]  # the old config stays
    assert monitor.view.config_status()[0] is False


async def test_update_config_writes_atomically_with_backup(config_factory, monitor_factory) -> None:
    config, path = config_factory()
    monitor = await monitor_factory(config, path)
    before = path.read_text()
    data = monitor.config.model_dump(mode="json")
    data["max_workers"] = 2
    with pytest.raises(ConfigError):
        await monitor.update_config({**data, "max_workers": 0})
    assert path.read_text() == before
    await monitor.update_config(data)
    assert monitor.view.max_workers == 2
    assert path.with_name("monitor.yaml.bak").read_text() == before
    await monitor.update_config({**data, "max_workers": 3})
    await monitor.reset_config()
    # A reset restores the defaults of what may change from outside; the file's own settings
    # (database, folders, api) stay.
    written = load_config(path).model_dump(mode="json")
    assert written["max_workers"] == 2 and monitor.view.max_workers == 2
    assert written["database"] == data["database"] and written["api"] == data["api"]
    assert written["monitor_folder"] == data["monitor_folder"]


async def test_missing_watch_folder_is_reported_and_recovers(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory(monitor_folder="later")
    monitor = await monitor_factory(config)
    await until(lambda: monitor.view.folder_status() == {str(config.monitor_folder[0].path): False})
    assert any("watch folder unavailable" in p for p in monitor.view.problems())
    config.monitor_folder[0].path.mkdir()
    drop(clip_cache(), config.monitor_folder[0].path, "a.mp4")
    await until(lambda: finished(monitor), timeout=30)
    assert monitor.view.problems() == []


async def test_a_slots_second_job_is_controllable(config_factory, monitor_factory, clip_cache) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    drop(clip_cache(), config.monitor_folder[0].path, "first.mp4")
    await until(lambda: finished(monitor), timeout=30)
    drop(clip_cache(seconds=20, size="640x480"), config.monitor_folder[0].path, "second.mp4")
    job = (await until(lambda: monitor.view.list_jobs(states=[JobState.PROCESSING])[0]))[0]
    await until(lambda: monitor.view.workers()[0].job_id == job.id)
    assert monitor.pause_job(job.id).state is JobState.PAUSED
    monitor.cancel_job(job.id)
    await until(lambda: monitor.view.get_job(job.id).state is JobState.CANCELLED, timeout=15)
    assert monitor.view.workers()[0].job_id is None


async def test_enqueue_refuses_a_symlink_leading_outside(config_factory, monitor_factory, clip_cache,
                                                         tmp_path) -> None:
    config, _ = config_factory()
    monitor = await monitor_factory(config)
    outside = tmp_path / "outside.mp4"
    shutil.copy(clip_cache(), outside)
    link = config.monitor_folder[0].path / "link.mp4"
    monitor.pause_queue()
    link.symlink_to(outside)
    with pytest.raises(PathError, match="leads outside the watch folder"):
        monitor.enqueue_path(str(link))
