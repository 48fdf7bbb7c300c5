"""Grafana sessions as API principals: the user API lookup, shared while in flight and cached.

A Cookie header forwarded by the same-origin Grafana proxy is checked against Grafana's
`/api/user` and `/api/user/orgs`; the answer (a principal, or the refusal) is cached per sha256
of the header for `api.grafana.cache_seconds`, so the cookie itself is never kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs

from exporter.security.principal import Principal, Refusal, unauthorized

# The name these warnings had before the lookup left exporter.security.middleware; log filters may use it.
log = logging.getLogger("exporter.security")

ROLE_RANK = {"None": 0, "Viewer": 1, "Editor": 2, "Admin": 3}
GRAFANA_TIMEOUT_SECONDS = 5.0
_MAX_SESSIONS = 10_000


@dataclass(slots=True)
class _Cached:
    expires: float
    principal: Principal | None
    refusal: Refusal | None


class GrafanaSessions:
    """The Grafana user behind a Cookie header, asked of Grafana at `url` and cached."""

    def __init__(self, url: str, cache_seconds: float, clock: Callable[[], float]) -> None:
        self.url = url
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._sessions: OrderedDict[str, _Cached] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Principal]] = {}
        self._client: aiohttp.ClientSession | None = None

    async def principal(self, cookie: str) -> Principal:
        """The Grafana user behind a Cookie header, cached per sha256 of the header.

        Raises Refusal when the session is not valid or Grafana cannot be asked.
        """
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
            future = asyncio.ensure_future(self._ask(cookie, key))
            self._inflight[key] = future

            def done(f: asyncio.Future[Principal], key: str = key) -> None:
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # retrieved: no "never retrieved" warning if nobody waits

            future.add_done_callback(done)
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Cancel the lookups in flight and close the HTTP client used to ask Grafana."""
        for future in list(self._inflight.values()):
            future.cancel()
        self._inflight.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            # A dummy cookie jar: one user's Set-Cookie must never ride along with another's call.
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=GRAFANA_TIMEOUT_SECONDS),
                cookie_jar=aiohttp.DummyCookieJar())
        return self._client

    def _remember(self, key: str, principal: Principal | None, refusal: Refusal | None) -> None:
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

    async def _ask(self, cookie: str, key: str) -> Principal:
        headers = {hdrs.COOKIE: cookie, hdrs.ACCEPT: "application/json"}
        try:
            user = await self._get("/api/user", headers, key)
            orgs = await self._get("/api/user/orgs", headers, key)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("cannot reach Grafana to check a session",
                        extra={"grafana_url": self.url, "error": type(exc).__name__})
            raise Refusal(503, f"cannot check the Grafana session: Grafana at "
                               f"{self.url} is unreachable ({type(exc).__name__})",
                          code="grafana_unavailable") from None
        if (not isinstance(user, dict) or not isinstance(user.get("login"), str)
                or not user["login"] or not isinstance(orgs, list)):
            raise Refusal(503, "unexpected answer from Grafana's user API",
                          code="grafana_unavailable")
        principal = Principal("grafana", user["login"], _role(user, orgs))
        self._remember(key, principal, None)
        return principal

    async def _get(self, path: str, headers: dict[str, str], key: str) -> Any:
        url = f"{self.url}{path}"
        async with self._http().get(url, headers=headers, allow_redirects=False) as response:
            if response.status in (401, 403) or 300 <= response.status < 400:
                refusal = unauthorized("the Grafana session is not valid (Grafana answered "
                                       f"{response.status}); log in to Grafana again",
                                       bad=True, error="invalid_token")
                self._remember(key, None, refusal)
                raise refusal
            if response.status != 200:
                raise Refusal(503, f"cannot check the Grafana session: Grafana answered "
                                   f"{response.status} to {path}", code="grafana_unavailable")
            try:
                return await response.json(content_type=None)
            except ValueError:
                raise Refusal(503, f"cannot check the Grafana session: {path} did not answer "
                                   f"JSON", code="grafana_unavailable") from None


def _role(user: dict[str, Any], orgs: list[Any]) -> str:
    """The user's role in their current org ("None" if unknown); a server admin counts as Admin."""
    org_id = user.get("orgId")
    role = "None"
    for org in orgs:
        if isinstance(org, dict) and org.get("orgId") == org_id and isinstance(
                org.get("role"), str):
            role = org["role"] if org["role"] in ROLE_RANK else "None"
            break
    if user.get("isGrafanaAdmin") is True:
        role = "Admin"
    return role
