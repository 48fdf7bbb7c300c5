"""The audit trail of the control API: every control call and config change, allowed or refused,
is kept in the job database, logged, and counted (`GET /api/v1/audit`, in
`exporter.api.audit`, reads it back).

The middleware is the outermost one, so it sees the final status of every call, including the
refusals the security middleware answers (401, 403, 421, 429) and the errors handlers raise.
Who made the call comes from the security middleware (`CALLER_KEY`: the token, a Grafana login
and role, or nobody), and the address is the one the rate limiter uses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from bulletproof.audit import AuditEntry, result_of
from bulletproof.errors import BulletproofError
from exporter.api.keys import CONTEXT, METRICS
from exporter.api.params import MAX_JOB_ID
from exporter.security.permissions import RouteRule
from exporter.security.principal import CALLER_KEY, RULE_KEY

if TYPE_CHECKING:
    from exporter.security.middleware import Security

log = logging.getLogger("exporter.audit")  # the name operators filter on (docs/security.md)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _job_id(request: web.Request) -> int | None:
    raw = request.match_info.get("id", "")
    if raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= MAX_JOB_ID:
        return int(raw)
    return None


def _error_code(response: web.StreamResponse) -> str | None:
    """The `error.code` of one of the API's JSON error responses."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    try:
        body = json.loads(response.text or "")
        code = body["error"]["code"]
    except (ValueError, TypeError, KeyError):
        return None
    return code[:64] if isinstance(code, str) else None


def audit_middleware(security: Security) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware that audits calls on control and config routes (put it first)."""

    @web.middleware
    async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        rule: RouteRule | None = request.get(RULE_KEY)
        if rule is not None and rule.action is not None:
            record(request, rule, response, security.client_address(request))
        return response

    return audit


def record(request: web.Request, rule: RouteRule, response: web.StreamResponse,
           address: str) -> None:
    """Keep, log and count one audited call; a store that cannot keep it is logged, not raised
    (the call itself has happened)."""
    assert rule.action is not None
    caller = request.get(CALLER_KEY)
    entry = AuditEntry(
        at=time.time(), action=rule.action, method=request.method, route=rule.path,
        status=response.status, result=result_of(response.status), address=address[:100],
        principal_kind=caller.kind if caller else None,
        principal=caller.name[:200] if caller else None,
        role=caller.role if caller else None, job_id=_job_id(request),
        code=_error_code(response))
    request.app[METRICS].observe_control(entry.action, entry.result)
    log.info("api call", extra={
        "method": entry.method, "path": request.path[:300], "status": entry.status,
        "action": entry.action, "result": entry.result, "code": entry.code,
        "principal": entry.principal, "role": entry.role, "client": entry.address,
        "job_id": entry.job_id})
    try:
        request.app[CONTEXT].controls.record_audit(entry)
    except BulletproofError as exc:
        log.error("audit entry not kept", extra={"action": entry.action, "error": str(exc)})
