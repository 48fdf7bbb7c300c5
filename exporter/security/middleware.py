"""Who may call the control API, and how often: tokens, Grafana sessions, CSRF, rate limits, CORS.

The rules (docs/security.md explains them for operators):

- First, every request's Host and Origin headers must be allowed (`exporter.security.origins`): 421 for
  a foreign Host, 403 for a foreign Origin, token or not, before a WebSocket upgrade.
- What a route needs is its permission in `exporter.security.permissions`. A control (queue and job
  actions) needs a principal: the API token (`Authorization: Bearer <token>` or
  `X-Bulletproof-Token: <token>`, compared in constant time) or a Grafana session (the browser's
  Cookie header, forwarded by the same-origin proxy, checked against Grafana's user API, with an
  org role of at least `api.grafana.min_role`). A config change (and reading the audit trail)
  needs the token or a role of at least `api.grafana.config_role`.
- Reads are open unless `api.require_token_for_reads`; then they need the same principal (any
  Grafana org role from Viewer up will do for a read).
- The public routes (`/metrics`, `/healthz`, `/readyz`) never need authentication and are never
  rate limited.
- With no token configured, calls that need a principal are accepted as "anonymous" only when
  the API listens on loopback, the peer is loopback, the request did not come through a proxy
  (no X-Forwarded-For / Forwarded / X-Real-IP), its Host header names a loopback address (DNS
  rebinding) and, for a mutating call, it carries no foreign Origin (cross-site form posts).
  Otherwise they are refused with 403 and a message on how to configure a token.
- CSRF on the Grafana path: a mutating call authenticated by a cookie must carry
  `X-Grafana-Action: 1` or a JSON content type; a plain HTML form can send neither.
- Rate limit: a token bucket of `api.rate_limit_per_minute` per (client, route), refilled at that
  many per minute. The client is the authenticated identity ("token", "grafana:<login>") or else
  the remote address (X-Forwarded-For is believed only from trusted proxies, read from the right;
  loopback by default). Failed authentication attempts are charged to the address, and also to a
  per-address bucket of `api.auth_failures_per_minute` failures across all routes (its own
  budget, however high the rate limit is); while that one is empty, requests that carry
  credentials from that address are answered 429 before their credentials are looked at.

The token itself is never logged, never put in an error message, and never kept anywhere but in
the `Security` object. The parts live next door: `exporter.security.principal` (who called,
refusals), `exporter.security.ratelimit` (buckets and keys), `exporter.security.grafana_auth`
(session lookup and cache) and `exporter.security.addresses` (loopback, Host, X-Forwarded-For).
"""

from __future__ import annotations

import hmac
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import hdrs, web

from bulletproof.errors import ConfigError, ConfigIssue
from exporter.api.errors import json_error
from exporter.security.addresses import client_address, host_of, is_loopback, trusted_networks
from exporter.security.grafana_auth import ROLE_RANK, GrafanaSessions
from exporter.security.origins import OriginPolicy, allowed_hosts_hint
from exporter.security.permissions import (
    PUBLIC_PATHS,
    Permission,
    RouteRule,
    required_role,
    role_setting,
    rule_for,
)
from exporter.security.principal import (
    ANONYMOUS,
    CALLER_KEY,
    PRINCIPAL_KEY,
    RULE_KEY,
    TOKEN_PRINCIPAL,
    Principal,
    Refusal,
    unauthorized,
)
from exporter.security.ratelimit import (
    Clock,
    RateLimiter,
    address_key,
    failures_key,
    identity_key,
    route_key,
    too_many,
)
from exporter.settings import ApiSettings

__all__ = ["EXEMPT_PATHS", "PRINCIPAL_KEY", "Principal", "RateLimiter", "Security", "is_loopback",
           "resolve_token", "setup_cors"]

log = logging.getLogger("exporter.security")

TOKEN_ENV = "BULLETPROOF_API_TOKEN"
TOKEN_HEADER = "X-Bulletproof-Token"
GRAFANA_ACTION_HEADER = "X-Grafana-Action"
EXEMPT_PATHS = PUBLIC_PATHS
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", GRAFANA_ACTION_HEADER, TOKEN_HEADER)
CORS_EXPOSE_HEADERS = ("Retry-After", "WWW-Authenticate")
CORS_ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
_TOKEN_HINT = ("set the environment variable BULLETPROOF_API_TOKEN or api.token_file "
               "(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\"`), "
               "see docs/security.md")


# ----------------------------------------------------------------------------------------- token


