"""Request parsing: the job id path segment, query parameters, JSON bodies against request models.

Every bad value is a 4xx `ApiError` naming the parameter (docs/api.md, "Errors").
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bulletproof.errors import JobNotFound
from exporter.api.errors import ApiError

MAX_JOB_ID = 2**63 - 1  # SQLite's INTEGER range
# Timestamps accepted in query parameters: 1970 .. year 5138 (anything else is a typo).
_MAX_TIMESTAMP = 1e11
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


def job_id_of(request: web.Request) -> int:
    """The `{id}` path segment; the route only matches digits, out-of-range ids are unknown jobs."""
    raw = request.match_info["id"]
    if not _DIGITS.fullmatch(raw) or len(raw) > 19:
        raise ApiError(404, f"job {raw[:40]!r} not found", code="job_not_found",
                       details={"job_id": raw[:40]})
    job_id = int(raw)
    if not 1 <= job_id <= MAX_JOB_ID:
        raise JobNotFound(job_id)
    return job_id


def bad_param(name: str, message: str) -> ApiError:
    return ApiError(422, f"invalid query parameter {name!r}: {message}", code="invalid_parameter",
                    details=[{"location": f"query.{name}", "message": message}])


def query_one(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (empty counts as absent)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_param(name, "given more than once")
    value = values[0] if values else None
    if value is not None and "\x00" in value:
        raise bad_param(name, "contains a NUL character")
    return value or None


def int_param(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    """An integer query parameter within [lo, hi]."""
    raw = query_one(request, name)
    if raw is None:
        return default
    raw = raw.strip()
    if not _INTEGER.fullmatch(raw):
        raise bad_param(name, "not an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad_param(name, f"must be between {lo} and {hi}")
    return value


def parse_time(value: str) -> float:
    """Unix seconds (`1767225600`, `1767225600.5`) or ISO 8601 (`2026-01-01T00:00:00Z`; UTC if naive)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not unix seconds nor an ISO 8601 date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError):
            raise ValueError("out of range") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_TIMESTAMP:
        raise ValueError("out of range")
    return seconds


def time_param(request: web.Request, name: str) -> float | None:
    """A timestamp query parameter (see `parse_time`)."""
    raw = query_one(request, name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise bad_param(name, str(exc)) from None


def duration_param(request: web.Request, name: str, default: float) -> float:
    """Seconds (`3600`) or a short duration (`90s`, `15m`, `1h`, `1d`)."""
    raw = query_one(request, name)
    if raw is None:
        return default
    text = raw.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    factor = 1
    if text[-1:] in units:
        factor, text = units[text[-1]], text[:-1]
    try:
        seconds = float(text) * factor
    except ValueError:
        raise bad_param(name, "not a duration (seconds, or a number with s, m, h or d)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad_param(name, "must be a positive duration")
    return seconds


# -- bodies -------------------------------------------------------------------------------------

_JSON_TYPES = ("application/json",)


async def read_json(request: web.Request) -> Any:
    """The request's JSON body: 415 for another media type, 400 when missing or malformed,
    413 (raised by aiohttp) past `api.max_body_bytes`."""
    ctype = request.content_type
    if not request.body_exists:
        raise ApiError(400, "a JSON body is required", code="body_required")
    if ctype not in _JSON_TYPES and not ctype.endswith("+json"):
        raise ApiError(415, f"expected Content-Type: application/json, not {ctype}",
                       code="unsupported_media_type")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8", code="malformed_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc.msg}", code="malformed_json",
                       details={"line": exc.lineno, "column": exc.colno}) from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}", code="malformed_json") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as `[{"location", "message"}]` with dotted key paths."""
    return [{"location": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors()]


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate a JSON body against a strict request model; 422 with every problem otherwise."""
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object", code="invalid_body",
                       details=[{"location": "", "message": "expected an object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid request body", code="invalid_body",
                       details=validation_details(exc)) from None
