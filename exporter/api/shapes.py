"""The JSON shapes of the API's answers: jobs (with live progress), worker slots, the status."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from bulletproof.models import Job, WorkerSnapshot

if TYPE_CHECKING:
    from bulletproof.service import Monitor

# The job fields left out of list views (large, or only useful on the detail page).
_LIST_OMIT = ("stderr_tail", "source_path", "watch_folder", "mtime_ns", "source_inode")


def live_workers(monitor: Monitor) -> dict[int, WorkerSnapshot]:
    """Busy worker slots by the id of the job they run."""
    return {w.job_id: w for w in monitor.view.workers() if w.job_id is not None}


def job_json(job: Job, live: dict[int, WorkerSnapshot] | None = None, *,
             detail: bool = False) -> dict[str, Any]:
    """A job as the API shows it: the store's record, the plan's field names, live progress.

    `status` repeats `state` and `completed_at` repeats `finished_at` (the plan's Job model).
    For a running job, `progress`, `speed` and `eta_seconds` come from its worker slot (the store
    saves them only every few seconds). List views leave out the large or internal fields.
    """
    data = job.to_dict()
    data["status"] = data["state"]
    data["completed_at"] = data["finished_at"]
    snap = (live or {}).get(job.id) if job.state.is_active else None
    data["worker"] = snap.slot if snap is not None else None
    data["last_progress_at"] = snap.last_progress_at if snap is not None else None
    if snap is not None:
        data["progress"] = snap.progress
        data["speed"] = snap.speed
        data["eta_seconds"] = snap.eta_seconds
        if data["media_duration"] is None:
            data["media_duration"] = snap.media_duration
    if not detail:
        for key in _LIST_OMIT:
            data.pop(key, None)
    return data


_SLOT_FIELDS = tuple(f.name for f in fields(WorkerSnapshot))


def slot_json(slot: WorkerSnapshot) -> dict[str, Any]:
    """One worker slot."""
    data = {name: getattr(slot, name) for name in _SLOT_FIELDS}
    data["busy"] = slot.busy
    return data


def status_json(monitor: Monitor) -> dict[str, Any]:
    """GET /api/v1/status."""
    view = monitor.view
    now = time.time()
    counts = {state.value: n for state, n in view.counts().items()}
    slots = view.workers()
    volume = view.output_volume()
    reload_ok, reload_at = view.config_status()
    started = view.started_at
    return {
        "paused": view.paused,
        "paused_since": view.paused_since,
        "workers": {"busy": sum(1 for s in slots if s.busy), "max": view.max_workers,
                    "slots": [slot_json(s) for s in slots]},
        "counts": counts,
        "queue": {"length": counts.get("queued", 0), "oldest_queued_at": view.oldest_queued_at()},
        "version": view.version,
        "ffmpeg_version": view.ffmpeg_version,
        "started_at": started,
        "uptime_seconds": max(0.0, now - started) if started is not None else 0.0,
        "watch_folders": [{"path": path, "up": up} for path, up in view.folder_status().items()],
        "output_volume": None if volume is None else {"free_bytes": volume[0], "size_bytes": volume[1]},
        "config": {"path": str(monitor.config_path) if monitor.config_path else None,
                   "last_reload_ok": reload_ok, "last_reload_success_at": reload_at},
        "time": now,
    }
