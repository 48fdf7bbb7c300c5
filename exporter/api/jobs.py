"""Job and queue routes: list, inspect, enqueue, act on jobs; pause, resume and clear the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bulletproof.models import Job, JobState
from bulletproof.store import SORT_KEYS, ControlAction
from exporter.api.keys import context_of
from exporter.api.params import bad_param, int_param, job_id_of, parse_body, query_one, read_json, time_param
from exporter.api.responses import ok
from exporter.api.schemas import Cleared, JobPage, QueuePage, QueueState, RetryFailed
from exporter.api.shapes import job_answer, live_workers

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext

MAX_LIMIT = 1000
MAX_OFFSET = 10**12
_STATES = ", ".join(s.value for s in JobState)


class EnqueueRequest(BaseModel):
    """POST /api/v1/jobs: a file inside a watch folder, optionally a profile and a priority."""

    model_config = ConfigDict(extra="forbid", strict=True)

    path: Annotated[str, Field(min_length=1, max_length=4096, description=(
        "The file: absolute (inside a watch folder) or relative to a watch folder (the first "
        "watch folder that has the file)."))]
    profile: Annotated[str | None, Field(min_length=1, max_length=200, description=(
        "A profile name; default: the profile of the first matching rule."))] = None
    priority: Annotated[int | None, Field(ge=-1000, le=1000, description=(
        "Higher runs first; default: the matching rule's priority (0 with an explicit profile)."))] = None


# -- reads --------------------------------------------------------------------------------------


def _states(request: web.Request) -> list[JobState]:
    states: list[JobState] = []
    for raw in request.query.getall("state", []):
        for part in raw.split(","):
            part = part.strip().lower()
            if not part:
                continue
            try:
                state = JobState(part)
            except ValueError:
                raise bad_param("state", f"unknown state {part[:40]!r}; known: {_STATES}") from None
            if state not in states:
                states.append(state)
    return states


def _text(request: web.Request, name: str, max_length: int) -> str | None:
    value = query_one(request, name)
    if value is not None and len(value) > max_length:
        raise bad_param(name, f"longer than {max_length} characters")
    return value


async def list_jobs(request: web.Request) -> web.Response:
    """A filtered, sorted page of jobs."""
    states = _states(request)
    profile = _text(request, "profile", 200)
    search = _text(request, "q", 500)
    since = time_param(request, "since")
    until = time_param(request, "until")
    if since is not None and until is not None and since >= until:
        raise bad_param("since", "must be before until")
    sort = query_one(request, "sort") or "created"
    if sort not in SORT_KEYS:
        raise bad_param("sort", f"one of {', '.join(SORT_KEYS)}")
    order = (query_one(request, "order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise bad_param("order", "asc or desc")
    limit = int_param(request, "limit", 100, lo=1, hi=MAX_LIMIT)
    offset = int_param(request, "offset", 0, lo=0, hi=MAX_OFFSET)
    view = context_of(request).view
    jobs, total = view.list_jobs(
        states=states or None, profile=profile, search=search, since=since, until=until,
        sort=sort, descending=order == "desc", limit=limit, offset=offset)
    live = live_workers(view)
    next_offset = offset + len(jobs) if offset + len(jobs) < total else None
    return ok(JobPage(jobs=[job_answer(j, live) for j in jobs], total=total, limit=limit,
                      offset=offset, next_offset=next_offset))


async def get_job(request: web.Request) -> web.Response:
    """Everything the store knows about one job (plus live progress while it runs)."""
    view = context_of(request).view
    job = view.get_job(job_id_of(request))
    return ok(job_answer(job, live_workers(view), detail=True))


async def get_queue(request: web.Request) -> web.Response:
    """Queued jobs in the order they will run."""
    limit = int_param(request, "limit", 100, lo=1, hi=MAX_LIMIT)
    offset = int_param(request, "offset", 0, lo=0, hi=MAX_OFFSET)
    view = context_of(request).view
    jobs = view.queued(limit=limit, offset=offset)
    total = view.counts()[JobState.QUEUED]
    next_offset = offset + len(jobs) if offset + len(jobs) < total else None
    return ok(QueuePage(jobs=[job_answer(j) for j in jobs], total=total, limit=limit,
                        offset=offset, next_offset=next_offset, paused=view.paused))


# -- enqueue ------------------------------------------------------------------------------------


async def enqueue(request: web.Request) -> web.Response:
    """Queue a file that lies inside a watch folder (even one done before)."""
    body: EnqueueRequest = parse_body(EnqueueRequest, await read_json(request))
    job = context_of(request).controls.enqueue_path(body.path, profile=body.profile,
                                                    priority=body.priority)
    return ok(job_answer(job, detail=True), status=201,
              headers={"Location": f"/api/v1/jobs/{job.id}"})


# -- job actions --------------------------------------------------------------------------------


def _asked_elsewhere(context: PluginContext, job: Job) -> bool:
    """True when a control went to the node that runs the job (another node of the store)."""
    return job.state.is_active and job.claimed_by not in (None, context.view.node_name)


def _controlled(context: PluginContext, job: Job, action: ControlAction) -> web.Response:
    """The answer to a pause or resume: 200 with the job as it is now, or 202 with the job as
    it still is when the node that runs it was asked (`requested`)."""
    if _asked_elsewhere(context, job):
        return ok(job_answer(job, detail=True, requested=action), status=202)
    return ok(job_answer(job, live_workers(context.view), detail=True))


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued job (200, now cancelled) or end a running one (202, outcome follows;
    another node's job: asked of that node, `requested`)."""
    context = context_of(request)
    job = context.controls.cancel_job(job_id_of(request))
    if _asked_elsewhere(context, job):
        return ok(job_answer(job, detail=True, requested=ControlAction.CANCEL), status=202)
    accepted = job.state is not JobState.CANCELLED
    return ok(job_answer(job, live_workers(context.view), detail=True), status=202 if accepted else 200)


