"""The front door for real: Debian's nginx with the shipped template, the real monitor behind it, and
the in-tree Grafana stand-in as Grafana (its user API for the session check, and its other routes
standing for Grafana's UI and Grafana Live).

* grafana/nginx/default.conf.template is rendered the way the official nginx image does (envsubst
  of FRONTDOOR_PORT, GRAFANA_UPSTREAM, BULLETPROOF_UPSTREAM), here with loopback upstreams, and
  run as `nginx -c <conf> -p <prefix> -g 'daemon off; ...'` on a free port (`nginx -t` first).
* The monitor is `bulletproof run` with an API token (BULLETPROOF_API_TOKEN) and api.grafana.url
  pointing at the stand-in, where "editor-session" is an Editor and "viewer-session" a Viewer.
* Every action button of every dashboard is sent the way Grafana sends it (its method, URL with
  the /bulletproof/ prefix, body and headers, X-Grafana-Action: 1, row fields such as
  ${__data.fields.id} taken from the live API rows of that panel, jobs put in the state the button
  is for): with an Editor's session cookie it succeeds (2xx); without a session it is refused with
  401; with a Viewer's session with 403. The config form's requests (its JavaScript, run by
  Node.js) go the same way. A second nginx, rendered from the same template in front of a header
  echo server, shows what nginx passes upstream: the cookie and X-Grafana-Action as sent, the
  prefix stripped, X-Forwarded-For set, and never a token of its own.
* A second monitor set up like the compose stack's (reads need credentials, only nginx trusted
  for X-Forwarded-For, a public URL) takes every cell of the route x credential matrix of
  docs/security.md through nginx (no session, Viewer, Editor, Admin, token), refuses foreign
  Host (421) and Origin (403, before the WebSocket upgrade) headers, locks out an address that
  sends 120 wrong tokens each with a made-up X-Forwarded-For, and keeps an audit trail that
  `bulletproof audit` reads back.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as http_client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from exporter.security.permissions import ROUTES, RouteRule
from tests import promstack
from tests.grafana_standin import GrafanaStandin, GrafanaUser
from tests.test_access import CREDENTIALS, expected_cell
from tests.test_grafana_dashboards import (
    PROXY_PREFIX,
    all_actions,
    infinity_rows,
    infinity_targets,
    iter_panels,
    load_dashboards,
    render_nginx_template,
)
from tests.test_grafana_live import (
    Monitor,
    config_form_options,
    fetch_infinity,
    infinity_values,
    run_form,
    run_monitor,
    start_paused_long_job,
)

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="needs Debian's nginx (apt-get install nginx)")

EDITOR = "grafana_session=editor-session"
VIEWER = "grafana_session=viewer-session"
ADMIN = "grafana_session=admin-session"
SESSIONS = {
    "editor-session": GrafanaUser("erin", roles={1: "Editor"}),
    "viewer-session": GrafanaUser("vic", roles={1: "Viewer"}),
    "admin-session": GrafanaUser("ada", roles={1: "Admin"}),
}


# ---------------------------------------------------------------- servers in a background loop


class BackgroundServers:
    """The Grafana stand-in (plus a UI page, a Live WebSocket and a header echo standing for the
    rest of Grafana) and a plain header echo server, served from one event loop in a thread so
    that the tests can block on HTTP calls while the monitor asks the stand-in about sessions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="standin", daemon=True)
        self.thread.start()
        self.standin = GrafanaStandin(SESSIONS)
        router = self.standin.app.router
        router.add_get("/", self._ui)
        router.add_get("/api/live/ws", self._live)
        router.add_route("*", "/{tail:.*}", _echo)
        self.grafana_url = self._run(self.standin.start())
        echo = web.Application()
        echo.router.add_route("*", "/{tail:.*}", _echo)
        self._echo_runner = web.AppRunner(echo, access_log=None)
        self._run(self._echo_runner.setup())
        port = promstack.free_port()
        self._run(web.TCPSite(self._echo_runner, "127.0.0.1", port).start())
        self.echo_url = f"http://127.0.0.1:{port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    @staticmethod
    async def _ui(request: web.Request) -> web.Response:
        return web.Response(text="<html><title>Grafana</title>Grafana stand-in</html>",
                            content_type="text/html")

    @staticmethod
    async def _live(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("live:" + message.data)
        return ws

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._echo_runner.cleanup())
        with contextlib.suppress(Exception):
            self._run(self.standin.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"method": request.method, "path": request.path_qs,
                              "headers": {k.lower(): v for k, v in request.headers.items()},
                              "body_bytes": len(body)})


