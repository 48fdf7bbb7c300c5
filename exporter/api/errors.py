"""JSON errors: `{"error": {"code", "message", "details"}}` with the right status, and the middleware
that turns core errors and aiohttp's HTTP errors into them (no handler answers 500 to bad input)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from bulletproof.errors import (
    BulletproofError,
    ConfigError,
    InvalidTransition,
    JobNotFound,
    NodeNotFound,
    NodeRunning,
    NodeUnavailable,
    PathError,
    StoreError,
    UnknownProfile,
)
from exporter.api.schemas import Error, ErrorDetail

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a handler raises to answer with a JSON error body."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 details: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers or {}
        super().__init__(message)


def json_error(status: int, message: str, *, code: str | None = None, details: Any = None,
               headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error response."""
    body = Error(error=ErrorDetail(code=code or _CODES.get(status, "error"), message=message,
                                   details=details))
    return web.Response(status=status, text=json.dumps(body.model_dump(mode="json")),
                        content_type="application/json", headers=headers)


def error_for(exc: BaseException) -> web.Response | None:
    """The JSON error for a known exception, or None."""
    if isinstance(exc, ApiError):
        return json_error(exc.status, exc.message, code=exc.code, details=exc.details,
                          headers=exc.headers)
    if isinstance(exc, JobNotFound):
        return json_error(404, str(exc), code="job_not_found", details={"job_id": exc.job_id})
    if isinstance(exc, NodeNotFound):
        return json_error(404, str(exc), code="node_not_found", details={"name": exc.name})
    if isinstance(exc, NodeRunning):
        return json_error(409, str(exc), code="node_running", details={"name": exc.name})
    if isinstance(exc, InvalidTransition):
        return json_error(409, str(exc), code="invalid_state",
                          details={"job_id": exc.job_id, "action": exc.action, "state": exc.state.value})
    if isinstance(exc, NodeUnavailable):
        return json_error(409, str(exc), code="node_unavailable",
                          details={"job_id": exc.job_id, "action": exc.action, "node": exc.node})
    if isinstance(exc, ConfigError):
        return json_error(422, "invalid config", code="invalid_config",
                          details=[{"location": i.location, "message": i.message} for i in exc.issues])
    if isinstance(exc, UnknownProfile):
        return json_error(422, str(exc), code="unknown_profile",
                          details=[{"location": "profile", "message": f"known: {', '.join(exc.known)}"}])
    if isinstance(exc, PathError):
        return json_error(422, str(exc), code="invalid_path", details={"path": exc.path})
    if isinstance(exc, StoreError):
        return json_error(503, str(exc), code="store_unavailable")
    if isinstance(exc, BulletproofError):
        return json_error(400, str(exc))
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return json_error(exc.status, exc.reason or exc.text or "error",
                          headers={k: v for k, v in exc.headers.items()
                                   if k.lower() in ("allow", "retry-after", "www-authenticate")})
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer every error as JSON; unexpected ones are logged and answered 500 without details."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_for(exc)
        assert response is not None
        return response
    except Exception as exc:
        response = error_for(exc)
        if response is not None:
            return response
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return json_error(500, "internal error", code="internal")
