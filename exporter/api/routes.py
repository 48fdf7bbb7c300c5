"""The control API: shared helpers (app keys, parameter parsing, JSON shapes) and the read-only
service routes (health, readiness, /metrics, status, stats, the OpenAPI document).

The job and queue routes live in `exporter.api.jobs`, the config routes in `exporter.api.config`;
`add_routes` registers all of them (and the WebSocket) on an application.

Conventions (docs/api.md): JSON everywhere; timestamps are unix seconds (floats); job ids are
positive integers; errors are `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bulletproof.errors import JobNotFound
from bulletproof.models import Job, WorkerSnapshot
from exporter.api.errors import ApiError

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext
    from bulletproof.view import MonitorView
    from exporter.metrics.registry import BulletproofMetrics

CONTEXT: web.AppKey[PluginContext] = web.AppKey("bulletproof.context")
METRICS: web.AppKey[BulletproofMetrics] = web.AppKey("bulletproof.metrics")

MAX_JOB_ID = 2**63 - 1  # SQLite's INTEGER range
# The job fields left out of list views (large, or only useful on the detail page).
_LIST_OMIT = ("stderr_tail", "source_path", "watch_folder", "mtime_ns", "source_inode")
# Timestamps accepted in query parameters: 1970 .. year 5138 (anything else is a typo).
_MAX_TIMESTAMP = 1e11
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


# -- JSON ---------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any) -> str:
    """Compact, strict JSON; NaN and infinities (a speed of `inf`...) become null."""
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False, separators=(",", ":"))


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response."""
    return web.Response(text=dumps(data), status=status, content_type="application/json",
                        headers=headers)


def context_of(request: web.Request) -> PluginContext:
    """What this app serves: the monitor's events, read-only view and controls."""
    return request.app[CONTEXT]


# -- shapes -------------------------------------------------------------------------------------


def live_workers(view: MonitorView) -> dict[int, WorkerSnapshot]:
    """Busy worker slots by the id of the job they run."""
    return {w.job_id: w for w in view.workers() if w.job_id is not None}


def job_json(job: Job, live: dict[int, WorkerSnapshot] | None = None, *,
             detail: bool = False) -> dict[str, Any]:
    """A job as the API shows it: the store's record, the plan's field names, live progress.

    `status` repeats `state` and `completed_at` repeats `finished_at` (the plan's Job model).
    For a running job, `progress`, `speed` and `eta_seconds` come from its worker slot (their one
    owner while it runs). List views leave out the large or internal fields.
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


def status_json(view: MonitorView) -> dict[str, Any]:
    """GET /api/v1/status."""
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
        "config": {"path": str(view.config_path) if view.config_path else None,
                   "last_reload_ok": reload_ok, "last_reload_success_at": reload_at},
        "time": now,
    }


# -- parameters ---------------------------------------------------------------------------------


def job_id_of(request: web.Request) -> int:
    """The `{id}` path segment; the route only matches digits, out-of-range ids are unknown jobs."""
    raw = request.match_info["id"]
    if not _DIGITS.fullmatch(raw) or len(raw) > 19:
        raise ApiError(404, f"job {raw[:40]!r} not found", code="job_not_found",
                       details={"job_id": raw[:40]})
    job_id = int(raw)
    if not 1 <= job_id <= MAX_JOB_ID:
        raise JobNotFound(job_id)
    return job_id


def bad_param(name: str, message: str) -> ApiError:
    return ApiError(422, f"invalid query parameter {name!r}: {message}", code="invalid_parameter",
                    details=[{"location": f"query.{name}", "message": message}])


def query_one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (empty counts as absent)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_param(name, "given more than once")
    value = values[0] if values else None
    if value is not None and "\x00" in value:
        raise bad_param(name, "contains a NUL character")
    return value or None


def int_param(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    """An integer query parameter within [lo, hi]."""
    raw = query_one(request, name)
    if raw is None:
        return default
    raw = raw.strip()
    if not _INTEGER.fullmatch(raw):
        raise bad_param(name, "not an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad_param(name, f"must be between {lo} and {hi}")
    return value


def parse_time(value: str) -> float:
    """Unix seconds (`1767225600`, `1767225600.5`) or ISO 8601 (`2026-01-01T00:00:00Z`; UTC if naive)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not unix seconds nor an ISO 8601 date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError("out of range") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_TIMESTAMP:
        raise ValueError("out of range")
    return seconds


