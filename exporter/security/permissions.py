"""What each route of the API needs: its permission, and the audit action of a control.

This table is the one definition of the API's access rules. The security middleware reads it for
every request, the audit trail names calls by its actions, and tests check that it covers every
route of the app and that the matrix in docs/security.md says the same.

- `public`: never needs credentials, never rate limited (Prometheus, health checks).
- `read`: open unless `api.require_token_for_reads`; then any Grafana role from Viewer up.
- `control`: queue and job controls; a Grafana role of at least `api.grafana.min_role`.
- `config`: anything that takes a config (replace, reset, and the dry run `validate`, which
  probes the folders it names); a Grafana role of at least `api.grafana.config_role`.
- `audit`: reading the audit trail (who did what from where); like `config`.

The API token may do everything; so may the anonymous local client of a loopback-only API
without a token (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from exporter.settings import GrafanaAuth


class Permission(StrEnum):
    """The kinds of access a route needs, from none to the highest."""

    PUBLIC = "public"
    READ = "read"
    CONTROL = "control"
    CONFIG = "config"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One route (method and path template) and what it needs."""

    method: str
    path: str
    permission: Permission
    action: str | None = None  # the audit trail's name for a control or config call


_JOB = "/api/v1/jobs/{id}"
_NODE = "/api/v1/nodes/{name}"
P = Permission

ROUTES: tuple[RouteRule, ...] = (
    RouteRule("GET", "/healthz", P.PUBLIC),
    RouteRule("GET", "/readyz", P.PUBLIC),
    RouteRule("GET", "/metrics", P.PUBLIC),
    RouteRule("GET", "/api/v1/status", P.READ),
    RouteRule("GET", "/api/v1/stats/summary", P.READ),
    RouteRule("GET", "/api/v1/stats/history", P.READ),
    RouteRule("GET", "/api/v1/jobs", P.READ),
    RouteRule("GET", _JOB, P.READ),
    RouteRule("GET", "/api/v1/queue", P.READ),
    RouteRule("GET", "/api/v1/config", P.READ),
    RouteRule("GET", "/api/v1/profiles", P.READ),
    RouteRule("GET", "/api/v1/rules/match", P.READ),
    RouteRule("GET", "/api/v1/openapi.json", P.READ),
    RouteRule("GET", "/api/v1/nodes", P.READ),
    RouteRule("GET", "/api/v1/sd", P.READ),
    RouteRule("GET", "/ws/updates", P.READ),
    RouteRule("POST", "/api/v1/jobs", P.CONTROL, "job.enqueue"),
    RouteRule("POST", "/api/v1/jobs/retry-failed", P.CONTROL, "jobs.retry_failed"),
    RouteRule("DELETE", _JOB, P.CONTROL, "job.delete"),
    RouteRule("POST", _JOB + "/cancel", P.CONTROL, "job.cancel"),
    RouteRule("POST", _JOB + "/retry", P.CONTROL, "job.retry"),
    RouteRule("POST", _JOB + "/pause", P.CONTROL, "job.pause"),
    RouteRule("POST", _JOB + "/resume", P.CONTROL, "job.resume"),
    RouteRule("POST", _JOB + "/prioritize", P.CONTROL, "job.prioritize"),
    RouteRule("POST", "/api/v1/queue/pause", P.CONTROL, "queue.pause"),
    RouteRule("POST", "/api/v1/queue/resume", P.CONTROL, "queue.resume"),
    RouteRule("POST", "/api/v1/queue/clear", P.CONTROL, "queue.clear"),
    RouteRule("POST", _NODE + "/drain", P.CONTROL, "node.drain"),
    RouteRule("POST", _NODE + "/undrain", P.CONTROL, "node.undrain"),
    RouteRule("DELETE", _NODE, P.CONTROL, "node.forget"),
    RouteRule("PUT", "/api/v1/config", P.CONFIG, "config.update"),
    RouteRule("POST", "/api/v1/config/validate", P.CONFIG, "config.validate"),
    RouteRule("POST", "/api/v1/config/reset", P.CONFIG, "config.reset"),
    RouteRule("GET", "/api/v1/audit", P.AUDIT),
)

_BY_ROUTE = {(r.method, r.path): r for r in ROUTES}
# Every audited action, for metrics that export each known label value from the start.
AUDITED_ACTIONS: tuple[str, ...] = tuple(r.action for r in ROUTES if r.action is not None)
PUBLIC_PATHS = frozenset(r.path for r in ROUTES if r.permission is P.PUBLIC)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def rule_for(method: str, path: str) -> RouteRule:
    """The rule of a request by method and matched path template (HEAD as GET).

    A path no route matches (a 404 or 405 to come) needs `read` for a safe method and `control`
    otherwise, so that probing unknown paths reveals nothing more than known ones.
    """
    key = ("GET" if method == "HEAD" else method, path)
    rule = _BY_ROUTE.get(key)
    if rule is not None:
        return rule
    return RouteRule(method, path, P.READ if method in _SAFE_METHODS else P.CONTROL)


def required_role(permission: Permission, grafana: GrafanaAuth) -> str | None:
    """The lowest Grafana org role a session needs for a permission (None: no credentials)."""
    if permission is P.PUBLIC:
        return None
    if permission is P.READ:
        return "Viewer"
    if permission is P.CONTROL:
        return grafana.min_role
    return grafana.config_role


def role_setting(permission: Permission) -> str:
    """The config key that sets the role a permission needs (for error messages)."""
    if permission is P.CONTROL:
        return "api.grafana.min_role"
    if permission in (P.CONFIG, P.AUDIT):
        return "api.grafana.config_role"
    return "any org role"