async def retry_job(request: web.Request) -> web.Response:
    """Queue a failed, cancelled or completed job again (attempts start over)."""
    return ok(job_answer(context_of(request).controls.retry_job(job_id_of(request)), detail=True))


async def pause_job(request: web.Request) -> web.Response:
    """Suspend a running job's ffmpeg; it keeps its worker slot."""
    context = context_of(request)
    return _controlled(context, context.controls.pause_job(job_id_of(request)), ControlAction.PAUSE)


async def resume_job(request: web.Request) -> web.Response:
    """Continue a paused job."""
    context = context_of(request)
    return _controlled(context, context.controls.resume_job(job_id_of(request)), ControlAction.RESUME)


async def prioritize_job(request: web.Request) -> web.Response:
    """Move a queued job to the front of the queue."""
    return ok(job_answer(context_of(request).controls.prioritize_job(job_id_of(request)), detail=True))


async def delete_job(request: web.Request) -> web.Response:
    """Remove a finished job from history."""
    context_of(request).controls.delete_job(job_id_of(request))
    return web.Response(status=204)


async def retry_failed(request: web.Request) -> web.Response:
    """Queue every failed job again."""
    jobs = context_of(request).controls.retry_failed()
    return ok(RetryFailed(retried=len(jobs), ids=[j.id for j in jobs]))


# -- queue actions ------------------------------------------------------------------------------


def _queue_state(context: PluginContext) -> QueueState:
    return QueueState(paused=context.view.paused, paused_since=context.view.paused_since)


async def pause_queue(request: web.Request) -> web.Response:
    """Stop starting jobs (running ones finish; the watcher keeps queueing). Idempotent."""
    context = context_of(request)
    context.controls.pause_queue()
    return ok(_queue_state(context))


async def resume_queue(request: web.Request) -> web.Response:
    """Start taking jobs again. Idempotent."""
    context = context_of(request)
    context.controls.resume_queue()
    return ok(_queue_state(context))


async def clear_queue(request: web.Request) -> web.Response:
    """Cancel every queued job."""
    return ok(Cleared(cleared=context_of(request).controls.clear_queue()))


JOB = "/api/v1/jobs/{id:[0-9]+}"


def add_routes(app: web.Application) -> None:
    """Register the job and queue routes."""
    r = app.router
    r.add_get("/api/v1/jobs", list_jobs)
    r.add_post("/api/v1/jobs", enqueue)
    r.add_post("/api/v1/jobs/retry-failed", retry_failed)
    r.add_get(JOB, get_job)
    r.add_delete(JOB, delete_job)
    r.add_post(JOB + "/cancel", cancel_job)
    r.add_post(JOB + "/retry", retry_job)
    r.add_post(JOB + "/pause", pause_job)
    r.add_post(JOB + "/resume", resume_job)
    r.add_post(JOB + "/prioritize", prioritize_job)
    r.add_get("/api/v1/queue", get_queue)
    r.add_post("/api/v1/queue/pause", pause_queue)
    r.add_post("/api/v1/queue/resume", resume_queue)
    r.add_post("/api/v1/queue/clear", clear_queue)
