"""exporter.metrics.registry against a real running monitor: real folders, real ffmpeg, real SQLite.

Every check reads the text exposition back with prometheus_client's own parser, the way
Prometheus would see it.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from bulletproof import __version__
from bulletproof import events as ev
from bulletproof.audit import AUDIT_RESULTS
from bulletproof.models import (
    FailureReason,
    IgnoreReason,
    JobState,
    Outcome,
    QueueTrigger,
    SkipReason,
    VerificationResult,
)
from bulletproof.samples import make_corrupt_clip
from bulletproof.store import NewJob
from bulletproof.view import COMPONENTS
from exporter.metrics.registry import (
    FAILURE_REASONS,
    HTTP_DURATION_BUCKETS,
    JOB_DURATION_BUCKETS,
    QUEUE_WAIT_BUCKETS,
    BulletproofMetrics,
)
from exporter.security.permissions import AUDITED_ACTIONS
from tests.conftest import until

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
STATES = ["queued", "processing", "paused", "completed", "failed", "cancelled", "skipped"]
OUTCOMES = ["completed", "failed", "cancelled", "skipped"]
SKIPS = [r.value for r in SkipReason]
IGNORE = [r.value for r in IgnoreReason]
PER_SLOT = [
    "bulletproof_worker_busy", "bulletproof_worker_paused", "bulletproof_worker_progress_ratio",
    "bulletproof_worker_speed_ratio", "bulletproof_worker_eta_seconds",
    "bulletproof_worker_job_started_timestamp_seconds", "bulletproof_worker_last_progress_timestamp_seconds",
    "bulletproof_worker_job_media_seconds",
]
UNLABELLED_GAUGES = [
    "bulletproof_build_info", "bulletproof_queue_paused", "bulletproof_queue_paused_since_timestamp_seconds",
    "bulletproof_workers_max", "bulletproof_workers_busy", "bulletproof_queue_oldest_job_timestamp_seconds",
    "bulletproof_output_volume_free_bytes", "bulletproof_output_volume_size_bytes",
    "bulletproof_config_last_reload_successful", "bulletproof_config_last_reload_success_timestamp_seconds",
    "bulletproof_files_detected_total",
]
PER_PROFILE_COUNTERS = [
    "bulletproof_jobs_enqueued_total", "bulletproof_jobs_completed_total", "bulletproof_jobs_cancelled_total",
    "bulletproof_input_bytes_total", "bulletproof_output_bytes_total", "bulletproof_media_seconds_total",
    "bulletproof_transcode_seconds_total",
]


Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One parsed text exposition: sample name -> {sorted labels: value}.

    The `fleet` label of the store's gauges (the store's id, one value per scrape) is kept
    aside in `fleets` by family name, so that the tests read the series by their own labels.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.types: dict[str, str] = {}
        self.fleets: dict[str, set[str]] = defaultdict(set)
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                labels = dict(s.labels)
                if "fleet" in labels and s.name != "bulletproof_fleet_info":
                    self.fleets[s.name].add(labels.pop("fleet"))
                self.samples[s.name][tuple(sorted(labels.items()))] = s.value

    def __contains__(self, name: str) -> bool:
        return name in self.samples

    def get(self, name: str, **labels: str) -> float:
        """The value of one series (KeyError if absent)."""
        return self.samples[name][tuple(sorted(labels.items()))]

    def series(self, name: str) -> dict[Labels, float]:
        return self.samples.get(name, {})

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(k)[label] for k in self.series(name) if label in dict(k)}

    def count(self, prefix: str = "bulletproof_") -> int:
        return sum(len(v) for k, v in self.samples.items() if k.startswith(prefix))


def scrape(metrics: BulletproofMetrics) -> Scrape:
    body, content_type, encoding = metrics.render(None, None)
    assert content_type.startswith("text/plain") and encoding is None
    return Scrape(body.decode("utf-8"))


def drop(clip: Path, incoming: Path, name: str) -> Path:
    target = incoming / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(clip, target)
    return target


def finished(monitor, n: int) -> bool:
    c = monitor.view.counts()
    return c[JobState.COMPLETED] + c[JobState.FAILED] + c[JobState.CANCELLED] >= n


@pytest.fixture
async def running(config_factory, monitor_factory):
    """A started monitor (2 worker slots) with metrics attached; metrics closed at the end."""
    made = []

    async def make(**overrides):
        overrides.setdefault("max_workers", 2)
        config, path = config_factory(**overrides)
        monitor = await monitor_factory(config, path)
        metrics = BulletproofMetrics(monitor.view, monitor.bus)
        made.append(metrics)
        return monitor, metrics, config

    yield make
    for metrics in made:
        metrics.close()


# -- the contract from the first scrape ---------------------------------------------------------

async def test_every_family_exists_zero_initialised_from_the_start(running) -> None:
    monitor, metrics, config = await running()
    await until(lambda: all(monitor.view.folder_status().values()))
    s = scrape(metrics)
    profiles = sorted(monitor.view.profiles())
    assert profiles == sorted(["h264_mp4", "web_720p", "hevc_mkv", "aac_m4a"])

    for name in UNLABELLED_GAUGES:
        assert name in s, name
    assert s.get("bulletproof_build_info", version=__version__,
                 ffmpeg_version=monitor.view.ffmpeg_version) == 1
    assert s.get("bulletproof_queue_paused") == 0
    assert s.get("bulletproof_queue_paused_since_timestamp_seconds") == 0
    assert s.get("bulletproof_workers_max") == 2
    assert s.get("bulletproof_workers_busy") == 0
    assert s.get("bulletproof_queue_oldest_job_timestamp_seconds") == 0
    assert s.get("bulletproof_files_detected_total") == 0
    assert s.get("bulletproof_output_volume_size_bytes") >= s.get("bulletproof_output_volume_free_bytes") > 0
    assert s.get("bulletproof_config_last_reload_successful") == 1
    assert s.get("bulletproof_config_last_reload_success_timestamp_seconds") > 0
    assert s.get("bulletproof_watch_folder_up", folder=str(config.monitor_folder[0].path)) == 1

    assert s.series("bulletproof_jobs") == {(("state", st),): 0 for st in STATES}
    assert s.series("bulletproof_last_job_finished_timestamp_seconds") == {(("outcome", o),): 0 for o in OUTCOMES}
    assert s.series("bulletproof_files_ignored_total") == {(("reason", r),): 0 for r in IGNORE}

    for name in PER_SLOT:
        assert s.series(name) == {(("worker", "0"),): 0, (("worker", "1"),): 0}, name
    assert "bulletproof_worker_job_info" not in s  # only busy slots have one

    for name in PER_PROFILE_COUNTERS:
        assert s.series(name) == {(("profile", p),): 0 for p in profiles}, name
    assert set(FAILURE_REASONS) == {r.value for r in FailureReason} - {"cancelled"}
    assert s.series("bulletproof_jobs_failed_total") == {
        tuple(sorted({"profile": p, "reason": r}.items())): 0 for p in profiles for r in FAILURE_REASONS}
    assert s.series("bulletproof_jobs_retried_total") == {
        tuple(sorted({"profile": p, "trigger": t}.items())): 0 for p in profiles for t in ("auto", "manual")}
    assert s.series("bulletproof_jobs_skipped_total") == {
        tuple(sorted({"profile": p, "reason": r}.items())): 0 for p in profiles for r in SKIPS}
    assert s.series("bulletproof_verifications_total") == {
        (("result", r.value),): 0 for r in VerificationResult}
    assert s.series("bulletproof_output_conflicts_total") == {
        (("policy", p),): 0 for p in ("rename", "skip", "overwrite", "fail")}

    for name, buckets in (("bulletproof_job_duration_seconds", JOB_DURATION_BUCKETS),
                          ("bulletproof_job_queue_wait_seconds", QUEUE_WAIT_BUCKETS)):
        assert s.types[name] == "histogram"
        for p in profiles:
            les = {dict(k)["le"] for k in s.series(name + "_bucket") if dict(k)["profile"] == p}
            assert les == {*(str(float(b)) for b in buckets), "+Inf"}
            assert s.get(name + "_count", profile=p) == 0 and s.get(name + "_sum", profile=p) == 0
    assert JOB_DURATION_BUCKETS[0] == 1 and JOB_DURATION_BUCKETS[-1] == 8 * 3600

    # types, base units, and the default process / Python collectors
    assert s.types["bulletproof_jobs"] == "gauge"
    assert s.types["bulletproof_jobs_completed"] == "counter"
    assert "process_start_time_seconds" in s and "python_gc_objects_collected_total" in s
    assert "python_info" in s
    assert not [n for n in s.samples if n.endswith("_created")]  # pre-initialised zeros instead


async def test_counters_and_gauges_agree_with_the_store_after_a_workload(running, clip_cache) -> None:
    monitor, metrics, config = await running()
    incoming = config.monitor_folder[0].path
    clip = clip_cache(seconds=1.0)
    drop(clip, incoming, "good-a.mp4")
    drop(clip, incoming, "sub/good-b.mp4")
    make_corrupt_clip(incoming / "corrupt.mp4")
    (incoming / "notes.txt").write_text("no rule matches me\n")

    await until(lambda: finished(monitor, 3), timeout=60)
    await until(lambda: scrape(metrics).get("bulletproof_files_ignored_total", reason="no_rule") == 1)
    s = scrape(metrics)
    view = monitor.view
    jobs = {j.rel_path: j for j in view.list_jobs(limit=100)[0]}
    assert set(jobs) == {"good-a.mp4", "sub/good-b.mp4", "corrupt.mp4"}
    done = [j for j in jobs.values() if j.state is JobState.COMPLETED]
    assert len(done) == 2 and jobs["corrupt.mp4"].reason is FailureReason.INPUT_INVALID

    assert s.get("bulletproof_files_detected_total") == 4
    assert s.get("bulletproof_files_ignored_total", reason="no_rule") == 1
    assert sum(s.series("bulletproof_files_ignored_total").values()) == 1
    assert s.get("bulletproof_jobs_enqueued_total", profile="h264_mp4") == 3
    assert s.get("bulletproof_jobs_completed_total", profile="h264_mp4") == 2
    assert s.get("bulletproof_jobs_failed_total", profile="h264_mp4", reason="input_invalid") == 1
    assert sum(s.series("bulletproof_jobs_failed_total").values()) == 1
    assert sum(s.series("bulletproof_jobs_cancelled_total").values()) == 0
    assert sum(s.series("bulletproof_jobs_retried_total").values()) == 0

    in_bytes = s.get("bulletproof_input_bytes_total", profile="h264_mp4")
    out_bytes = s.get("bulletproof_output_bytes_total", profile="h264_mp4")
    assert in_bytes == sum(j.input_bytes for j in done) == 2 * clip.stat().st_size > 0
    assert out_bytes == sum(j.output_bytes for j in done) > 0
    assert s.get("bulletproof_media_seconds_total", profile="h264_mp4") == pytest.approx(2.0, abs=0.3)
    busy = s.get("bulletproof_transcode_seconds_total", profile="h264_mp4")
    assert busy > 0
    assert s.get("bulletproof_job_duration_seconds_count", profile="h264_mp4") == 2
    assert 0 < s.get("bulletproof_job_duration_seconds_sum", profile="h264_mp4") <= busy
    assert s.get("bulletproof_job_queue_wait_seconds_count", profile="h264_mp4") == 3

    counts = view.counts()
    assert s.series("bulletproof_jobs") == {(("state", st.value),): counts[st] for st in JobState}
    assert counts[JobState.COMPLETED] == 2 and counts[JobState.FAILED] == 1
    last = view.last_finished_at()
    assert s.get("bulletproof_last_job_finished_timestamp_seconds", outcome="completed") == pytest.approx(
        last[JobState.COMPLETED])
    assert s.get("bulletproof_last_job_finished_timestamp_seconds", outcome="failed") == pytest.approx(
        last[JobState.FAILED])
    assert s.get("bulletproof_last_job_finished_timestamp_seconds", outcome="cancelled") == 0
    assert s.get("bulletproof_workers_busy") == 0
    assert s.get("bulletproof_queue_oldest_job_timestamp_seconds") == 0


async def test_queue_gauges_follow_pause_and_waiting_jobs(running, clip_cache) -> None:
    monitor, metrics, config = await running()
    monitor.pause_queue()
    drop(clip_cache(seconds=1.0), config.monitor_folder[0].path, "waits.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    s = scrape(metrics)
    assert s.get("bulletproof_queue_paused") == 1
    assert s.get("bulletproof_queue_paused_since_timestamp_seconds") == pytest.approx(monitor.view.paused_since)
    assert s.get("bulletproof_jobs", state="queued") == 1
    queued = monitor.view.queued()[0]
    assert s.get("bulletproof_queue_oldest_job_timestamp_seconds") == pytest.approx(queued.queued_at)

    monitor.cancel_job(queued.id)
    monitor.resume_queue()
    s = scrape(metrics)
    assert s.get("bulletproof_queue_paused") == 0
    assert s.get("bulletproof_queue_paused_since_timestamp_seconds") == 0
    assert s.get("bulletproof_queue_oldest_job_timestamp_seconds") == 0
    assert s.get("bulletproof_jobs_cancelled_total", profile="h264_mp4") == 1
    assert s.get("bulletproof_jobs", state="cancelled") == 1
    assert s.get("bulletproof_last_job_finished_timestamp_seconds", outcome="cancelled") > 0

    monitor.retry_job(queued.id)
    s = scrape(metrics)
    assert s.get("bulletproof_jobs_retried_total", profile="h264_mp4", trigger="manual") == 1
    assert s.get("bulletproof_jobs_enqueued_total", profile="h264_mp4") == 1  # a retry is not new work


# -- worker slots while a job runs ------------------------------------------------------------

async def test_worker_gauges_while_a_job_runs(running, clip_cache) -> None:
    monitor, metrics, config = await running()
    clip = clip_cache(seconds=8.0, size="640x480")
    drop(clip, config.monitor_folder[0].path, "long clip.mp4")

    busy = await until(lambda: [w for w in monitor.view.workers() if w.busy], timeout=30, interval=0.01)
    slot = busy[0]
    monitor.pause_job(slot.job_id)  # hold it: SIGSTOP on ffmpeg (or before it starts)
    try:
        # wait for the probe to have filled in the media duration
        await until(lambda: monitor.view.workers()[slot.slot].media_duration, timeout=15)
        s = scrape(metrics)
        w, other = str(slot.slot), str(1 - slot.slot)
        assert s.get("bulletproof_workers_busy") == 1
        assert s.get("bulletproof_worker_busy", worker=w) == 1
        assert s.get("bulletproof_worker_busy", worker=other) == 0
        assert s.get("bulletproof_worker_paused", worker=w) == 1
        assert s.series("bulletproof_worker_job_info") == {
            tuple(sorted({"worker": w, "job_id": str(slot.job_id), "file": "long clip.mp4",
                          "profile": "h264_mp4"}.items())): 1}
        started = s.get("bulletproof_worker_job_started_timestamp_seconds", worker=w)
        assert started == pytest.approx(slot.started_at) and time.time() - 60 < started <= time.time()
        assert s.get("bulletproof_worker_last_progress_timestamp_seconds", worker=w) >= started
        assert s.get("bulletproof_worker_job_media_seconds", worker=w) == pytest.approx(8.0, abs=0.3)
        assert 0 <= s.get("bulletproof_worker_progress_ratio", worker=w) <= 1
        assert s.get("bulletproof_worker_speed_ratio", worker=w) >= 0
        assert s.get("bulletproof_worker_eta_seconds", worker=w) >= 0
        for name in PER_SLOT:
            assert s.get(name, worker=other) == 0, name
        assert s.get("bulletproof_jobs", state="paused") == 1
        assert s.series("bulletproof_jobs") == {
            (("state", st.value),): n for st, n in monitor.view.counts().items()}
    finally:
        monitor.resume_job(slot.job_id)

    await until(lambda: finished(monitor, 1), timeout=90)
    s = scrape(metrics)
    assert s.get("bulletproof_workers_busy") == 0
    assert "bulletproof_worker_job_info" not in s
    assert s.get("bulletproof_worker_busy", worker=str(slot.slot)) == 0
    assert s.get("bulletproof_jobs_completed_total", profile="h264_mp4") == 1
    assert s.get("bulletproof_media_seconds_total", profile="h264_mp4") == pytest.approx(8.0, abs=0.3)


# -- cardinality ------------------------------------------------------------------------------

def add_history(monitor, n: int, start: int, folder: Path) -> None:
    """Insert n finished jobs through the JobStore (and matching events through the bus)."""
    store, bus = monitor.store, monitor.bus
    profiles = sorted(monitor.view.profiles())
    reasons = [FailureReason(r) for r in FAILURE_REASONS]
    for i in range(start, start + n):
        rel = f"history/show-{i:05d}.mp4"
        profile = profiles[i % len(profiles)]
        job = store.add(NewJob(str(folder / rel), rel, str(folder), 1000 + i, i, profile, "videos",
                               str(folder / "out" / rel)))
        assert job is not None
        bus.publish(ev.JobQueued(job=job, trigger=QueueTrigger.DETECTED))
        now = time.time()
        job = store.mark_started(job.id, now=now)
        bus.publish(ev.JobStarted(job=job, worker=0, queue_wait=0.5))
        kind = i % 10
        if kind < 7:
            job = store.mark_completed(job.id, now=now + 2, output_bytes=500 + i, media_duration=12.5)
            bus.publish(ev.JobFinished(job=job, worker=0, outcome=Outcome.COMPLETED, reason=None,
                                       busy_seconds=2.0))
        else:
            reason = FailureReason.CANCELLED if kind == 9 else reasons[i % len(reasons)]
            job = store.mark_failed(job.id, now=now + 2, reason=reason, error="synthetic",
                                    stderr_tail="", retry_at=None)
            outcome = Outcome.CANCELLED if kind == 9 else Outcome.FAILED
            bus.publish(ev.JobFinished(job=job, worker=0, outcome=outcome,
                                       reason=None if kind == 9 else reason, busy_seconds=1.0))
            if kind == 8:
                job = monitor.retry_job(job.id)  # manual retry, then it fails for good
                job = store.mark_started(job.id, now=now + 3)
                job = store.mark_failed(job.id, now=now + 4, reason=reason, error="again",
                                        stderr_tail="", retry_at=None)
        bus.publish(ev.FileDetected(path=str(folder / rel), watch_folder=str(folder), size=1000 + i))
        bus.publish(ev.FileIgnored(path=str(folder / f"x{i}.txt"), reason=IgnoreReason.NO_RULE))


def assert_bounded_labels(s: Scrape, monitor) -> None:
    """No label value on any bulletproof series is a job id or a path (except per-slot job info)."""
    allowed = {
        "state": set(STATES), "outcome": set(OUTCOMES),
        "reason": set(IGNORE) | set(FAILURE_REASONS) | set(SKIPS),
        # `result`: output checks and audited control calls both use it.
        "result": {r.value for r in VerificationResult} | set(AUDIT_RESULTS),
        "policy": {"rename", "skip", "overwrite", "fail"},
        "trigger": {"auto", "manual"}, "profile": set(monitor.view.profiles()),
        "worker": {str(i) for i in range(monitor.view.max_workers)},
        "folder": {str(f.path) for f in monitor.config.monitor_folder},
        "component": set(COMPONENTS),
        "le": None, "version": None, "ffmpeg_version": None,  # le: fixed buckets; build info: one series
        "handler": None, "method": None, "code": None,  # route templates, checked by the API's tests
        "action": set(AUDITED_ACTIONS),
        # the store's id, and the node names of its registry (bounded by the fleet's size)
        "fleet": {monitor.view.store_id()}, "node": {n.name for n in monitor.view.nodes()},
    }
    for fleets in s.fleets.values():
        assert fleets == {monitor.view.store_id()}
    for name, series in s.samples.items():
        if not name.startswith("bulletproof_") or name == "bulletproof_worker_job_info":
            continue
        for labels in series:
            for key, value in labels:
                assert key in allowed, (name, key)
                if allowed[key] is not None:
                    assert value in allowed[key], (name, key, value)


async def test_series_count_does_not_grow_with_history(running, tmp_path) -> None:
    monitor, metrics, config = await running()
    monitor.pause_queue()  # the synthetic jobs must not be picked up by the real workers
    folder = config.monitor_folder[0].path
    add_history(monitor, 20, 0, folder)
    small = scrape(metrics)
    assert small.get("bulletproof_jobs", state="completed") == 14
    assert sum(small.series("bulletproof_jobs_completed_total").values()) == 14
    assert small.get("bulletproof_files_detected_total") == 20

    add_history(monitor, 200, 20, folder)
    large = scrape(metrics)
    counts = monitor.view.counts()
    assert sum(counts.values()) == 220
    assert large.series("bulletproof_jobs") == {(("state", st.value),): counts[st] for st in JobState}
    assert sum(large.series("bulletproof_jobs_completed_total").values()) == counts[JobState.COMPLETED] == 154
    assert sum(large.series("bulletproof_jobs_cancelled_total").values()) == counts[JobState.CANCELLED] == 22
    retried = {dict(k)["trigger"]: 0.0 for k in large.series("bulletproof_jobs_retried_total")}
    for k, v in large.series("bulletproof_jobs_retried_total").items():
        retried[dict(k)["trigger"]] += v
    assert retried == {"manual": 22, "auto": 0}
    assert sum(large.series("bulletproof_jobs_failed_total").values()) == 44  # each attempt counts
    assert large.get("bulletproof_files_ignored_total", reason="no_rule") == 220

    assert large.count() == small.count()
    assert {k: set(v) for k, v in large.samples.items() if k.startswith("bulletproof_")} == {
        k: set(v) for k, v in small.samples.items() if k.startswith("bulletproof_")}
    assert_bounded_labels(large, monitor)


async def test_new_profiles_after_a_config_reload_are_exported_at_zero(running, config_factory) -> None:
    monitor, metrics, _ = await running()
    assert "tiny" not in scrape(metrics).label_values("bulletproof_jobs_completed_total", "profile")
    new, _ = config_factory(max_workers=3, profiles={"tiny": {"video_codec": "libx264", "crf": 40}})
    await monitor.apply_config(new)
    s = scrape(metrics)
    assert s.get("bulletproof_jobs_completed_total", profile="tiny") == 0
    assert s.get("bulletproof_jobs_failed_total", profile="tiny", reason="stalled") == 0
    assert s.get("bulletproof_jobs_retried_total", profile="tiny", trigger="auto") == 0
    assert s.get("bulletproof_job_duration_seconds_count", profile="tiny") == 0
    assert s.get("bulletproof_workers_max") == 3
    assert s.label_values("bulletproof_worker_busy", "worker") == {"0", "1", "2"}
    assert s.get("bulletproof_config_last_reload_successful") == 1


# -- exposition -------------------------------------------------------------------------------

async def test_openmetrics_negotiation_and_gzip(running) -> None:
    _, metrics, _ = await running()
    body, content_type, encoding = metrics.render(None, None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8" and encoding is None
    assert not body.rstrip().endswith(b"# EOF")

    body, content_type, encoding = metrics.render(OPENMETRICS, None)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert encoding is None and body.endswith(b"# EOF\n")
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert families["bulletproof_jobs_completed"].type == "counter"
    assert families["bulletproof_build"].type == "info"
    assert families["bulletproof_job_duration_seconds"].type == "histogram"

    # render() swaps prometheus_client's per-character name escaping for the allow-utf-8 path
    # (a 2x speed-up); on this registry's names both give exactly the same bytes.
    frozen = list(metrics.registry.collect())

    class Frozen:
        def collect(self):
            return frozen

    registry = CollectorRegistry()
    registry.register(Frozen())
    assert openmetrics_exposition.generate_latest(registry, escaping=openmetrics_exposition.UNDERSCORES) == \
        openmetrics_exposition.generate_latest(registry, escaping=openmetrics_exposition.ALLOWUTF8)

    # what Prometheus itself sends
    prom_accept = ("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
                   "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
    assert metrics.render(prom_accept, None)[1].startswith("application/openmetrics-text")

    body, content_type, encoding = metrics.render(None, "deflate, gzip;q=0.8, br")
    assert encoding == "gzip" and content_type.startswith("text/plain")
    text = gzip.decompress(body).decode()
    assert re.search(r'bulletproof_jobs\{fleet="[0-9a-f]{16}",state="queued"\} 0\.0', text)
    assert Scrape(text).count() > 100

    body, _, encoding = metrics.render(OPENMETRICS, "gzip")
    assert encoding == "gzip" and gzip.decompress(body).endswith(b"# EOF\n")

    for refused in ("identity", "gzip;q=0", "", None):
        body, _, encoding = metrics.render(None, refused)
        assert encoding is None and body.startswith(b"# HELP")


async def test_observe_request_feeds_the_http_metrics(running) -> None:
    _, metrics, _ = await running()
    metrics.observe_request("/api/v1/jobs/{id}", "GET", 200, 0.003)
    metrics.observe_request("/api/v1/jobs/{id}", "get", 200, 0.2)
    metrics.observe_request("/api/v1/jobs/{id}", "POST", 409, 0.02)
    metrics.observe_request("unmatched", "BREW", 404, 0.0005)  # an odd method cannot grow the label set
    s = scrape(metrics)
    assert s.get("bulletproof_http_requests_total", handler="/api/v1/jobs/{id}", method="GET", code="200") == 2
    assert s.get("bulletproof_http_requests_total", handler="/api/v1/jobs/{id}", method="POST", code="409") == 1
    assert s.get("bulletproof_http_requests_total", handler="unmatched", method="other", code="404") == 1
    h = "bulletproof_http_request_duration_seconds"
    assert s.get(h + "_count", handler="/api/v1/jobs/{id}", method="GET") == 2
    assert s.get(h + "_sum", handler="/api/v1/jobs/{id}", method="GET") == pytest.approx(0.203)
    assert s.get(h + "_bucket", handler="/api/v1/jobs/{id}", method="GET", le="0.005") == 1
    assert s.get(h + "_bucket", handler="/api/v1/jobs/{id}", method="GET", le="+Inf") == 2
    les = {dict(k)["le"] for k in s.series(h + "_bucket") if dict(k)["method"] == "POST"}
    assert les == {*(str(float(b)) for b in HTTP_DURATION_BUCKETS), "+Inf"}
    assert min(HTTP_DURATION_BUCKETS) == 0.001 and max(HTTP_DURATION_BUCKETS) == 10


# -- robustness -------------------------------------------------------------------------------

async def test_a_subscriber_failure_cannot_break_the_bus(running, clip_cache, caplog) -> None:
    monitor, metrics, config = await running()
    seen: list[ev.Event] = []

    def broken(event: ev.Event) -> None:
        raise RuntimeError("plugin bug")

    monitor.bus.subscribe(broken)
    monitor.bus.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="bulletproof.events"):
        # an event the metrics cannot digest (an unknown ignore reason) raises inside its handler
        monitor.bus.publish(ev.FileIgnored(path="/x", reason="not-a-reason"))  # type: ignore[arg-type]
        monitor.bus.publish(ev.FileDetected(path="/x", watch_folder="/", size=1))
    assert [type(e) for e in seen] == [ev.FileIgnored, ev.FileDetected]
    assert "plugin bug" in caplog.text
    s = scrape(metrics)
    assert s.get("bulletproof_files_detected_total") == 1
    assert sum(s.series("bulletproof_files_ignored_total").values()) == 0
    assert s.label_values("bulletproof_files_ignored_total", "reason") == set(IGNORE)

    # the monitor still does its work and the metrics still follow it
    drop(clip_cache(seconds=1.0), config.monitor_folder[0].path, "after.mp4")
    await until(lambda: finished(monitor, 1), timeout=60)
    assert scrape(metrics).get("bulletproof_jobs_completed_total", profile="h264_mp4") == 1

    metrics.close()  # unsubscribed: counters stop, scrapes still work
    monitor.bus.publish(ev.FileDetected(path="/y", watch_folder="/", size=1))
    assert scrape(metrics).get("bulletproof_files_detected_total") == 2


async def test_a_scrape_survives_a_closed_store(running) -> None:
    monitor, metrics, _ = await running()
    await monitor.stop()
    s = scrape(metrics)  # no exception: the store-backed groups are left out, the rest is served
    assert "bulletproof_jobs" not in s
    assert s.get("bulletproof_workers_max") == 2
    assert "bulletproof_build_info" in s and "process_start_time_seconds" in s


async def test_trusted_output_counters_follow_a_real_workload(running, clip_cache) -> None:
    monitor, metrics, config = await running(
        max_workers=1,
        profiles={"same": {"skip_if_target": True},
                  "gated": {"preset": "ultrafast", "quality": {"metric": "ssim", "min": 0.5}}},
        rules=[{"name": "same", "glob": "same*", "profile": "same"},
               {"name": "videos", "extensions": ["mp4", "mkv"], "profile": "gated"}])
    s = scrape(metrics)
    assert s.get("bulletproof_quality_ssim_ratio_count", profile="gated") == 0
    assert "bulletproof_quality_psnr_decibels_count" not in s  # no profile gates on psnr
    incoming = config.monitor_folder[0].path
    drop(clip_cache(), incoming, "same.mp4")
    drop(clip_cache(), incoming, "clip.mp4")
    drop(clip_cache(suffix=".mkv"), incoming, "clip.mkv")
    await until(lambda: sum(n for st, n in monitor.view.counts().items() if st.is_finished) >= 3,
                timeout=60)
    s = scrape(metrics)
    assert s.get("bulletproof_jobs", state="skipped") == 1
    assert s.get("bulletproof_jobs_skipped_total", profile="same", reason="already_target") == 1
    assert s.get("bulletproof_verifications_total", result="passed") == 2
    assert s.get("bulletproof_output_conflicts_total", policy="rename") == 1
    assert s.get("bulletproof_quality_ssim_ratio_count", profile="gated") == 2
    assert s.get("bulletproof_last_job_finished_timestamp_seconds", outcome="skipped") > 0
    assert_bounded_labels(s, monitor)


# -- the fleet: the store's gauges carry its id, the registry is exported ------------------------

async def test_store_gauges_carry_the_fleet_and_the_registry_is_exported(running) -> None:
    monitor, metrics, _ = await running()
    await until(lambda: monitor.view.nodes())
    s = scrape(metrics)
    fleet, node = monitor.view.store_id(), monitor.view.node_name
    assert re.fullmatch(r"[0-9a-f]{16}", fleet)
    for name in ("bulletproof_jobs", "bulletproof_queue_paused",
                 "bulletproof_queue_oldest_job_timestamp_seconds",
                 "bulletproof_last_job_finished_timestamp_seconds", "bulletproof_node_up"):
        assert s.fleets[name] == {fleet}, name
    for name in ("bulletproof_workers_busy", "bulletproof_worker_busy", "bulletproof_build_info"):
        assert name not in s.fleets, name  # the node's own: told apart by `instance`
    assert s.get("bulletproof_fleet_info", fleet=fleet, node=node) == 1
    assert s.get("bulletproof_node_up", node=node) == 1
    assert s.get("bulletproof_node_stopped", node=node) == 0
    assert s.get("bulletproof_node_draining", node=node) == 0
    assert s.get("bulletproof_node_workers_max", node=node) == 2
    assert (s.get("bulletproof_node_heartbeat_interval_seconds", node=node)
            == monitor.config.fleet.heartbeat_seconds)
    assert (s.get("bulletproof_node_last_heartbeat_timestamp_seconds", node=node)
            == pytest.approx(time.time(), abs=60))
    assert s.get("bulletproof_leases_expired_total", node=node) == 0  # every known node from the start

    # The sweep's event counts the lease of the node that held it.
    job = monitor.store.add(NewJob("/x/a.mp4", "a.mp4", "/x", 1, 1, "h264_mp4", "videos", "/y/a.mp4"))
    assert job is not None
    monitor.bus.publish(ev.LeaseExpired(job=job, holder="gone-node"))
    monitor.bus.publish(ev.LeaseExpired(job=job, holder=node))
    s = scrape(metrics)
    assert s.get("bulletproof_leases_expired_total", node="gone-node") == 1
    assert s.get("bulletproof_leases_expired_total", node=node) == 1
