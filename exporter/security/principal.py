"""Who made a request, and the refusals that end one before it reaches a handler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from exporter.api.errors import json_error
from exporter.security.permissions import RouteRule


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, once the security middleware has looked at it."""

    kind: str  # "token", "grafana", "anonymous"
    name: str  # "token", the Grafana login, or "anonymous"
    role: str | None = None  # Grafana org role (Viewer/Editor/Admin) for kind "grafana"

    @property
    def rate_key(self) -> str | None:
        """The rate-limit client key of an authenticated principal (None for anonymous)."""
        if self.kind == "token":
            return "token"
        if self.kind == "grafana":
            return f"grafana:{self.name}"
        return None


ANONYMOUS = Principal("anonymous", "anonymous", None)
TOKEN_PRINCIPAL = Principal("token", "token", None)

if hasattr(web, "RequestKey"):  # aiohttp >= 3.13 warns about plain string keys on requests
    PRINCIPAL_KEY: Any = web.RequestKey("bulletproof.principal", Principal)
    # Who the caller turned out to be, also when refused (a role too low): for the audit trail.
    CALLER_KEY: Any = web.RequestKey("bulletproof.caller", Principal)
    RULE_KEY: Any = web.RequestKey("bulletproof.route_rule", RouteRule)
else:  # pragma: no cover - older aiohttp
    PRINCIPAL_KEY = "bulletproof.principal"
    CALLER_KEY = "bulletproof.caller"
    RULE_KEY = "bulletproof.route_rule"


class Refusal(Exception):
    """An authentication outcome that ends the request with an error response."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 bad_credentials: bool = False, principal: Principal | None = None,
                 headers: dict[str, str] | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.bad_credentials = bad_credentials
        self.principal = principal
        self.headers = headers or {}
        self.details = details

    def response(self) -> web.Response:
        """The JSON error response for this refusal."""
        return json_error(self.status, self.message, code=self.code, details=self.details,
                          headers=self.headers)


def unauthorized(message: str, *, bad: bool, error: str | None = None) -> Refusal:
    """A 401 with a Bearer challenge; `bad` when credentials were presented and were wrong."""
    challenge = 'Bearer realm="bulletproof"'
    if error:
        challenge += f', error="{error}"'
    return Refusal(401, message, bad_credentials=bad, headers={"WWW-Authenticate": challenge})
