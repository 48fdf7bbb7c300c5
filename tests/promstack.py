"""Run the real Prometheus and Alertmanager around a test, on free loopback ports.

A plain module (not a conftest) that end-to-end tests import:

    from tests import promstack   # or `import promstack` with tests/ on sys.path

    with promstack.webhook_receiver() as hook, \\
         promstack.run_alertmanager(tmp_path / "am", webhook_url=hook.url) as am, \\
         promstack.run_prometheus(tmp_path / "prom", targets=["127.0.0.1:8080"],
                                  alertmanager_url=am.url) as prom:
        hook.wait_for_alert("BulletproofDown", status="firing", timeout=30)
        promstack.query(prom.url, 'up{job="bulletproof"}')

What it starts:

* ``run_prometheus``: Debian's ``prometheus`` with a generated config: the ``bulletproof`` scrape job
  on the given targets (plus Prometheus scraping itself as job ``prometheus``), scrape and
  evaluation every second, the *test copy* of the shipped rules (see ``write_scaled_rules``), alerts
  sent to the given Alertmanager; storage in a temporary folder. Waits until ``/-/ready``.
* ``run_alertmanager``: Debian's ``prometheus-alertmanager`` with a config generated from the shipped
  ``prometheus/alertmanager.yml``: same routes, grouping and inhibit rules, but every receiver
  replaced by one webhook to the URL the test gives (the payload's ``receiver`` field still tells
  which route matched), ``group_wait``/``group_interval`` shortened, clustering off. Waits until
  ``/-/ready``.
* ``webhook_receiver``: a small HTTP server (thread) that records what Alertmanager posts.

The test copy of the rules comes from the generator of ``prometheus/rules/*.yml``
(``exporter.monitoring``) with a time scale: every ``for:``, range window, offset and threshold that
is a length of time divided by ``factor``; nothing is edited by hand. Windows are kept at
``min_range`` or more so that ``rate()`` still sees several samples.

Every process is terminated (then killed) on exit; its output goes to a log file whose tail is put
into the exception when it fails to start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from exporter.monitoring.config import DEFAULT
from exporter.monitoring.durations import format_duration, parse_duration
from exporter.monitoring.generate import scaled_rule_files

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


PROMETHEUS_BIN = _binary("prometheus")
PROMTOOL_BIN = _binary("promtool")
ALERTMANAGER_BIN = _binary("prometheus-alertmanager", "alertmanager")
AMTOOL_BIN = _binary("amtool")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The shortened test copy of the rules
# --------------------------------------------------------------------------------------------


def write_scaled_rules(dest: Path, factor: float = 60.0, *, min_range: float = 4.0) -> list[Path]:
    """Write the test copy of the shipped rules into ``dest``; returns the files written.

    The copy comes from the same generator as prometheus/rules/ (exporter.monitoring) with every
    length of time divided by ``factor``: 60 turns minutes into seconds (``for: 2m`` becomes
    ``2s``, ``[15m]`` becomes ``[15s]``, a 300 s stall threshold becomes 5 s).
    """
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in scaled_rule_files(DEFAULT, factor, min_range=min_range).items():
        target = dest / name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running Prometheus or Alertmanager."""

    name: str
    url: str
    port: int
    config_path: Path
    log_path: Path
    process: subprocess.Popen
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self, tail: int = 4000) -> str:
        """The end of the process's output (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.process.returncode} before it was "
                               f"ready:\n{server.log()}")
        try:
            status, _ = _http_get(f"{server.url}/-/ready", timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{server.name} not ready after {timeout}s ({last}):\n{server.log()}")


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> int | None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


@contextlib.contextmanager
def _spawn(name: str, argv: list[str], *, url: str, port: int, config_path: Path, workdir: Path,
           ready_timeout: float) -> Iterator[Server]:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=workdir)
    server = Server(name=name, url=url, port=port, config_path=config_path, log_path=log_path,
                    process=process, workdir=workdir)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        stop_process(process)


def prometheus_config(*, targets: Sequence[str], rule_files: Sequence[Path], port: int,
                      alertmanager_url: str | None = None, scrape_interval: str = "1s",
                      evaluation_interval: str = "1s", self_scrape: bool = True,
                      sd_urls: Sequence[str] = ()) -> dict:
    """The Prometheus config that ``run_prometheus`` writes (``sd_urls``: the ``bulletproof`` job
    also discovers its targets through these HTTP SD URLs, refreshed every second)."""
    interval = parse_duration(scrape_interval)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": format_duration(max(0.5, interval * 0.8)),
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "bulletproof", "metrics_path": "/metrics",
             "static_configs": [{"targets": list(targets)}]},
        ],
    }
    if sd_urls:
        config["scrape_configs"][0]["http_sd_configs"] = [
            {"url": url, "refresh_interval": "1s"} for url in sd_urls]
        # As prometheus/fleet.yml: a discovered node's series under its node name.
        config["scrape_configs"][0]["relabel_configs"] = [
            {"source_labels": ["__meta_bulletproof_node"], "target_label": "instance"}]
    if self_scrape:
        config["scrape_configs"].append(
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]})
    if alertmanager_url:
        parsed = urllib.parse.urlsplit(alertmanager_url)
        am: dict[str, Any] = {"api_version": "v2", "scheme": parsed.scheme or "http",
                              "static_configs": [{"targets": [parsed.netloc]}]}
        if parsed.path.strip("/"):
            am["path_prefix"] = parsed.path
        config["alerting"] = {"alertmanagers": [am]}
    return config


@contextlib.contextmanager
def run_prometheus(workdir: Path, *, targets: Sequence[str] = (), alertmanager_url: str | None = None,
                   factor: float = 60.0, min_range: float = 4.0,
                   rule_files: Sequence[Path] | None = None, scrape_interval: str = "1s",
                   evaluation_interval: str = "1s", resend_delay: str = "1s",
                   extra_args: Sequence[str] = (), ready_timeout: float = 30.0,
                   sd_urls: Sequence[str] = ()) -> Iterator[Server]:
    """Start the real ``prometheus`` scraping ``targets`` (job ``bulletproof``) with the test rules.

    ``rule_files`` defaults to a fresh test copy of the shipped rules, scaled by ``factor``
    (``server.extra["rule_files"]`` lists them). ``resend_delay`` is how often firing alerts are
    re-sent to Alertmanager (Prometheus's default, 1m, is too slow for a test).
    """
    if not PROMETHEUS_BIN:
        raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if rule_files is None:
        rule_files = write_scaled_rules(workdir / "rules", factor, min_range=min_range)
    port = free_port()
    config = prometheus_config(targets=targets, rule_files=rule_files, port=port,
                               alertmanager_url=alertmanager_url, scrape_interval=scrape_interval,
                               evaluation_interval=evaluation_interval, sd_urls=sd_urls)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [PROMETHEUS_BIN, f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}",
            f"--rules.alert.resend-delay={resend_delay}",
            "--web.enable-lifecycle",
            "--log.level=info", *extra_args]
    with _spawn("prometheus", argv, url=f"http://127.0.0.1:{port}", port=port,
                config_path=config_path, workdir=workdir, ready_timeout=ready_timeout) as server:
        server.extra["rule_files"] = list(rule_files)
        yield server


def _shorten_route(route: dict, group_wait: str, group_interval: str, repeat_interval: str,
                   root: bool) -> None:
    for key, value in (("group_wait", group_wait), ("group_interval", group_interval),
                       ("repeat_interval", repeat_interval)):
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []) or []:
        _shorten_route(child, group_wait, group_interval, repeat_interval, root=False)


def alertmanager_test_config(webhook_url: str, *, group_wait: str = "1s", group_interval: str = "1s",
                             repeat_interval: str = "1h", source: Path = ALERTMANAGER_CONFIG) -> dict:
    """The shipped Alertmanager config with every receiver redirected to ``webhook_url``.

    Routes, matchers, grouping and inhibit rules are kept as shipped; the timers are shortened;
    the global e-mail/Slack settings (which name secret files) are dropped; template paths are made
    absolute so the shipped templates still load.
    """
    config = yaml.safe_load(source.read_text())
    config["global"] = {k: v for k, v in (config.get("global") or {}).items()
                        if not k.startswith(("smtp_", "slack_", "opsgenie_", "pagerduty_",
                                             "victorops_", "wechat_", "telegram_", "webex_"))}
    config["templates"] = [str((source.parent / t).resolve()) for t in config.get("templates", [])]
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        for r in config["receivers"]
    ]
    _shorten_route(config["route"], group_wait, group_interval, repeat_interval, root=True)
    return config


@contextlib.contextmanager
def run_alertmanager(workdir: Path, *, webhook_url: str, group_wait: str = "1s",
                     group_interval: str = "1s", repeat_interval: str = "1h",
                     extra_args: Sequence[str] = (), ready_timeout: float = 30.0) -> Iterator[Server]:
    """Start the real ``prometheus-alertmanager`` with the test copy of the shipped config."""
    if not ALERTMANAGER_BIN:
        raise RuntimeError("alertmanager is not installed (apt-get install prometheus-alertmanager)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = alertmanager_test_config(webhook_url, group_wait=group_wait,
                                      group_interval=group_interval, repeat_interval=repeat_interval)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [ALERTMANAGER_BIN, f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={url}",
            "--cluster.listen-address=",
            "--log.level=info", *extra_args]
    with _spawn("alertmanager", argv, url=url, port=port, config_path=config_path,
                workdir=workdir, ready_timeout=ready_timeout) as server:
        yield server


# --------------------------------------------------------------------------------------------
# Webhook receiver
# --------------------------------------------------------------------------------------------


class WebhookReceiver:
    """Records the JSON payloads Alertmanager posts (one per notification)."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {"_invalid": body.decode(errors="replace")}
                payload["_path"] = self.path
                payload["_received_at"] = time.time()
                with receiver._cond:
                    receiver.payloads.append(payload)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook",
                                        daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def alerts(self) -> list[dict]:
        """Every alert received so far, each with the payload's ``receiver`` added."""
        with self._cond:
            return [dict(alert, receiver=p.get("receiver")) for p in self.payloads
                    for alert in p.get("alerts", [])]

    def find(self, alertname: str, *, status: str | None = None, **labels: str) -> list[dict]:
        """Received alerts with this name, status (firing/resolved) and labels."""
        out = []
        for alert in self.alerts():
            lab = alert.get("labels", {})
            if lab.get("alertname") != alertname:
                continue
            if status is not None and alert.get("status") != status:
                continue
            if all(lab.get(k) == v for k, v in labels.items()):
                out.append(alert)
        return out

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on each payload); returns its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"webhook: condition not met after {timeout}s; received: "
                                       f"{json.dumps(self.summary(), indent=1)}")
                self._cond.wait(min(remaining, 0.5))

    def wait_for_alert(self, alertname: str, *, status: str = "firing", timeout: float = 30.0,
                       **labels: str) -> dict:
        """The first received alert that matches; raises TimeoutError with what was received."""
        return self.wait_for(lambda: next(iter(self.find(alertname, status=status, **labels)), None),
                             timeout)

    def summary(self) -> list[str]:
        return [f"{a.get('receiver')}: {a.get('status')} {a.get('labels')}" for a in self.alerts()]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A running ``WebhookReceiver`` on a free loopback port (``.url`` to give Alertmanager)."""
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.close()


# --------------------------------------------------------------------------------------------
# HTTP API helpers
# --------------------------------------------------------------------------------------------


def _get_json(url: str, timeout: float = 5.0) -> Any:
    status, body = _http_get(url, timeout)
    data = json.loads(body or b"null")
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}: {data}")
    return data


def query(prom_url: str, expr: str, at: float | None = None) -> list[dict]:
    """Instant query; returns the result list (``[{"metric": {...}, "value": [ts, "v"]}]``).

    Raises RuntimeError with Prometheus's error when the expression does not evaluate.
    """
    params = {"query": expr}
    if at is not None:
        params["time"] = str(at)
    data = _get_json(f"{prom_url}/api/v1/query?{urllib.parse.urlencode(params)}")
    if data.get("status") != "success":
        raise RuntimeError(f"query {expr!r}: {data}")
    result = data["data"]["result"]
    if data["data"]["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return result


def query_value(prom_url: str, expr: str) -> float | None:
    """The value of a single-series instant query, None when it returns nothing."""
    result = query(prom_url, expr)
    if not result:
        return None
    return float(result[0]["value"][1])


def rule_groups(prom_url: str) -> list[dict]:
    """``/api/v1/rules`` groups (each with its rules' health, lastError, state)."""
    return _get_json(f"{prom_url}/api/v1/rules")["data"]["groups"]


def prometheus_alerts(prom_url: str) -> list[dict]:
    """Alerts pending or firing in Prometheus (``/api/v1/alerts``)."""
    return _get_json(f"{prom_url}/api/v1/alerts")["data"]["alerts"]


def targets(prom_url: str) -> list[dict]:
    """Active scrape targets (``/api/v1/targets``)."""
    return _get_json(f"{prom_url}/api/v1/targets")["data"]["activeTargets"]


def post_alerts(am_url: str, alerts: list[dict]) -> None:
    """POST alerts to Alertmanager's ``/api/v2/alerts`` (as Prometheus would)."""
    body = json.dumps(alerts).encode()
    req = urllib.request.Request(f"{am_url}/api/v2/alerts", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST /api/v2/alerts: HTTP {resp.status}")


def alertmanager_alerts(am_url: str, **filters: str) -> list[dict]:
    """Alerts Alertmanager holds (``/api/v2/alerts``), with ``status.state`` and ``inhibitedBy``."""
    params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
    params += [("active", "true"), ("silenced", "true"), ("inhibited", "true")]
    return _get_json(f"{am_url}/api/v2/alerts?{urllib.parse.urlencode(params)}")


def rfc3339(ts: float) -> str:
    """A unix time as the RFC 3339 string Alertmanager's API expects."""
    frac, whole = math.modf(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int(frac * 1000):03d}Z"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
               message: str | Callable[[], str] = "") -> Any:
    """Poll ``predicate`` until truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"not true after {timeout}s. {text}")
        time.sleep(interval)
