"""GET /api/v1/audit: the audit trail (kept by `exporter.security.audit`), newest first."""

from __future__ import annotations

from aiohttp import web

from exporter.api.keys import context_of
from exporter.api.params import MAX_JOB_ID, int_param
from exporter.api.responses import ok
from exporter.api.schemas import AuditPage

MAX_PAGE = 1000


async def list_audit(request: web.Request) -> web.Response:
    """The audit trail, newest first, paged by id (`before`)."""
    limit = int_param(request, "limit", 100, lo=1, hi=MAX_PAGE)
    before = int_param(request, "before", 0, lo=1, hi=MAX_JOB_ID) if request.query.get(
        "before") else None
    entries = context_of(request).view.audit_entries(limit=limit, before=before)
    last = entries[-1].id if len(entries) == limit else None
    return ok(AuditPage(entries=[e.to_dict() for e in entries], limit=limit, next_before=last))
