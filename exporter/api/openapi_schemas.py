"""The component schemas of the control API's OpenAPI document, and the helpers that write them.

The config schemas are generated from the core's pydantic models (so they cannot drift from what
the monitor accepts); the rest is written by hand next to the handlers' JSON.
"""

from __future__ import annotations

import copy
from typing import Any

from bulletproof.audit import AUDIT_RESULTS
from bulletproof.config import config_model
from bulletproof.config_policy import RESTART_KEYS
from bulletproof.models import FailureReason, JobState, SkipReason
from bulletproof.view import COMPONENTS
from exporter.api.jobs import EnqueueRequest
from exporter.security.permissions import AUDITED_ACTIONS

REF = "#/components/schemas/{model}"
STATES = [s.value for s in JobState]
REASONS = [r.value for r in FailureReason] + [r.value for r in SkipReason]

# -- schema helpers -----------------------------------------------------------------------------


def ref(name: str) -> dict[str, Any]:
    """A $ref to the component schema `name`."""
    return {"$ref": REF.format(model=name)}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null."""
    if "type" in schema and isinstance(schema["type"], str) and len(schema) == 1:
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(props: dict[str, Any], *, optional: tuple[str, ...] = (), extra: bool = False,
        description: str | None = None) -> dict[str, Any]:
    """An object of `props`, all required but `optional`, closed unless `extra`."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": extra,
    }
    if description:
        schema["description"] = description
    return schema


def arr(items: dict[str, Any]) -> dict[str, Any]:
    """An array of `items`."""
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
    "quality_score": {**NUM_NULL, "description": "the output's score against its source when the "
                      "profile has a quality gate (ssim 0..1, psnr in dB, vmaf 0..100)"},
}
_DETAIL_PROPS: dict[str, Any] = {
    **_JOB_PROPS,
    "source_path": STR,
    "watch_folder": STR,
    "mtime_ns": INT,
    "source_inode": {**INT_NULL, "description": "the inode of the source file the last attempt read"},
    "stderr_tail": {**STR_NULL, "description": "the last lines of ffmpeg's stderr"},
}

_SLOT = obj({
    "slot": INT, "busy": BOOL, "job_id": INT_NULL, "filename": STR_NULL, "profile": STR_NULL,
    "paused": BOOL, "started_at": TS_NULL, "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "speed": NUM_NULL, "eta_seconds": NUM_NULL, "last_progress_at": TS_NULL,
    "media_duration": NUM_NULL,
})

_BUCKET = obj({
    "start": TS, "completed": INT, "failed": INT, "cancelled": INT, "skipped": INT,
    "avg_duration": {**NUM_NULL, "description": "mean duration of the completed jobs"},
}, extra=True)

_ISSUE = obj({"location": {"type": "string", "description": "dotted key path"}, "message": STR})


def _config_schemas() -> dict[str, Any]:
    """The pydantic schema of monitor.yaml, its $defs hoisted into components."""
    schema = config_model().model_json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    defs["Config"] = schema
    for model in defs.values():
        _strip_path_format(model)
    # Shorthands the loader also accepts.
    folder = ref("WatchFolder")
    defs["Config"]["properties"]["monitor_folder"] = {
        "description": "a path, or a list of paths or of watch-folder mappings",
        "anyOf": [STR, arr({"anyOf": [STR, folder]})],
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
        "used_by_rules": arr(STR),
    })
    schema["required"] = sorted(schema["properties"])
    return schema


