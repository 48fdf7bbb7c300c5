"""The route table of the API app: every route module registers its routes here.

Conventions (docs/api.md): JSON everywhere; timestamps are unix seconds (floats); job ids are
positive integers; errors are `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from aiohttp import web

from exporter.api import audit, config, jobs, nodes, service, ws


def add_routes(app: web.Application) -> None:
    """Register every route of the API on `app`."""
    service.add_routes(app)
    jobs.add_routes(app)
    config.add_routes(app)
    nodes.add_routes(app)
    app.router.add_get("/api/v1/audit", audit.list_audit)
    app.router.add_get("/ws/updates", ws.websocket_handler)
