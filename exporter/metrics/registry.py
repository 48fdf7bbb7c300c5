"""Prometheus metrics for one monitor.

Two halves, following the product's rule "state is read, history is counted":

* `StateCollector` (`exporter.metrics.collector`), a custom collector that reads the monitor's read-only
  `MonitorView` at scrape time and yields gauges (queue, jobs per state, worker slots, health).
  Nothing is cached there, so a scrape always agrees with the store and the API.
* prometheus_client `Counter` / `Histogram` objects fed by the core's `EventBus` (files seen,
  jobs enqueued / completed / failed by reason, bytes and seconds transcoded, durations).

Every label value that is known up front (states, reasons, triggers, profiles, worker slots, the
nodes of the store's registry) is exported from the first scrape, zeros included, so `increase()` and `rate()` work from the start.
No series carries a job id or a path except `bulletproof_worker_job_info`, which is keyed by
worker slot and therefore bounded by `max_workers`.

The core (`bulletproof`) never imports this module or prometheus_client.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from bulletproof import events as ev
from bulletproof.audit import AUDIT_RESULTS
from bulletproof.events import EventBus
from bulletproof.models import (
    FailureReason,
    IgnoreReason,
    JobState,
    Outcome,
    QueueTrigger,
    SkipReason,
    VerificationResult,
)
from bulletproof.view import MonitorView
from exporter.metrics.collector import StateCollector, nonneg
from exporter.security.permissions import AUDITED_ACTIONS

log = logging.getLogger("exporter.metrics")

# -- label value sets -------------------------------------------------------------------------

STATES: tuple[str, ...] = tuple(s.value for s in JobState)
OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
IGNORE_REASONS: tuple[str, ...] = tuple(r.value for r in IgnoreReason)
#: A cancelled attempt is counted by bulletproof_jobs_cancelled_total, not as a failure.
FAILURE_REASONS: tuple[str, ...] = tuple(
    r.value for r in FailureReason if r is not FailureReason.CANCELLED)
SKIP_REASONS: tuple[str, ...] = tuple(r.value for r in SkipReason)
VERIFICATION_RESULTS: tuple[str, ...] = tuple(r.value for r in VerificationResult)
CONFLICT_POLICIES: tuple[str, ...] = ("rename", "skip", "overwrite", "fail")
RETRY_TRIGGERS: dict[QueueTrigger, str] = {
    QueueTrigger.AUTO_RETRY: "auto", QueueTrigger.MANUAL_RETRY: "manual"}
ENQUEUE_TRIGGERS: frozenset[QueueTrigger] = frozenset({QueueTrigger.DETECTED, QueueTrigger.API})
HTTP_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# -- buckets ----------------------------------------------------------------------------------

JOB_DURATION_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# Quality scores: SSIM crowds near 1 (0.95 is already visibly worse), PSNR is in dB (30-50 is
# the usual range for lossy video), VMAF is 0..100.
SSIM_BUCKETS: tuple[float, ...] = (
    0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1)
PSNR_BUCKETS: tuple[float, ...] = (15, 20, 25, 30, 33, 36, 40, 45, 50, 60, 100)
VMAF_BUCKETS: tuple[float, ...] = (20, 40, 60, 70, 80, 85, 90, 93, 95, 97, 99, 100)
HTTP_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _fast_openmetrics(encoder: Callable[..., bytes]) -> Callable[..., bytes]:
    """The same OpenMetrics bytes, without prometheus_client's per-character name escaping.

    With the default "underscores" escaping, prometheus_client 0.2x's OpenMetrics encoder rewrites
    every sample name one character at a time (about half of a scrape's CPU here: our names are
    long). For names that are already in the legacy charset [a-zA-Z_:][a-zA-Z0-9_:]*, which every
    name in a registry built by BulletproofMetrics is, the "allow-utf-8" path produces the same
    bytes with str.replace; tests/test_metrics.py checks the two outputs are identical. The
    negotiated Content-Type (escaping=underscores) is unchanged.
    """
    if (isinstance(encoder, partial) and encoder.func is openmetrics_exposition.generate_latest
            and encoder.keywords.get("escaping") == openmetrics_exposition.UNDERSCORES):
        return partial(encoder.func, *encoder.args,
                       **{**encoder.keywords, "escaping": openmetrics_exposition.ALLOWUTF8})
    return encoder


def _gzip_accepted(accept_encoding: str | None) -> bool:
    """True if the client takes gzip (honours `gzip;q=0` as a refusal)."""
    for part in (accept_encoding or "").split(","):
        token, *params = (p.strip() for p in part.split(";"))
        if token.lower() != "gzip":
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


class BulletproofMetrics:
    """Prometheus metrics for one monitor: a scrape-time state collector, event-fed counters and
    histograms."""

    def __init__(self, view: MonitorView, bus: EventBus, registry: CollectorRegistry | None = None,
                 *, created_series: bool = False) -> None:
        # prometheus_client adds a `<name>_created` series per counter / histogram child. Every
        # series here is pre-initialised at 0, which is what makes increase() correct from the
        # first scrape, so `_created` only doubles the counter series and costs ~1 ms a scrape.
        # The switch is process-wide in prometheus_client; the exporter owns the process's metrics.
        if not created_series:
            disable_created_metrics()
        # Only a registry built here is known to hold nothing but legacy-charset names (see render).
        self._legacy_names_only = registry is None
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self._view = view
        self._lock = threading.Lock()
        self._known_profiles: set[str] = set()
        self._known_gates: set[tuple[str, str]] = set()
        self._known_nodes: set[str] = set()

        self._state = StateCollector(view, nodes_seen=self._init_nodes)
        registry.register(self._state)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, doc, labelnames=tuple(labels), registry=registry)

        self.files_detected = counter("bulletproof_files_detected_total",
                                      "Stable files seen in the watch folders.")
        self.files_ignored = counter("bulletproof_files_ignored_total",
                                     "Files seen but not queued, by reason.", ["reason"])
        self.jobs_enqueued = counter(
            "bulletproof_jobs_enqueued_total",
            "New jobs queued (detected in a watch folder or asked for through the API).", ["profile"])
        self.jobs_completed = counter("bulletproof_jobs_completed_total",
                                      "Jobs transcoded successfully.", ["profile"])
        self.jobs_failed = counter("bulletproof_jobs_failed_total",
                                   "Failed attempts, by reason (each attempt, retried or not).",
                                   ["profile", "reason"])
        self.jobs_cancelled = counter("bulletproof_jobs_cancelled_total",
                                      "Jobs cancelled (queued or running).", ["profile"])
        self.jobs_skipped = counter("bulletproof_jobs_skipped_total",
                                    "Jobs that ended skipped (no work needed, or the result was "
                                    "not kept), by reason.", ["profile", "reason"])
        self.verifications = counter("bulletproof_verifications_total",
                                     "Checks of finished outputs before publishing, by result.",
                                     ["result"])
        self.output_conflicts = counter("bulletproof_output_conflicts_total",
                                        "New jobs whose output name was taken, by the output_conflict "
                                        "policy applied.", ["policy"])
        self.jobs_retried = counter(
            "bulletproof_jobs_retried_total",
            "Jobs queued again, by trigger (auto retry after a failure, manual retry).",
            ["profile", "trigger"])
        self.input_bytes = counter("bulletproof_input_bytes_total",
                                   "Bytes of source files transcoded successfully.", ["profile"])
        self.output_bytes = counter("bulletproof_output_bytes_total",
                                    "Bytes of outputs written successfully.", ["profile"])
        self.media_seconds = counter("bulletproof_media_seconds_total",
                                     "Seconds of media transcoded successfully.", ["profile"])
        self.transcode_seconds = counter("bulletproof_transcode_seconds_total",
                                         "Worker busy time of every finished attempt (pauses excluded).",
                                         ["profile"])
        self.job_duration = Histogram("bulletproof_job_duration_seconds",
                                      "Busy time of successful attempts (pauses excluded).",
                                      labelnames=("profile",), buckets=JOB_DURATION_BUCKETS,
                                      registry=registry)
        self.queue_wait = Histogram("bulletproof_job_queue_wait_seconds",
                                    "Time from (re)queueing until a worker started the attempt.",
                                    labelnames=("profile",), buckets=QUEUE_WAIT_BUCKETS, registry=registry)
        self.quality = {
            metric: Histogram(name, doc, labelnames=("profile",), buckets=buckets, registry=registry)
            for metric, name, doc, buckets in (
                ("ssim", "bulletproof_quality_ssim_ratio",
                 "SSIM of outputs against their sources (profiles with a quality gate), 0..1.",
                 SSIM_BUCKETS),
                ("psnr", "bulletproof_quality_psnr_decibels",
                 "PSNR of outputs against their sources in dB (identical pictures count as 100).",
                 PSNR_BUCKETS),
                ("vmaf", "bulletproof_quality_vmaf_score",
                 "VMAF of outputs against their sources, 0..100.", VMAF_BUCKETS))}
        # A node label is bounded by the fleet's size (the registry's rows), like worker by max_workers.
        self.leases_expired = counter(
            "bulletproof_leases_expired_total",
            "Leases of running jobs that this node's sweep found lapsed and took back, by the node "
            "that held them (it died, froze or lost the store).", ["node"])
        self.worker_restarts = counter(
            "bulletproof_worker_restarts_total",
            "Errors a worker slot's loop caught and restarted after (with backoff).", ["worker"])
        self.http_requests = counter("bulletproof_http_requests_total",
                                     "HTTP requests served, by route template, method and status code.",
                                     ["handler", "method", "code"])
        self.http_duration = Histogram("bulletproof_http_request_duration_seconds",
                                       "Time to serve HTTP requests, by route template and method.",
                                       labelnames=("handler", "method"), buckets=HTTP_DURATION_BUCKETS,
                                       registry=registry)

        # -- control API audit (exporter.security.audit): every action x result from the start
        self.control_requests = counter(
            "bulletproof_api_control_requests_total",
            "Control and config calls on the API, by action and result (the audit trail's count).",
            ["action", "result"])
        for action in AUDITED_ACTIONS:
            for result in AUDIT_RESULTS:
                self.control_requests.labels(action=action, result=result)

        for reason in IGNORE_REASONS:
            self.files_ignored.labels(reason=reason)
        for result in VERIFICATION_RESULTS:
            self.verifications.labels(result=result)
        for policy in CONFLICT_POLICIES:
            self.output_conflicts.labels(policy=policy)
        self._init_worker_slots()
        self._init_profiles()
        self._init_registry_nodes()
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self._on_event)

    # -- label pre-initialisation -------------------------------------------------------------

    def _init_profiles(self) -> None:
        """Create every per-profile series at zero (new profiles after a reload too)."""
        try:
            profiles = dict(self._view.profiles())
        except Exception:  # a broken config read must not stop the exporter
            log.warning("metrics: could not list profiles", exc_info=True)
            return
        with self._lock:
            new = [p for p in profiles if p not in self._known_profiles]
            self._known_profiles.update(new)
            # A quality gate's histogram exists for the profiles that have one (its metric known).
            gates = [(name, p.quality.metric) for name, p in profiles.items()
                     if p.quality is not None and (name, p.quality.metric) not in self._known_gates]
            self._known_gates.update(gates)
        for profile in new:
            self._init_profile(profile)
        for profile, metric in gates:
            self.quality[metric].labels(profile=profile)

    def _init_worker_slots(self) -> None:
        """Create the per-slot series at zero for every configured slot (more after a reload)."""
        try:
            slots = self._view.max_workers
        except Exception:  # a broken config read must not stop the exporter
            log.warning("metrics: could not read max_workers", exc_info=True)
            return
        for slot in range(slots):
            self.worker_restarts.labels(worker=str(slot))

    def _init_registry_nodes(self) -> None:
        """Create the per-node series at zero for every node the store's registry lists."""
        try:
            names = [node.name for node in self._view.nodes()]
        except Exception:  # an unreadable store must not stop the exporter
            log.warning("metrics: could not list the nodes", exc_info=True)
            return
        self._init_nodes(names)

    def _init_nodes(self, names: list[str]) -> None:
        """Create the per-node series of ``names`` not seen yet (called at each scrape too)."""
        with self._lock:
            new = [name for name in names if name not in self._known_nodes]
            self._known_nodes.update(new)
        for name in new:
            self.leases_expired.labels(node=name)

    def _init_profile(self, profile: str) -> None:
        for family in (self.jobs_enqueued, self.jobs_completed, self.jobs_cancelled, self.input_bytes,
                       self.output_bytes, self.media_seconds, self.transcode_seconds, self.job_duration,
                       self.queue_wait):
            family.labels(profile=profile)
        for reason in FAILURE_REASONS:
            self.jobs_failed.labels(profile=profile, reason=reason)
        for reason in SKIP_REASONS:
            self.jobs_skipped.labels(profile=profile, reason=reason)
        for trigger in RETRY_TRIGGERS.values():
            self.jobs_retried.labels(profile=profile, trigger=trigger)

    # -- events -------------------------------------------------------------------------------

    def _local(self, event: ev.Event) -> bool:
        """True for an event of this node's own work.

        The one place where events are filtered: a job event another node published and this
        node's bus relays (marked with that node as its `origin`) is counted where it happened.
        """
        return event.origin is None

    def _on_event(self, event: ev.Event) -> None:
        if not self._local(event):
            return
        if isinstance(event, ev.JobFinished):
            self._on_finished(event)
        elif isinstance(event, ev.JobStarted):
            self.queue_wait.labels(profile=event.job.profile).observe(max(0.0, event.queue_wait))
        elif isinstance(event, ev.JobQueued):
            profile = event.job.profile
            if event.trigger in ENQUEUE_TRIGGERS:
                self.jobs_enqueued.labels(profile=profile).inc()
            elif event.trigger in RETRY_TRIGGERS:
                self.jobs_retried.labels(profile=profile, trigger=RETRY_TRIGGERS[event.trigger]).inc()
            # RECOVERED (after a restart or a clean shutdown) is neither new work nor a retry.
        elif isinstance(event, ev.OutputVerified):
            self.verifications.labels(result=VerificationResult(event.result).value).inc()
        elif isinstance(event, ev.QualityScored):
            histogram = self.quality.get(event.metric)
            if histogram is not None:
                histogram.labels(profile=event.profile).observe(max(0.0, event.score))
        elif isinstance(event, ev.OutputConflict):
            if event.policy in CONFLICT_POLICIES:
                self.output_conflicts.labels(policy=event.policy).inc()
        elif isinstance(event, ev.FileDetected):
            self.files_detected.inc()
        elif isinstance(event, ev.FileIgnored):
            self.files_ignored.labels(reason=IgnoreReason(event.reason).value).inc()
        elif isinstance(event, ev.LeaseExpired):
            self._init_nodes([event.holder])
            self.leases_expired.labels(node=event.holder).inc()
        elif isinstance(event, ev.WorkerRestarted):
            self.worker_restarts.labels(worker=str(event.worker)).inc()
        elif isinstance(event, ev.ConfigReloaded):
            if event.success:
                self._init_profiles()
                self._init_worker_slots()

    def _on_finished(self, event: ev.JobFinished) -> None:
        job = event.job
        profile = job.profile
        busy = max(0.0, float(event.busy_seconds or 0.0))
        self.transcode_seconds.labels(profile=profile).inc(busy)
        if event.outcome is Outcome.COMPLETED:
            self.jobs_completed.labels(profile=profile).inc()
            self.input_bytes.labels(profile=profile).inc(max(0, job.input_bytes or job.size or 0))
            self.output_bytes.labels(profile=profile).inc(max(0, job.output_bytes or 0))
            self.media_seconds.labels(profile=profile).inc(nonneg(job.media_duration))
            self.job_duration.labels(profile=profile).observe(busy)
        elif event.outcome is Outcome.FAILED:
            reason = event.reason or job.reason or FailureReason.FFMPEG_ERROR
            self.jobs_failed.labels(profile=profile, reason=FailureReason(reason).value).inc()
        elif event.outcome is Outcome.CANCELLED:
            self.jobs_cancelled.labels(profile=profile).inc()
        elif event.outcome is Outcome.SKIPPED:
            reason = SkipReason(event.reason or job.reason or SkipReason.ALREADY_TARGET)
            self.jobs_skipped.labels(profile=profile, reason=reason.value).inc()

    # -- HTTP ---------------------------------------------------------------------------------

    def observe_request(self, handler: str, method: str, code: int, seconds: float) -> None:
        """Count one served request.

        `handler` must be the route's canonical template ("/api/v1/jobs/{id}"), never the raw
        path; requests that match no route should be reported under one fixed name (e.g.
        "unmatched"). Unknown HTTP methods are folded into "other" so a client cannot grow the
        label set.
        """
        method = method.upper()
        if method not in HTTP_METHODS:
            method = "other"
        self.http_requests.labels(handler=handler, method=method, code=str(int(code))).inc()
        self.http_duration.labels(handler=handler, method=method).observe(max(0.0, seconds))

    def observe_control(self, action: str, result: str) -> None:
        """Count one audited call (`action` from exporter.security.permissions, `result` from
        bulletproof.audit.AUDIT_RESULTS; anything else is not counted, to keep labels bounded)."""
        if action in AUDITED_ACTIONS and result in AUDIT_RESULTS:
            self.control_requests.labels(action=action, result=result).inc()

    # -- exposition ---------------------------------------------------------------------------

    def render(self, accept: str | None, accept_encoding: str | None) -> tuple[bytes, str, str | None]:
        """The exposition for a scrape: (body, content type, content encoding or None).

        OpenMetrics when the Accept header asks for it (prometheus_client's choose_encoder),
        the Prometheus text format 0.0.4 otherwise; gzip when Accept-Encoding allows it.
        """
        encoder, content_type = choose_encoder(accept or "")
        if self._legacy_names_only:
            encoder = _fast_openmetrics(encoder)
        body = encoder(self.registry)
        if _gzip_accepted(accept_encoding):
            return gzip.compress(body, compresslevel=6), content_type, "gzip"
        return body, content_type, None

    def close(self) -> None:
        """Stop listening to the bus (the registry and its values stay readable)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
