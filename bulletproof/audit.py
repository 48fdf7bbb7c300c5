"""The audit trail of the control plane: one record per control call or config change.

The exporter records every call on a control or config route (allowed or refused) through
`Monitor.record_audit`; the store keeps them in the `audit` table of the job database, newest
`AUDIT_MAX_ROWS` rows and at most `AUDIT_MAX_AGE_SECONDS` old.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

AUDIT_MAX_ROWS = 100_000
AUDIT_MAX_AGE_SECONDS = 90 * 86400
# The outcome of a call as a small fixed set (also the values of a metric label).
AUDIT_RESULTS: tuple[str, ...] = (
    "ok", "unauthorized", "forbidden", "rate_limited", "rejected", "error")


def result_of(status: int) -> str:
    """The audit result of an HTTP status: ok (2xx/3xx), unauthorized (401), forbidden (403,
    421), rate_limited (429), rejected (another 4xx), error (5xx)."""
    if status < 400:
        return "ok"
    if status == 401:
        return "unauthorized"
    if status in (403, 421):
        return "forbidden"
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "rejected"
    return "error"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited call: who, what, from where, and how it ended."""

    at: float                 # unix seconds
    action: str               # "queue.pause", "config.update"... (exporter.security.permissions)
    method: str
    route: str                # the route template, "/api/v1/jobs/{id}/cancel"
    status: int               # the HTTP status answered
    result: str               # one of AUDIT_RESULTS
    address: str              # the client address (X-Forwarded-For from trusted proxies only)
    principal_kind: str | None = None  # "token", "grafana", "anonymous"; None if not identified
    principal: str | None = None       # "token", the Grafana login, "anonymous"
    role: str | None = None            # the Grafana org role
    job_id: int | None = None          # the job acted on
    code: str | None = None            # the error code of a refused or failed call
    id: int | None = None              # set by the store

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain data (the API's and the CLI's JSON)."""
        return asdict(self)


# The stored columns of an entry, in order (its fields but the store's id).
AUDIT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AuditEntry) if f.name != "id")
