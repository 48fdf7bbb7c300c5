"""Who may call the control API, and how often: tokens, Grafana sessions, CSRF, rate limits, CORS.

The rules (docs/security.md explains them for operators):

- A mutating call (any method but GET, HEAD, OPTIONS) needs a principal: the API token
  (`Authorization: Bearer <token>` or `X-Bulletproof-Token: <token>`, compared in constant time) or
  a Grafana session (the browser's Cookie header, forwarded by the same-origin proxy, checked
  against Grafana's user API, with an org role of at least `api.grafana.min_role`).
- Reads are open unless `api.require_token_for_reads`; then they need the same principal (any
  Grafana org role from Viewer up will do for a read).
- `/metrics`, `/healthz` and `/readyz` never need authentication and are never rate limited.
- With no token configured, calls that need a principal are accepted as "anonymous" only when
  the API listens on loopback, the peer is loopback, the request did not come through a proxy
  (no X-Forwarded-For / Forwarded / X-Real-IP), its Host header names a loopback address (DNS
  rebinding) and, for a mutating call, it carries no foreign Origin (cross-site form posts).
  Otherwise they are refused with 403 and a message on how to configure a token.
- CSRF on the Grafana path: a mutating call authenticated by a cookie must carry
  `X-Grafana-Action: 1` or a JSON content type; a plain HTML form can send neither.
- Rate limit: a token bucket of `api.rate_limit_per_minute` per (client, route), refilled at that
  many per minute. The client is the authenticated identity ("token", "grafana:<login>") or else
  the remote address (X-Forwarded-For is believed only from trusted proxies, loopback by
  default). Failed authentication attempts are charged to the address, and also to a per-address
  bucket of failures across all routes; while that one is empty, requests that carry credentials
  from that address are answered 429 before their credentials are looked at.

The token itself is never logged, never put in an error message, and never kept anywhere but in
the `Security` object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs, web

from bulletproof.config import ApiSettings
from bulletproof.errors import ConfigError, ConfigIssue
from exporter.errors import json_error

log = logging.getLogger(__name__)

TOKEN_ENV = "BULLETPROOF_API_TOKEN"
TOKEN_HEADER = "X-Bulletproof-Token"
GRAFANA_ACTION_HEADER = "X-Grafana-Action"
EXEMPT_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLE_RANK = {"None": 0, "Viewer": 1, "Editor": 2, "Admin": 3}
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", GRAFANA_ACTION_HEADER, TOKEN_HEADER)
CORS_EXPOSE_HEADERS = ("Retry-After", "WWW-Authenticate")
CORS_ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
GRAFANA_TIMEOUT_SECONDS = 5.0
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
_FAILURES_ROUTE = "*"
_MAX_BUCKETS = 50_000
_MAX_SESSIONS = 10_000

Clock = Callable[[], float]


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


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 (also IPv4-mapped), and the name "localhost"."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _host_of(host_header: str) -> str:
    """The host part of a Host header ("[::1]:8080" -> "::1", "localhost:80" -> "localhost")."""
    value = host_header.strip()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# ------------------------------------------------------------------------------------ principals


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
else:  # pragma: no cover - older aiohttp
    PRINCIPAL_KEY = "bulletproof.principal"


# ----------------------------------------------------------------------------------- rate limits


class RateLimiter:
    """Token buckets keyed by (client, route): a burst of `per_minute`, refilled at `per_minute`
    per minute. Buckets untouched for a minute are full again and are dropped; the number of
    buckets is capped (least recently used first out), so memory stays bounded."""

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic,
                 max_buckets: int = _MAX_BUCKETS) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: Hashable, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.capacity
        return min(self.capacity, bucket[0] + max(0.0, now - bucket[1]) * self.rate)

    def _store(self, key: Hashable, level: float, now: float) -> None:
        self._buckets[key] = [level, now]
        self._buckets.move_to_end(key)

    def _expire(self, now: float) -> None:
        idle = self.capacity / self.rate  # seconds for an empty bucket to fill up
        while self._buckets:
            key, (_, stamp) = next(iter(self._buckets.items()))
            if now - stamp < idle and len(self._buckets) < self._max:  # room for one more
                break
            self._buckets.popitem(last=False)

    def take(self, key: Hashable) -> float:
        """Spend one request; 0.0 when allowed, else the seconds until one is available."""
        now = self._clock()
        self._expire(now)
        level = self._level(key, now)
        if level >= 1.0:
            self._store(key, level - 1.0, now)
            return 0.0
        self._store(key, level, now)
        return (1.0 - level) / self.rate

    def refund(self, key: Hashable) -> None:
        """Give back one request taken by `take` (a reservation that turned out not to count)."""
        if key in self._buckets:
            now = self._clock()
            self._store(key, min(self.capacity, self._level(key, now) + 1.0), now)


def _retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))


# ------------------------------------------------------------------------------------- failures


class _Refusal(Exception):
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
        return json_error(self.status, self.message, code=self.code, details=self.details,
                          headers=self.headers)


_TOKEN_HINT = ("set the environment variable BULLETPROOF_API_TOKEN or api.token_file "
               "(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\"`), "
               "see docs/security.md")


def _unauthorized(message: str, *, bad: bool, error: str | None = None) -> _Refusal:
    challenge = 'Bearer realm="bulletproof"'
    if error:
        challenge += f', error="{error}"'
    return _Refusal(401, message, bad_credentials=bad, headers={"WWW-Authenticate": challenge})


@dataclass(slots=True)
class _Cached:
    expires: float
    principal: Principal | None
    refusal: _Refusal | None


# ------------------------------------------------------------------------------------- security


class Security:
    """The API's authentication, authorization, CSRF and rate-limit policy, as aiohttp middleware.

    `trusted_proxies` (networks, default loopback) are the peers whose X-Forwarded-For is believed
    when deciding the client address; `clock` is for tests.
    """

    def __init__(self, settings: ApiSettings, token: str | None, *,
                 trusted_proxies: Iterable[str] | None = None,
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
        self._cache_seconds = settings.grafana.cache_seconds
        self._clock = clock
        self._limiter = RateLimiter(settings.rate_limit_per_minute, clock=clock)
        self._sessions: OrderedDict[str, _Cached] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Principal]] = {}
        self._client: aiohttp.ClientSession | None = None
        self._trusted = [ipaddress.ip_network(n, strict=False)
                         for n in (DEFAULT_TRUSTED_PROXIES if trusted_proxies is None
                                   else trusted_proxies)]

        @web.middleware
        async def security_middleware(request: web.Request,
                                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                      ) -> web.StreamResponse:
            return await self._handle(request, handler)

        self._middleware = security_middleware

    # -- public ------------------------------------------------------------------------------

    def middlewares(self) -> list:
        """The aiohttp middlewares, in order (one: rate limit and authentication are decided
        together, since authenticated callers are limited by identity). Put exporter.errors'
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
        return out

    async def close(self) -> None:
        """Close the HTTP client used to ask Grafana."""
        for future in list(self._inflight.values()):
            future.cancel()
        self._inflight.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def client_address(self, request: web.Request) -> str:
        """The client's address: the peer, or from a trusted proxy the last untrusted hop of
        X-Forwarded-For."""
        peer = request.remote or "unknown"
        addr = _ip(peer)
        if addr is None or not self._is_trusted(addr):
            return peer
        hops = [h for value in request.headers.getall("X-Forwarded-For", [])
                for h in value.split(",") if h.strip()]
        client = str(addr)
        for hop in reversed(hops):
            hop_addr = _ip(hop)
            if hop_addr is None:
                break
            client = str(hop_addr)
            if not self._is_trusted(hop_addr):
                break
        return client

    # -- the middleware ----------------------------------------------------------------------

    async def _handle(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            request[PRINCIPAL_KEY] = ANONYMOUS
            return await handler(request)

        address = self.client_address(request)
        route = _route_key(request)
        address_key = ("addr", address, route)
        failures_key = ("failed", address, _FAILURES_ROUTE)

        # Reserve one failure from this address before looking at credentials; an address that
        # has spent its failures gets no more guesses until the bucket refills.
        reserved = False
        if self._carries_credentials(request):
            wait = self._limiter.take(failures_key)
            if wait:
                return self._too_many(wait, "too many failed authentication attempts from "
                                      f"{address}")
            reserved = True

        try:
            principal = await self._authenticate(request)
        except _Refusal as refusal:
            if reserved and not refusal.bad_credentials:
                self._limiter.refund(failures_key)
            if refusal.principal is not None and refusal.principal.rate_key:
                charge: tuple = ("id", refusal.principal.rate_key, route)
            else:
                charge = address_key
            wait = self._limiter.take(charge)
            if wait:
                return self._too_many(wait)
            log.debug("request refused", extra={"status": refusal.status, "method": request.method,
                                                "path": request.path, "client": address})
            return refusal.response()
        if reserved:
            self._limiter.refund(failures_key)

        key = principal.rate_key
        wait = self._limiter.take(("id", key, route) if key else address_key)
        if wait:
            return self._too_many(wait)

        limit = self._settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return json_error(413, f"request body too large: the limit is {limit} bytes "
                                   f"(api.max_body_bytes)", details={"max_body_bytes": limit})

        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    def _too_many(self, wait: float, message: str | None = None) -> web.Response:
        seconds = _retry_after(wait)
        per = self._limiter.per_minute
        return json_error(
            429, message or f"rate limit exceeded: {per} requests per minute per client and route",
            details={"retry_after_seconds": seconds, "limit_per_minute": per},
            headers={"Retry-After": str(seconds)})

    # -- authentication ----------------------------------------------------------------------

    def _carries_credentials(self, request: web.Request) -> bool:
        headers = request.headers
        if hdrs.AUTHORIZATION in headers or TOKEN_HEADER in headers:
            return True
        return bool(self._grafana_url and headers.get(hdrs.COOKIE)
                    and self._needs_principal(request))

    def _needs_principal(self, request: web.Request) -> bool:
        return request.method not in SAFE_METHODS or self._settings.require_token_for_reads

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
                raise _unauthorized("malformed Authorization header: expected 'Bearer <token>'",
                                    bad=True, error="invalid_request")
            return value
        value = request.headers.get(TOKEN_HEADER)
        if value is not None:
            value = value.strip()
            if not value:
                raise _unauthorized(f"empty {TOKEN_HEADER} header", bad=True,
                                    error="invalid_request")
            return value
        return None

    async def _authenticate(self, request: web.Request) -> Principal:
        if self._is_preflight(request):
            return ANONYMOUS  # browsers never send credentials on a CORS preflight
        mutating = request.method not in SAFE_METHODS
        needed = mutating or self._settings.require_token_for_reads

        presented = self._presented_token(request)
        if presented is not None and self._token is not None:
            given = presented.encode("utf-8", "surrogateescape")
            if hmac.compare_digest(given, self._token):
                return TOKEN_PRINCIPAL
            raise _unauthorized("invalid API token", bad=True, error="invalid_token")
        if not needed:
            return ANONYMOUS

        cookie = request.headers.get(hdrs.COOKIE)
        if presented is None and cookie and self._grafana_url:
            if mutating and not _csrf_safe(request):
                raise _Refusal(
                    403, f"a browser request authenticated by a cookie must carry the header "
                         f"'{GRAFANA_ACTION_HEADER}: 1' or a JSON content type (CSRF protection)",
                    code="csrf")
            principal = await self._grafana_principal(cookie)
            required = self._min_role if mutating else "Viewer"
            if ROLE_RANK.get(principal.role or "None", 0) < ROLE_RANK[required]:
                raise _Refusal(
                    403, f"Grafana user {principal.name!r} has the org role "
                         f"{principal.role or 'None'}; this call needs {required} or higher "
                         f"(api.grafana.min_role)",
                    principal=principal,
                    details={"role": principal.role, "required_role": required})
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
            elif not is_loopback(_host_of(request.host or "")):
                why_not = ("no API token is configured and the Host header does not name a "
                           "loopback address")
            elif mutating and not self._origin_ok(request):
                why_not = ("cross-origin browser request refused: no API token is configured, "
                           "so only local non-browser clients may change things")
            else:
                return ANONYMOUS
        if self._token is None and self._grafana_url is None:
            raise _Refusal(403, f"{why_not}; {_TOKEN_HINT}", code="token_not_configured")
        alternatives = "'Authorization: Bearer <token>' or 'X-Bulletproof-Token: <token>'"
        if self._grafana_url:
            alternatives += " (or a Grafana session through the proxy)"
        if self._token is None:
            alternatives = "a Grafana session through the proxy (no API token is configured)"
        raise _unauthorized(f"authentication required: send {alternatives}", bad=False)

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True
        origin = origin.strip().rstrip("/")
        if origin in self._cors_origins or "*" in self._cors_origins:
            return True
        _, sep, netloc = origin.partition("://")
        return bool(sep) and netloc.lower() == (request.host or "").lower()

    def _is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr.version == net.version and addr in net for net in self._trusted)

    # -- Grafana -----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            # A dummy cookie jar: one user's Set-Cookie must never ride along with another's call.
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=GRAFANA_TIMEOUT_SECONDS),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._client

    async def _grafana_principal(self, cookie: str) -> Principal:
        """The Grafana user behind a Cookie header, cached per sha256 of the header."""
        key = hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()
        now = self._clock()
        cached = self._sessions.get(key)
        if cached is not None:
            if cached.expires > now:
                if cached.refusal is not None:
                    raise cached.refusal
                assert cached.principal is not None
                return cached.principal
            del self._sessions[key]
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ask_grafana(cookie, key))
            self._inflight[key] = future

            def done(f: asyncio.Future[Principal], key: str = key) -> None:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # retrieved: no "never retrieved" warning if nobody waits

            future.add_done_callback(done)
        return await asyncio.shield(future)

    def _remember(self, key: str, principal: Principal | None, refusal: _Refusal | None) -> None:
        if self._cache_seconds <= 0:
            return
        now = self._clock()
        self._sessions[key] = _Cached(now + self._cache_seconds, principal, refusal)
        self._sessions.move_to_end(key)
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if oldest.expires > now and len(self._sessions) <= _MAX_SESSIONS:
                break
            self._sessions.popitem(last=False)

    async def _ask_grafana(self, cookie: str, key: str) -> Principal:
        assert self._grafana_url is not None
        headers = {hdrs.COOKIE: cookie, hdrs.ACCEPT: "application/json"}
        try:
            user = await self._grafana_get("/api/user", headers, key)
            orgs = await self._grafana_get("/api/user/orgs", headers, key)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("cannot reach Grafana to check a session",
                        extra={"grafana_url": self._grafana_url, "error": type(exc).__name__})
            raise _Refusal(503, f"cannot check the Grafana session: Grafana at "
                                f"{self._grafana_url} is unreachable ({type(exc).__name__})",
                           code="grafana_unavailable") from None
        if (not isinstance(user, dict) or not isinstance(user.get("login"), str)
                or not user["login"] or not isinstance(orgs, list)):
            raise _Refusal(503, "unexpected answer from Grafana's user API",
                           code="grafana_unavailable")
        org_id = user.get("orgId")
        role = "None"
        for org in orgs:
            if isinstance(org, dict) and org.get("orgId") == org_id and isinstance(
                    org.get("role"), str):
                role = org["role"] if org["role"] in ROLE_RANK else "None"
                break
        if user.get("isGrafanaAdmin") is True:
            role = "Admin"
        principal = Principal("grafana", user["login"], role)
        self._remember(key, principal, None)
        return principal

    async def _grafana_get(self, path: str, headers: dict[str, str], key: str) -> Any:
        url = f"{self._grafana_url}{path}"
        async with self._http().get(url, headers=headers, allow_redirects=False) as response:
            if response.status in (401, 403) or 300 <= response.status < 400:
                refusal = _unauthorized("the Grafana session is not valid (Grafana answered "
                                        f"{response.status}); log in to Grafana again",
                                        bad=True, error="invalid_token")
                self._remember(key, None, refusal)
                raise refusal
            if response.status != 200:
                raise _Refusal(503, f"cannot check the Grafana session: Grafana answered "
                                    f"{response.status} to {path}", code="grafana_unavailable")
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise _Refusal(503, f"cannot check the Grafana session: {path} did not answer "
                                    f"JSON", code="grafana_unavailable") from None


def _csrf_safe(request: web.Request) -> bool:
    """A request a plain HTML form cannot make: `X-Grafana-Action: 1` or a JSON content type."""
    if request.headers.get(GRAFANA_ACTION_HEADER, "").strip() == "1":
        return True
    mime = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _route_key(request: web.Request) -> str:
    """The matched route's canonical path, or the raw path when nothing matched."""
    resource = getattr(request.match_info.route, "resource", None)
    canonical = getattr(resource, "canonical", None) if resource is not None else None
    return canonical if isinstance(canonical, str) else request.path


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