def resolve_token(settings: ApiSettings, env: Mapping[str, str] = os.environ) -> str | None:
    """The API token: `BULLETPROOF_API_TOKEN` wins, else the stripped contents of `api.token_file`.

    Returns None when neither is set. Raises ConfigError (key path `api.token_file`) when the file
    is set but cannot be read, is not UTF-8, or is empty. The token is never logged.
    """
    from_env = env.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    path = settings.token_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("api.token_file", f"{path} is not UTF-8 text")]) from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError([ConfigIssue("api.token_file", f"cannot read {path}: {why}")]) from None
    token = text.strip()
    if not token:
        raise ConfigError([ConfigIssue("api.token_file", f"{path} is empty")])
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the API token file can be read by other users; chmod 600 it",
                    extra={"path": str(path)})
    return token


# ------------------------------------------------------------------------------------- security


class Security:
    """The API's authentication, authorization, CSRF and rate-limit policy, as aiohttp middleware.

    `trusted_proxies` (networks, default `api.trusted_proxies`) are the peers whose
    X-Forwarded-For is believed when deciding the client address; `public_url` is the front
    door's URL (default `api.public_url`); `clock` is for tests.
    """

    def __init__(self, settings: ApiSettings, token: str | None, *,
                 trusted_proxies: Iterable[str] | None = None,
                 public_url: str | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._settings = settings
        self._token = token.encode("utf-8") if token else None
        self._token_length = len(token) if token else 0
        self._loopback_listen = is_loopback(settings.host)
        self._cors_origins = frozenset(o.strip().rstrip("/") for o in settings.cors_origins
                                       if o.strip())
        url = settings.grafana.url
        self._grafana_url = url.rstrip("/") if url else None
        self._min_role = settings.grafana.min_role
        self._grafana = (GrafanaSessions(self._grafana_url, settings.grafana.cache_seconds, clock)
                         if self._grafana_url else None)
        self._limiter = RateLimiter(settings.rate_limit_per_minute, clock=clock)
        self._failures = RateLimiter(settings.auth_failures_per_minute, clock=clock)
        self._trusted = trusted_networks(settings.trusted_proxies if trusted_proxies is None
                                         else trusted_proxies)
        self.origins = OriginPolicy(settings, public_url)

        @web.middleware
        async def security_middleware(request: web.Request,
                                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                      ) -> web.StreamResponse:
            return await self._handle(request, handler)

        self._middleware = security_middleware

    # -- public ------------------------------------------------------------------------------

    def middlewares(self) -> list:
        """The aiohttp middlewares, in order (one: rate limit and authentication are decided
        together, since authenticated callers are limited by identity). Put exporter.api.errors'
        error_middleware before it."""
        return [self._middleware]

    def startup_warnings(self) -> list[str]:
        """What the start-up log should say about this policy (never the token)."""
        s = self._settings
        out: list[str] = []
        if self._token is None:
            if self._loopback_listen:
                out.append(
                    f"no API token configured: mutating calls are accepted only because the API "
                    f"listens on loopback ({s.listen}), and only from local clients that do not "
                    f"come through a proxy; {_TOKEN_HINT}")
            else:
                grafana = (" unless made with a Grafana session (api.grafana.url)"
                           if self._grafana_url else "")
                what = "mutating calls and reads" if s.require_token_for_reads else "mutating calls"
                out.append(
                    f"no API token configured: {what} are refused{grafana} (no token, and the API "
                    f"listens on {s.listen}, not loopback); {_TOKEN_HINT}")
        elif self._token_length < 16:
            out.append("the API token is shorter than 16 characters; use a long random one")
        if "*" in self._cors_origins:
            out.append("api.cors_origins contains '*': any web site may call the API from a "
                       "browser (it still needs the token)")
        if self._grafana_url and self._min_role == "Viewer":
            out.append("api.grafana.min_role is Viewer: every Grafana viewer can control the queue")
        if not self._loopback_listen and not self.origins.declared:
            out.append(f"the API listens on {s.listen} but answers only for loopback host names "
                       f"and the name it advertises ({', '.join(self.origins.describe())}; others "
                       f"get 421): list the names it is called by (Prometheus targets, the front "
                       f"door) in api.allowed_hosts or api.public_url")
        return out

    async def close(self) -> None:
        """Close the HTTP client used to ask Grafana."""
        if self._grafana is not None:
            await self._grafana.close()

    def client_address(self, request: web.Request) -> str:
        """The client's address: the peer, or from a trusted proxy the last untrusted hop of
        X-Forwarded-For."""
        return client_address(request, self._trusted)

    # -- the middleware ----------------------------------------------------------------------

    async def _handle(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        route = route_key(request)
        rule = rule_for(request.method, route)
        request[RULE_KEY] = rule
        foreign = self._foreign_host_or_origin(request)
        if foreign is not None:
            log.info("request refused: foreign host or origin",
                     extra={"status": foreign.status, "path": request.path,
                            "host": request.headers.get(hdrs.HOST, "")[:200],
                            "origin": request.headers.get(hdrs.ORIGIN, "")[:200]})
            return foreign
        if rule.permission is Permission.PUBLIC:
            request[PRINCIPAL_KEY] = ANONYMOUS
            return await handler(request)

        address = self.client_address(request)
        by_address = address_key(address, route)
        failures = failures_key(address)

        # Reserve one failure from this address before looking at credentials; an address that
        # has spent its failures gets no more guesses until the bucket refills.
        reserved = False
        if self._carries_credentials(request, rule):
            wait = self._failures.take(failures)
            if wait:
                return too_many(wait, self._failures.per_minute,
                                f"too many failed authentication attempts from {address}: "
                                f"{self._failures.per_minute} a minute at most "
                                f"(api.auth_failures_per_minute)")
            reserved = True

        try:
            principal = await self._authenticate(request, rule)
        except Refusal as refusal:
            if refusal.principal is not None:
                request[CALLER_KEY] = refusal.principal
            if reserved and not refusal.bad_credentials:
                self._failures.refund(failures)
            if refusal.principal is not None and refusal.principal.rate_key:
                charge = identity_key(refusal.principal.rate_key, route)
            else:
                charge = by_address
            wait = self._limiter.take(charge)
            if wait:
                return self._too_many(wait)
            log.debug("request refused", extra={"status": refusal.status, "method": request.method,
                                                "path": request.path, "client": address})
            return refusal.response()
        if reserved:
            self._failures.refund(failures)
        request[CALLER_KEY] = principal  # known even if the rate limit refuses the call next

        key = principal.rate_key
        wait = self._limiter.take(identity_key(key, route) if key else by_address)
        if wait:
            return self._too_many(wait)

        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return json_error(413, f"request body too large: the limit is {limit} bytes "
                                   f"(api.max_body_bytes)", details={"max_body_bytes": limit})

        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    def _foreign_host_or_origin(self, request: web.Request) -> web.Response | None:
        """The refusal of a request whose Host or Origin is not allowed, else None."""
        host = request.headers.get(hdrs.HOST)
        if host is not None and not self.origins.host_allowed(host):
            return json_error(421, f"this server does not answer for the host "
                                   f"{host_of(host)[:100]!r}; {allowed_hosts_hint(self.origins)}",
                              code="host_not_allowed")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not self.origins.origin_allowed(origin):
            return json_error(403, f"requests from the web origin {origin.strip()[:100]!r} are "
                                   f"not allowed: it is not in api.cors_origins and not on a host "
                                   f"this API answers for; {allowed_hosts_hint(self.origins)}",
                              code="origin_not_allowed")
        return None

    def _too_many(self, wait: float, message: str | None = None) -> web.Response:
        return too_many(wait, self._limiter.per_minute, message)

    # -- authentication ----------------------------------------------------------------------

    def _carries_credentials(self, request: web.Request, rule: RouteRule) -> bool:
        headers = request.headers
        if hdrs.AUTHORIZATION in headers or TOKEN_HEADER in headers:
            return True
        return bool(self._grafana_url and headers.get(hdrs.COOKIE)
                    and self._needs_principal(rule))

    def _needs_principal(self, rule: RouteRule) -> bool:
        return rule.permission is not Permission.READ or self._settings.require_token_for_reads

    @staticmethod
    def _is_preflight(request: web.Request) -> bool:
        return (request.method == "OPTIONS" and hdrs.ORIGIN in request.headers
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)

    @staticmethod
    def _presented_token(request: web.Request) -> str | None:
        """The token the request presents, None if none; a malformed Authorization is a 401."""
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        if authorization is not None:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() != "bearer" or not value or any(c.isspace() for c in value):
                raise unauthorized("malformed Authorization header: expected 'Bearer <token>'",
                                   bad=True, error="invalid_request")
            return value
        value = request.headers.get(TOKEN_HEADER)
        if value is not None:
            value = value.strip()
            if not value:
                raise unauthorized(f"empty {TOKEN_HEADER} header", bad=True,
                                   error="invalid_request")
            return value
        return None

    async def _authenticate(self, request: web.Request, rule: RouteRule) -> Principal:
        if self._is_preflight(request):
            return ANONYMOUS  # browsers never send credentials on a CORS preflight
        mutating = request.method not in SAFE_METHODS
        needed = self._needs_principal(rule)

        presented = self._presented_token(request)
        if presented is not None and self._token is not None:
            given = presented.encode("utf-8", "surrogateescape")
            if hmac.compare_digest(given, self._token):
                return TOKEN_PRINCIPAL
            raise unauthorized("invalid API token", bad=True, error="invalid_token")
        if not needed:
            return ANONYMOUS

        cookie = request.headers.get(hdrs.COOKIE)
        if presented is None and cookie and self._grafana is not None:
            if mutating and not _csrf_safe(request):
                raise Refusal(
                    403, f"a browser request authenticated by a cookie must carry the header "
                         f"'{GRAFANA_ACTION_HEADER}: 1' or a JSON content type (CSRF protection)",
                    code="csrf")
            principal = await self._grafana.principal(cookie)
            required = required_role(rule.permission, self._settings.grafana) or "Viewer"
            if ROLE_RANK.get(principal.role or "None", 0) < ROLE_RANK[required]:
                raise Refusal(
                    403, f"Grafana user {principal.name!r} has the org role "
                         f"{principal.role or 'None'}; {_WHAT[rule.permission]} needs {required} "
                         f"or higher ({role_setting(rule.permission)})",
                    principal=principal,
                    details={"role": principal.role, "required_role": required,
                             "permission": rule.permission.value})
            return principal
        return self._anonymous_or_refuse(request, mutating)

    def _anonymous_or_refuse(self, request: web.Request, mutating: bool) -> Principal:
        why_not = None
        if self._token is None:
            if not self._loopback_listen:
                why_not = (f"no API token is configured and the API listens on "
                           f"{self._settings.listen}, not on loopback only")
            elif not is_loopback(request.remote or ""):
                why_not = "no API token is configured and the caller is not on loopback"
            elif any(h in request.headers for h in _PROXY_HEADERS):
                why_not = ("no API token is configured and the request came through a proxy; "
                           "the loopback exemption is for local clients only")
            elif not is_loopback(host_of(request.host or "")):
                why_not = ("no API token is configured and the Host header does not name a "
                           "loopback address")
            elif mutating and not self._origin_ok(request):
                why_not = ("cross-origin browser request refused: no API token is configured, "
                           "so only local non-browser clients may change things")
            else:
                return ANONYMOUS
        if self._token is None and self._grafana_url is None:
            raise Refusal(403, f"{why_not}; {_TOKEN_HINT}", code="token_not_configured")
        alternatives = "'Authorization: Bearer <token>' or 'X-Bulletproof-Token: <token>'"
        if self._grafana_url:
            alternatives += " (or a Grafana session through the proxy)"
        if self._token is None:
            alternatives = "a Grafana session through the proxy (no API token is configured)"
        raise unauthorized(f"authentication required: send {alternatives}", bad=False)

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True
        origin = origin.strip().rstrip("/")
        if origin in self._cors_origins or "*" in self._cors_origins:
            return True
        _, sep, netloc = origin.partition("://")
        return bool(sep) and netloc.lower() == (request.host or "").lower()


_WHAT = {
    Permission.READ: "reading",
    Permission.CONTROL: "this control",
    Permission.CONFIG: "changing the config",
    Permission.AUDIT: "reading the audit trail",
}


def _csrf_safe(request: web.Request) -> bool:
    """A request a plain HTML form cannot make: `X-Grafana-Action: 1` or a JSON content type."""
    if request.headers.get(GRAFANA_ACTION_HEADER, "").strip() == "1":
        return True
    mime = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


# ----------------------------------------------------------------------------------------- CORS


def setup_cors(app: web.Application, origins: list[str]) -> None:
    """Enable CORS (aiohttp-cors) for the given origins on every route of `app`; nothing when
    `origins` is empty (the default). Call it after every route has been added."""
    allowed = sorted({o.strip().rstrip("/") for o in origins if o and o.strip()})
    if not allowed:
        return
    import aiohttp_cors

    options = aiohttp_cors.ResourceOptions(
        allow_credentials=False,  # the token travels in a header; cookies stay same-origin
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_headers=CORS_ALLOW_HEADERS,
        allow_methods=CORS_ALLOW_METHODS,
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in allowed})
    for route in list(app.router.routes()):
        if route.method == hdrs.METH_OPTIONS:
            continue
        try:
            cors.add(route)
        except ValueError as exc:
            log.warning("CORS not enabled on a route", extra={"route": str(route), "error": str(exc)})
