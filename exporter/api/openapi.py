"""The OpenAPI 3.1 document of the control API (served at GET /api/v1/openapi.json).

The component schemas are generated from the models the handlers answer with
(`exporter.api.schemas`), the request models, and the core's config models (so the document
cannot drift from what is served or what the monitor accepts); this module adds the route table:
each path and method with its parameters, answers and permission. Tests check it against the
app's routes, against real responses (jsonschema) and fuzz the API from it.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from bulletproof.config import NODE_NAME_PATTERN, config_model
from bulletproof.models import JobState
from bulletproof.store import SORT_KEYS
from exporter.api.audit import MAX_PAGE as MAX_AUDIT_PAGE
from exporter.api.jobs import MAX_LIMIT, MAX_OFFSET, EnqueueRequest
from exporter.api.schemas import REF, RESPONSE_MODELS, WS_MESSAGES
from exporter.security.permissions import rule_for

STR = {"type": "string"}
INT = {"type": "integer"}
STATES = [s.value for s in JobState]


def ref(name: str) -> dict[str, Any]:
    """A $ref to the component schema `name`."""
    return {"$ref": REF.format(model=name)}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    """An array of `items`."""
    return {"type": "array", "items": items}


# -- component schemas --------------------------------------------------------------------------


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


def _profile_info(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile's settings (the core's Profile model) plus what GET /api/v1/profiles adds."""
    schema = copy.deepcopy(profile)
    schema["title"] = "ProfileInfo"
    schema["properties"].update({
        "builtin": {"type": "boolean", "description": "a built-in profile not overridden by the config"},
        "extension": STR,
        "used_by_rules": arr(STR),
    })
    schema["required"] = sorted(schema["properties"])
    return schema


def component_schemas() -> dict[str, Any]:
    """Every schema of `components.schemas`, by name: the answer and WebSocket message models
    (as they serialize), the request models and the config (as they validate)."""
    _, top = models_json_schema(
        [*((m, "serialization") for m in (*RESPONSE_MODELS, *WS_MESSAGES)),
         (EnqueueRequest, "validation")], ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    config = _config_schemas()
    clash = sorted(k for k in config if k in schemas and schemas[k] != config[k])
    if clash:
        raise RuntimeError(f"config schemas named like answer schemas: {clash}")
    schemas.update(config)
    schemas["ProfileInfo"] = _profile_info(config["Profile"])
    schemas["ConfigValidation"] = {"oneOf": [ref("ConfigValid"), ref("ConfigInvalid")]}
    schemas["EnqueueRequest"].pop("title", None)
    return schemas

# -- responses and parameters -------------------------------------------------------------------

_ERRORS = {
    "400": "Malformed request (unparseable JSON, missing body, an invalid node name)",
    "401": "Missing or wrong credentials",
    "403": "Not allowed: role too low, no token configured off loopback, or a foreign Origin",
    "404": "No such job, node or route",
    "405": "Method not allowed on this path",
    "409": "The job's state does not allow the action (or the node is still running)",
    "413": "Body larger than api.max_body_bytes",
    "415": "Body is not application/json",
    "421": "The Host header names a host this API does not answer for (DNS rebinding)",
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
    codes = [*errors, "403", "421"]  # the Host and Origin allow-list applies to every route
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
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": NODE_NAME_PATTERN},
         "description": "a node_name (anything else is 400 invalid_node_name)"}
_TIME = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1e11},
                   {"type": "string", "format": "date-time"}]}
_PAGE = [
    _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}, "page size"),
    _q("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
       "jobs to skip"),
]


def _job_action(op_id: str, summary: str, *, accepted: bool = False, remote: bool = False,
                description: str | None = None) -> dict[str, Any]:
    ok = {"200": _json(ref("JobDetail"), "the job after the action")}
    if accepted:
        ok["202"] = _json(ref("JobDetail"), "the job is running: it was told to stop (another "
                          "node's job: that node was asked, `requested`), the outcome follows "
                          "as a job_finished event")
    elif remote:
        ok["202"] = _json(ref("JobDetail"), "another node runs the job: that node was asked "
                          "(`requested`) and carries it out within about a second; the job is "
                          "returned as it still is, its event follows")
    return {"post": _op(op_id, summary, "jobs", ok, errors=("404", "409"), params=[_ID],
                        mutating=True, description=description)}


def _node_action(op_id: str, summary: str, description: str) -> dict[str, Any]:
    return {"post": _op(op_id, summary, "nodes", {"200": _json(ref("Node"), "the node after the action")},
                        errors=("400", "404"), params=[_NAME], mutating=True,
                        description=description)}


