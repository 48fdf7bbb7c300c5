"""exporter.security.middleware against a real aiohttp app on a real loopback socket (and a real Grafana
stand-in on another): tokens, the loopback default, reads vs writes, the Grafana session path,
CSRF, rate limits, CORS, and resolving the token from the environment or a file."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bulletproof.errors import ConfigError
from exporter.api.errors import error_middleware
from exporter.security.middleware import (
    EXEMPT_PATHS,
    PRINCIPAL_KEY,
    Principal,
    RateLimiter,
    Security,
    is_loopback,
    resolve_token,
    setup_cors,
)
from exporter.settings import ApiSettings
from tests.grafana_standin import GrafanaUser, grafana_standin
from tests.promstack import free_port

TOKEN = "s3cret-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACTION = {"X-Grafana-Action": "1"}

SESSIONS = {
    "editor-session": GrafanaUser("eddie", roles={1: "Editor"}),
    "viewer-session": GrafanaUser("vera", roles={1: "Viewer"}),
    "admin-session": GrafanaUser("ada", roles={1: "Admin"}),
    "server-admin-session": GrafanaUser("root", roles={1: "Viewer"}, is_grafana_admin=True),
    # Editor in org 1 but currently in org 2, where she is a Viewer: she must be refused.
    "org2-viewer-session": GrafanaUser("olga", org_id=2, roles={1: "Editor", 2: "Viewer"}),
    # Viewer in org 1 but currently in org 2, where he is an Editor: he may act.
    "org2-editor-session": GrafanaUser("otto", org_id=2, roles={1: "Viewer", 2: "Editor"}),
    "no-role-session": GrafanaUser("nora", roles={1: "None"}),
}


def session(value: str) -> dict[str, str]:
    """The Cookie header a browser sends through the proxy (Grafana's and some other cookie)."""
    return {"Cookie": f"grafana_session={value}; grafana_session_expiry=1999999999; theme=dark"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def whoami(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL_KEY]
    return web.json_response({"kind": principal.kind, "name": principal.name,
                              "role": principal.role})


def api_settings(**values: Any) -> ApiSettings:
    return ApiSettings.model_validate(values)


MakeClient = Callable[..., Awaitable[TestClient]]
securities: dict[int, Security] = {}  # id(client) -> its Security, for tests that peek inside


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Build a real app (error middleware first, then Security's) with dummy routes, serve it on
    127.0.0.1 and return a client; everything is closed at the end of the test."""
    made: list[tuple[TestClient, Security]] = []
    securities.clear()

    async def make(settings: ApiSettings | None = None, token: str | None = None,
                   **security_kwargs: Any) -> TestClient:
        settings = settings or api_settings()
        security = Security(settings, token, **security_kwargs)
        app = web.Application(middlewares=[error_middleware, *security.middlewares()],
                              client_max_size=settings.max_body_bytes)
        app.router.add_get("/api/v1/status", whoami)
        app.router.add_get("/api/v1/jobs", whoami)
        app.router.add_post("/api/v1/queue/pause", whoami)
        app.router.add_post("/api/v1/jobs/{id}/cancel", whoami)
        app.router.add_put("/api/v1/config", whoami)
        for path in EXEMPT_PATHS:
            app.router.add_get(path, whoami)
        setup_cors(app, settings.cors_origins)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        securities[id(client)] = security
        made.append((client, security))
        return client

    yield make
    for client, security in made:
        await client.close()
        await security.close()


async def error_of(response) -> dict:
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


# ------------------------------------------------------------------------------- no token set


async def test_no_token_on_loopback_accepts_mutating_calls(make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="127.0.0.1:8080"))
    response = await client.post("/api/v1/queue/pause")
    assert response.status == 200
    assert await response.json() == {"kind": "anonymous", "name": "anonymous", "role": None}


async def test_no_token_not_loopback_refuses_mutating_calls(make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="0.0.0.0:8080"))
    response = await client.post("/api/v1/queue/pause")
    assert response.status == 403
    error = await error_of(response)
    assert error["code"] == "token_not_configured"
    assert "BULLETPROOF_API_TOKEN" in error["message"] and "api.token_file" in error["message"]
    # Reads stay open.
    assert (await client.get("/api/v1/status")).status == 200


async def test_no_token_loopback_exemption_is_for_local_direct_clients_only(
        make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="127.0.0.1:8080"))
    # Through a proxy (nginx on the same host): no longer "local".
    response = await client.post("/api/v1/queue/pause", headers={"X-Forwarded-For": "10.1.2.3"})
    assert response.status == 403
    assert "proxy" in (await error_of(response))["message"]
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 (refused for everyone, 421).
    response = await client.post("/api/v1/queue/pause", headers={"Host": "evil.example:8080"})
    assert response.status == 421
    assert (await error_of(response))["code"] == "host_not_allowed"
    # An allowed host that is not loopback is still no "local client without a token".
    client = await make_client(api_settings(listen="127.0.0.1:8080",
                                            allowed_hosts=["monitor.example"]))
    response = await client.post("/api/v1/queue/pause", headers={"Host": "monitor.example:8080"})
    assert response.status == 403
    assert "Host" in (await error_of(response))["message"]
    # A cross-site form post from a page in the local browser (refused for everyone, 403).
    response = await client.post("/api/v1/queue/pause", data={"x": "1"},
                                 headers={"Origin": "https://evil.example"})
    assert response.status == 403
    assert (await error_of(response))["code"] == "origin_not_allowed"
    # A page on another local port is allowed by the Host/Origin check, but is not this API's
    # own origin: no anonymous change from it.
    response = await client.post("/api/v1/queue/pause", headers={"Origin": "http://localhost:5173"})
    assert response.status == 403
    assert "cross-origin" in (await error_of(response))["message"]
    # Same-origin (Origin names this very host) is fine.
    host = f"{client.server.host}:{client.server.port}"
    response = await client.post("/api/v1/queue/pause", headers={"Origin": f"http://{host}"})
    assert response.status == 200


def test_startup_warnings_say_what_happens_without_a_token() -> None:
    [loopback] = Security(api_settings(listen="127.0.0.1:8080"), None).startup_warnings()
    assert loopback.startswith("no API token configured: mutating calls are accepted only "
                               "because the API listens on loopback")
    [open_] = Security(api_settings(listen="0.0.0.0:8080", allowed_hosts=["monitor"]),
                       None).startup_warnings()
    assert "mutating calls are refused" in open_ and "not loopback" in open_
    assert Security(api_settings(listen="0.0.0.0:8080", allowed_hosts=["monitor"]),
                    TOKEN).startup_warnings() == []
    # Listening on every interface while answering for no name but loopback is a 421 waiting.
    [names] = Security(api_settings(listen="0.0.0.0:8080"), TOKEN).startup_warnings()
    assert "api.allowed_hosts" in names and "421" in names
    warnings = Security(api_settings(), "short").startup_warnings()
    assert any("shorter than 16" in w for w in warnings)
    assert all("short" not in w.split("shorter")[0] for w in warnings)  # the token is not shown


# ---------------------------------------------------------------------------------- with token


async def test_token_required_for_mutating_calls(make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="127.0.0.1:8080"), TOKEN)

    response = await client.post("/api/v1/queue/pause")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await error_of(response))["code"] == "unauthorized"

    response = await client.post("/api/v1/queue/pause", headers={"Authorization": "Bearer nope"})
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert TOKEN not in await response.text()

    response = await client.post("/api/v1/queue/pause", headers={"X-Bulletproof-Token": "nope"})
    assert response.status == 401

    response = await client.post("/api/v1/queue/pause", headers=BEARER)
    assert response.status == 200
    assert (await response.json())["kind"] == "token"

    response = await client.post("/api/v1/jobs/7/cancel", headers={"X-Bulletproof-Token": TOKEN})
    assert response.status == 200
    assert (await response.json())["name"] == "token"

    # "bearer" is case-insensitive as a scheme.
    response = await client.put("/api/v1/config", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc",
                                    f"Bearer {TOKEN} extra", "garbage"])
async def test_malformed_authorization_is_401(make_client: MakeClient, header: str) -> None:
    client = await make_client(api_settings(), TOKEN)
    response = await client.post("/api/v1/queue/pause", headers={"Authorization": header})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await error_of(response)


async def test_non_ascii_token_bytes_are_401_not_500(make_client: MakeClient) -> None:
    client = await make_client(api_settings(), TOKEN)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    for value in (b"Bearer \xff\xfe\xc3\x28", "Bearer jeton-\u00e9\u00e8".encode()):
        writer.write(b"POST /api/v1/queue/pause HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: " + value + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        assert status_line.split()[1] == b"401", status_line
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    writer.close()
    await writer.wait_closed()


async def test_reads_open_by_default_and_closed_by_switch(make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="0.0.0.0:8080"), TOKEN)
    response = await client.get("/api/v1/status")
    assert response.status == 200
    assert (await response.json())["kind"] == "anonymous"
    # A wrong token on an open read is still a wrong token.
    assert (await client.get("/api/v1/status", headers={"Authorization": "Bearer x"})).status == 401

    closed = await make_client(api_settings(listen="0.0.0.0:8080", require_token_for_reads=True),
                               TOKEN)
    response = await closed.get("/api/v1/status")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await closed.head("/api/v1/status")).status == 401
    response = await closed.get("/api/v1/status", headers=BEARER)
    assert response.status == 200 and (await response.json())["kind"] == "token"
    # Monitoring endpoints stay open: Prometheus and health checks carry no token.
    for path in sorted(EXEMPT_PATHS):
        assert (await closed.get(path)).status == 200, path


async def test_no_token_with_reads_closed_not_loopback(make_client: MakeClient) -> None:
    client = await make_client(api_settings(listen="[::]:8080", require_token_for_reads=True))
    response = await client.get("/api/v1/status")
    assert response.status == 403
    assert (await error_of(response))["code"] == "token_not_configured"
    assert (await client.get("/metrics")).status == 200


async def test_body_size_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client(api_settings(max_body_bytes=2048), TOKEN)
    response = await client.put("/api/v1/config", data=b"x" * 4096,
                                headers={**BEARER, "Content-Type": "application/json"})
    assert response.status == 413
    error = await error_of(response)
    assert error["code"] == "payload_too_large" and "api.max_body_bytes" in error["message"]
    # Unauthenticated callers learn nothing about limits: they are told to authenticate first.
    response = await client.put("/api/v1/config", data=b"x" * 4096)
    assert response.status == 401


async def test_token_never_logged(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(api_settings(), TOKEN)
    await client.post("/api/v1/queue/pause", headers=BEARER)
    await client.post("/api/v1/queue/pause", headers={"Authorization": f"Bearer {TOKEN}x"})
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in repr(record.__dict__)


# ------------------------------------------------------------------------------ Grafana session


@pytest.fixture
async def grafana() -> AsyncIterator:
    async with grafana_standin(SESSIONS) as standin:
        yield standin


def grafana_settings(url: str, **values: Any) -> ApiSettings:
    grafana = {"url": url, **values.pop("grafana", {})}
    return api_settings(listen="0.0.0.0:8080", grafana=grafana, **values)


async def test_grafana_editor_may_act_viewer_may_not(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)

    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 200
    assert await response.json() == {"kind": "grafana", "name": "eddie", "role": "Editor"}
    # The whole Cookie header was forwarded to Grafana.
    assert "grafana_session=editor-session" in grafana.cookies_seen[-1]
    assert "theme=dark" in grafana.cookies_seen[-1]

    response = await client.post("/api/v1/queue/pause", headers={**session("viewer-session"),
                                                                 **ACTION})
    assert response.status == 403
    error = await error_of(response)
    assert error["code"] == "forbidden"
    assert error["details"] == {"role": "Viewer", "required_role": "Editor",
                                "permission": "control"}

    response = await client.post("/api/v1/queue/pause", headers={**session("no-role-session"),
                                                                 **ACTION})
    assert response.status == 403

    response = await client.post("/api/v1/queue/pause", headers={**session("admin-session"),
                                                                 **ACTION})
    assert response.status == 200 and (await response.json())["role"] == "Admin"


async def test_grafana_unknown_session_is_401(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)
    response = await client.post("/api/v1/queue/pause", headers={**session("forged"), **ACTION})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Grafana" in (await error_of(response))["message"]
    # No cookie at all, no token: 401 that names both ways in.
    response = await client.post("/api/v1/queue/pause", headers=ACTION)
    assert response.status == 401
    assert "Grafana session" in (await error_of(response))["message"]


async def test_grafana_down_is_503(make_client: MakeClient) -> None:
    client = await make_client(grafana_settings(f"http://127.0.0.1:{free_port()}"), TOKEN)
    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 503
    error = await error_of(response)
    assert error["code"] == "grafana_unavailable" and "unreachable" in error["message"]
    # The token still works while Grafana is down.
    assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 200


async def test_grafana_csrf_rule(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)
    # A plain HTML form post riding the session cookie: refused before asking Grafana.
    response = await client.post(
        "/api/v1/queue/pause", data="x=1",
        headers={**session("editor-session"),
                 "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 403
    assert (await error_of(response))["code"] == "csrf"
    response = await client.post("/api/v1/queue/pause", data="x",
                                 headers={**session("editor-session"), "Content-Type": "text/plain"})
    assert response.status == 403
    assert grafana.calls["/api/user"] == 0
    # A JSON body (which needs a CORS preflight cross-origin) is enough without the header.
    response = await client.post("/api/v1/queue/pause", json={},
                                 headers=session("editor-session"))
    assert response.status == 200
    # And the header is enough without JSON.
    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 200


async def test_grafana_result_is_cached(make_client: MakeClient, grafana) -> None:
    clock = FakeClock()
    client = await make_client(grafana_settings(grafana.url, grafana={"cache_seconds": 10}),
                               TOKEN, clock=clock)
    for _ in range(5):
        response = await client.post("/api/v1/queue/pause",
                                     headers={**session("editor-session"), **ACTION})
        assert response.status == 200
    assert grafana.calls == {"/api/user": 1, "/api/user/orgs": 1}
    # Refusals are cached too (a forged cookie does not hammer Grafana).
    for _ in range(3):
        response = await client.post("/api/v1/queue/pause", headers={**session("forged"), **ACTION})
        assert response.status == 401
    assert grafana.calls["/api/user"] == 2
    # After cache_seconds, Grafana is asked again (a role change or a logout is seen).
    clock.advance(10.5)
    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 200
    assert grafana.calls["/api/user"] == 3
    # The cache is keyed by a hash of the cookie, never the cookie itself.
    security = securities[id(client)]
    assert all("editor-session" not in key for key in security._grafana._sessions)


async def test_grafana_concurrent_lookups_are_shared(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)
    responses = await asyncio.gather(*[
        client.post("/api/v1/queue/pause", headers={**session("admin-session"), **ACTION})
        for _ in range(10)])
    assert [r.status for r in responses] == [200] * 10
    assert grafana.calls["/api/user"] == 1


async def test_grafana_server_admin_counts_as_admin(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url, grafana={"min_role": "Admin"}), TOKEN)
    response = await client.post("/api/v1/queue/pause",
                                 headers={**session("server-admin-session"), **ACTION})
    assert response.status == 200
    assert await response.json() == {"kind": "grafana", "name": "root", "role": "Admin"}
    # With min_role Admin, an org Editor is refused.
    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 403


async def test_grafana_role_comes_from_the_current_org(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)
    response = await client.post("/api/v1/queue/pause",
                                 headers={**session("org2-viewer-session"), **ACTION})
    assert response.status == 403
    assert (await error_of(response))["details"]["role"] == "Viewer"
    response = await client.post("/api/v1/queue/pause",
                                 headers={**session("org2-editor-session"), **ACTION})
    assert response.status == 200
    assert await response.json() == {"kind": "grafana", "name": "otto", "role": "Editor"}


async def test_grafana_viewer_may_read_when_reads_need_auth(make_client: MakeClient,
                                                            grafana) -> None:
    client = await make_client(grafana_settings(grafana.url, require_token_for_reads=True), TOKEN)
    response = await client.get("/api/v1/jobs", headers=session("viewer-session"))
    assert response.status == 200
    assert (await response.json())["name"] == "vera"
    response = await client.get("/api/v1/jobs", headers=session("no-role-session"))
    assert response.status == 403
    response = await client.get("/api/v1/jobs", headers=session("forged"))
    assert response.status == 401


async def test_open_reads_do_not_ask_grafana(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url), TOKEN)
    response = await client.get("/api/v1/jobs", headers=session("forged"))
    assert response.status == 200
    assert grafana.calls["/api/user"] == 0


async def test_grafana_session_without_token_configured(make_client: MakeClient, grafana) -> None:
    client = await make_client(grafana_settings(grafana.url))  # no token, not loopback
    response = await client.post("/api/v1/queue/pause", headers={**session("editor-session"),
                                                                 **ACTION})
    assert response.status == 200
    response = await client.post("/api/v1/queue/pause")
    assert response.status == 401


# ---------------------------------------------------------------------------------- rate limits


async def test_rate_limit_101st_request_in_a_minute(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(), TOKEN, clock=clock)
    for i in range(100):
        response = await client.get("/api/v1/status")
        assert response.status == 200, i
    response = await client.get("/api/v1/status")
    assert response.status == 429
    assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1
    error = await error_of(response)
    assert error["code"] == "rate_limited" and error["details"]["limit_per_minute"] == 100

    # Other routes, other clients, and authenticated callers are unaffected.
    assert (await client.get("/api/v1/jobs")).status == 200
    assert (await client.get("/api/v1/status", headers={"X-Forwarded-For": "10.0.0.7"})).status == 200
    assert (await client.get("/api/v1/status", headers=BEARER)).status == 200
    # Exempt paths are never limited.
    for _ in range(150):
        assert (await client.get("/metrics")).status == 200
        assert (await client.get("/healthz")).status == 200

    # The bucket refills at 100 per minute: one request after 0.6 s.
    clock.advance(0.61)
    assert (await client.get("/api/v1/status")).status == 200
    assert (await client.get("/api/v1/status")).status == 429


async def test_rate_limit_keys_routes_by_their_pattern(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(rate_limit_per_minute=5), TOKEN, clock=clock)
    for job in range(5):
        assert (await client.post(f"/api/v1/jobs/{job}/cancel", headers=BEARER)).status == 200
    response = await client.post("/api/v1/jobs/99/cancel", headers=BEARER)
    assert response.status == 429
    assert response.headers["Retry-After"] == "12"  # one token at 5/min


async def test_rate_limit_authenticated_callers_by_identity(make_client: MakeClient,
                                                            grafana) -> None:
    clock = FakeClock()
    client = await make_client(grafana_settings(grafana.url, rate_limit_per_minute=3), TOKEN,
                               clock=clock)
    # Several Grafana users behind the same proxy address each get their own budget.
    for cookie in ("editor-session", "admin-session"):
        for _ in range(3):
            response = await client.post("/api/v1/queue/pause",
                                         headers={**session(cookie), **ACTION})
            assert response.status == 200
    response = await client.post("/api/v1/queue/pause",
                                 headers={**session("editor-session"), **ACTION})
    assert response.status == 429
    # The token's budget, and the anonymous reads of this address, are separate.
    for _ in range(3):
        assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 200
    assert (await client.get("/api/v1/status")).status == 200


async def test_failed_authentication_attempts_count(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(), TOKEN, clock=clock)
    for i in range(100):
        response = await client.post("/api/v1/queue/pause", headers={"Authorization": f"Bearer {i}"})
        assert response.status == 401, i
    response = await client.post("/api/v1/queue/pause", headers={"Authorization": "Bearer x"})
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    # Guessing moves nowhere from that address, on any route, even with the right token...
    assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 429
    assert (await client.put("/api/v1/config", headers=BEARER)).status == 429
    # ... while other clients are unaffected, and so are this address's credential-less reads.
    other = {"X-Forwarded-For": "192.0.2.10"}
    assert (await client.post("/api/v1/queue/pause", headers={**BEARER, **other})).status == 200
    assert (await client.get("/api/v1/jobs")).status == 200
    clock.advance(60)
    assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 200


async def test_the_failure_budget_does_not_grow_with_the_rate_limit(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(rate_limit_per_minute=1000, auth_failures_per_minute=5),
                               TOKEN, clock=clock)
    for i in range(5):
        assert (await client.post("/api/v1/queue/pause",
                                  headers={"Authorization": f"Bearer {i}"})).status == 401
    response = await client.post("/api/v1/queue/pause", headers=BEARER)
    assert response.status == 429
    error = await error_of(response)
    assert "api.auth_failures_per_minute" in error["message"]
    assert error["details"]["limit_per_minute"] == 5
    # Calls without credentials are not guesses: the rate limit alone applies to them.
    assert (await client.get("/api/v1/status")).status == 200
    clock.advance(12)  # one failure back (5 a minute)
    assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 200


async def test_missing_credentials_count_against_the_address(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(rate_limit_per_minute=10), TOKEN, clock=clock)
    for _ in range(10):
        assert (await client.post("/api/v1/queue/pause")).status == 401
    assert (await client.post("/api/v1/queue/pause")).status == 429
    # The token holder is not locked out by someone else's credential-less calls.
    assert (await client.post("/api/v1/queue/pause", headers=BEARER)).status == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(api_settings(rate_limit_per_minute=2), TOKEN, clock=clock,
                               trusted_proxies=[])
    for _ in range(2):
        assert (await client.get("/api/v1/status", headers={"X-Forwarded-For": "10.0.0.1"})).status == 200
    # The peer (127.0.0.1) is not trusted here, so a new X-Forwarded-For is not a new client.
    response = await client.get("/api/v1/status", headers={"X-Forwarded-For": "10.0.0.2"})
    assert response.status == 429


def test_client_address_takes_the_last_untrusted_hop() -> None:
    from aiohttp.test_utils import make_mocked_request

    security = Security(api_settings(), TOKEN, trusted_proxies=["127.0.0.0/8", "172.16.0.0/12"])
    request = make_mocked_request("GET", "/api/v1/status",
                                  headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 172.18.0.5"}
                                  ).clone(remote="127.0.0.1")
    # make_mocked_request's peer is 127.0.0.1 (trusted); 172.18.0.5 is a trusted proxy too;
    # 6.6.6.6 is whatever the client claimed and is ignored.
    assert request.remote == "127.0.0.1"
    assert security.client_address(request) == "203.0.113.9"


def test_a_trusted_subnet_would_let_clients_pick_their_address() -> None:
    """The compose stack's old set-up: trusting the front door's whole subnet also trusts the
    Docker gateway every browser connection comes from, so the client's own claim wins. Trusting
    the front door's address only, the gateway is the client."""
    from aiohttp.test_utils import make_mocked_request

    def client(trusted: list[str]) -> str:
        request = make_mocked_request(
            "POST", "/api/v1/queue/pause",
            headers={"X-Forwarded-For": "203.0.113.77, 172.31.247.1"}).clone(remote="172.31.247.10")
        return Security(api_settings(), TOKEN, trusted_proxies=trusted).client_address(request)

    assert client(["172.31.247.0/24"]) == "203.0.113.77"  # the hole
    assert client(["172.31.247.10/32"]) == "172.31.247.1"
    # Hops that do not parse end the walk at the last good one (never the client's words).
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": "1.2.3.4, junk"}
                                  ).clone(remote="127.0.0.1")
    assert Security(api_settings(), TOKEN).client_address(request) == "127.0.0.1"


def test_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, max_buckets=100)
    for i in range(1000):
        limiter.take(("addr", f"10.0.{i // 256}.{i % 256}", "/x"))
    assert len(limiter) == 100
    clock.advance(61)  # idle buckets are full again: dropped
    limiter.take(("addr", "10.9.9.9", "/x"))
    assert len(limiter) == 1


# ----------------------------------------------------------------------------------------- CORS


async def test_cors_preflight_from_allowed_origin(make_client: MakeClient) -> None:
    allowed = "https://grafana.example.org"
    client = await make_client(api_settings(cors_origins=[allowed], require_token_for_reads=True),
                               TOKEN)
    preflight = {"Origin": allowed, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, x-grafana-action"}
    response = await client.options("/api/v1/queue/pause", headers=preflight)
    assert response.status == 200  # no credentials needed on a preflight
    assert response.headers["Access-Control-Allow-Origin"] == allowed
    assert "Access-Control-Allow-Credentials" not in response.headers

    response = await client.options("/api/v1/queue/pause",
                                    headers={**preflight, "Origin": "https://evil.example"})
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers

    # Actual requests get the header too, including the errors (so a browser can read them).
    response = await client.post("/api/v1/queue/pause", headers={**BEARER, "Origin": allowed})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == allowed
    response = await client.post("/api/v1/queue/pause", headers={"Origin": allowed})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == allowed
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]
    response = await client.get("/api/v1/status",
                                headers={**BEARER, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_no_cors_by_default(make_client: MakeClient) -> None:
    client = await make_client(api_settings(allowed_hosts=["grafana.example.org"]), TOKEN)
    origin = "https://grafana.example.org"
    response = await client.options("/api/v1/queue/pause", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.status == 405
    response = await client.get("/api/v1/status", headers={"Origin": origin})
    assert response.status == 200
    assert not any(h.lower().startswith("access-control-") for h in response.headers)
    # An origin on no allowed host is refused outright, preflight or not.
    for method in ("OPTIONS", "GET"):
        response = await client.request(method, "/api/v1/status", headers={
            "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"})
        assert response.status == 403 and (await error_of(response))["code"] == "origin_not_allowed"
        assert not any(h.lower().startswith("access-control-") for h in response.headers)


# ------------------------------------------------------------------------------ resolve_token


def test_resolve_token_env_wins(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    os.chmod(token_file, 0o600)
    settings = api_settings(token_file=str(token_file))
    assert resolve_token(settings, env={"BULLETPROOF_API_TOKEN": " from-env\n"}) == "from-env"
    assert resolve_token(settings, env={}) == "from-file"
    assert resolve_token(settings, env={"BULLETPROOF_API_TOKEN": "  "}) == "from-file"
    assert resolve_token(api_settings(), env={}) is None


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "blank", "binary"])
def test_resolve_token_bad_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "token"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_text("")
    elif kind == "blank":
        path.write_text("  \n\n")
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00tok")
    with pytest.raises(ConfigError) as caught:
        resolve_token(api_settings(token_file=str(path)), env={})
    [issue] = caught.value.issues
    assert issue.location == "api.token_file"
    assert str(path) in issue.message


def test_resolve_token_file_does_not_log_the_token(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "token"
    path.write_text(TOKEN)
    os.chmod(path, 0o644)
    assert resolve_token(api_settings(token_file=str(path)), env={}) == TOKEN
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False),
    ("localhost.example.org", False), ("", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


async def test_close_is_idempotent(grafana) -> None:
    security = Security(grafana_settings(grafana.url), TOKEN)
    principal = await security._grafana.principal("grafana_session=editor-session")
    assert principal == Principal("grafana", "eddie", "Editor")
    await security.close()
    await security.close()
