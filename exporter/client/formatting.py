"""What the client commands print for people: cell values, tables of jobs, status, workers and
nodes, and one line per event of the stream."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bulletproof.models import JobState
from bulletproof.sizes import format_bytes, format_saved
from exporter.client.api_client import JSON

if TYPE_CHECKING:  # rich is imported when a command prints (the core loads this module always)
    from rich.table import Table

STATES = [s.value for s in JobState]


def when(ts: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A unix time in local time, or "-" when there is none."""
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    return time.strftime(fmt, time.localtime(ts))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{max(0.0, min(1.0, value)) * 100:.0f}%"


def _speed(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _e(value: Any) -> str:
    """Text for a rich table cell (no markup interpretation of file names)."""
    from rich.markup import escape

    return escape("" if value is None else str(value))


_STATE_STYLE = {"queued": "cyan", "processing": "yellow", "paused": "magenta",
                "completed": "green", "failed": "red", "cancelled": "dim",
                "skipped": "blue"}


def _state(value: Any) -> str:
    text = _e(value)
    style = _STATE_STYLE.get(str(value))
    return f"[{style}]{text}[/{style}]" if style else text


def _job_saved(job: JSON) -> str:
    """Space a completed job saved ("-" before it completes)."""
    if job.get("state") != JobState.COMPLETED.value:
        return "-"
    return format_saved(job.get("input_bytes"), job.get("output_bytes"))


def saved_line(summary: JSON) -> str:
    """Space saved over the history, from the stats summary."""
    count = summary.get("sized_jobs") or 0
    if not count:
        return "nothing completed yet"
    return (f"{format_saved(summary.get('input_bytes'), summary.get('output_bytes'))}: "
            f"{format_bytes(summary.get('input_bytes'))} in, "
            f"{format_bytes(summary.get('output_bytes'))} out over {count} completed "
            f"job{'s' if count != 1 else ''}")


def jobs_table(jobs: list[JSON]) -> Table:
    """One row per job, as `bulletproof jobs` lists them."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("FILE", overflow="fold")
    table.add_column("PROFILE", no_wrap=True)
    table.add_column("PROGRESS", justify="right", no_wrap=True)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("IN", justify="right", no_wrap=True)
    table.add_column("OUT", justify="right", no_wrap=True)
    table.add_column("SAVED", justify="right", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for job in jobs:
        table.add_row(_e(job.get("id")), _state(job.get("state")),
                      _e(job.get("rel_path") or job.get("filename")), _e(job.get("profile")),
                      _percent(job.get("progress")), _e(job.get("attempts")),
                      format_bytes(job.get("input_bytes")), format_bytes(job.get("output_bytes")),
                      _job_saved(job), _e(job.get("reason") or ""))
    return table


def status_view(data: JSON, summary: JSON | None = None) -> Table:
    """The status document as a two-column grid (queue, workers, counts, space saved, versions,
    health); `summary` is the stats summary."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    if data.get("paused"):
        since = data.get("paused_since")
        queue = f"[magenta]paused[/magenta] since {when(since)}" if since else "[magenta]paused[/magenta]"
    else:
        queue = "[green]running[/green]"
    grid.add_row("Queue", queue)
    if data.get("node"):
        draining = any(n.get("name") == data["node"] and n.get("draining")
                       for n in data.get("nodes") or [])
        grid.add_row("Node", _e(data["node"]) + (" ([yellow]draining[/yellow]: takes no new jobs)"
                                                 if draining else ""))
    workers = data.get("workers") or {}
    grid.add_row("Workers", f"{workers.get('busy', 0)} busy / {workers.get('max', '?')} max")
    counts = data.get("counts") or {}
    grid.add_row("Jobs", "  ".join(f"{state} {counts.get(state, 0)}" for state in STATES))
    if summary is not None:
        grid.add_row("Space saved", saved_line(summary))
    oldest = (data.get("queue") or {}).get("oldest_queued_at")
    if oldest is not None:
        grid.add_row("Oldest queued", f"{when(oldest)} ({_duration(time.time() - oldest)} ago)")
    ffmpeg = data.get("ffmpeg_version")
    grid.add_row("Version", f"bulletproof {_e(data.get('version'))}"
                            + (f", ffmpeg {_e(ffmpeg)}" if ffmpeg else ""))
    grid.add_row("Uptime", _duration(data.get("uptime_seconds")))
    for folder in data.get("watch_folders") or []:
        up = "[green]up[/green]" if folder.get("up") else "[red]DOWN[/red]"
        grid.add_row("Watch folder", f"{_e(folder.get('path'))} ({up})")
    volume = data.get("output_volume")
    if volume:
        grid.add_row("Output volume", f"{format_bytes(volume.get('free_bytes'))} free of "
                                      f"{format_bytes(volume.get('size_bytes'))}")
    config = data.get("config") or {}
    if config:
        ok = config.get("last_reload_ok")
        state = "[green]ok[/green]" if ok else "[red]last reload failed[/red]"
        grid.add_row("Config", f"{_e(config.get('path') or '(no file)')} ({state})")
    return grid


def workers_table(slots: list[JSON]) -> Table | None:
    """One row per busy worker slot; None when every slot is idle."""
    from rich.table import Table

    busy = [s for s in slots if s.get("job_id") is not None]
    if not busy:
        return None
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("WORKER", "right"), ("JOB", "right"), ("FILE", "left"),
                          ("PROFILE", "left"), ("PROGRESS", "right"), ("SPEED", "right"),
                          ("ETA", "right"), ("", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for slot in busy:
        table.add_row(_e(slot.get("slot")), _e(slot.get("job_id")), _e(slot.get("filename")),
                      _e(slot.get("profile")), _percent(slot.get("progress")),
                      _speed(slot.get("speed")), _duration(slot.get("eta_seconds")),
                      "[magenta]paused[/magenta]" if slot.get("paused") else "")
    return table


def node_state(node: JSON) -> str:
    """up, draining, GONE (no heartbeat for three beats) or stopped, with rich markup."""
    draining = " (draining)" if node.get("draining") else ""
    if node.get("stopped_at") is not None:
        return f"[dim]stopped{draining}[/dim]"
    if not node.get("alive"):
        return f"[red]GONE{draining}[/red]"
    return "[yellow]draining[/yellow]" if node.get("draining") else "[green]up[/green]"


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    seconds = max(0.0, time.time() - ts)
    return f"{seconds:.0f}s ago" if seconds < 120 else when(ts)


def nodes_table(nodes: list[JSON], this: str | None = None) -> Table:
    """One row per node of the job store; the node that answered (`this`) is marked `*`."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("NODE", "left"), ("STATE", "left"), ("BUSY", "right"),
                          ("HOST", "left"), ("VERSION", "left"), ("LAST SEEN", "left"),
                          ("API", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for node in nodes:
        name = _e(node.get("name")) + (" *" if node.get("name") == this else "")
        table.add_row(name, node_state(node), f"{node.get('busy', 0)}/{node.get('workers', '?')}",
                      _e(node.get("host")), _e(node.get("version")), _ago(node.get("last_seen")),
                      _e(node.get("api_address") or "-"))
    return table


_JOB_FIELDS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("id", "Job", str),
    ("state", "State", str),
    ("rel_path", "File", str),
    ("source_path", "Source", str),
    ("output_path", "Output", str),
    ("profile", "Profile", str),
    ("rule", "Rule", str),
    ("priority", "Priority", str),
    ("attempts", "Attempts", str),
    ("progress", "Progress", _percent),
    ("speed", "Speed", _speed),
    ("eta_seconds", "ETA", _duration),
    ("worker", "Worker", str),
    ("created_at", "Created", when),
    ("queued_at", "Queued", when),
    ("not_before", "Not before", when),
    ("started_at", "Started", when),
    ("finished_at", "Finished", when),
    ("duration", "Duration", _duration),
    ("media_duration", "Media length", _duration),
    ("input_bytes", "Input size", format_bytes),
    ("output_bytes", "Output size", format_bytes),
    ("saved_bytes", "Space saved", str),
    ("reason", "Reason", str),
    ("error", "Error", str),
]


def job_view(job: JSON) -> Table:
    """Every known field of one job, label and value."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, label, fmt in _JOB_FIELDS:
        value = _job_saved(job) if key == "saved_bytes" else job.get(key)
        if key == "saved_bytes" and value == "-":
            continue
        if value is None or value == "":
            continue
        if key == "eta_seconds" and job.get("state") not in ("processing", "paused"):
            continue
        grid.add_row(label, _state(value) if key == "state" else _e(fmt(value)))
    return grid


def _slot(message: JSON) -> str:
    """Where a job runs: its node, and its worker slot when known (-1: another node's slot)."""
    worker = message.get("worker")
    where = [f"node={message['node']}"] if message.get("node") else []
    if worker is not None and worker != -1:
        where.append(f"worker={worker}")
    return " ".join(where)


def event_line(message: JSON) -> str:
    """One human line for a stream message."""
    kind = str(message.get("type", "?"))
    at = when(message.get("at"), "%H:%M:%S")
    job = message.get("job") if isinstance(message.get("job"), dict) else None
    parts: list[str] = []
    if kind == "snapshot":
        status = message.get("status") or {}
        workers = status.get("workers") or {}
        parts.append(f"queue {'paused' if status.get('paused') else 'running'}, "
                     f"{workers.get('busy', 0)}/{workers.get('max', '?')} workers busy, "
                     f"{(status.get('queue') or {}).get('length', 0)} queued")
    elif job is not None:
        parts.append(f"#{job.get('id')} {job.get('rel_path') or job.get('filename')}")
        if kind == "job_queued":
            parts.append(f"profile={job.get('profile')} priority={job.get('priority')} "
                         f"trigger={message.get('trigger')}")
        elif kind == "job_started":
            parts.append(f"{_slot(message)} "
                         f"waited={_duration(message.get('queue_wait'))} attempt={job.get('attempts')}")
        elif kind == "job_finished":
            outcome = str(message.get("outcome"))
            if message.get("reason"):
                outcome += f" ({message['reason']})"
            parts.append(outcome)
            if message.get("busy_seconds"):
                parts.append(f"in {_duration(message.get('busy_seconds'))}")
            if message.get("will_retry"):
                parts.append("will retry")
        elif kind in ("job_paused", "job_resumed"):
            parts.append(_slot(message))
        elif kind == "output_conflict":
            parts.append(f"{message.get('wanted')} taken, policy={message.get('policy')} "
                         f"-> {job.get('output_path')}")
        else:
            parts.append(f"state={job.get('state')}")
    elif kind == "job_progress":
        parts.append(f"#{message.get('job_id')} {_percent(message.get('progress'))} "
                     f"speed={_speed(message.get('speed'))} eta={_duration(message.get('eta_seconds'))}")
    elif kind == "output_verified":
        parts.append(f"#{message.get('job_id')} {message.get('result')} level={message.get('level')} "
                     f"expected={_duration(message.get('expected'))} "
                     f"actual={_duration(message.get('actual'))}")
    elif kind == "job_removed":
        parts.append(f"#{message.get('job_id')}")
    elif kind == "queue_cleared":
        parts.append(f"{message.get('count')} jobs cancelled")
    elif kind == "config_reloaded":
        parts.append(("ok" if message.get("success") else "rejected") + f" from {message.get('source')}")
        if message.get("error"):
            parts.append(str(message["error"]))
    elif kind == "watch_folder_status":
        parts.append(f"{message.get('folder')} {'up' if message.get('up') else 'DOWN'}")
        if message.get("error"):
            parts.append(str(message["error"]))
    else:
        rest = {k: v for k, v in message.items() if k not in ("type", "at")}
        if rest:
            parts.append(json.dumps(rest, separators=(",", ":"), default=str))
    return f"{at} {kind:<19} {' '.join(parts)}".rstrip()

