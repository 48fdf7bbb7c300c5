"""MonitorView: the read-only face of a running monitor that plugins read at scrape or request time.

Built from the state's owners (store, queue state, config state, worker pool, folder watcher),
never from the monitor: the view knows nothing of `Monitor`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulletproof.audit import AuditEntry
from bulletproof.config import Config
from bulletproof.ffmpeg import FfmpegBinaries
from bulletproof.fleet import NodePresence
from bulletproof.models import Job, JobState, WorkerSnapshot
from bulletproof.paths import output_path_for
from bulletproof.profiles import Profile
from bulletproof.rules import RuleMatch
from bulletproof.state import ConfigState, Lifecycle, QueueState
from bulletproof.store import JobStore, NodeInfo
from bulletproof.watcher import FolderWatcher
from bulletproof.workers import WorkerPool

#: The parts `MonitorView.health` reports on, in order.
COMPONENTS: tuple[str, ...] = ("store", "watcher", "workers", "queue")
#: A runnable job may wait this long with a free, unpaused slot before the queue counts as stuck.
QUEUE_STALL_SECONDS = 60.0


class MonitorView:
    """Answers questions about the monitor's state; never changes it."""

    def __init__(self, *, version: str, binaries: FfmpegBinaries, store: JobStore,
                 settings: ConfigState, queue: QueueState, lifecycle: Lifecycle,
                 pool: WorkerPool, watcher: Callable[[], FolderWatcher | None],
                 presence: NodePresence) -> None:
        self._version = version
        self._binaries = binaries
        self._store = store
        self._settings = settings
        self._queue = queue
        self._lifecycle = lifecycle
        self._pool = pool
        self._watcher = watcher  # replaced when the watch folders change, so asked each time
        self._presence = presence

    @property
    def node_name(self) -> str:
        """This monitor's name among the nodes of its store."""
        return self._presence.name

    @property
    def draining(self) -> bool:
        """True while this node finishes its jobs and takes no new ones."""
        return self._pool.draining

    def store_id(self) -> str:
        """The id the store made for itself once (the same on every monitor sharing it)."""
        return self._store.get_meta("store_id") or ""

    def nodes(self) -> list[NodeInfo]:
        """Every node of the store (this one included), by name, as their heartbeats told."""
        return self._store.nodes()

    @property
    def version(self) -> str:
        """The package version."""
        return self._version

    @property
    def ffmpeg_version(self) -> str:
        """The version of the ffmpeg in use."""
        return self._binaries.version

    @property
    def config(self) -> Config:
        """The config in force (immutable by convention: do not modify)."""
        return self._settings.current

    @property
    def config_path(self) -> Path | None:
        """The config file the monitor was started from, if any."""
        return self._settings.path

    def restart_pending(self) -> list[str]:
        """Restart-only keys changed since the start; they take effect on the next restart."""
        return self._settings.restart_pending()

    @property
    def started_at(self) -> float | None:
        """When the monitor started (unix time)."""
        return self._lifecycle.started_at

    @property
    def paused(self) -> bool:
        """True while the queue is paused."""
        return self._queue.paused

    @property
    def paused_since(self) -> float | None:
        """When the queue was paused, or None."""
        return self._queue.paused_since

    @property
    def max_workers(self) -> int:
        """Configured worker slots."""
        return self._settings.current.max_workers

    def workers(self) -> list[WorkerSnapshot]:
        """What every worker slot is doing."""
        if not self._pool.started:
            return [WorkerSnapshot(slot=i) for i in range(self.max_workers)]
        return self._pool.snapshots()

    def busy_workers(self) -> int:
        """Slots that hold a job."""
        return self._pool.busy_count()

    def counts(self) -> dict[JobState, int]:
        """Jobs per state, zeros included."""
        return self._store.counts_by_state()

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        return self._store.oldest_queued_at()

    def last_finished_at(self) -> dict[JobState, float | None]:
        """Latest finish time per terminal state."""
        return self._store.last_finished_at()

    def folder_status(self) -> dict[str, bool]:
        """Watch folders and whether each is available."""
        watcher = self._watcher()
        known = watcher.folder_status() if watcher is not None else {}
        return {str(f.path): known.get(Path(os.path.abspath(f.path)), False)
                for f in self._settings.current.monitor_folder}

    def output_volume(self) -> tuple[int, int] | None:
        """(free bytes, size bytes) of the output folder's filesystem, None if unreadable."""
        try:
            usage = shutil.disk_usage(self._settings.current.output_folder)
        except OSError:
            return None
        return usage.free, usage.total

    def config_status(self) -> tuple[bool, float | None]:
        """Whether the last config reload succeeded, and when one last did."""
        return self._settings.last_reload_ok, self._settings.last_reload_success_at

    def profiles(self) -> dict[str, Profile]:
        """Built-in and configured profiles."""
        return self._settings.current.all_profiles()

    def get_job(self, job_id: int) -> Job:
        """One job (raises JobNotFound); a running job's progress is its worker slot's."""
        return self._with_live_progress([self._store.get(job_id)])[0]

    def list_jobs(self, **filters: Any) -> tuple[list[Job], int]:
        """A filtered page of jobs and the total (see JobStore.list_jobs), progress as `get_job`."""
        jobs, total = self._store.list_jobs(**filters)
        return self._with_live_progress(jobs), total

    def _with_live_progress(self, jobs: list[Job]) -> list[Job]:
        """Progress has one owner: the worker slot while a job runs, the store once it ended."""
        if not any(job.state.is_active for job in jobs):
            return jobs
        live = {w.job_id: w for w in self._pool.snapshots() if w.job_id is not None}
        out = []
        for job in jobs:
            slot = live.get(job.id) if job.state.is_active else None
            if slot is not None:
                job = dataclasses.replace(
                    job, progress=slot.progress, speed=slot.speed, eta_seconds=slot.eta_seconds,
                    media_duration=job.media_duration if job.media_duration is not None
                    else slot.media_duration)
            out.append(job)
        return out

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in run order."""
        return self._store.queued(limit=limit, offset=offset)

    def summary(self) -> dict[str, Any]:
        """Totals, average duration and the last 24 h."""
        return self._store.summary(now=time.time())

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per bucket."""
        return self._store.history(since=since, until=until, step=step)

    def match(self, rel_path: str, size: int | None = None) -> RuleMatch | None:
        """Which rule and profile a path would get."""
        return self._settings.rules.match(rel_path, size)

    def output_for(self, rel_path: str, match: RuleMatch) -> Path:
        """Where a file's output would go (raises PathError for a name that cannot be made)."""
        return output_path_for(self._settings.current, rel_path, match.profile_name, match.profile,
                               match.rule_name)

    def audit_entries(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The newest audit entries first (ids below `before` if given)."""
        return self._store.audit_entries(limit=limit, before=before)

    def problems(self, health: dict[str, list[str]] | None = None) -> list[str]:
        """Why the monitor is not ready, empty when it is (from `health` when given)."""
        problems = []
        if self._lifecycle.started_at is None:
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
        health = self._store.health()
        if health.corrupt is not None:
            problems.append(f"job store damaged, no new job starts: {health.corrupt}")
        elif not health.writable:
            problems.append(f"job store refuses writes: {health.error}")
        try:
            self._store.counts_by_state()
        except Exception as exc:  # any store failure makes the monitor unready
            problems.append(f"job store unavailable: {exc}")
        for slot, error in sorted(self._pool.pending_outcomes().items()):
            problems.append(f"worker slot {slot} keeps an outcome the store has not taken: {error}")
        return problems

    def _watcher_problems(self) -> list[str]:
        problems = []
        watcher = self._watcher()
        if watcher is None or not watcher.running:
            problems.append("the folder watchers are not running")
        for folder, up in self.folder_status().items():
            if not up:
                problems.append(f"watch folder unavailable: {folder}")
        return problems

    def _worker_problems(self) -> list[str]:
        problems = []
        pool = self._pool
        if not pool.started:
            problems.append("the worker slots have not started")
        else:
            problems += [f"worker slot {i} is not running" for i in pool.dead_slots()]
            problems += [f"worker slot {i} is restarting after an error: {error}"
                         for i, error in sorted(pool.troubled_slots().items())]
        if not os.access(self._binaries.ffmpeg, os.X_OK):
            problems.append(f"ffmpeg not executable: {self._binaries.ffmpeg}")
        return problems

    def _queue_problems(self) -> list[str]:
        """A runnable job, a free slot, the queue not paused, yet nothing claimed for a while."""
        pool = self._pool
        if not pool.started or self._queue.paused or pool.busy_count() >= pool.size:
            return []
        try:
            job = self._store.next_queued(now=time.time(), within=pool.claim_prefixes)
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
