"""The read-only service routes: health, readiness, /metrics, status, stats, the OpenAPI document."""

from __future__ import annotations

import math
import time

from aiohttp import web

from exporter.api.keys import METRICS, context_of
from exporter.api.openapi import openapi_text
from exporter.api.params import bad_param, duration_param, time_param
from exporter.api.responses import ok
from exporter.api.schemas import Health, History, Ready, Stats
from exporter.api.shapes import status_model


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return ok(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Ready: store writable, watchers running, every worker slot alive, the queue moving; 503
    with the problems and the health of each component."""
    view = context_of(request).view
    health = view.health()
    problems = view.problems(health)
    components = {name: not found for name, found in health.items()}
    if problems:
        return ok(Ready(status="unready", problems=problems, components=components), status=503)
    return ok(Ready(status="ready", problems=[], components=components))


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
    return ok(status_model(context_of(request).view))


async def stats_summary(request: web.Request) -> web.Response:
    """Totals, average duration, space saved, and the last 24 h by hour."""
    return ok(Stats.model_validate(context_of(request).view.summary()))


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
    return ok(History(since=since, until=until, step=step, buckets=rows))


async def openapi_json(request: web.Request) -> web.Response:
    """This API's OpenAPI document."""
    return web.Response(text=openapi_text(context_of(request).view.version),
                        content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register the service routes."""
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/v1/status", status)
    r.add_get("/api/v1/stats/summary", stats_summary)
    r.add_get("/api/v1/stats/history", stats_history)
    r.add_get("/api/v1/openapi.json", openapi_json)
