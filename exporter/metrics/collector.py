"""The scrape-time half of the metrics: gauges read from the monitor's `MonitorView`.

`StateCollector` yields the queue, jobs per state, worker slots and health each time Prometheus
scrapes. Nothing is cached here, so a scrape always agrees with the store and the API; a group
that cannot be read (say the store is closed) is left out of that scrape and logged.

Two scopes (docs/metrics.md, "Counted once"): the store's gauges (the queue, jobs per state, the
node registry) are the same on every monitor sharing the store, so they carry the label
`fleet` (the store's id) and the recording rules keep one copy per fleet (`max by (job, fleet,
...)`); the node's own gauges (its workers, folders, volume, health) are per `instance`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from bulletproof.models import JobState, Outcome, WorkerSnapshot
from bulletproof.view import COMPONENTS, MonitorView

# The name these warnings had before the collector left exporter.metrics.registry; log filters may use it.
log = logging.getLogger("exporter.metrics")

_MAX_FILE_LABEL = 255  # a base name longer than this is cut (labels are not free)


def _ts(value: float | None) -> float:
    """A unix time as a gauge value: 0 stands for "never" / "not applicable"."""
    return float(value) if value else 0.0


def _clamp01(value: float | None) -> float:
    if value is None or value != value:  # None or NaN
        return 0.0
    return min(1.0, max(0.0, float(value)))


def nonneg(value: float | None) -> float:
    """The value as a float, 0.0 for None, NaN or a negative number."""
    if value is None or value != value or value < 0:
        return 0.0
    return float(value)


class StateCollector(Collector):
    """Gauges computed from the MonitorView at scrape time (no state kept twice)."""

    def __init__(self, view: MonitorView, *,
                 nodes_seen: Callable[[list[str]], None] | None = None) -> None:
        self._view = view
        # Told the node names of the registry at each scrape (per-node counters start at 0).
        self._nodes_seen = nodes_seen

    # describe() lets the registry check for name clashes without touching the store.
    def describe(self) -> Iterable[Metric]:
        return list(self._families(empty=True))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(empty=False))

    def _families(self, *, empty: bool) -> Iterator[Metric]:
        view = self._view
        yield from self._build(view, empty)
        yield from self._membership(view, empty)
        yield from self._store(view, empty)
        yield from self._registry(view, empty)
        yield from self._workers(view, empty)
        yield from self._health(view, empty)
        yield from self._readiness(view, empty)

    # Each group reads its own part of the view; a failure in one (say the store is closed)
    # drops that group from the scrape and is logged, the rest is still served.
    def _guard(self, name: str, produce: Callable[[], list[Metric]]) -> list[Metric]:
        try:
            return produce()
        except Exception:  # a scrape must never fail as a whole
            log.warning("metrics: could not read %s", name, exc_info=True)
            return []

    def _build(self, view: MonitorView, empty: bool) -> list[Metric]:
        build = InfoMetricFamily("bulletproof_build", "Version of the monitor and of the ffmpeg it runs.")
        wmax = GaugeMetricFamily("bulletproof_workers_max", "Configured worker slots.")
        if empty:
            return [build, wmax]

        def produce() -> list[Metric]:
            build.add_metric([], {"version": str(view.version), "ffmpeg_version": str(view.ffmpeg_version)})
            wmax.add_metric([], float(view.max_workers))
            return [build, wmax]

        return self._guard("build info", produce)

    def _membership(self, view: MonitorView, empty: bool) -> list[Metric]:
        # Per node: ties the instance label to the node's name and its fleet, for joins.
        member = InfoMetricFamily("bulletproof_fleet",
                                  "This monitor's node name and its fleet (the id of its job store).",
                                  labels=["fleet", "node"])
        if empty:
            return [member]

        def produce() -> list[Metric]:
            member.add_metric([view.store_id(), view.node_name], {})
            return [member]

        return self._guard("fleet membership", produce)

    # -- the store's gauges: the same on every monitor of a fleet, labelled with its id ------------

    def _store(self, view: MonitorView, empty: bool) -> list[Metric]:
        paused = GaugeMetricFamily("bulletproof_queue_paused",
                                   "1 while the queue is paused (running jobs finish, none start).",
                                   labels=["fleet"])
        since = GaugeMetricFamily("bulletproof_queue_paused_since_timestamp_seconds",
                                  "When the queue was paused (unix time); 0 when it is not paused.",
                                  labels=["fleet"])
        jobs = GaugeMetricFamily("bulletproof_jobs", "Jobs in each state now.", labels=["fleet", "state"])
        oldest = GaugeMetricFamily("bulletproof_queue_oldest_job_timestamp_seconds",
                                   "When the longest-waiting queued job was queued (unix time); "
                                   "0 when the queue is empty.", labels=["fleet"])
        last = GaugeMetricFamily("bulletproof_last_job_finished_timestamp_seconds",
                                 "When a job last finished with each outcome (unix time); 0 if never.",
                                 labels=["fleet", "outcome"])
        families: list[Metric] = [paused, since, jobs, oldest, last]
        if empty:
            return families

        def produce() -> list[Metric]:
            fleet = view.store_id()
            paused_since = view.paused_since
            paused.add_metric([fleet], 1.0 if paused_since is not None else 0.0)
            since.add_metric([fleet], _ts(paused_since))
            counts = view.counts()
            for state in JobState:
                jobs.add_metric([fleet, state.value], float(counts.get(state, 0)))
            oldest.add_metric([fleet], _ts(view.oldest_queued_at()))
            finished = view.last_finished_at()
            for outcome in Outcome:
                last.add_metric([fleet, outcome.value], _ts(finished.get(JobState(outcome.value))))
            return families

        return self._guard("job counts", produce)

    def _registry(self, view: MonitorView, empty: bool) -> list[Metric]:
        labels = ["fleet", "node"]
        up = GaugeMetricFamily("bulletproof_node_up",
                               "1 while the node of the registry is alive (running and heard from "
                               "within 3 heartbeats), else 0.", labels=labels)
        seen = GaugeMetricFamily("bulletproof_node_last_heartbeat_timestamp_seconds",
                                 "When the node last wrote its heartbeat (unix time, by its clock).",
                                 labels=labels)
        interval = GaugeMetricFamily("bulletproof_node_heartbeat_interval_seconds",
                                     "How often the node writes its heartbeat (fleet.heartbeat_seconds).",
                                     labels=labels)
        stopped = GaugeMetricFamily("bulletproof_node_stopped",
                                    "1 once the node stopped cleanly (until it starts again), else 0.",
                                    labels=labels)
        draining = GaugeMetricFamily("bulletproof_node_draining",
                                     "1 while the node finishes its jobs and takes no new ones.",
                                     labels=labels)
        workers = GaugeMetricFamily("bulletproof_node_workers_max",
                                    "Worker slots the node has, as its last heartbeat told.", labels=labels)
        busy = GaugeMetricFamily("bulletproof_node_workers_busy",
                                 "Worker slots of the node running a job, as its last heartbeat told.",
                                 labels=labels)
        families: list[Metric] = [up, seen, interval, stopped, draining, workers, busy]
        if empty:
            return families

        def produce() -> list[Metric]:
            fleet = view.store_id()
            nodes = view.nodes()
            now = time.time()
            for node in nodes:
                key = [fleet, node.name]
                up.add_metric(key, 1.0 if node.alive(now) else 0.0)
                seen.add_metric(key, _ts(node.last_seen))
                interval.add_metric(key, nonneg(node.heartbeat_seconds))
                stopped.add_metric(key, 1.0 if node.stopped_at is not None else 0.0)
                draining.add_metric(key, 1.0 if node.draining else 0.0)
                workers.add_metric(key, float(max(0, node.workers)))
                busy.add_metric(key, float(max(0, node.busy)))
            if self._nodes_seen is not None:
                self._nodes_seen([node.name for node in nodes])
            return families

        return self._guard("node registry", produce)

    def _workers(self, view: MonitorView, empty: bool) -> list[Metric]:
        busy_total = GaugeMetricFamily("bulletproof_workers_busy", "Worker slots holding a job.")
        busy = GaugeMetricFamily("bulletproof_worker_busy",
                                 "1 while the slot holds a job (running or paused).", labels=["worker"])
        paused = GaugeMetricFamily("bulletproof_worker_paused",
                                   "1 while the slot's job is paused by an operator.", labels=["worker"])
        progress = GaugeMetricFamily("bulletproof_worker_progress_ratio",
                                     "Progress of the slot's job, 0..1 (0 when idle).", labels=["worker"])
        speed = GaugeMetricFamily("bulletproof_worker_speed_ratio",
                                  "ffmpeg's speed: media seconds per wall second (0 when idle or unknown).",
                                  labels=["worker"])
        eta = GaugeMetricFamily("bulletproof_worker_eta_seconds",
                                "Estimated seconds until the slot's job ends (0 when idle or unknown).",
                                labels=["worker"])
        started = GaugeMetricFamily("bulletproof_worker_job_started_timestamp_seconds",
                                    "When the slot's current attempt started (unix time); 0 when idle.",
                                    labels=["worker"])
        last_progress = GaugeMetricFamily(
            "bulletproof_worker_last_progress_timestamp_seconds",
            "When ffmpeg last reported progress for the slot's job (unix time; the start time "
            "until the first report); 0 when idle.", labels=["worker"])
        media = GaugeMetricFamily("bulletproof_worker_job_media_seconds",
                                  "Media duration of the slot's job in seconds (0 when idle or unknown).",
                                  labels=["worker"])
        info = InfoMetricFamily("bulletproof_worker_job",
                                "The job a busy slot holds (only busy slots have a series).",
                                labels=["worker"])
        families: list[Metric] = [busy_total, busy, paused, progress, speed, eta, started, last_progress,
                                  media, info]
        if empty:
            return families

        def produce() -> list[Metric]:
            snapshots = {s.slot: s for s in view.workers()}
            # Always every configured slot, idle ones included; a slot beyond a shrunk
            # max_workers still shows while it finishes its job.
            slots = sorted(set(range(view.max_workers)) | {i for i, s in snapshots.items() if s.busy})
            n_busy = 0
            for index in slots:
                snap = snapshots.get(index) or WorkerSnapshot(slot=index)
                label = [str(index)]
                if not snap.busy:
                    for family in (busy, paused, progress, speed, eta, started, last_progress, media):
                        family.add_metric(label, 0.0)
                    continue
                n_busy += 1
                busy.add_metric(label, 1.0)
                paused.add_metric(label, 1.0 if snap.paused else 0.0)
                progress.add_metric(label, _clamp01(snap.progress))
                speed.add_metric(label, nonneg(snap.speed))
                eta.add_metric(label, nonneg(snap.eta_seconds))
                started.add_metric(label, _ts(snap.started_at))
                last_progress.add_metric(label, _ts(snap.last_progress_at or snap.started_at))
                media.add_metric(label, nonneg(snap.media_duration))
                info.add_metric(label, {
                    "job_id": str(snap.job_id),
                    "file": (snap.filename or "")[:_MAX_FILE_LABEL],
                    "profile": snap.profile or "",
                })
            busy_total.add_metric([], float(n_busy))
            return families

        return self._guard("worker slots", produce)

    def _health(self, view: MonitorView, empty: bool) -> list[Metric]:
        folder_up = GaugeMetricFamily("bulletproof_watch_folder_up",
                                      "1 while the watch folder is readable and watched.", labels=["folder"])
        free = GaugeMetricFamily("bulletproof_output_volume_free_bytes",
                                 "Free bytes on the output folder's filesystem (absent if unreadable).")
        size = GaugeMetricFamily("bulletproof_output_volume_size_bytes",
                                 "Size in bytes of the output folder's filesystem (absent if unreadable).")
        reload_ok = GaugeMetricFamily(
            "bulletproof_config_last_reload_successful",
            "1 if the last config reload succeeded (the old config stays on failure).")
        reload_at = GaugeMetricFamily("bulletproof_config_last_reload_success_timestamp_seconds",
                                      "When the config was last loaded successfully (unix time).")
        if empty:
            return [folder_up, free, size, reload_ok, reload_at]

        def produce() -> list[Metric]:
            out: list[Metric] = [folder_up]
            for folder, up in sorted(view.folder_status().items()):
                folder_up.add_metric([folder], 1.0 if up else 0.0)
            volume = view.output_volume()
            if volume is not None:
                free.add_metric([], float(volume[0]))
                size.add_metric([], float(volume[1]))
                out += [free, size]
            ok, at = view.config_status()
            reload_ok.add_metric([], 1.0 if ok else 0.0)
            reload_at.add_metric([], _ts(at))
            out += [reload_ok, reload_at]
            return out

        return self._guard("health", produce)


    def _readiness(self, view: MonitorView, empty: bool) -> list[Metric]:
        ready = GaugeMetricFamily("bulletproof_ready",
                                  "1 when /readyz answers 200 (every component healthy), else 0.")
        healthy = GaugeMetricFamily(
            "bulletproof_component_healthy",
            "1 while the component is healthy: store (takes writes), watcher (every folder "
            "watched), workers (every slot alive), queue (moving when it should).",
            labels=["component"])
        if empty:
            return [ready, healthy]

        def produce() -> list[Metric]:
            health = view.health()
            for component in COMPONENTS:
                healthy.add_metric([component], 0.0 if health.get(component) else 1.0)
            ready.add_metric([], 0.0 if view.problems(health) else 1.0)
            return [ready, healthy]

        return self._guard("readiness", produce)
