"""The application keys of the API app (the plugin context, the metrics) and the accessor handlers use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext
    from exporter.metrics.registry import BulletproofMetrics

CONTEXT: web.AppKey[PluginContext] = web.AppKey("bulletproof.context")
METRICS: web.AppKey[BulletproofMetrics] = web.AppKey("bulletproof.metrics")


def context_of(request: web.Request) -> PluginContext:
    """What this app serves: the monitor's events, read-only view and controls."""
    return request.app[CONTEXT]
