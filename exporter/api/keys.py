"""The application keys of the API app (the monitor, the metrics) and the accessor handlers use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bulletproof.service import Monitor
    from exporter.metrics.registry import BulletproofMetrics

MONITOR: web.AppKey[Monitor] = web.AppKey("bulletproof.monitor")
METRICS: web.AppKey[BulletproofMetrics] = web.AppKey("bulletproof.metrics")


def monitor_of(request: web.Request) -> Monitor:
    """The monitor this app serves."""
    return request.app[MONITOR]
