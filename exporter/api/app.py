"""The aiohttp application: routes, middlewares, app state and background tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from exporter.api.errors import error_for, error_middleware
from exporter.api.keys import CONTEXT, METRICS
from exporter.api.routes import add_routes
from exporter.api.ws import HUB, EventHub
from exporter.metrics.registry import BulletproofMetrics
from exporter.security.audit import audit_middleware
from exporter.security.middleware import Security, setup_cors
from exporter.settings import api_settings

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext

log = logging.getLogger(__name__)

SECURITY: web.AppKey[Security] = web.AppKey("bulletproof.security", Security)
OWNS_METRICS: web.AppKey[bool] = web.AppKey("bulletproof.owns_metrics", bool)
UNMATCHED = "other"  # the handler label of requests that match no route (bounded label values)


def handler_label(request: web.Request) -> str:
    """The route's canonical path template (`/api/v1/jobs/{id}`), never the raw path."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def request_metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count and time every request by route template, method and status."""
    start = time.perf_counter()
    status: int | None = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:  # the client went away: no status to count
        status = None
        raise
    except Exception as exc:
        mapped = error_for(exc)
        status = mapped.status if mapped is not None else 500
        raise
    finally:
        label = handler_label(request)
        if status is not None and label != "/ws/updates":  # a WebSocket lasts its session
            request.app[METRICS].observe_request(label, request.method, status,
                                                 time.perf_counter() - start)


def create_app(context: PluginContext, *, token: str | None = None,
               metrics: BulletproofMetrics | None = None,
               public_url: str | None = None) -> web.Application:
    """Build the app for a started (or starting) monitor, from its plugin context.

    `token` is the API token (None: see docs/security.md for what is then allowed). `metrics`
    defaults to a new BulletproofMetrics on its own registry, closed with the app. `public_url`
    is the front door's URL (default `api.public_url`; the plugin passes BULLETPROOF_PUBLIC_URL).
    """
    settings = api_settings(context.view.config)
    owns_metrics = metrics is None
    if metrics is None:
        metrics = BulletproofMetrics(context.view, context.bus)
    security = Security(settings, token, public_url=public_url)
    app = web.Application(
        # The audit sees every answer, refusals and errors included, so it comes first.
        middlewares=[audit_middleware(security), error_middleware, request_metrics_middleware,
                     *security.middlewares()],
        client_max_size=settings.max_body_bytes,
    )
    app[CONTEXT] = context
    app[METRICS] = metrics
    app[OWNS_METRICS] = owns_metrics
    app[SECURITY] = security
    hub = EventHub(context)
    app[HUB] = hub
    app.cleanup_ctx.append(hub.context)
    app.on_shutdown.append(hub.close_all)
    app.on_cleanup.append(_release)
    add_routes(app)
    setup_cors(app, list(settings.cors_origins))
    return app


async def _release(app: web.Application) -> None:
    await app[SECURITY].close()
    if app[OWNS_METRICS]:
        app[METRICS].close()
