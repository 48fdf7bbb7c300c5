"""The API's answers and WebSocket messages as pydantic models: one schema per concept.

Handlers build their JSON from these models (`model_dump(mode="json")`) and the OpenAPI document's
component schemas are generated from them, so the document says what is served. A job's fields
come from the core's `Job` record and a worker slot's from `WorkerSnapshot`; each WebSocket
message names its `type` in a `Literal` field (the wire names are fixed here, not derived from
class names).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from bulletproof import events as ev
from bulletproof.audit import AUDIT_RESULTS
from bulletproof.config_policy import RESTART_KEYS
from bulletproof.models import Job, JobState, WorkerSnapshot
from bulletproof.store import ControlAction, NodeInfo
from bulletproof.view import COMPONENTS
from exporter.security.permissions import AUDITED_ACTIONS

REF = "#/components/schemas/{model}"
UNIX_SECONDS = "unix seconds"


class ApiModel(BaseModel):
    """Base of every answer: closed (no field the schema does not name), every field required."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


def schema_ref(name: str) -> WithJsonSchema:
    """A field schema that is a $ref to the component `name` (the config schemas, built from the
    core's models in exporter.api.openapi, with the shorthands the loader accepts)."""
    # Wrapped in allOf: pydantic resolves a bare $ref against its own definitions.
    return WithJsonSchema({"allOf": [{"$ref": REF.format(model=name)}]})


ConfigJson = Annotated[dict[str, Any], schema_ref("Config")]
ProfileInfoJson = Annotated[dict[str, Any], schema_ref("ProfileInfo")]
Timestamp = Annotated[float, Field(description=UNIX_SECONDS)]
OptionalTimestamp = Annotated[float | None, Field(description=UNIX_SECONDS)]


# -- jobs ---------------------------------------------------------------------------------------

# Detail-only fields: large, or only useful on a job's own page.
DETAIL_ONLY = ("stderr_tail", "source_path", "watch_folder", "mtime_ns", "source_inode")
# What the API adds to the store's record.
_JOB_EXTRAS: dict[str, Any] = {
    "filename": (str, Field(description="the source file's base name")),
    "duration": (float | None, Field(description="seconds from start to finish of the last attempt")),
    "worker": (int | None, Field(description="the worker slot running the job")),
    "last_progress_at": (float | None, Field(description=UNIX_SECONDS)),
}
_JOB_FIELD_INFO: dict[str, Any] = {
    "id": Field(ge=1),
    "size": Field(ge=0),
    "attempts": Field(ge=0),
    "progress": Field(ge=0, le=1),
    "not_before": Field(description="a retry waits (backoff) until then (unix seconds)"),
    "speed": Field(description="ffmpeg's speed (1.0 = real time)"),
    "reason": Field(description="the failure reason of a failed job, the skip reason of a skipped one"),
    "source_inode": Field(description="the inode of the source file the last attempt read"),
    "stderr_tail": Field(description="the last lines of ffmpeg's stderr"),
    "quality_score": Field(description="the output's score against its source when the profile has "
                                       "a quality gate (ssim 0..1, psnr in dB, vmaf 0..100)"),
    "claimed_by": Field(description="the node (node_name) that runs the job, or ran its last attempt"),
}