# ------------------------------------------------------------------------------------- nginx


@dataclass
class Nginx:
    url: str
    port: int
    workdir: Path
    process: subprocess.Popen

    def log(self) -> str:
        return (self.workdir / "error.log").read_text(errors="replace")[-3000:] \
            if (self.workdir / "error.log").exists() else ""


def nginx_main_conf(workdir: Path) -> Path:
    """The official image's frame around conf.d/*.conf, with every path inside `workdir`."""
    temp = workdir / "temp"
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / name).mkdir(parents=True, exist_ok=True)
    # Root starts the workers as an unprivileged user that cannot enter pytest's private tmp dirs.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = workdir / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {workdir / 'access.log'};\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    include {workdir / 'conf.d'}/*.conf;\n"
        "}\n")
    return main


@contextlib.contextmanager
def run_nginx(workdir: Path, grafana: str, bulletproof: str) -> Iterator[Nginx]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = promstack.free_port()
    (workdir / "conf.d").mkdir(exist_ok=True)
    (workdir / "conf.d" / "default.conf").write_text(render_nginx_template({
        "FRONTDOOR_PORT": f"127.0.0.1:{port}", "GRAFANA_UPSTREAM": grafana,
        "BULLETPROOF_UPSTREAM": bulletproof}))
    main = nginx_main_conf(workdir)
    base = [NGINX, "-c", str(main), "-p", str(workdir), "-e", str(workdir / "error.log")]
    directives = f"pid {workdir / 'nginx.pid'}; error_log {workdir / 'error.log'} info;"
    check = subprocess.run([*base, "-t", "-g", directives], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}\n{check.stdout}"
    process = subprocess.Popen([*base, "-g", f"daemon off; {directives}"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Nginx(url=f"http://127.0.0.1:{port}", port=port, workdir=workdir, process=process)
    try:
        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"nginx exited with {process.returncode}:\n{server.log()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        promstack.wait_until(listening, 15, 0.05)
        yield server
    finally:
        promstack.stop_process(process, 10)


# -------------------------------------------------------------------------------------- HTTP


def http(method: str, url: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 15) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method=method)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, got = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, dict(exc.headers)
    try:
        data: Any = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode(errors="replace")
    return status, data, got


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# ----------------------------------------------------------------------------------- fixture


@dataclass
class Door:
    servers: BackgroundServers
    monitor: Monitor
    nginx: Nginx
    echo_nginx: Nginx


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, clip_cache) -> Iterator[Door]:
    from bulletproof.samples import make_corrupt_clip

    root = tmp_path_factory.mktemp("frontdoor")
    servers = BackgroundServers()
    try:
        with run_monitor(root / "monitor", grafana_url=servers.grafana_url) as monitor:
            grafana = servers.grafana_url.removeprefix("http://")
            echo = servers.echo_url.removeprefix("http://")
            with run_nginx(root / "nginx", grafana, f"127.0.0.1:{monitor.port}") as nginx, \
                    run_nginx(root / "nginx-echo", grafana, echo) as echo_nginx:
                short = clip_cache(seconds=1.0)
                # The long job first, on a fresh worker slot (see start_paused_long_job).
                start_paused_long_job(monitor, clip_cache(seconds=40.0, size="480x360"))
                for name in ("alpha.mp4", "bravo.mp4"):
                    monitor.drop(short, name)
                for name in ("broken-1.mp4", "broken-2.mp4", "broken-3.mp4"):
                    monitor.drop(make_corrupt_clip(root / name), name)
                monitor.wait_for("2 completed, 3 failed", lambda: (
                    len(monitor.jobs(state="completed")) >= 2 and len(monitor.jobs(state="failed")) >= 3), 60)
                assert monitor.call("POST", "/api/v1/queue/pause")[0] == 200
                for name in ("charlie.mp4", "delta.mp4", "echo.mp4"):
                    monitor.drop(short, name)
                monitor.wait_for("3 queued", lambda: len(monitor.jobs(state="queued")) >= 3, 30)
                yield Door(servers=servers, monitor=monitor, nginx=nginx, echo_nginx=echo_nginx)
    finally:
        servers.close()


