"""The OpenAPI 3.1 document of the control API (served at GET /api/v1/openapi.json).

Written by hand next to the handlers; tests check it against the app's routes, against real
responses (jsonschema) and fuzz the API from it. The config schema is generated from the core's
pydantic models, so it cannot drift from what the monitor accepts.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from bulletproof.config import Config
from bulletproof.models import FailureReason, JobState
from bulletproof.store import SORT_COLUMNS
from exporter.api_jobs import MAX_LIMIT, MAX_OFFSET, EnqueueRequest

REF = "#/components/schemas/{model}"
STATES = [s.value for s in JobState]
REASONS = [r.value for r in FailureReason]

# -- schema helpers -----------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema and isinstance(schema["type"], str) and len(schema) == 1:
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Any], *, optional: tuple[str, ...] = (), extra: bool = False,
         description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": extra,
    }
    if description:
        schema["description"] = description
    return schema


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
TS = {"type": "number", "description": "unix seconds"}
TS_NULL = {"type": ["number", "null"], "description": "unix seconds"}
NUM_NULL = {"type": ["number", "null"]}
INT_NULL = {"type": ["integer", "null"]}
STR_NULL = {"type": ["string", "null"]}

_JOB_PROPS: dict[str, Any] = {
    "id": {"type": "integer", "minimum": 1},
    "filename": STR,
    "status": {"enum": STATES, "description": "= state (the plan's name)"},
    "state": {"enum": STATES},
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "started_at": TS_NULL,
    "completed_at": {**TS_NULL, "description": "= finished_at (unix seconds)"},
    "finished_at": TS_NULL,
    "error": STR_NULL,
    "profile": STR,
    "attempts": {"type": "integer", "minimum": 0},
    "reason": {"enum": [*REASONS, None]},
    "rel_path": STR,
    "size": {"type": "integer", "minimum": 0},
    "input_bytes": INT_NULL,
    "output_bytes": INT_NULL,
    "media_duration": NUM_NULL,
    "duration": {**NUM_NULL, "description": "seconds from start to finish of the last attempt"},
    "created_at": TS,
    "queued_at": TS,
    "not_before": {**TS_NULL, "description": "a retry waits (backoff) until then"},
    "speed": {**NUM_NULL, "description": "ffmpeg's speed (1.0 = real time)"},
    "eta_seconds": NUM_NULL,
    "rule": STR,
    "priority": INT,
    "output_path": STR,
    "worker": {**INT_NULL, "description": "the worker slot running the job"},
    "last_progress_at": TS_NULL,
}
_DETAIL_PROPS: dict[str, Any] = {
    **_JOB_PROPS,
    "source_path": STR,
    "watch_folder": STR,
    "mtime_ns": INT,
    "stderr_tail": {**STR_NULL, "description": "the last lines of ffmpeg's stderr"},
}

_SLOT = _obj({
    "slot": INT, "busy": BOOL, "job_id": INT_NULL, "filename": STR_NULL, "profile": STR_NULL,
    "paused": BOOL, "started_at": TS_NULL, "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "speed": NUM_NULL, "eta_seconds": NUM_NULL, "last_progress_at": TS_NULL,
    "media_duration": NUM_NULL,
})

_BUCKET = _obj({
    "start": TS, "completed": INT, "failed": INT, "cancelled": INT,
    "avg_duration": {**NUM_NULL, "description": "mean duration of the completed jobs"},
}, extra=True)

_ISSUE = _obj({"location": {"type": "string", "description": "dotted key path"}, "message": STR})


def _config_schemas() -> dict[str, Any]:
    """The pydantic schema of monitor.yaml, its $defs hoisted into components."""
    schema = Config.model_json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    defs["Config"] = schema
    for model in defs.values():
        _strip_path_format(model)
    # Shorthands the loader also accepts.
    folder = _ref("WatchFolder")
    defs["Config"]["properties"]["monitor_folder"] = {
        "description": "a path, or a list of paths or of watch-folder mappings",
        "anyOf": [STR, _arr({"anyOf": [STR, folder]})],
    }
    glob = defs["Rule"]["properties"]["glob"]
    defs["Rule"]["properties"]["glob"] = {"anyOf": [STR, *glob.get("anyOf", [glob])],
                                          "default": None}
    return defs


def _strip_path_format(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("format") == "path":
            del node["format"]
        for value in node.values():
            _strip_path_format(value)
    elif isinstance(node, list):
        for value in node:
            _strip_path_format(value)


def _profile_info() -> dict[str, Any]:
    """A profile's settings plus what GET /api/v1/profiles adds."""
    schema = copy.deepcopy(_config_schemas()["Profile"])
    schema["title"] = "ProfileInfo"
    schema["properties"].update({
        "builtin": {"type": "boolean", "description": "a built-in profile not overridden by the config"},
        "extension": STR,
        "used_by_rules": _arr(STR),
    })
    schema["required"] = sorted(schema["properties"])
    return schema


