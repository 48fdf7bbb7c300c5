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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests import promstack
from tests.grafana_standin import GrafanaStandin, GrafanaUser
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
SESSIONS = {
    "editor-session": GrafanaUser("erin", roles={1: "Editor"}),
    "viewer-session": GrafanaUser("vic", roles={1: "Viewer"}),
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

    loaded, saved, refused, reset = run_form(options, [
        {"do": "initial"},
        {"do": "update", "values": {"max_workers": 4}},
        {"do": "update", "values": {"stability_seconds": -1}},
        {"do": "reset"},
    ], base=door.nginx.url, headers={"Cookie": EDITOR})
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