def _record_fields(record: type, info: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """create_model field definitions from a core dataclass: its names and types, all required."""
    hints = get_type_hints(record)
    defs: dict[str, Any] = {}
    for f in fields(record):
        if f.name in skip:
            continue
        field = info.get(f.name)
        if field is None:
            field = Field(description=UNIX_SECONDS) if f.name.endswith("_at") else Field()
        defs[f.name] = (hints[f.name], field)
    return defs


JobDetail: type[ApiModel] = create_model(
    "JobDetail", __base__=ApiModel, __doc__="Everything the store knows about a job.",
    **_record_fields(Job, _JOB_FIELD_INFO), **_JOB_EXTRAS,
    requested=(ControlAction | None, Field(default=None, description=(
        "in the answer (202) to a cancel, pause or resume of a job another node runs: the "
        "control asked of that node, which carries it out within about a second (the job's "
        "events follow); null otherwise"))))
JobSummary: type[ApiModel] = create_model(
    "Job", __base__=ApiModel, __doc__="A job as lists show it (live progress while it runs).",
    **_record_fields(Job, _JOB_FIELD_INFO, skip=DETAIL_ONLY), **_JOB_EXTRAS)


def job_model(job: Job, snap: WorkerSnapshot | None = None, *, detail: bool = False,
              requested: ControlAction | None = None) -> ApiModel:
    """A job as the API shows it: the store's record, and live progress from its worker slot
    while it runs (the store saves progress only every few seconds); `requested`, a control
    asked of the node that runs it (details only)."""
    data: dict[str, Any] = {f.name: getattr(job, f.name) for f in fields(Job)}
    data["requested"] = requested
    data["filename"] = job.filename
    data["duration"] = job.duration
    data["worker"] = snap.slot if snap is not None else None
    data["last_progress_at"] = snap.last_progress_at if snap is not None else None
    if snap is not None:
        data["progress"] = snap.progress
        data["speed"] = snap.speed
        data["eta_seconds"] = snap.eta_seconds
        if data["media_duration"] is None:
            data["media_duration"] = snap.media_duration
    model = JobDetail if detail else JobSummary
    return model.model_validate({name: data[name] for name in model.model_fields})


class JobPage(ApiModel):
    """A page of jobs."""

    jobs: list[JobSummary]  # type: ignore[valid-type]
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page, null on the last")


class QueuePage(JobPage):
    """A page of the queue, in run order."""

    paused: bool


# -- status -------------------------------------------------------------------------------------

WorkerSlot: type[ApiModel] = create_model(
    "WorkerSlot", __base__=ApiModel, __doc__="What one worker slot is doing.",
    **_record_fields(WorkerSnapshot, {"progress": Field(ge=0, le=1)}),
    busy=(bool, Field(description="the slot holds a job")))


def slot_model(slot: WorkerSnapshot) -> ApiModel:
    """One worker slot."""
    data = {f.name: getattr(slot, f.name) for f in fields(WorkerSnapshot)}
    return WorkerSlot.model_validate({**data, "busy": slot.busy})


JobCounts: type[ApiModel] = create_model(
    "JobCounts", __base__=ApiModel, __doc__="Jobs per state.",
    **{state.value: (int, Field(ge=0)) for state in JobState})


class Workers(ApiModel):
    """Busy slots, the configured maximum and each slot."""

    busy: int
    max: int
    slots: list[WorkerSlot]  # type: ignore[valid-type]


class QueueSummary(ApiModel):
    """The queue's length and its oldest job."""

    length: int
    oldest_queued_at: OptionalTimestamp


class WatchFolderState(ApiModel):
    """A watch folder and whether it is available."""

    path: str
    up: bool


class OutputVolume(ApiModel):
    """The output folder's file system."""

    free_bytes: int
    size_bytes: int


class ConfigState(ApiModel):
    """The config file and its last reload."""

    path: str | None = Field(description="the file the config was loaded from")
    last_reload_ok: bool
    last_reload_success_at: OptionalTimestamp


# -- nodes --------------------------------------------------------------------------------------

# What the registry keeps for the nodes' own bookkeeping, not shown: the run's id, the process
# id, the heartbeat interval (`alive` says what a reader concludes from it).
_NODE_SKIP = ("instance", "pid", "heartbeat_seconds")
_NODE_FIELD_INFO: dict[str, Any] = {
    "name": Field(description="the node's node_name"),
    "host": Field(description="the host name the node runs on"),
    "version": Field(description="the node's bulletproof version"),
    "workers": Field(ge=0, description="worker slots configured"),
    "busy": Field(ge=0, description="slots running a job at the last heartbeat"),
    "last_seen": Field(description="the last heartbeat (unix seconds, by the node's clock)"),
    "draining": Field(description="finishes its jobs and takes no new ones"),
    "stopped_at": Field(description="a clean stop (unix seconds); null while running or after a "
                                    "crash"),
    "api_address": Field(description="host:port of its API as the node advertises it "
                                     "(api.advertise_address); null without an API"),
}

Node: type[ApiModel] = create_model(
    "Node", __base__=ApiModel, __doc__="One monitor of the job store, as its heartbeats tell.",
    **_record_fields(NodeInfo, _NODE_FIELD_INFO, skip=_NODE_SKIP),
    alive=(bool, Field(description="running and heard from within three heartbeats")))


def node_model(node: NodeInfo, now: float) -> ApiModel:
    """One node as the API shows it (`alive` judged at `now`)."""
    data = {f.name: getattr(node, f.name) for f in fields(NodeInfo) if f.name not in _NODE_SKIP}
    return Node.model_validate({**data, "alive": node.alive(now)})


class Nodes(ApiModel):
    """Every node of the job store, by name, and the one that answers."""

    node: str = Field(description="the node_name of the node that answered")
    nodes: list[Node]  # type: ignore[valid-type]


class SdTargetGroup(ApiModel):
    """One target group of Prometheus's HTTP service discovery: an alive node's API address."""

    targets: list[str] = Field(description="the node's advertised host:port")
    labels: dict[str, str] = Field(description="`node` (its node_name) and __meta_bulletproof_* "
                                               "labels for relabelling")


class Status(ApiModel):
    """GET /api/v1/status: queue, workers, counts, versions, uptime, watch folders, the nodes."""

    paused: bool
    paused_since: OptionalTimestamp
    workers: Workers
    counts: JobCounts  # type: ignore[valid-type]
    queue: QueueSummary
    version: str
    ffmpeg_version: str
    started_at: OptionalTimestamp
    uptime_seconds: float
    watch_folders: list[WatchFolderState]
    output_volume: OutputVolume | None
    config: ConfigState
    node: str = Field(description="the node_name of the node that answered")
    nodes: list[Node]  # type: ignore[valid-type]
    time: Timestamp


Components: type[ApiModel] = create_model(
    "Components", __base__=ApiModel, __doc__="true while the component is healthy",
    **{name: (bool, ...) for name in COMPONENTS})


class Health(ApiModel):
    """Alive."""

    status: Literal["ok"]


class Ready(ApiModel):
    """Readiness, with the problems and the health of each component."""

    status: Literal["ready", "unready"]
    problems: list[str]
    components: Components  # type: ignore[valid-type]


# -- stats --------------------------------------------------------------------------------------


class HistoryBucket(ApiModel):
    """Jobs finished in one time bucket, by outcome."""

    start: Timestamp
    completed: int
    failed: int
    cancelled: int
    skipped: int
    avg_duration: float | None = Field(description="mean duration of the completed jobs")


class RangeBucket(HistoryBucket):
    """A bucket of GET /api/v1/stats/history, with its end and total."""

    end: Timestamp
    total: int


class History(ApiModel):
    """Buckets from since to until."""

    since: Timestamp
    until: Timestamp
    step: float
    buckets: list[RangeBucket]


class Stats(ApiModel):
    """Totals, average duration, space saved, and the last 24 h by hour."""

    total_jobs: int
    successful: int
    failed: int
    cancelled: int
    skipped: int = Field(description="jobs that needed no work (their source already on target...)")
    avg_duration: float | None = Field(description="mean seconds of completed jobs")
    sized_jobs: int = Field(description="completed jobs whose input and output sizes are known: "
                                        "the byte totals are over these")
    input_bytes: int = Field(description="total size of their sources")
    output_bytes: int = Field(description="total size of their outputs")
    saved_bytes: int = Field(description="input_bytes - output_bytes (negative when the outputs "
                                         "are larger)")
    saved_ratio: float | None = Field(description="saved_bytes / input_bytes; null with no sized job")
    last_24h: list[HistoryBucket]


# -- actions ------------------------------------------------------------------------------------


class RetryFailed(ApiModel):
    """The jobs queued again."""

    retried: int
    ids: list[int]


class QueueState(ApiModel):
    """Whether the queue is paused, and since when."""

    paused: bool
    paused_since: OptionalTimestamp


class Cleared(ApiModel):
    """How many queued jobs were cancelled."""

    cleared: int


# -- config -------------------------------------------------------------------------------------


class ConfigInfo(ApiModel):
    """The config in force and its file."""

    path: str | None = Field(description="the file the config was loaded from")
    last_reload_ok: bool
    last_reload_success_at: OptionalTimestamp
    config: ConfigJson


class ConfigApplied(ApiModel):
    """A config written and applied."""

    applied: bool
    written: bool = Field(description="false when the monitor has no file")
    path: str | None
    backup: str | None = Field(description="the previous file, kept as <name>.bak")
    restart_required: list[Literal[RESTART_KEYS]] = Field(  # type: ignore[valid-type]
        description="restart-only keys whose value differs from the one the process started with")
    config: ConfigJson


class Issue(ApiModel):
    """One problem, at a dotted key path."""

    location: str = Field(description="dotted key path")
    message: str


class ConfigValid(ApiModel):
    """The config would be accepted: the effective config."""

    valid: Literal[True]
    config: ConfigJson


class ConfigInvalid(ApiModel):
    """The config would be refused: every problem."""

    valid: Literal[False]
    errors: list[Issue]


class Profiles(ApiModel):
    """Built-in and configured profiles, by name."""

    profiles: dict[str, ProfileInfoJson]


class RuleMatch(ApiModel):
    """Which rule and profile a file would get (matched: false when no rule applies)."""

    matched: bool
    path: str = Field(description="as the rules see it")
    size: int | None
    rule: str | None
    rule_index: int | None
    profile: str | None
    priority: int | None
    output_path: str | None


# -- audit --------------------------------------------------------------------------------------


class AuditEntry(ApiModel):
    """One audited call: who, what, from where, and how it ended."""

    id: int
    at: Timestamp
    action: Literal[AUDITED_ACTIONS]  # type: ignore[valid-type]
    method: str
    route: str = Field(description="the route template")
    status: int = Field(description="the HTTP status answered")
    result: Literal[AUDIT_RESULTS]  # type: ignore[valid-type]
    address: str = Field(description="the client address")
    principal_kind: Literal["token", "grafana", "anonymous"] | None
    principal: str | None = Field(description="token, the Grafana login, anonymous; null when the "
                                               "caller was not identified")
    role: str | None = Field(description="the Grafana org role")
    job_id: int | None
    code: str | None = Field(description="the error code of a refused or failed call")


class AuditPage(ApiModel):
    """A page of the audit trail, newest first."""

    entries: list[AuditEntry]
    limit: int
    next_before: int | None = Field(description="pass as before for the next page; null on the last")


# -- errors -------------------------------------------------------------------------------------


class ErrorDetail(ApiModel):
    """What went wrong."""

    code: str = Field(description="machine-readable, e.g. job_not_found")
    message: str
    details: Any = Field(description="context: an object, or a list of {location, message}")


class Error(ApiModel):
    """Every error answer."""

    error: ErrorDetail


# -- WebSocket messages -------------------------------------------------------------------------

# The wire name of each streamed event. Detection events (FileDetected, FileIgnored) are not
# streamed: a rescan of a large folder reports thousands of them (they are counted in /metrics).
EVENT_TYPES: dict[type[ev.Event], str] = {
    ev.JobQueued: "job_queued",
    ev.JobStarted: "job_started",
    ev.JobProgress: "job_progress",
    ev.JobPaused: "job_paused",
    ev.JobResumed: "job_resumed",
    ev.JobFinished: "job_finished",
    ev.OutputConflict: "output_conflict",
    ev.OutputVerified: "output_verified",
    ev.QualityScored: "quality_scored",
    ev.JobRemoved: "job_removed",
    ev.QueuePaused: "queue_paused",
    ev.QueueResumed: "queue_resumed",
    ev.QueueCleared: "queue_cleared",
    ev.ConfigReloaded: "config_reloaded",
    ev.WatchFolderStatus: "watch_folder_status",
    ev.WorkerRestarted: "worker_restarted",
    ev.StoreStatus: "store_status",
    ev.LeaseExpired: "lease_expired",
}


NODE_DESCRIPTION = ("the node (node_name) this happened on: the one streaming for its own work, "
                    "another node of a shared store for that node's jobs")


def _message_model(event: type[ev.Event], wire: str) -> type[ApiModel]:
    """The message of one event: its `type`, `at`, the node it happened on, and the event's
    fields; a job as `job_id` plus the job as lists show it."""
    hints = get_type_hints(event)
    defs: dict[str, Any] = {
        "type": (Literal[wire], ...), "at": (float, Field(description=UNIX_SECONDS)),
        "node": (str, Field(description=NODE_DESCRIPTION))}
    if "job" in hints:
        defs["job_id"] = (int, ...)
    for f in fields(event):
        if f.name in ("at", "origin"):
            continue
        assert f.name != "node", f"{event.__name__}.node would hide the message's node"
        defs[f.name] = (JobSummary if hints[f.name] is Job else hints[f.name], ...)
    return create_model(f"{event.__name__}Message", __base__=ApiModel,
                        __doc__=f"`{wire}`: {(event.__doc__ or '').strip().splitlines()[0]}", **defs)


MESSAGE_MODELS: dict[type[ev.Event], type[ApiModel]] = {
    event: _message_model(event, wire) for event, wire in EVENT_TYPES.items()}


class SnapshotQueue(ApiModel):
    """The head of the queue and its length."""

    jobs: list[JobSummary]  # type: ignore[valid-type]
    total: int


class SnapshotMessage(ApiModel):
    """`snapshot`: the first message a client gets."""

    type: Literal["snapshot"]
    at: Timestamp
    status: Status
    workers: list[WorkerSlot]  # type: ignore[valid-type]
    queue: SnapshotQueue


class PongMessage(ApiModel):
    """`pong`: the answer to a client's ping."""

    type: Literal["pong"]
    at: Timestamp


def event_message(event: ev.Event, *, node: str) -> ApiModel | None:
    """An event as the message clients get (`node`: the streaming node, for its own events),
    or None for an event that is not streamed."""
    model = MESSAGE_MODELS.get(type(event))
    if model is None:
        return None
    data: dict[str, Any] = {"type": EVENT_TYPES[type(event)], "at": event.at,
                            "node": node if event.origin is None else event.origin}
    for f in fields(event):
        if f.name == "origin":
            continue
        value = getattr(event, f.name)
        if isinstance(value, Job):
            data["job_id"] = value.id
            value = job_model(value)
        data[f.name] = value
    return model.model_validate(data)


WS_MESSAGES: tuple[type[ApiModel], ...] = (SnapshotMessage, PongMessage, *MESSAGE_MODELS.values())
WS_TYPES: tuple[str, ...] = ("snapshot", "pong", *EVENT_TYPES.values())

# Every answer body the OpenAPI document names (the request models live with their handlers).
RESPONSE_MODELS: tuple[type[ApiModel], ...] = (
    Error, JobSummary, JobDetail, JobPage, QueuePage, WorkerSlot, Status, HistoryBucket, Stats,
    History, Health, Ready, RetryFailed, QueueState, Cleared, ConfigInfo, ConfigApplied,
    ConfigValid, ConfigInvalid, Profiles, AuditEntry, AuditPage, RuleMatch, Node, Nodes,
    SdTargetGroup,
)
