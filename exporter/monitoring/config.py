"""The one configuration of the monitoring mixin: selectors, thresholds, durations, URLs, uids."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds (values the promtool tests in prometheus/tests/ exercise on both sides)."""

    api_auth_failures_10m: int = 30          # BulletproofApiAuthFailures: failed calls in 10m
    worker_restarts_15m: int = 2             # BulletproofWorkerRestarting: restarts in 15m
    failure_burst_15m: int = 5               # BulletproofJobFailureBurst: failures per reason in 15m
    verification_failures_30m: int = 1       # BulletproofOutputVerificationFailed: in 30m
    failure_ratio: float = 0.25              # BulletproofHighFailureRatio: share of attempts
    failure_ratio_min_attempts: int = 10     # ... with at least this many attempts in 30m
    stall_seconds: int = 300                 # BulletproofJobStalled: seconds without progress
    too_slow_media_factor: int = 10          # BulletproofJobTooSlow: elapsed > factor x media
    too_slow_grace_seconds: int = 600        # ... plus this many seconds
    too_slow_unknown_seconds: int = 8 * 3600  # ... or this long when the media length is unknown
    queue_stuck_wait_seconds: int = 60       # BulletproofQueueStuck: a runnable job waited this long
    queue_stuck_idle_seconds: int = 6 * 3600  # ... or nothing finished for this long
    backlog_jobs: int = 100                  # BulletproofBacklogGrowing: predicted queued jobs
    backlog_horizon_seconds: int = 4 * 3600  # ... this far ahead
    oldest_job_seconds: int = 4 * 3600       # BulletproofOldestJobTooOld
    paused_seconds: int = 3600               # BulletproofQueuePausedLong
    volume_free_ratio: float = 0.10          # BulletproofOutputVolumeAlmostFull
    volume_fill_horizon_seconds: int = 24 * 3600  # BulletproofOutputVolumeFillingUp: full within
    volume_fill_guard_ratio: float = 0.40    # ... only once less than this share is free
    node_down_missed_heartbeats: int = 3    # BulletproofNodeDown: heartbeats missed (no clean stop)
    leases_expired_15m: int = 1              # BulletproofLeasesExpiring: a node's leases lapsed in 15m
    node_failing_factor: float = 2.0         # BulletproofNodeFailingMore: node ratio > factor x fleet's
    node_failing_min_attempts: int = 10      # ... with at least this many attempts on the node in 30m


# `for` of every alert, by alert name.
DEFAULT_FOR: dict[str, str] = {
    "BulletproofDown": "2m",
    "BulletproofAbsent": "5m",
    "BulletproofWatchFolderDown": "2m",
    "BulletproofConfigReloadFailed": "5m",
    "BulletproofApiAuthFailures": "5m",
    "BulletproofNotReady": "5m",
    "BulletproofWorkerRestarting": "5m",
    "BulletproofJobFailureBurst": "1m",
    "BulletproofOutputVerificationFailed": "1m",
    "BulletproofHighFailureRatio": "10m",
    "BulletproofJobStalled": "5m",
    "BulletproofJobTooSlow": "5m",
    "BulletproofQueueStuck": "5m",
    "BulletproofBacklogGrowing": "15m",
    "BulletproofOldestJobTooOld": "15m",
    "BulletproofQueuePausedLong": "5m",
    "BulletproofOutputVolumeAlmostFull": "5m",
    "BulletproofOutputVolumeFillingUp": "30m",
    "BulletproofNodeDown": "1m",
    "BulletproofLeasesExpiring": "1m",
    "BulletproofNodeFailingMore": "10m",
}


@dataclass(frozen=True)
class Datasources:
    """Provisioned data source uids (grafana/provisioning/datasources) and dashboard variables."""

    prometheus_uid: str = "bulletproof-prometheus"
    api_uid: str = "bulletproof-api"
    # The alert list panel names its Alertmanager data source by name, not uid.
    alertmanager_name: str = "Bulletproof Alertmanager"


@dataclass(frozen=True)
class MonitoringConfig:
    """Everything a deployment may want to change in the generated rules and dashboards.

    The monitors are told apart by the `instance` label (rules group by it, panels filter on
    it), as Prometheus sets it for every target; the store's gauges, which every monitor of a
    fleet exports alike, are kept once per `fleet` (the store's id) by the fleet recording rules.
    """

    job_name: str = "bulletproof"
    runbook_base_url: str = "https://github.com/bulletproof-video/bulletproof/blob/main/docs/runbook.md"
    thresholds: Thresholds = field(default_factory=Thresholds)
    for_durations: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FOR))
    datasources: Datasources = field(default_factory=Datasources)

    @property
    def job_selector(self) -> str:
        """The label matcher that picks the monitor's scrape job (`job="bulletproof"`)."""
        return f'job="{self.job_name}"'

    def runbook_url(self, alert: str) -> str:
        """The runbook section of an alert (docs/runbook.md#<lowercase name>)."""
        return f"{self.runbook_base_url}#{alert.lower()}"


DEFAULT = MonitoringConfig()
