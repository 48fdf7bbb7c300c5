"""The API's answers built from the monitor's view: jobs with live progress, the nodes, the status."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bulletproof.models import Job, WorkerSnapshot
from bulletproof.store import ControlAction
from exporter.api.schemas import (
    ApiModel,
    ConfigState,
    Nodes,
    OutputVolume,
    QueueSummary,
    Status,
    WatchFolderState,
    Workers,
    job_model,
    node_model,
    slot_model,
)

if TYPE_CHECKING:
    from bulletproof.view import MonitorView


def live_workers(view: MonitorView) -> dict[int, WorkerSnapshot]:
    """Busy worker slots by the id of the job they run."""
    return {w.job_id: w for w in view.workers() if w.job_id is not None}


def job_answer(job: Job, live: dict[int, WorkerSnapshot] | None = None, *,
               detail: bool = False, requested: ControlAction | None = None) -> ApiModel:
    """A job as the API shows it; a running job's progress comes from its worker slot in `live`."""
    snap = (live or {}).get(job.id) if job.state.is_active else None
    return job_model(job, snap, detail=detail, requested=requested)


def nodes_answer(view: MonitorView, now: float) -> Nodes:
    """Every node of the store (this one included) and this node's name."""
    return Nodes(node=view.node_name, nodes=[node_model(n, now) for n in view.nodes()])


def status_model(view: MonitorView) -> Status:
    """GET /api/v1/status."""
    now = time.time()
    fleet = nodes_answer(view, now)
    counts = {state.value: n for state, n in view.counts().items()}
    slots = view.workers()
    volume = view.output_volume()
    reload_ok, reload_at = view.config_status()
    started = view.started_at
    return Status(
        paused=view.paused,
        paused_since=view.paused_since,
        workers=Workers(busy=sum(1 for s in slots if s.busy), max=view.max_workers,
                        slots=[slot_model(s) for s in slots]),
        counts=counts,
        queue=QueueSummary(length=counts.get("queued", 0), oldest_queued_at=view.oldest_queued_at()),
        version=view.version,
        ffmpeg_version=view.ffmpeg_version,
        started_at=started,
        uptime_seconds=max(0.0, now - started) if started is not None else 0.0,
        watch_folders=[WatchFolderState(path=path, up=up) for path, up in view.folder_status().items()],
        output_volume=None if volume is None else OutputVolume(free_bytes=volume[0], size_bytes=volume[1]),
        config=ConfigState(path=str(view.config_path) if view.config_path else None,
                           last_reload_ok=reload_ok, last_reload_success_at=reload_at),
        node=fleet.node,
        nodes=fleet.nodes,
        time=now,
    )