def _schemas() -> dict[str, Any]:
    enqueue = EnqueueRequest.model_json_schema(ref_template=REF)
    enqueue.pop("title", None)
    return {
        **_config_schemas(),
        "Error": _obj({"error": _obj({
            "code": {"type": "string", "description": "machine-readable, e.g. job_not_found"},
            "message": STR,
            "details": {"description": "context: an object, or a list of {location, message}"},
        })}),
        "Job": _obj(_JOB_PROPS, description="A job as lists show it (live progress while it runs)."),
        "JobDetail": _obj(_DETAIL_PROPS, description="Everything the store knows about a job."),
        "JobPage": _obj({
            "jobs": _arr(_ref("Job")), "total": INT, "limit": INT, "offset": INT,
            "next_offset": {**INT_NULL, "description": "offset of the next page, null on the last"},
        }),
        "QueuePage": _obj({
            "jobs": _arr(_ref("Job")), "total": INT, "limit": INT, "offset": INT,
            "next_offset": INT_NULL, "paused": BOOL,
        }),
        "WorkerSlot": _SLOT,
        "Status": _obj({
            "paused": BOOL, "paused_since": TS_NULL,
            "workers": _obj({"busy": INT, "max": INT, "slots": _arr(_ref("WorkerSlot"))}),
            "counts": _obj({s: INT for s in STATES}),
            "queue": _obj({"length": INT, "oldest_queued_at": TS_NULL}),
            "version": STR, "ffmpeg_version": STR, "started_at": TS_NULL,
            "uptime_seconds": NUM,
            "watch_folders": _arr(_obj({"path": STR, "up": BOOL})),
            "output_volume": _null(_obj({"free_bytes": INT, "size_bytes": INT})),
            "config": _obj({"path": STR_NULL, "last_reload_ok": BOOL,
                            "last_reload_success_at": TS_NULL}),
            "time": TS,
        }),
        "HistoryBucket": _BUCKET,
        "Stats": _obj({
            "total_jobs": INT, "successful": INT, "failed": INT, "cancelled": INT,
            "avg_duration": {**NUM_NULL, "description": "mean seconds of completed jobs"},
            "last_24h": _arr(_ref("HistoryBucket")),
        }, description="The plan's Stats model."),
        "History": _obj({
            "since": TS, "until": TS, "step": NUM,
            "buckets": _arr(_obj({**_BUCKET["properties"], "end": TS, "total": INT})),
        }),
        "Health": _obj({"status": {"const": "ok"}}),
        "Ready": _obj({"status": {"enum": ["ready", "unready"]}, "problems": _arr(STR)}),
        "EnqueueRequest": enqueue,
        "RetryFailed": _obj({"retried": INT, "ids": _arr(INT)}),
        "QueueState": _obj({"paused": BOOL, "paused_since": TS_NULL}),
        "Cleared": _obj({"cleared": INT}),
        "ConfigInfo": _obj({
            "path": {**STR_NULL, "description": "the file the config was loaded from"},
            "last_reload_ok": BOOL, "last_reload_success_at": TS_NULL,
            "config": _ref("Config"),
        }),
        "ConfigApplied": _obj({
            "applied": BOOL,
            "written": {"type": "boolean", "description": "false when the monitor has no file"},
            "path": STR_NULL,
            "backup": {**STR_NULL, "description": "the previous file, kept as <name>.bak"},
            "restart_required": {**_arr({"enum": ["database", "api"]}),
                                 "description": "changed keys that apply only after a restart"},
            "config": _ref("Config"),
        }),
        "ConfigValidation": {"oneOf": [
            _obj({"valid": {"const": True}, "config": _ref("Config")}),
            _obj({"valid": {"const": False}, "errors": _arr(_ISSUE)}),
        ]},
        "ProfileInfo": _profile_info(),
        "Profiles": _obj({"profiles": {"type": "object",
                                       "additionalProperties": _ref("ProfileInfo")}}),
        "RuleMatch": _obj({
            "matched": BOOL, "path": {"type": "string", "description": "as the rules see it"},
            "size": INT_NULL, "rule": STR_NULL, "rule_index": INT_NULL, "profile": STR_NULL,
            "priority": INT_NULL, "output_path": STR_NULL,
        }),
    }


