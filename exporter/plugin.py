"""ExporterPlugin: serves /metrics, the control API and the event stream from the monitor's process.

Found through the `bulletproof.plugins` entry point (`exporter = "exporter.plugin:ExporterPlugin"`)
and started by `bulletproof run` / `bulletproof demo` after the monitor, on `api.listen`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from exporter.api.app import SECURITY, create_app
from exporter.security.middleware import resolve_token
from exporter.security.origins import resolve_public_url
from exporter.settings import SECTION, api_settings

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0  # seconds open requests get to finish when the monitor stops
# Room for a 4096-character path in a query string, percent-encoded UTF-8 (aiohttp's default is
# 8190 bytes; longer request lines get aiohttp's own plain-text 400).
MAX_REQUEST_LINE = 65536


class ExporterPlugin:
    """The observability plugin: one aiohttp server on `api.listen`."""

    name = "exporter"
    #: The config section this plugin owns (its model is registered in the
    #: `bulletproof.config_sections` entry-point group: `exporter.settings:ApiSettings`).
    config_section = SECTION

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        self.app: web.Application | None = None
        self.host: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str | None:
        """The base URL the API answers on, once started."""
        if self.port is None or self.host is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Resolve the token, build the app, bind, and log the security warnings and the URL."""
        settings = api_settings(self.context.view.config)
        token = resolve_token(settings)
        self.app = create_app(self.context, token=token, public_url=resolve_public_url(settings))
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                               handle_signals=False, max_line_size=MAX_REQUEST_LINE)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = settings.host
        self.port = _bound_port(runner, settings.port)
        advertised = settings.advertised(self.port)  # (a wildcard asks the resolver once)
        self.context.controls.advertise_api(advertised)
        for warning in self.app[SECURITY].startup_warnings():
            log.warning(warning)
        log.info("api listening", extra={
            "url": self.url, "token": token is not None,
            "advertised": advertised,
            "allowed_hosts": ",".join(["loopback", *self.app[SECURITY].origins.describe()])})

    async def stop(self) -> None:
        """Close client connections and the listening socket."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("api stopped")


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
