"""Access to the control plane, on the real app and a real monitor: the route table against the
app and docs/security.md, config vs control roles with the Grafana stand-in, the Host and Origin
allow-list (WebSocket included), and the audit trail (store, route, metric, log).
The same rules through the real nginx front door: tests/test_frontdoor.py."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bulletproof import store_writes as store_module  # the audit bounds the stores share
from bulletproof.audit import AUDIT_RESULTS, AuditEntry, result_of
from bulletproof.errors import ConfigError
from bulletproof.sqlite_store import SqliteJobStore
from exporter.api.openapi import openapi_document
from exporter.security.grafana_auth import ROLE_RANK
from exporter.security.origins import OriginPolicy, resolve_public_url
from exporter.security.permissions import AUDITED_ACTIONS, ROUTES, Permission, required_role, rule_for
from exporter.settings import ApiSettings, GrafanaAuth
from tests.api_fixtures import TEST_API, Api, api_factory_fixture, api_fixture  # noqa: F401
from tests.grafana_standin import GrafanaUser, grafana_standin

DOCS = Path(__file__).parent.parent / "docs"
TOKEN = "access-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ACTION = {"X-Grafana-Action": "1"}
SESSIONS = {
    "viewer-session": GrafanaUser("vera", roles={1: "Viewer"}),
    "editor-session": GrafanaUser("eddie", roles={1: "Editor"}),
    "admin-session": GrafanaUser("ada", roles={1: "Admin"}),
}


def cookie(name: str) -> dict[str, str]:
    return {"Cookie": f"grafana_session={name}", **ACTION}


# ------------------------------------------------------------------------ the route table


def expected_cell(permission: Permission, credential: str) -> str:
    """What the matrix says for a credential ("none", a role, "token") on the front door set-up
    (reads need credentials, default roles)."""
    if permission is Permission.PUBLIC or credential == "token":
        return "yes"
    if credential == "none":
        return "401"
    needed = required_role(permission, GrafanaAuth())
    assert needed is not None
    return "yes" if ROLE_RANK[credential] >= ROLE_RANK[needed] else "403"


CREDENTIALS = ("none", "Viewer", "Editor", "Admin", "token")


def expected_matrix() -> str:
    lines = ["| Route | Permission | Audit action | No credentials | Viewer | Editor | Admin | Token |",
             "|---|---|---|---|---|---|---|---|"]
    for rule in ROUTES:
        cells = " | ".join(expected_cell(rule.permission, c) for c in CREDENTIALS)
        lines.append(f"| `{rule.method} {rule.path}` | {rule.permission.value} | "
                     f"{rule.action or ''} | {cells} |")
    return "\n".join(lines)


def test_the_matrix_in_security_md_is_the_route_table() -> None:
    text = (DOCS / "security.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- access-matrix:start -->\n(.*?)\n<!-- access-matrix:end -->", text, re.S)
    assert found, "docs/security.md lost its access-matrix markers"
    assert found.group(1).strip() == expected_matrix(), (
        "docs/security.md's matrix differs from exporter/security/permissions.py; it should read:\n"
        + expected_matrix())


async def test_every_route_of_the_app_has_a_rule_and_every_rule_a_route(api: Api) -> None:
    routes = {(r.method, r.resource.canonical) for r in api.client.app.router.routes()
              if r.resource is not None and r.method not in ("HEAD", "OPTIONS")}
    rules = {(r.method, r.path) for r in ROUTES}
    assert routes == rules
    # Every change of state is audited: each mutating route is a control or config with an action.
    for rule in ROUTES:
        if rule.method != "GET":
            assert rule.permission in (Permission.CONTROL, Permission.CONFIG), rule
            assert rule.action, rule
    assert len(set(AUDITED_ACTIONS)) == len(AUDITED_ACTIONS)


def test_the_openapi_document_carries_each_operations_permission() -> None:
    paths = openapi_document("test")["paths"]
    seen = set()
    for path, operations in paths.items():
        for method, operation in operations.items():
            rule = rule_for(method.upper(), path)
            assert operation["x-permission"] == rule.permission.value, (method, path)
            assert operation.get("x-audit-action") == rule.action, (method, path)
            seen.add((method.upper(), path))
    assert seen == {(r.method, r.path) for r in ROUTES}


def test_unknown_paths_need_read_or_control() -> None:
    assert rule_for("GET", "/api/v1/nope").permission is Permission.READ
    assert rule_for("POST", "/api/v1/nope").permission is Permission.CONTROL
    assert rule_for("HEAD", "/api/v1/status").permission is Permission.READ


def test_config_role_may_not_be_below_min_role() -> None:
    with pytest.raises(ValueError, match="config_role\n.*Editor is below min_role .Admin."):
        GrafanaAuth(min_role="Admin", config_role="Editor")
    assert GrafanaAuth().config_role == "Admin"


# --------------------------------------------------------------- roles on the real app


@pytest.fixture
async def grafana() -> AsyncIterator:
    async with grafana_standin(SESSIONS) as standin:
        yield standin


async def roles_api(api_factory, grafana_url: str, **api: Any) -> Api:
    return await api_factory(token=TOKEN, api={
        **TEST_API, "grafana": {"url": grafana_url, "cache_seconds": 0}, **api})


async def test_an_editor_may_pause_but_not_change_the_config(api_factory, grafana) -> None:
    api = await roles_api(api_factory, grafana.url)
    before = api.monitor.config
    config = (await api.get("/api/v1/config"))[1]["config"]
    assert (await api.post("/api/v1/queue/pause", headers=cookie("editor-session")))[0] == 200
    for method, path in (("PUT", "/api/v1/config"), ("POST", "/api/v1/config/validate"),
                         ("POST", "/api/v1/config/reset")):
        status, body = await api.call(method, path, json=config, headers=cookie("editor-session"))
        assert status == 403, (method, path, body)
        assert body["error"]["code"] == "forbidden"
        assert body["error"]["details"] == {"role": "Editor", "required_role": "Admin",
                                            "permission": "config"}
        assert "api.grafana.config_role" in body["error"]["message"]
    assert api.monitor.config == before
    # An Admin may; so may the token.
    status, body = await api.call("POST", "/api/v1/config/validate", json=config,
                                  headers=cookie("admin-session"))
    assert status == 200 and body["valid"] is True
    status, _ = await api.call("PUT", "/api/v1/config", json={**config, "max_workers": 3},
                               headers=cookie("admin-session"))
    assert status == 200 and api.monitor.config.max_workers == 3
    status, _ = await api.call("PUT", "/api/v1/config", json=config, headers=BEARER)
    assert status == 200 and api.monitor.config.max_workers == config["max_workers"]


async def test_the_roles_are_set_by_the_config(api_factory, grafana) -> None:
    api = await roles_api(api_factory, grafana.url,
                          grafana={"url": grafana.url, "cache_seconds": 0, "min_role": "Viewer",
                                   "config_role": "Editor"})
    config = (await api.get("/api/v1/config"))[1]["config"]
    assert (await api.post("/api/v1/queue/pause", headers=cookie("viewer-session")))[0] == 200
    status, body = await api.call("POST", "/api/v1/config/validate", json=config,
                                  headers=cookie("viewer-session"))
    assert status == 403 and body["error"]["details"]["required_role"] == "Editor"
    status, body = await api.call("POST", "/api/v1/config/validate", json=config,
                                  headers=cookie("editor-session"))
    assert status == 200 and body["valid"] is True


# ----------------------------------------------------------------- Host and Origin


def test_the_allow_list() -> None:
    policy = OriginPolicy(ApiSettings.model_validate({
        "listen": "0.0.0.0:8080", "allowed_hosts": ["Bulletproof"],
        "cors_origins": ["https://dash.example.org:8443"]}), "https://grafana.example.org/")
    for host in ("localhost:3000", "127.0.0.1", "[::1]:8080", "127.5.6.7:1", "LOCALHOST.",
                 "bulletproof:8080", "grafana.example.org", "grafana.example.org:443"):
        assert policy.host_allowed(host), host
    for host in ("evil.example", "bulletproof.evil.example", "0.0.0.0:8080",
                 "grafana.example.org.evil.example", "", "192.0.2.1:8080"):
        assert not policy.host_allowed(host), host
    for origin in ("http://localhost:3000", "https://grafana.example.org",
                   "https://dash.example.org:8443", "http://bulletproof:8080/"):
        assert policy.origin_allowed(origin), origin
    for origin in ("null", "https://evil.example", "https://dash.example.org", "file://",
                   "javascript:alert(1)", "http://[::1", "https://grafana.example.org@evil.example"):
        assert not policy.origin_allowed(origin), origin
    # The listen address itself is allowed when it is not a wildcard.
    assert OriginPolicy(ApiSettings(listen="192.0.2.7:8080")).host_allowed("192.0.2.7:8080")


def test_the_public_url_from_the_environment_wins() -> None:
    settings = ApiSettings(public_url="http://localhost:3000/")
    assert resolve_public_url(settings, {}) == "http://localhost:3000/"
    assert resolve_public_url(settings, {"BULLETPROOF_PUBLIC_URL": "https://g.example/"}) == \
        "https://g.example/"
    with pytest.raises(ConfigError) as refused:
        resolve_public_url(settings, {"BULLETPROOF_PUBLIC_URL": "g.example:3000"})
    assert refused.value.issues[0].location == "BULLETPROOF_PUBLIC_URL"


async def test_a_foreign_host_is_refused_on_every_route(api_factory) -> None:
    api = await api_factory(token=TOKEN, api={**TEST_API, "public_url": "https://grafana.example.org",
                                              "allowed_hosts": ["bulletproof"]})
    for path in ("/api/v1/status", "/metrics", "/healthz", "/ws/updates", "/api/v1/nope"):
        status, body = await api.get(path, headers={"Host": "rebound.evil.example", **BEARER})
        assert status == 421, path
        assert body["error"]["code"] == "host_not_allowed"
        assert "api.allowed_hosts" in body["error"]["message"]
    status, _ = await api.post("/api/v1/queue/pause", headers={"Host": "evil.example:8080", **BEARER})
    assert status == 421 and api.monitor.view.paused is False
    for host in ("bulletproof:8080", "grafana.example.org", "localhost:9"):
        assert (await api.get("/api/v1/status", headers={"Host": host}))[0] == 200, host
        assert (await api.get("/metrics", headers={"Host": host}))[0] == 200, host


async def test_a_foreign_origin_gets_403_and_no_snapshot_byte(api_factory) -> None:
    api = await api_factory()  # no token: the default set-up the attack was found on
    url = api.url("/ws/updates")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(url, headers={"Origin": "https://evil.example"}):
                pass
        assert refused.value.status == 403
        # The raw answer: a JSON error, nothing of the snapshot.
        async with session.get(url, headers={
                "Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            body = await resp.read()
            assert resp.status == 403 and b"origin_not_allowed" in body and b"snapshot" not in body
        # A rebinding page: its own name in Host, no Origin needed to be refused.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(url, headers={"Host": "evil.example"}):
                pass
        assert refused.value.status == 421
        # Reads with a foreign Origin are refused too (a page cannot read file names or config).
        status, body = await api.get("/api/v1/config", headers={"Origin": "https://evil.example"})
        assert status == 403 and body["error"]["code"] == "origin_not_allowed"
        # The same page served from loopback (the monitor's own origin) is fine.
        origin = f"http://127.0.0.1:{api.client.server.port}"
        async with session.ws_connect(url, headers={"Origin": origin}) as ws:
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "snapshot"


# ---------------------------------------------------------------------- the audit trail


def entry(**values: Any) -> AuditEntry:
    base = {"at": 1000.0, "action": "queue.pause", "method": "POST", "route": "/api/v1/queue/pause",
            "status": 200, "result": "ok", "address": "192.0.2.1"}
    return AuditEntry(**{**base, **values})


def test_the_store_keeps_pages_and_bounds_the_audit(tmp_path: Path, monkeypatch) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    first = store.record_audit(entry(principal_kind="grafana", principal="eddie", role="Editor"))
    store.record_audit(entry(action="job.cancel", route="/api/v1/jobs/{id}/cancel", job_id=7,
                             status=409, result="rejected", code="invalid_state"))
    newest = store.audit_entries(limit=1)
    assert [e.action for e in newest] == ["job.cancel"] and newest[0].job_id == 7
    older = store.audit_entries(limit=10, before=newest[0].id)
    assert [e.id for e in older] == [first] and older[0].principal == "eddie"
    assert older[0].to_dict()["role"] == "Editor"
    # The bound: the newest AUDIT_MAX_ROWS stay (patched small here), and nothing too old.
    monkeypatch.setattr(store_module, "AUDIT_MAX_ROWS", 5)
    for i in range(12):
        store.record_audit(entry(at=2000.0 + i))
    assert store.audit_count() == 5
    assert [e.at for e in store.audit_entries(limit=10)] == [2011.0, 2010.0, 2009.0, 2008.0, 2007.0]
    monkeypatch.setattr(store_module, "_AUDIT_PRUNE_EVERY", 1)
    store.record_audit(entry(at=2011.0 + store_module.AUDIT_MAX_AGE_SECONDS + 1))
    assert [e.at for e in store.audit_entries(limit=10)] == [
        2011.0 + store_module.AUDIT_MAX_AGE_SECONDS + 1]
    store.close()


def test_the_audit_table_is_added_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteJobStore(path).close()
    with sqlite3.connect(path) as db:  # a database from before the audit trail
        db.execute("DROP TABLE audit")
    store = SqliteJobStore(path)
    assert store.audit_count() == 0
    store.record_audit(entry())
    store.close()
    store = SqliteJobStore(path)  # opening again changes nothing
    assert store.audit_count() == 1
    store.close()


def test_results_are_a_small_fixed_set() -> None:
    assert {result_of(s) for s in (200, 201, 202, 204, 401, 403, 421, 429, 404, 409, 413, 422,
                                   500, 503)} == set(AUDIT_RESULTS)


async def test_control_calls_are_audited_with_who_what_where(api_factory, grafana, caplog) -> None:
    api = await roles_api(api_factory, grafana.url, trusted_proxies=["127.0.0.1/32"])
    caplog.set_level(logging.INFO, logger="exporter.audit")
    forwarded = {"X-Forwarded-For": "198.51.100.4, 203.0.113.9"}
    assert (await api.post("/api/v1/queue/pause", headers={**cookie("editor-session"),
                                                            **forwarded}))[0] == 200
    config = (await api.get("/api/v1/config"))[1]["config"]
    assert (await api.call("PUT", "/api/v1/config", json=config,
                           headers=cookie("editor-session")))[0] == 403
    assert (await api.post("/api/v1/jobs/424242/cancel", headers=BEARER))[0] == 404
    assert (await api.post("/api/v1/queue/resume", headers={"Authorization": "Bearer wrong"}))[0] == 401
    assert (await api.post("/api/v1/queue/resume",
                           headers={"Origin": "https://evil.example", **BEARER}))[0] == 403
    await api.get("/api/v1/status")  # reads are not audited

    # Reading the trail needs the config role.
    assert (await api.get("/api/v1/audit", headers=cookie("editor-session")))[0] == 403
    status, page = await api.get("/api/v1/audit?limit=10", headers=cookie("admin-session"))
    assert status == 200
    got = [(e["action"], e["status"], e["result"], e["principal"], e["role"], e["code"], e["job_id"])
           for e in reversed(page["entries"])]
    assert got == [
        ("queue.pause", 200, "ok", "eddie", "Editor", None, None),
        ("config.update", 403, "forbidden", "eddie", "Editor", "forbidden", None),
        ("job.cancel", 404, "rejected", "token", None, "job_not_found", 424242),
        ("queue.resume", 401, "unauthorized", None, None, "unauthorized", None),
        ("queue.resume", 403, "forbidden", None, None, "origin_not_allowed", None),
    ]
    pause = page["entries"][-1]
    # The right-most address that is not a trusted proxy; the made-up one on the left is ignored.
    assert pause["address"] == "203.0.113.9" and pause["principal_kind"] == "grafana"
    assert pause["route"] == "/api/v1/queue/pause" and pause["method"] == "POST"
    assert page["entries"][0]["address"] == "127.0.0.1"
    # Paged by id.
    status, older = await api.get(f"/api/v1/audit?limit=2&before={page['entries'][1]['id']}",
                                  headers=BEARER)
    assert [e["action"] for e in older["entries"]] == ["job.cancel", "config.update"]
    assert older["next_before"] == older["entries"][-1]["id"]
    assert (await api.get("/api/v1/audit?limit=0", headers=BEARER))[0] == 422
    # One log line per audited call, without the token.
    lines = [r for r in caplog.records if r.getMessage() == "api call"]
    assert [(r.action, r.status, r.principal) for r in lines][:2] == [
        ("queue.pause", 200, "eddie"), ("config.update", 403, "eddie")]
    assert lines[0].client == "203.0.113.9" and lines[0].role == "Editor"
    assert not any(TOKEN in str(r.__dict__) for r in caplog.records)
    # And counted, every action and result there from the start.
    metrics = await (await api.client.get("/metrics")).text()
    series = "bulletproof_api_control_requests_total"
    for action, result, value in (("queue.pause", "ok", 1), ("config.update", "forbidden", 1),
                                  ("queue.resume", "unauthorized", 1), ("config.reset", "error", 0)):
        assert f'{series}{{action="{action}",result="{result}"}} {value:.1f}' in metrics