# -- responses and parameters -------------------------------------------------------------------

_ERRORS = {
    "400": "Malformed request (unparseable JSON, missing body)",
    "401": "Missing or wrong credentials",
    "403": "Credentials valid but not allowed (role too low, no token configured off loopback)",
    "404": "No such job or route",
    "405": "Method not allowed on this path",
    "409": "The job's state does not allow the action",
    "413": "Body larger than api.max_body_bytes",
    "415": "Body is not application/json",
    "422": "Invalid values (see details)",
    "426": "Not a WebSocket upgrade request",
    "429": "Rate limited (see Retry-After)",
    "500": "Server-side failure that is not the caller's fault",
    "503": "Store unavailable",
}


def _error(status: str) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{status}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(op_id: str, summary: str, tag: str, ok: dict[str, dict[str, Any]], *,
        errors: tuple[str, ...] = (), params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, mutating: bool = False, auth: bool = True,
        description: str | None = None) -> dict[str, Any]:
    codes = list(errors)
    if auth:
        codes += ["401", "403", "429"]
    if body is not None:
        codes += ["400", "413", "415"]
    if "503" not in codes:
        codes.append("503")
    operation: dict[str, Any] = {
        "operationId": op_id, "summary": summary, "tags": [tag],
        "responses": {**{c: _error(c) for c in sorted(set(codes)) if c not in ok}, **ok},
    }
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if not auth:
        operation["security"] = []
    elif mutating:
        operation["x-mutating"] = True
    return operation


def _q(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, **extra}


_ID = {"name": "id", "in": "path", "required": True,
       "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
       "description": "job id (a positive integer; anything else is 404)"}
_TIME = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1e11},
                   {"type": "string", "format": "date-time"}]}
_PAGE = [
    _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}, "page size"),
    _q("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
       "jobs to skip"),
]