def _paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": _op("healthz", "Liveness: the process answers", "health",
                                {"200": _json(ref("Health"), "alive")}, auth=False)},
        "/readyz": {"get": _op("readyz", "Readiness", "health", {
            "200": _json(ref("Ready"), "ready"),
            "503": _json(ref("Ready"), "not ready, with the problems"),
        }, auth=False)},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", "health", {"200": {
            "description": "Prometheus text format, or OpenMetrics when the Accept header asks; "
                           "gzip when Accept-Encoding allows (docs/metrics.md lists the series)",
            "content": {"text/plain": {"schema": STR},
                        "application/openmetrics-text": {"schema": STR}},
        }}, auth=False)},
        "/api/v1/status": {"get": _op("getStatus", "Queue, workers, counts, versions, uptime",
                                      "status", {"200": _json(ref("Status"), "status")})},
        "/api/v1/stats/summary": {"get": _op(
            "getStatsSummary", "Totals, average duration, last 24 h by hour", "stats",
            {"200": _json(ref("Stats"), "totals, space saved and the last 24 h")})},
        "/api/v1/stats/history": {"get": _op(
            "getStatsHistory", "Jobs finished per time bucket, by outcome", "stats",
            {"200": _json(ref("History"), "buckets from since to until")}, errors=("422",),
            params=[
                _q("since", _TIME, "start (unix seconds or ISO 8601); default until - 24 h"),
                _q("until", _TIME, "end (unix seconds or ISO 8601); default now"),
                _q("step", {"anyOf": [{"type": "number", "minimum": 60},
                                      {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?[smhd]?$"}]},
                   "bucket width: seconds or 90s/15m/1h/1d; at least 60 s, at most 2000 buckets"),
            ])},
        "/api/v1/jobs": {
            "get": _op("listJobs", "Jobs, filtered, sorted and paged", "jobs",
                       {"200": _json(ref("JobPage"), "a page of jobs")}, errors=("422",),
                       params=[
                           _q("state", arr({"enum": STATES}),
                              "only these states (repeat the parameter or use a comma list)",
                              style="form", explode=True),
                           _q("profile", {"type": "string", "maxLength": 200}, "only this profile"),
                           _q("q", {"type": "string", "maxLength": 500},
                              "text in the file's relative path (case-insensitive)"),
                           _q("since", _TIME, "finished (else created) at or after"),
                           _q("until", _TIME, "finished (else created) before"),
                           _q("sort", {"enum": list(SORT_KEYS), "default": "created"},
                              "sort key (jobs without a value sort last)"),
                           _q("order", {"enum": ["asc", "desc"], "default": "desc"}, "direction"),
                           *_PAGE,
                       ]),
            "post": _op("enqueueJob", "Queue a file that lies inside a watch folder", "jobs",
                        {"201": {**_json(ref("JobDetail"), "queued"),
                                 "headers": {"Location": {"schema": STR}}}},
                        errors=("409", "422"), body=ref("EnqueueRequest"), mutating=True,
                        description="409 when the same version of the file already has a job "
                                    "that is not finished."),
        },
        "/api/v1/jobs/retry-failed": {"post": _op(
            "retryFailed", "Queue every failed job again", "jobs",
            {"200": _json(ref("RetryFailed"), "the retried job ids")}, mutating=True)},
        "/api/v1/jobs/{id}": {
            "get": _op("getJob", "One job, with stderr tail and source path", "jobs",
                       {"200": _json(ref("JobDetail"), "the job")}, errors=("404",), params=[_ID]),
            "delete": _op("deleteJob", "Remove a finished job from history", "jobs",
                          {"204": {"description": "deleted"}}, errors=("404", "409"),
                          params=[_ID], mutating=True),
        },
        "/api/v1/jobs/{id}/cancel": _job_action(
            "cancelJob", "Cancel a queued job or stop a running one", accepted=True),
        "/api/v1/jobs/{id}/retry": _job_action(
            "retryJob", "Queue a failed, cancelled or completed job again"),
        "/api/v1/jobs/{id}/pause": _job_action("pauseJob", "Suspend a running job (SIGSTOP)",
                                                remote=True),
        "/api/v1/jobs/{id}/resume": _job_action("resumeJob", "Continue a paused job (SIGCONT)",
                                                 remote=True),
        "/api/v1/jobs/{id}/prioritize": _job_action(
            "prioritizeJob", "Move a queued job to the front of the queue"),
        "/api/v1/queue": {"get": _op("getQueue", "Queued jobs in run order", "queue",
                                     {"200": _json(ref("QueuePage"), "a page of the queue")},
                                     errors=("422",), params=list(_PAGE))},
        "/api/v1/queue/pause": {"post": _op(
            "pauseQueue", "Stop starting jobs (running ones finish)", "queue",
            {"200": _json(ref("QueueState"), "paused")}, mutating=True)},
        "/api/v1/queue/resume": {"post": _op(
            "resumeQueue", "Start taking jobs again", "queue",
            {"200": _json(ref("QueueState"), "running")}, mutating=True)},
        "/api/v1/queue/clear": {"post": _op(
            "clearQueue", "Cancel every queued job", "queue",
            {"200": _json(ref("Cleared"), "how many were cancelled")}, mutating=True)},
        "/api/v1/nodes": {"get": _op(
            "listNodes", "Every node of the job store (this one included)", "nodes",
            {"200": _json(ref("Nodes"), "the nodes by name, and the node that answered")})},
        "/api/v1/nodes/{name}/drain": _node_action(
            "drainNode", "Let a node finish its running jobs and take no new ones",
            "Any node of the store; it follows at once (or at its next heartbeat). Draining "
            "survives the node's restarts until undrain."),
        "/api/v1/nodes/{name}/undrain": _node_action(
            "undrainNode", "Let a draining node take jobs again", "Any node of the store."),
        "/api/v1/nodes/{name}": {"delete": _op(
            "forgetNode", "Remove a node that is not alive from the registry", "nodes",
            {"204": {"description": "forgotten"}}, errors=("400", "404", "409"), params=[_NAME],
            mutating=True, description="409 `node_running` while the node is alive (running and "
                                       "heard from within three heartbeats).")},
        "/api/v1/sd": {"get": _op(
            "serviceDiscovery", "Prometheus HTTP service discovery: every alive node's API",
            "nodes", {"200": _json(arr(ref("SdTargetGroup")),
                                   "one target group per alive node that advertises its API "
                                   "address (an empty list when none)")},
            description="The http_sd_configs format: `[{\"targets\": [\"host:port\"], "
                        "\"labels\": {\"node\": NAME, ...}}]`.")},
        "/api/v1/config": {
            "get": _op("getConfig", "The config in force and its file", "config",
                       {"200": _json(ref("ConfigInfo"), "effective config")}),
            "put": _op("putConfig", "Replace the config: validate, write with .bak, apply", "config",
                       {"200": _json(ref("ConfigApplied"), "written and applied")},
                       errors=("422", "500"), body=ref("Config"), mutating=True,
                       description="422 `invalid_config` lists every problem with its key path. "
                                   "Relative paths are relative to the config file's folder."),
        },
        "/api/v1/config/validate": {"post": _op(
            "validateConfig", "Dry run: would this config be accepted?", "config",
            {"200": _json(ref("ConfigValidation"), "valid with the effective config, or the "
                                                    "problems")},
            body={}, mutating=True, description="Writes nothing; 200 either way.")},
        "/api/v1/config/reset": {"post": _op(
            "resetConfig", "Back to the default config (written with .bak, applied)", "config",
            {"200": _json(ref("ConfigApplied"), "written and applied")}, errors=("500",),
            mutating=True)},
        "/api/v1/profiles": {"get": _op("listProfiles", "Built-in and configured profiles",
                                        "config", {"200": _json(ref("Profiles"), "by name")})},
        "/api/v1/rules/match": {"get": _op(
            "matchRule", "Which rule and profile a file would get", "config",
            {"200": _json(ref("RuleMatch"), "the match (matched: false when no rule applies)")},
            errors=("422",), params=[
                {**_q("path", {"type": "string", "minLength": 1, "maxLength": 4096},
                      "relative to a watch folder, or absolute inside one"), "required": True},
                _q("size", {"type": "integer", "minimum": 0},
                   "file size in bytes (rules with min_size/max_size need it; omitted: ignored)"),
            ])},
        "/api/v1/audit": {"get": _op(
            "listAudit", "The audit trail of control calls and config changes, newest first",
            "meta", {"200": _json(ref("AuditPage"), "a page of entries")}, errors=("422",),
            params=[
                _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_PAGE,
                             "default": 100}, "page size"),
                _q("before", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                   "only entries with a smaller id (the previous page's next_before)"),
            ],
            description="Needs the token or a Grafana role of at least api.grafana.config_role.")},
        "/api/v1/openapi.json": {"get": _op("getOpenapi", "This document", "meta",
                                            {"200": _json({"type": "object"}, "OpenAPI 3.1")})},
        "/ws/updates": {"get": _op(
            "wsUpdates", "WebSocket event stream", "events",
            {"101": {"description": "Switching to WebSocket: a snapshot message, then events "
                                    "(docs/api.md lists the message types)"}},
            errors=("426",),
            description="Send `Upgrade: websocket`. Messages are JSON text frames with a "
                        "`type`; each message type has its schema in components "
                        "(SnapshotMessage, PongMessage and one <Event>Message per event); "
                        "see docs/api.md.")},
    }


def _with_permissions(paths: dict[str, Any]) -> dict[str, Any]:
    """Each operation's `x-permission` (and `x-audit-action`), from exporter.security.permissions."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            rule = rule_for(method.upper(), path)
            operation["x-permission"] = rule.permission.value
            if rule.action is not None:
                operation["x-audit-action"] = rule.action
    return paths


@lru_cache(maxsize=4)
def _document(version: str) -> dict[str, Any]:
    responses = {f"E{code}": _json(ref("Error"), text) for code, text in _ERRORS.items()}
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
        "tags": [{"name": t} for t in ("health", "status", "stats", "jobs", "queue", "nodes",
                                       "config", "events", "meta")],
        "paths": _with_permissions(_paths()),
        "components": {
            "schemas": component_schemas(),
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