def time_param(request: web.Request, name: str) -> float | None:
    """A timestamp query parameter (see `parse_time`)."""
    raw = query_one(request, name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise bad_param(name, str(exc)) from None


def duration_param(request: web.Request, name: str, default: float) -> float:
    """Seconds (`3600`) or a short duration (`90s`, `15m`, `1h`, `1d`)."""
    raw = query_one(request, name)
    if raw is None:
        return default
    text = raw.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = 1
    if text[-1:] in units:
        factor, text = units[text[-1]], text[:-1]
    try:
        seconds = float(text) * factor
    except ValueError:
        raise bad_param(name, "not a duration (seconds, or a number with s, m, h or d)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad_param(name, "must be a positive duration")
    return seconds


# -- bodies -------------------------------------------------------------------------------------

_JSON_TYPES = ("application/json",)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body: 415 for another media type, 400 when missing or malformed,
    413 (raised by aiohttp) past `api.max_body_bytes`."""
    ctype = request.content_type
    if not request.body_exists:
        raise ApiError(400, "a JSON body is required", code="body_required")
    if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise ApiError(415, f"expected Content-Type: application/json, not {ctype}",
                       code="unsupported_media_type")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc.msg}", code="malformed_json",
                       details={"line": exc.lineno, "column": exc.colno}) from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}", code="malformed_json") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as `[{"location", "message"}]` with dotted key paths."""
    return [{"location": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors()]


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate a JSON body against a strict request model; 422 with every problem otherwise."""
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object", code="invalid_body",
                       details=[{"location": "", "message": "expected an object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid request body", code="invalid_body",
                       details=validation_details(exc)) from None


# -- service routes -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return ok({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: store writable, watchers running, every worker slot alive, the queue moving; 503
    with the problems and the health of each component."""
    view = context_of(request).view
    health = view.health()
    problems = view.problems(health)
    components = {name: not found for name, found in health.items()}
    if problems:
        return ok({"status": "unready", "problems": problems, "components": components}, status=503)
    return ok({"status": "ready", "problems": [], "components": components})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition (OpenMetrics when asked for it; gzip when accepted)."""
    body, content_type, encoding = request.app[METRICS].render(
        request.headers.get("Accept"), request.headers.get("Accept-Encoding"))
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return web.Response(body=body, headers=headers)


async def status(request: web.Request) -> web.Response:
    """Queue state, workers, counts by state, versions, uptime, watch folders."""
    return ok(status_json(context_of(request).view))


async def stats_summary(request: web.Request) -> web.Response:
    """The plan's Stats model: totals, average duration, and the last 24 h by hour."""
    return ok(context_of(request).view.summary())


MAX_BUCKETS = 2000
MIN_STEP = 60.0


async def stats_history(request: web.Request) -> web.Response:
    """Jobs finished per time bucket, by outcome, with their mean duration."""
    now = time.time()
    until = time_param(request, "until")
    since = time_param(request, "since")
    step = duration_param(request, "step", 3600.0)
    if until is None:
        until = now
    if since is None:
        since = until - 86400.0
    if since >= until:
        raise bad_param("since", "must be before until")
    if step < MIN_STEP:
        raise bad_param("step", f"must be at least {MIN_STEP:g} seconds")
    buckets = math.ceil((until - since) / step - 1e-9)
    if buckets > MAX_BUCKETS:
        raise bad_param("step", f"{buckets} buckets asked for; at most {MAX_BUCKETS} "
                                 "(widen the step or narrow the range)")
    rows = context_of(request).view.history(since=since, until=until, step=step)
    for row in rows:
        row["end"] = min(row["start"] + step, until)
        row["total"] = row["completed"] + row["failed"] + row["cancelled"] + row["skipped"]
    return ok({"since": since, "until": until, "step": step, "buckets": rows})


async def openapi_json(request: web.Request) -> web.Response:
    """This API's OpenAPI document."""
    from exporter.api.openapi import openapi_text

    return web.Response(text=openapi_text(context_of(request).view.version),
                        content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register every route of the API on `app`."""
    from exporter.api import config as api_config
    from exporter.api import jobs as api_jobs
    from exporter.api import ws
    from exporter.security import audit

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/stats/summary", stats_summary)
    app.router.add_get("/api/v1/stats/history", stats_history)
    api_jobs.add_routes(app)
    api_config.add_routes(app)
    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_get("/api/v1/audit", audit.list_audit)
    app.router.add_get("/ws/updates", ws.websocket_handler)