def _job_action(op_id: str, summary: str, *, accepted: bool = False,
                description: str | None = None) -> dict[str, Any]:
    ok = {"200": _json(_ref("JobDetail"), "the job after the action")}
    if accepted:
        ok["202"] = _json(_ref("JobDetail"), "the job is running: it was told to stop, the "
                          "outcome follows as a job_finished event")
    return {"post": _op(op_id, summary, "jobs", ok, errors=("404", "409"), params=[_ID],
                        mutating=True, description=description)}


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _op("healthz", "Liveness: the process answers", "health",
                                {"200": _json(_ref("Health"), "alive")}, auth=False)},
        "/readyz": {"get": _op("readyz", "Readiness", "health", {
            "200": _json(_ref("Ready"), "ready"),
            "503": _json(_ref("Ready"), "not ready, with the problems"),
        }, auth=False)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", "health", {"200": {
            "description": "Prometheus text format, or OpenMetrics when the Accept header asks; "
                           "gzip when Accept-Encoding allows (docs/metrics.md lists the series)",
            "content": {"text/plain": {"schema": STR},
                        "application/openmetrics-text": {"schema": STR}},
        }}, auth=False)},
        "/api/v1/status": {"get": _op("getStatus", "Queue, workers, counts, versions, uptime",
                                      "status", {"200": _json(_ref("Status"), "status")})},
        "/api/v1/stats/summary": {"get": _op(
            "getStatsSummary", "Totals, average duration, last 24 h by hour", "stats",
            {"200": _json(_ref("Stats"), "the plan's Stats model")})},
        "/api/v1/stats/history": {"get": _op(
            "getStatsHistory", "Jobs finished per time bucket, by outcome", "stats",
            {"200": _json(_ref("History"), "buckets from since to until")}, errors=("422",),
            params=[
                _q("since", _TIME, "start (unix seconds or ISO 8601); default until - 24 h"),
                _q("until", _TIME, "end (unix seconds or ISO 8601); default now"),
                _q("step", {"anyOf": [{"type": "number", "minimum": 60},
                                      {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?[smhd]?$"}]},
                   "bucket width: seconds or 90s/15m/1h/1d; at least 60 s, at most 2000 buckets"),
            ])},
        "/api/v1/jobs": {
            "get": _op("listJobs", "Jobs, filtered, sorted and paged", "jobs",
                       {"200": _json(_ref("JobPage"), "a page of jobs")}, errors=("422",),
                       params=[
                           _q("state", _arr({"enum": STATES}),
                              "only these states (repeat the parameter or use a comma list)",
                              style="form", explode=True),
                           _q("profile", {"type": "string", "maxLength": 200}, "only this profile"),
                           _q("q", {"type": "string", "maxLength": 500},
                              "text in the file's relative path (case-insensitive)"),
                           _q("since", _TIME, "finished (else created) at or after"),
                           _q("until", _TIME, "finished (else created) before"),
                           _q("sort", {"enum": list(SORT_COLUMNS), "default": "created"},
                              "sort key (jobs without a value sort last)"),
                           _q("order", {"enum": ["asc", "desc"], "default": "desc"}, "direction"),
                           *_PAGE,
                       ]),
            "post": _op("enqueueJob", "Queue a file that lies inside a watch folder", "jobs",
                        {"201": {**_json(_ref("JobDetail"), "queued"),
                                 "headers": {"Location": {"schema": STR}}}},
                        errors=("409", "422"), body=_ref("EnqueueRequest"), mutating=True,
                        description="409 when the same version of the file already has a job "
                                    "that is not finished."),
        },
        "/api/v1/jobs/retry-failed": {"post": _op(
            "retryFailed", "Queue every failed job again", "jobs",
            {"200": _json(_ref("RetryFailed"), "the retried job ids")}, mutating=True)},
        "/api/v1/jobs/{id}": {
            "get": _op("getJob", "One job, with stderr tail and source path", "jobs",
                       {"200": _json(_ref("JobDetail"), "the job")}, errors=("404",), params=[_ID]),
            "delete": _op("deleteJob", "Remove a finished job from history", "jobs",
                          {"204": {"description": "deleted"}}, errors=("404", "409"),
                          params=[_ID], mutating=True),
        },
        "/api/v1/jobs/{id}/cancel": _job_action(
            "cancelJob", "Cancel a queued job or stop a running one", accepted=True),
        "/api/v1/jobs/{id}/retry": _job_action(
            "retryJob", "Queue a failed, cancelled or completed job again"),
        "/api/v1/jobs/{id}/pause": _job_action("pauseJob", "Suspend a running job (SIGSTOP)"),
        "/api/v1/jobs/{id}/resume": _job_action("resumeJob", "Continue a paused job (SIGCONT)"),
        "/api/v1/jobs/{id}/prioritize": _job_action(
            "prioritizeJob", "Move a queued job to the front of the queue"),
        "/api/v1/queue": {"get": _op("getQueue", "Queued jobs in run order", "queue",
                                     {"200": _json(_ref("QueuePage"), "a page of the queue")},
                                     errors=("422",), params=list(_PAGE))},
        "/api/v1/queue/pause": {"post": _op(
            "pauseQueue", "Stop starting jobs (running ones finish)", "queue",
            {"200": _json(_ref("QueueState"), "paused")}, mutating=True)},
        "/api/v1/queue/resume": {"post": _op(
            "resumeQueue", "Start taking jobs again", "queue",
            {"200": _json(_ref("QueueState"), "running")}, mutating=True)},
        "/api/v1/queue/clear": {"post": _op(
            "clearQueue", "Cancel every queued job", "queue",
            {"200": _json(_ref("Cleared"), "how many were cancelled")}, mutating=True)},
        "/api/v1/config": {
            "get": _op("getConfig", "The config in force and its file", "config",
                       {"200": _json(_ref("ConfigInfo"), "effective config")}),
            "put": _op("putConfig", "Replace the config: validate, write with .bak, apply", "config",
                       {"200": _json(_ref("ConfigApplied"), "written and applied")},
                       errors=("422", "500"), body=_ref("Config"), mutating=True,
                       description="422 `invalid_config` lists every problem with its key path. "
                                   "Relative paths are relative to the config file's folder."),
        },
        "/api/v1/config/validate": {"post": _op(
            "validateConfig", "Dry run: would this config be accepted?", "config",
            {"200": _json(_ref("ConfigValidation"), "valid with the effective config, or the "
                                                    "problems")},
            body={}, mutating=True, description="Writes nothing; 200 either way.")},
        "/api/v1/config/reset": {"post": _op(
            "resetConfig", "Back to the default config (written with .bak, applied)", "config",
            {"200": _json(_ref("ConfigApplied"), "written and applied")}, errors=("500",),
            mutating=True)},
        "/api/v1/profiles": {"get": _op("listProfiles", "Built-in and configured profiles",
                                        "config", {"200": _json(_ref("Profiles"), "by name")})},
        "/api/v1/rules/match": {"get": _op(
            "matchRule", "Which rule and profile a file would get", "config",
            {"200": _json(_ref("RuleMatch"), "the match (matched: false when no rule applies)")},
            errors=("422",), params=[
                {**_q("path", {"type": "string", "minLength": 1, "maxLength": 4096},
                      "relative to a watch folder, or absolute inside one"), "required": True},
                _q("size", {"type": "integer", "minimum": 0},
                   "file size in bytes (rules with min_size/max_size need it; omitted: ignored)"),
            ])},
        "/api/v1/openapi.json": {"get": _op("getOpenapi", "This document", "meta",
                                            {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
        "/ws/updates": {"get": _op(
            "wsUpdates", "WebSocket event stream", "events",
            {"101": {"description": "Switching to WebSocket: a snapshot message, then events "
                                    "(docs/api.md lists the message types)"}},
            errors=("426",),
            description="Send `Upgrade: websocket`. Messages are JSON text frames with a "
                        "`type`; see docs/api.md.")},
    }


@lru_cache(maxsize=4)
def _document(version: str) -> dict[str, Any]:
    responses = {f"E{code}": _json(_ref("Error"), text) for code, text in _ERRORS.items()}
    responses["E429"]["headers"] = {"Retry-After": {"schema": INT,
                                                    "description": "seconds to wait"}}
    responses["E405"]["headers"] = {"Allow": {"schema": STR}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bulletproof control API",
            "version": version,
            "description": (
                "Control and observe a Bulletproof monitor. JSON everywhere; timestamps are unix "
                "seconds (numbers); errors are {\"error\": {\"code\", \"message\", \"details\"}}. "
                "Mutating calls need the API token (or a Grafana session through the proxy); "
                "see docs/api.md and docs/security.md."),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in ("health", "status", "stats", "jobs", "queue", "config",
                                       "events", "meta")],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "the API token (BULLETPROOF_API_TOKEN or api.token_file)"},
                "tokenHeader": {"type": "apiKey", "in": "header", "name": "X-Bulletproof-Token"},
                "grafanaSession": {"type": "apiKey", "in": "cookie", "name": "grafana_session",
                                   "description": "through the same-origin Grafana proxy"},
            },
        },
        "security": [{"bearer": []}, {"tokenHeader": []}, {"grafanaSession": []}, {}],
    }


def openapi_document(version: str = "0") -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_document(version))


@lru_cache(maxsize=4)
def openapi_text(version: str = "0") -> str:
    """The document as JSON text (what GET /api/v1/openapi.json serves)."""
    return json.dumps(_document(version), separators=(",", ":"))
