"""MonitorView: the read-only face of a running monitor that plugins read at scrape or request time."""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from bulletproof.audit import AuditEntry
from bulletproof.config import Config
from bulletproof.models import Job, JobState, WorkerSnapshot
from bulletproof.profiles import Profile
from bulletproof.rules import RuleMatch

if TYPE_CHECKING:
    from bulletproof.service import Monitor

#: The parts `MonitorView.health` reports on, in order.
COMPONENTS: tuple[str, ...] = ("store", "watcher", "workers", "queue")
#: A runnable job may wait this long with a free, unpaused slot before the queue counts as stuck.
QUEUE_STALL_SECONDS = 60.0


class MonitorView:
    """Answers questions about the monitor's state; never changes it."""

    def __init__(self, monitor: Monitor) -> None:
        self._m = monitor

    @property
    def version(self) -> str:
        """The package version."""
        return self._m.version

    @property
    def ffmpeg_version(self) -> str:
        """The version of the ffmpeg in use."""
        return self._m.binaries.version

    @property
    def config(self) -> Config:
        """The config in force (immutable by convention: do not modify)."""
        return self._m.config

    @property
    def started_at(self) -> float | None:
        """When the monitor started (unix time)."""
        return self._m.started_at

    @property
    def paused(self) -> bool:
        """True while the queue is paused."""
        return self._m.paused_since is not None

    @property
    def paused_since(self) -> float | None:
        """When the queue was paused, or None."""
        return self._m.paused_since

    @property
    def max_workers(self) -> int:
        """Configured worker slots."""
        return self._m.config.max_workers

    def workers(self) -> list[WorkerSnapshot]:
        """What every worker slot is doing."""
        pool = self._m.pool
        if pool is None:
            return [WorkerSnapshot(slot=i) for i in range(self.max_workers)]
        return pool.snapshots()

    def busy_workers(self) -> int:
        """Slots that hold a job."""
        pool = self._m.pool
        return 0 if pool is None else pool.busy_count()

    def counts(self) -> dict[JobState, int]:
        """Jobs per state, zeros included."""
        return self._m.store.counts_by_state()

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        return self._m.store.oldest_queued_at()

    def last_finished_at(self) -> dict[JobState, float | None]:
        """Latest finish time per terminal state."""
        return self._m.store.last_finished_at()

    def folder_status(self) -> dict[str, bool]:
        """Watch folders and whether each is available."""
        known = self._m.folder_status()
        return {str(f.path): known.get(str(f.path), False) for f in self._m.config.monitor_folder}

    def output_volume(self) -> tuple[int, int] | None:
        """(free bytes, size bytes) of the output folder's filesystem, None if unreadable."""
        try:
            usage = shutil.disk_usage(self._m.config.output_folder)
        except OSError:
            return None
        return usage.free, usage.total

    def config_status(self) -> tuple[bool, float | None]:
        """Whether the last config reload succeeded, and when one last did."""
        return self._m.last_reload_ok, self._m.last_reload_success_at

    def profiles(self) -> dict[str, Profile]:
        """Built-in and configured profiles."""
        return self._m.config.all_profiles()

    def get_job(self, job_id: int) -> Job:
        """One job (raises JobNotFound)."""
        return self._m.store.get(job_id)

    def list_jobs(self, **filters: Any) -> tuple[list[Job], int]:
        """A filtered page of jobs and the total (see JobStore.list_jobs)."""
        return self._m.store.list_jobs(**filters)

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in run order."""
        return self._m.store.queued(limit=limit, offset=offset)

    def summary(self) -> dict[str, Any]:
        """Totals, average duration and the last 24 h."""
        return self._m.store.summary(now=time.time())

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per bucket."""
        return self._m.store.history(since=since, until=until, step=step)

    def match(self, rel_path: str, size: int | None = None) -> RuleMatch | None:
        """Which rule and profile a path would get."""
        return self._m.match(rel_path, size)

    def audit_entries(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The newest audit entries first (ids below `before` if given)."""
        return self._m.store.audit_entries(limit=limit, before=before)

    def problems(self, health: dict[str, list[str]] | None = None) -> list[str]:
        """Why the monitor is not ready, empty when it is (from `health` when given)."""
        problems = []
        if self._m.started_at is None:
            problems.append("the monitor has not started")
        for found in (self.health() if health is None else health).values():
            problems.extend(found)
        return problems

    def health(self) -> dict[str, list[str]]:
        """The problems of each component (COMPONENTS order); an empty list means healthy."""
        return {"store": self._store_problems(), "watcher": self._watcher_problems(),
                "workers": self._worker_problems(), "queue": self._queue_problems()}

    def _store_problems(self) -> list[str]:
        problems = []
        health = self._m.store.health()
        if health.corrupt is not None:
            problems.append(f"job store damaged, no new job starts: {health.corrupt}")
        elif not health.writable:
            problems.append(f"job store refuses writes: {health.error}")
        try:
            self._m.store.counts_by_state()
        except Exception as exc:  # any store failure makes the monitor unready
            problems.append(f"job store unavailable: {exc}")
        pool = self._m.pool
        for slot, error in sorted((pool.pending_outcomes() if pool else {}).items()):
            problems.append(f"worker slot {slot} keeps an outcome the store has not taken: {error}")
        return problems

    def _watcher_problems(self) -> list[str]:
        problems = []
        watcher = self._m.watcher
        if watcher is None or not watcher.running:
            problems.append("the folder watchers are not running")
        for folder, up in self.folder_status().items():
            if not up:
                problems.append(f"watch folder unavailable: {folder}")
        return problems

    def _worker_problems(self) -> list[str]:
        problems = []
        pool = self._m.pool
        if pool is None:
            problems.append("the worker slots have not started")
        else:
            problems += [f"worker slot {i} is not running" for i in pool.dead_slots()]
            problems += [f"worker slot {i} is restarting after an error: {error}"
                         for i, error in sorted(pool.troubled_slots().items())]
        if not os.access(self._m.binaries.ffmpeg, os.X_OK):
            problems.append(f"ffmpeg not executable: {self._m.binaries.ffmpeg}")
        return problems

    def _queue_problems(self) -> list[str]:
        """A runnable job, a free slot, the queue not paused, yet nothing claimed for a while."""
        pool = self._m.pool
        if pool is None or pool.paused or pool.busy_count() >= pool.size:
            return []
        try:
            job = self._m.store.next_queued(now=time.time())
        except Exception:  # reported by the store check
            return []
        if job is None:
            return []
        waited = time.time() - max(job.queued_at, job.not_before or 0.0)
        idle = min(waited, time.monotonic() - pool.last_activity)
        if idle < QUEUE_STALL_SECONDS:
            return []
        return [f"the queue is not moving: job {job.id} is runnable, a worker slot is free, "
                f"and nothing was started for {idle:.0f} s"]