def component_schemas() -> dict[str, Any]:
    """Every schema of `components.schemas`, by name."""
    enqueue = EnqueueRequest.model_json_schema(ref_template=REF)
    enqueue.pop("title", None)
    return {
        **_config_schemas(),
        "Error": obj({"error": obj({
            "code": {"type": "string", "description": "machine-readable, e.g. job_not_found"},
            "message": STR,
            "details": {"description": "context: an object, or a list of {location, message}"},
        })}),
        "Job": obj(_JOB_PROPS, description="A job as lists show it (live progress while it runs)."),
        "JobDetail": obj(_DETAIL_PROPS, description="Everything the store knows about a job."),
        "JobPage": obj({
            "jobs": arr(ref("Job")), "total": INT, "limit": INT, "offset": INT,
            "next_offset": {**INT_NULL, "description": "offset of the next page, null on the last"},
        }),
        "QueuePage": obj({
            "jobs": arr(ref("Job")), "total": INT, "limit": INT, "offset": INT,
            "next_offset": INT_NULL, "paused": BOOL,
        }),
        "WorkerSlot": _SLOT,
        "Status": obj({
            "paused": BOOL, "paused_since": TS_NULL,
            "workers": obj({"busy": INT, "max": INT, "slots": arr(ref("WorkerSlot"))}),
            "counts": obj({s: INT for s in STATES}),
            "queue": obj({"length": INT, "oldest_queued_at": TS_NULL}),
            "version": STR, "ffmpeg_version": STR, "started_at": TS_NULL,
            "uptime_seconds": NUM,
            "watch_folders": arr(obj({"path": STR, "up": BOOL})),
            "output_volume": nullable(obj({"free_bytes": INT, "size_bytes": INT})),
            "config": obj({"path": STR_NULL, "last_reload_ok": BOOL,
                            "last_reload_success_at": TS_NULL}),
            "time": TS,
        }),
        "HistoryBucket": _BUCKET,
        "Stats": obj({
            "total_jobs": INT, "successful": INT, "failed": INT, "cancelled": INT,
            "avg_duration": {**NUM_NULL, "description": "mean seconds of completed jobs"},
            "sized_jobs": {**INT, "description": "completed jobs whose input and output sizes "
                                                 "are known: the byte totals are over these"},
            "input_bytes": {**INT, "description": "total size of their sources"},
            "output_bytes": {**INT, "description": "total size of their outputs"},
            "saved_bytes": {**INT, "description": "input_bytes - output_bytes (negative when "
                                                  "the outputs are larger)"},
            "saved_ratio": {**NUM_NULL, "description": "saved_bytes / input_bytes; null with "
                                                       "no sized job"},
            "last_24h": arr(ref("HistoryBucket")),
        }, description="The plan's Stats model."),
        "History": obj({
            "since": TS, "until": TS, "step": NUM,
            "buckets": arr(obj({**_BUCKET["properties"], "end": TS, "total": INT})),
        }),
        "Health": obj({"status": {"const": "ok"}}),
        "Ready": obj({"status": {"enum": ["ready", "unready"]}, "problems": arr(STR),
                      "components": obj(dict.fromkeys(COMPONENTS, BOOL),
                                        description="true while the component is healthy")}),
        "EnqueueRequest": enqueue,
        "RetryFailed": obj({"retried": INT, "ids": arr(INT)}),
        "QueueState": obj({"paused": BOOL, "paused_since": TS_NULL}),
        "Cleared": obj({"cleared": INT}),
        "ConfigInfo": obj({
            "path": {**STR_NULL, "description": "the file the config was loaded from"},
            "last_reload_ok": BOOL, "last_reload_success_at": TS_NULL,
            "config": ref("Config"),
        }),
        "ConfigApplied": obj({
            "applied": BOOL,
            "written": {"type": "boolean", "description": "false when the monitor has no file"},
            "path": STR_NULL,
            "backup": {**STR_NULL, "description": "the previous file, kept as <name>.bak"},
            "restart_required": {**arr({"enum": list(RESTART_KEYS)}),
                                 "description": "restart-only keys whose value differs from the "
                                                "one the process started with"},
            "config": ref("Config"),
        }),
        "ConfigValidation": {"oneOf": [
            obj({"valid": {"const": True}, "config": ref("Config")}),
            obj({"valid": {"const": False}, "errors": arr(_ISSUE)}),
        ]},
        "ProfileInfo": _profile_info(),
        "Profiles": obj({"profiles": {"type": "object",
                                       "additionalProperties": ref("ProfileInfo")}}),
        "AuditEntry": obj({
            "id": INT, "at": TS,
            "action": {"enum": list(AUDITED_ACTIONS)},
            "method": STR, "route": {"type": "string", "description": "the route template"},
            "status": {"type": "integer", "description": "the HTTP status answered"},
            "result": {"enum": list(AUDIT_RESULTS)},
            "address": {"type": "string", "description": "the client address"},
            "principal_kind": {"type": ["string", "null"], "enum": ["token", "grafana", "anonymous", None]},
            "principal": {**STR_NULL, "description": "token, the Grafana login, anonymous; null "
                                                     "when the caller was not identified"},
            "role": {**STR_NULL, "description": "the Grafana org role"},
            "job_id": INT_NULL,
            "code": {**STR_NULL, "description": "the error code of a refused or failed call"},
        }),
        "AuditPage": obj({
            "entries": arr(ref("AuditEntry")), "limit": INT,
            "next_before": {**INT_NULL, "description": "pass as before for the next page; null on "
                                                        "the last"},
        }),
        "RuleMatch": obj({
            "matched": BOOL, "path": {"type": "string", "description": "as the rules see it"},
            "size": INT_NULL, "rule": STR_NULL, "rule_index": INT_NULL, "profile": STR_NULL,
            "priority": INT_NULL, "output_path": STR_NULL,
        }),
    }
