"""JSON responses: a model's JSON, strict and compact (NaN and infinities become null)."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from pydantic import BaseModel


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any) -> str:
    """Compact, strict JSON; NaN and infinities (a speed of `inf`...) become null."""
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False, separators=(",", ":"))


def model_text(model: BaseModel) -> str:
    """A model as the JSON text the API sends."""
    return dumps(model.model_dump(mode="json"))


def ok(body: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response of one of the answer models (exporter.api.schemas)."""
    return web.Response(text=model_text(body), status=status, content_type="application/json",
                        headers=headers)