# ------------------------------------------------------------------------------------- tests


def test_grafana_is_served_at_the_root_with_live_websockets(door: Door) -> None:
    status, body, _ = http("GET", door.nginx.url + "/")
    assert status == 200 and "Grafana stand-in" in body
    status, body, _ = http("GET", door.nginx.url + "/d/bulletproof-overview?orgId=1",
                           headers={"Cookie": EDITOR})
    assert status == 200 and body["path"] == "/d/bulletproof-overview?orgId=1"
    assert body["headers"]["cookie"] == EDITOR
    assert body["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert body["headers"]["host"] == f"127.0.0.1:{door.nginx.port}"

    async def live() -> str:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(door.nginx.url + "/api/live/ws") as ws:
                await ws.send_str("ping")
                message = await ws.receive(timeout=10)
                return message.data

    assert asyncio.run(asyncio.wait_for(live(), 15)) == "live:ping"


def test_the_api_is_served_under_the_prefix(door: Door) -> None:
    status, body, headers = http("GET", door.nginx.url + "/bulletproof/api/v1/status")
    assert status == 200 and body["paused"] is True
    assert headers.get("X-Content-Type-Options") == "nosniff"
    status, _, _ = http("GET", door.nginx.url + "/bulletproof/healthz")
    assert status == 200
    # Prometheus scrapes the monitor directly; the front door does not publish /metrics.
    status, _, _ = http("GET", door.nginx.url + "/bulletproof/metrics")
    assert status == 404
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(door.nginx.url + "/bulletproof", timeout=10)
    assert redirect.value.code == 301 and redirect.value.headers["Location"].endswith("/bulletproof/")

    async def stream() -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(door.nginx.url + "/bulletproof/ws/updates") as ws:
                message = await ws.receive(timeout=10)
                return json.loads(message.data)

    assert asyncio.run(asyncio.wait_for(stream(), 15))["type"] == "snapshot"


def test_nginx_passes_the_browser_credentials_and_never_adds_its_own(door: Door) -> None:
    url = door.echo_nginx.url + "/bulletproof/api/v1/queue/pause"
    status, seen, _ = http("POST", url, body=b"{}", headers={
        "Cookie": EDITOR, "X-Grafana-Action": "1", "Content-Type": "application/json",
        "X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    assert seen["method"] == "POST" and seen["path"] == "/api/v1/queue/pause"  # prefix stripped
    headers = seen["headers"]
    assert headers["cookie"] == EDITOR and headers["x-grafana-action"] == "1"
    # The client's claim is kept, nginx's own view of the peer appended last.
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert "authorization" not in headers and "x-bulletproof-token" not in headers
    status, seen, _ = http("POST", url, body=b"{}", headers={"Content-Type": "application/json"})
    assert "authorization" not in seen["headers"] and "cookie" not in seen["headers"]
    assert "x-grafana-action" not in seen["headers"] and "x-bulletproof-token" not in seen["headers"]
    # And for real: through the door to the monitor, a request without credentials is refused
    # (it would pass if nginx added a token).
    status, body, _ = http("POST", door.nginx.url + "/bulletproof/api/v1/queue/pause", body=b"{}",
                           headers={"Content-Type": "application/json", "X-Grafana-Action": "1"})
    assert status == 401 and body["error"]["code"] == "unauthorized", body


def test_bodies_over_the_limit_are_refused_at_the_door(door: Door) -> None:
    status, _, _ = http("PUT", door.echo_nginx.url + "/bulletproof/api/v1/config",
                        body=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                        headers={"Cookie": EDITOR, "Content-Type": "application/json"})
    assert status == 413


def test_a_cookie_without_grafanas_action_header_is_refused_as_csrf(door: Door) -> None:
    status, body, _ = http("POST", door.nginx.url + "/bulletproof/api/v1/queue/pause", body=b"x",
                           headers={"Cookie": EDITOR, "Content-Type": "text/plain"})
    assert status == 403 and body["error"]["code"] == "csrf", body


# The job state each button is for (the API answers 409 in any other state).
NEEDS = {"pause": "processing", "resume": "paused", "prioritize": "queued", "retry": "failed",
         "cancel": "queued"}
ORDER = ["pause", "resume", "cancel-running", "prioritize", "retry", "cancel", "DELETE",
         "retry-failed", "queue/pause", "queue/clear", "queue/resume"]


def _verb(panel: dict, action: dict) -> str:
    fetch = action["fetch"]
    if fetch["method"] == "DELETE":
        return "DELETE"
    path = fetch["url"]
    for queue_action in ("queue/pause", "queue/resume", "queue/clear", "retry-failed"):
        if path.endswith(queue_action):
            return queue_action
    verb = path.rsplit("/", 1)[-1]
    if verb == "cancel" and "job_id" in path:
        return "cancel-running"  # the Running jobs table: the row is a job a worker holds
    return verb


def _ensure(monitor: Monitor, state: str) -> None:
    """Put a job in `state` with the token (test set-up, not the button under test)."""
    if monitor.jobs(state=state):
        return
    if state in ("processing", "paused"):
        other = "paused" if state == "processing" else "processing"
        (job,) = monitor.jobs(state=other)
        verb = "resume" if state == "processing" else "pause"
        assert monitor.call("POST", f"/api/v1/jobs/{job['id']}/{verb}")[0] == 200
    elif state == "queued":
        done = monitor.jobs(state="completed")
        assert monitor.call("POST", f"/api/v1/jobs/{done[0]['id']}/retry")[0] == 200
    elif state == "failed":
        pytest.fail("no failed job left to retry")
    monitor.wait_for(f"a {state} job", lambda: monitor.jobs(state=state), 10)


def _row_for(door: Door, dashboard: dict, panel: dict, state: str | None) -> dict[str, Any]:
    """A row of this panel, as the live API gives it, for a job in `state`."""
    targets = [t for p, t in infinity_targets(dashboard) if p["id"] == panel["id"]]
    monitor = door.monitor
    if not targets:  # the Prometheus-backed Running jobs table: rows are the busy slots
        (job,) = [j for j in monitor.jobs() if j["state"] in ("processing", "paused")]
        return {"job_id": job["id"], "file": job["filename"]}
    values = infinity_values(dashboard, time.time())
    _, body = fetch_infinity(monitor, targets[0], values)
    rows = infinity_rows(body, targets[0])
    if state is None:
        return rows[0] if rows else {}
    states = {j["id"]: j["state"] for j in monitor.jobs()}
    for row in rows:
        if states.get(row["id"]) == state:
            return row
    raise AssertionError(f"{panel['title']}: no row in state {state}: {rows}")


def _send(door: Door, action: dict, url: str, cookie: str | None) -> tuple[int, Any]:
    fetch = action["fetch"]
    headers = dict(fetch.get("headers", []))
    headers["X-Grafana-Action"] = "1"  # Grafana adds it to every action request
    if cookie:
        headers["Cookie"] = cookie
    body = None if fetch["method"] == "GET" else fetch.get("body", "{}").encode()
    status, data, _ = http(fetch["method"], door.nginx.url + url, body=body, headers=headers)
    return status, data


def test_every_action_button_through_the_front_door(door: Door) -> None:
    monitor = door.monitor
    dashboards = {d["uid"]: d for d in load_dashboards().values()}
    actions = [(uid, panel, action, _verb(panel, action)) for uid, panel, action in all_actions()]
    assert len(actions) >= 15
    actions.sort(key=lambda item: ORDER.index(item[3]))
    report = []
    for uid, panel, action, verb in actions:
        where = f"{uid} / {panel['title']} / {action['title']}"
        state = "completed" if verb == "DELETE" else NEEDS.get(verb)
        if verb == "cancel-running":
            state = None
        if state:
            _ensure(monitor, state)
        fields = re.findall(r"\$\{__data\.fields\.(\w+)\}", action["fetch"]["url"])
        row = _row_for(door, dashboards[uid], panel, state) if fields else {}
        url = re.sub(r"\$\{__data\.fields\.(\w+)\}", lambda m, row=row: str(row[m.group(1)]),
                     action["fetch"]["url"])
        assert url.startswith(PROXY_PREFIX + "/api/v1/") and "${" not in url, url

        status, body = _send(door, action, url, None)
        assert status == 401, f"{where}: without a session: {status} {body}"
        status, body = _send(door, action, url, VIEWER)
        assert status == 403 and body["error"]["details"]["role"] == "Viewer", \
            f"{where}: viewer: {status} {body}"
        status, body = _send(door, action, url, EDITOR)
        assert 200 <= status < 300, f"{where}: editor: {status} {body}"
        if verb == "retry-failed":
            assert body["retried"] >= 1, body
        report.append(f"{where}: {action['fetch']['method']} {url} -> {status}")
    # The buttons did what they say.
    assert monitor.get("/api/v1/status")["paused"] is False  # Resume queue came last
    assert not monitor.jobs(state="failed")  # Retry job / Retry all failed
    print("\n".join(report))


def test_job_detail_links_open_through_the_front_door(door: Door) -> None:
    jobs = load_dashboards()["jobs"]
    table = next(p for p in iter_panels(jobs) if p["title"] == "Jobs")
    (link,) = next(o for o in table["fieldConfig"]["overrides"]
                   if o["matcher"]["options"] == "id")["properties"][0]["value"]
    job = door.monitor.jobs()[0]
    url = link["url"].replace("${__data.fields.id}", str(job["id"]))
    status, body, _ = http("GET", door.nginx.url + url, headers={"Cookie": VIEWER})
    assert status == 200 and body["id"] == job["id"] and "stderr_tail" in body


def test_the_config_form_through_the_front_door(door: Door) -> None:
    options = config_form_options()
    monitor = door.monitor
    before = monitor.get("/api/v1/config")["config"]

    (anonymous,) = run_form(options, [{"do": "update", "values": {}}], base=door.nginx.url)
    assert anonymous["error"] and "Cannot validate" in anonymous["error"], anonymous
    assert [(r["method"], r["status"]) for r in anonymous["requests"]] == [("GET", 200), ("POST", 401)]

    viewer_initial, viewer_update = run_form(options, [
        {"do": "initial"}, {"do": "update", "values": {"max_workers": 4}}],
        base=door.nginx.url, headers={"Cookie": VIEWER})
    assert viewer_initial["error"] is None
    assert viewer_initial["values"]["max_workers"] == before["max_workers"]
    assert viewer_update["error"] and "Viewer" in viewer_update["error"], viewer_update
    assert monitor.get("/api/v1/config")["config"]["max_workers"] == before["max_workers"]

    # An Editor may press the buttons but not change the config: refused at the dry run already.
    editor_initial, editor_update, editor_reset = run_form(options, [
        {"do": "initial"}, {"do": "update", "values": {"max_workers": 4}}, {"do": "reset"}],
        base=door.nginx.url, headers={"Cookie": EDITOR})
    assert editor_initial["error"] is None
    assert editor_update["error"] and "Admin" in editor_update["error"], editor_update
    assert [(r["method"], r["status"]) for r in editor_update["requests"]] == [("GET", 200), ("POST", 403)]
    assert editor_reset["error"], editor_reset
    assert monitor.get("/api/v1/config")["config"]["max_workers"] == before["max_workers"]

    loaded, saved, refused, reset = run_form(options, [
        {"do": "initial"},
        {"do": "update", "values": {"max_workers": 4}},
        {"do": "update", "values": {"stability_seconds": -1}},
        {"do": "reset"},
    ], base=door.nginx.url, headers={"Cookie": ADMIN})
    assert loaded["error"] is None
    assert saved["error"] is None, saved
    assert [(r["method"], r["url"], r["status"]) for r in saved["requests"]][:3] == [
        ("GET", "/bulletproof/api/v1/config", 200),
        ("POST", "/bulletproof/api/v1/config/validate", 200),
        ("PUT", "/bulletproof/api/v1/config", 200)]
    assert refused["error"] and "stability_seconds" in refused["error"], refused
    assert reset["error"] is None, reset
    assert [(r["method"], r["url"], r["status"]) for r in reset["requests"]][0] == (
        "POST", "/bulletproof/api/v1/config/reset", 200)
    assert reset["notes"][0][:2] == ["success", "Config reset"]
    assert monitor.get("/api/v1/config")["config"]["max_workers"] == 2  # the defaults


# ------------------------------------------------------------- access through the front door
#
# A second monitor, set up like the compose stack's (reads need credentials, the default roles,
# only the front door trusted for X-Forwarded-For, a public URL), with no jobs: every cell of the
# route x credential matrix is sent through nginx, with inputs that change nothing when let
# through (unknown job ids, an invalid config, an oversized reset body).

PUBLIC_HOST = "frontdoor.example"
GATE_BODY_LIMIT = 1024


@dataclass
class Gate:
    monitor: Monitor
    nginx: Nginx


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, door: Door) -> Iterator[Gate]:
    root = tmp_path_factory.mktemp("gate")
    # The compose stack's budgets: 600 requests a minute per client and route, 100 failures.
    api = {"require_token_for_reads": True, "rate_limit_per_minute": 600,
           "trusted_proxies": ["127.0.0.1/32"], "public_url": f"http://{PUBLIC_HOST}:3000/",
           "max_body_bytes": GATE_BODY_LIMIT}
    with run_monitor(root / "monitor", grafana_url=door.servers.grafana_url,
                     api_settings=api) as monitor:
        grafana = door.servers.grafana_url.removeprefix("http://")
        with run_nginx(root / "nginx", grafana, f"127.0.0.1:{monitor.port}") as nginx:
            yield Gate(monitor=monitor, nginx=nginx)


def _credential_headers(credential: str, token: str) -> dict[str, str]:
    if credential == "token":
        return {"Authorization": f"Bearer {token}"}
    if credential == "none":
        return {}
    return {"Cookie": f"grafana_session={credential.lower()}-session", "X-Grafana-Action": "1"}


def _cell_request(rule: RouteRule) -> tuple[str, bytes | None]:
    """A URL path and body for the rule that changes nothing when let through."""
    path = rule.path.replace("{id}", "987654321").replace("{name}", "no-such-node")
    if rule.path == "/api/v1/rules/match":
        path += "?path=a.mp4"
    if rule.path == "/api/v1/jobs" and rule.method == "POST":
        return path, json.dumps({"path": "/not/a/watch/folder/x.mp4"}).encode()
    if rule.path.startswith("/api/v1/config") and rule.path != "/api/v1/config/reset" \
            and rule.method != "GET":
        return path, json.dumps({"max_workers": 0}).encode()  # invalid: 422, or valid: false
    if rule.path == "/api/v1/config/reset":
        return path, b"{" + b" " * GATE_BODY_LIMIT + b"}"  # past api.max_body_bytes: 413 if let in
    return path, None if rule.method == "GET" else b"{}"


def test_every_cell_of_the_access_matrix_through_the_front_door(gate: Gate) -> None:
    before = gate.monitor.get("/api/v1/config")["config"]
    report = []
    for rule in ROUTES:
        path, body = _cell_request(rule)
        for credential in CREDENTIALS:
            expected = expected_cell(rule.permission, credential)
            headers = {"Content-Type": "application/json",
                       **_credential_headers(credential, gate.monitor.token)}
            if rule.path == "/metrics":  # not published by the front door: straight to the monitor
                url = gate.monitor.url + path
            else:
                url = gate.nginx.url + PROXY_PREFIX + path
            status, data, _ = http(rule.method, url, body=body, headers=headers)
            where = f"{rule.method} {rule.path} as {credential}"
            if expected == "yes":
                assert status not in (401, 403) and status < 500, f"{where}: {status} {data}"
            else:
                assert status == int(expected), f"{where}: {status} {data}"
                if status == 403:
                    assert data["error"]["code"] == "forbidden"
                    assert data["error"]["details"]["permission"] == rule.permission.value
                    assert data["error"]["details"]["role"] == credential
            report.append(f"{where}: {status}")
    # The let-through calls changed nothing.
    assert gate.monitor.get("/api/v1/config")["config"] == before
    assert len(report) == len(ROUTES) * len(CREDENTIALS)
    print("\n".join(report))


def test_foreign_hosts_and_origins_are_refused_at_the_door(gate: Gate) -> None:
    token = {"Authorization": f"Bearer {gate.monitor.token}"}
    status_url = gate.nginx.url + PROXY_PREFIX + "/api/v1/status"
    # DNS rebinding: the attacker's name reaches the monitor through nginx (server_name _).
    status, body, _ = http("GET", status_url, headers={"Host": "attacker.example", **token})
    assert status == 421 and body["error"]["code"] == "host_not_allowed", body
    # The front door's public name, and loopback, are allowed.
    for host in (f"{PUBLIC_HOST}:3000", f"127.0.0.1:{gate.nginx.port}", "localhost"):
        status, body, _ = http("GET", status_url, headers={"Host": host, **token})
        assert status == 200, (host, status, body)
    status, body, _ = http("GET", status_url, headers={"Origin": "https://attacker.example", **token})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"

    async def stream(origin: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.get(gate.nginx.url + PROXY_PREFIX + "/ws/updates", headers={
                    **token, "Origin": origin, "Connection": "Upgrade", "Upgrade": "websocket",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
                return resp.status, await resp.content.read(4096) if resp.status != 101 else b""

    status, raw = asyncio.run(asyncio.wait_for(stream("https://attacker.example"), 15))
    assert status == 403 and b"origin_not_allowed" in raw and b"snapshot" not in raw

    async def snapshot(origin: str) -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(gate.nginx.url + PROXY_PREFIX + "/ws/updates",
                                          headers={**token, "Origin": origin}) as ws:
                return json.loads((await ws.receive(timeout=10)).data)

    first = asyncio.run(asyncio.wait_for(snapshot(f"http://{PUBLIC_HOST}:3000"), 15))
    assert first["type"] == "snapshot"


def _from(source: str, method: str, url: str, headers: dict[str, str],
          body: bytes | None = None) -> tuple[int, Any]:
    """One request to nginx from the local address `source` (a client nginx sees as that)."""
    parts = urllib.parse.urlsplit(url)
    connection = http_client.HTTPConnection(parts.hostname, parts.port, timeout=15,
                                            source_address=(source, 0))
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                           body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def test_spoofed_forwarded_for_does_not_sidestep_the_lockout(gate: Gate) -> None:
    url = gate.nginx.url + PROXY_PREFIX + "/api/v1/queue/pause"
    statuses = []
    for i in range(120):
        # Each attempt claims another address; nginx appends the real one (127.0.0.2) last.
        status, _ = _from("127.0.0.2", "POST", url, {
            "Authorization": f"Bearer wrong-{i}", "X-Forwarded-For": f"198.51.100.{i}",
            "Content-Type": "application/json"}, b"{}")
        statuses.append(status)
    assert statuses[:100] == [401] * 100, statuses
    assert set(statuses[100:]) == {429}, statuses
    # Even the right token from that address waits now; another client is not locked out.
    right = {"Authorization": f"Bearer {gate.monitor.token}", "Content-Type": "application/json"}
    assert _from("127.0.0.2", "POST", url, {**right, "X-Forwarded-For": "192.0.2.99"}, b"{}")[0] == 429
    assert _from("127.0.0.3", "POST", url, right, b"{}")[0] == 200
    audit = gate.monitor.call("GET", "/api/v1/audit?limit=30")[1]["entries"]
    locked = [e for e in audit if e["result"] == "rate_limited"]
    assert locked and {e["address"] for e in locked} == {"127.0.0.2"}


def test_the_audit_trail_through_the_front_door_and_the_cli(gate: Gate) -> None:
    pause = gate.nginx.url + PROXY_PREFIX + "/api/v1/queue/pause"
    json_headers = {"Content-Type": "application/json", "X-Grafana-Action": "1"}
    status, _ = _from("127.0.0.4", "POST", pause, {**json_headers, "Cookie": EDITOR}, b"{}")
    assert status == 200
    config = gate.monitor.get("/api/v1/config")["config"]
    status, body = _from("127.0.0.4", "PUT", gate.nginx.url + PROXY_PREFIX + "/api/v1/config",
                         {**json_headers, "Cookie": EDITOR}, json.dumps(config).encode())
    assert status == 403 and body["error"]["details"]["required_role"] == "Admin"

    env = {**os.environ, "BULLETPROOF_API_TOKEN": gate.monitor.token}
    command = [sys.executable, "-m", "bulletproof", "audit", "--url", gate.nginx.url + PROXY_PREFIX,
               "--limit", "2"]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    refused, paused = json.loads(done.stdout)["entries"]
    assert (paused["action"], paused["status"], paused["result"]) == ("queue.pause", 200, "ok")
    assert (paused["principal"], paused["role"], paused["address"]) == ("erin", "Editor", "127.0.0.4")
    assert (refused["action"], refused["status"], refused["result"], refused["code"]) == (
        "config.update", 403, "forbidden", "forbidden")
    assert (refused["principal"], refused["role"], refused["address"]) == ("erin", "Editor", "127.0.0.4")
    table = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "config.update" in table.stdout and "erin (Editor)" in table.stdout
    assert "forbidden (forbidden)" in table.stdout and "older: --before" in table.stdout
    # An Editor may not read the trail; without the token the CLI says so (exit 5).
    status, _ = _from("127.0.0.4", "GET", gate.nginx.url + PROXY_PREFIX + "/api/v1/audit",
                      {"Cookie": EDITOR})
    assert status == 403
    denied = subprocess.run(command, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in env.items() if k != "BULLETPROOF_API_TOKEN"})
    assert denied.returncode == 5 and "error:" in denied.stderr
    # Counted too.
    metrics = urllib.request.urlopen(gate.monitor.url + "/metrics", timeout=10).read().decode()
    assert re.search(r'bulletproof_api_control_requests_total\{action="config.update",'
                     r'result="forbidden"\} [1-9]', metrics)
