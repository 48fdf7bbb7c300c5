"""A small in-tree stand-in for Grafana's user API, served on a real loopback socket.

It implements the two calls the monitor makes to check a browser's Grafana session, shaped as
Grafana's HTTP API documents them ("User API"):

- `GET /api/user` (the signed-in user): `{"id", "uid", "email", "name", "login", "theme", "orgId",
  "isGrafanaAdmin", "isDisabled", "isExternal", "authLabels", "updatedAt", "createdAt",
  "avatarUrl"}`; `orgId` is the user's current organization.
- `GET /api/user/orgs` (the user's organizations): `[{"orgId", "name", "role"}]` with the role
  `Viewer`, `Editor`, `Admin` (or `None`, Grafana 10's "no basic role").

Both answer 401 `{"message": "Unauthorized"}` when the request carries no known session cookie
(`grafana_session` by default). Every call is counted per path, and the Cookie headers received
are kept, so tests can check the monitor's cache and what it forwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

from aiohttp import web

ORG_NAMES = {1: "Main Org."}


@dataclass
class GrafanaUser:
    """One signed-in Grafana user: login, current org, server-admin flag, and role per org."""

    login: str
    org_id: int = 1
    roles: dict[int, str] = field(default_factory=lambda: {1: "Viewer"})
    is_grafana_admin: bool = False
    id: int = 0

    def user_json(self) -> dict:
        return {
            "id": self.id,
            "uid": f"u-{self.login}",
            "email": f"{self.login}@example.org",
            "name": self.login.title(),
            "login": self.login,
            "theme": "",
            "orgId": self.org_id,
            "isGrafanaAdmin": self.is_grafana_admin,
            "isDisabled": False,
            "isExternal": False,
            "isExternallySynced": False,
            "isGrafanaAdminExternallySynced": False,
            "authLabels": [],
            "updatedAt": "2025-01-01T00:00:00Z",
            "createdAt": "2025-01-01T00:00:00Z",
            "avatarUrl": f"/avatar/{self.login}",
        }

    def orgs_json(self) -> list[dict]:
        return [{"orgId": org_id, "name": ORG_NAMES.get(org_id, f"Org {org_id}"), "role": role}
                for org_id, role in sorted(self.roles.items())]


class GrafanaStandin:
    """The stand-in server. `sessions` maps a session cookie value to its user."""

    def __init__(self, sessions: Mapping[str, GrafanaUser], *,
                 cookie_name: str = "grafana_session") -> None:
        self.sessions = dict(sessions)
        for index, user in enumerate(self.sessions.values(), start=1):
            if not user.id:
                user.id = index
        self.cookie_name = cookie_name
        self.calls: Counter[str] = Counter()
        self.cookies_seen: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/api/user", self._user)
        app.router.add_get("/api/user/orgs", self._orgs)
        self.app = app

    def _session_user(self, request: web.Request) -> GrafanaUser | None:
        header = request.headers.get("Cookie", "")
        self.cookies_seen.append(header)
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            return None
        morsel = jar.get(self.cookie_name)
        return self.sessions.get(morsel.value) if morsel is not None else None

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"message": "Unauthorized"}, status=401)

    async def _user(self, request: web.Request) -> web.Response:
        self.calls["/api/user"] += 1
        user = self._session_user(request)
        return web.json_response(user.user_json()) if user else self._unauthorized()

    async def _orgs(self, request: web.Request) -> web.Response:
        self.calls["/api/user/orgs"] += 1
        user = self._session_user(request)
        return web.json_response(user.orgs_json()) if user else self._unauthorized()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `host:port` (0: a free port); returns the base URL."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        bound = sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def grafana_standin(sessions: Mapping[str, GrafanaUser], **kwargs) -> AsyncIterator[GrafanaStandin]:
    """Run a GrafanaStandin on a free loopback port for the duration of the block."""
    standin = GrafanaStandin(sessions, **kwargs)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()


