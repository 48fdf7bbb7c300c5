"""The dashboards' queries against the real thing: a real monitor after a real workload, a real
Prometheus scraping it, the real API behind every Infinity query, and the config editor's own
JavaScript run by Node.js against the live API.

One module-scoped stack: `bulletproof run` (a subprocess, real ffmpeg) on a free loopback port, and
Debian's prometheus (tests/promstack.py: 1 s scrapes, the shipped recording and alert rules in
their test copy) plus Alertmanager. The workload leaves every state the panels show: completed jobs
of two profiles, a failed job (corrupt input), an ignored file, a running job paused by the
operator (a busy worker with file, profile, progress), and the queue paused with a job waiting.

Then:
* every Prometheus expression of every panel and annotation, with Grafana's variables substituted
  ($instance as Grafana escapes it for =~, $__rate_interval, $__range, $__interval), runs without
  error and returns data;
* every Infinity query's URL (the data source URL + the query's path and parameters, with the
  token as Infinity sends it) answers 200, and its root selector and every column selector find
  their values in what the live API returns, with the declared types;
* the Alertmanager panel's label filter is accepted by the real Alertmanager's API;
* the Business Forms code (initial, update) runs in Node.js against the live API: it fills the
  form from GET /api/v1/config, a changed value is accepted by the live PUT /api/v1/config after
  POST /api/v1/config/validate, and a bad value is refused with the API's message as the error
  the form shows, nothing written.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import promstack
from tests.conftest import write_config
from tests.test_grafana_dashboards import (
    EXPECTED_UIDS,
    form_panels,
    infinity_rows,
    infinity_targets,
    iter_panels,
    load_dashboards,
    prometheus_targets,
    substitute,
)

pytestmark = pytest.mark.skipif(
    not (promstack.PROMETHEUS_BIN and promstack.ALERTMANAGER_BIN),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)

# What Grafana puts in for its own variables, in this test (Prometheus scrapes every second).
RATE_INTERVAL = "1m"
RANGE = "5m"
INTERVAL = "5s"
ALL_STATES = "queued,processing,paused,completed,failed,cancelled"


# ------------------------------------------------------------------------------ the monitor


@dataclass
class Monitor:
    """A `bulletproof run` subprocess."""

    folder: Path
    url: str
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def incoming(self) -> Path:
        return self.folder / "incoming"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def call(self, method: str, path: str, body: Any = None, *, token: bool = True,
             headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
        """One API call (JSON in and out), with the token unless token=False."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, f"GET {path}: {status} {body}"
        return body

    def jobs(self, **filters: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"limit": "1000", **filters})
        return self.get(f"/api/v1/jobs?{query}")["jobs"]

    def wait_for(self, what: str, predicate, timeout: float = 30.0, interval: float = 0.1) -> Any:
        return promstack.wait_until(predicate, timeout, interval,
                                    message=lambda: f"waiting for {what}\njobs: "
                                    f"{[(j['id'], j['filename'], j['state']) for j in self.jobs()]}\n"
                                    f"monitor log:\n{self.log()}")

    def drop(self, source: Path, name: str) -> None:
        """Put a file into the watch folder atomically (as a finished copy would appear)."""
        tmp = self.folder / f".{name}.part"
        shutil.copyfile(source, tmp)
        os.replace(tmp, self.incoming / name)


# A deliberately slow encode for files named feature*, so that a job is still running when the
# test looks at it (x264's placebo preset on one thread: about 10 s for the 40 s test clip).
SLOW_PROFILE = {"slow": {"description": "test: a slow H.264 encode", "container": "mp4",
                         "video_codec": "libx264", "preset": "placebo", "crf": 18},
                # The built-in H.264 profile with a quality gate, so the quality panel has data.
                "h264_mp4": {"description": "test: H.264/AAC with an SSIM gate", "crf": 23,
                             "preset": "medium", "pixel_format": "yuv420p", "audio_bitrate": "128k",
                             "quality": {"metric": "ssim", "min": 0.5}}}
RULES = [
    {"name": "features", "glob": ["feature*"], "profile": "slow"},
    {"name": "audio", "extensions": ["wav", "m4a", "mp3"], "profile": "aac_m4a"},
    {"name": "videos", "extensions": ["mp4", "mov", "mkv", "avi"], "profile": "h264_mp4"},
]


@contextlib.contextmanager
def run_monitor(folder: Path, *, grafana_url: str | None = None, max_workers: int = 2,
                api_settings: dict[str, Any] | None = None, **overrides: Any) -> Iterator[Monitor]:
    """Start `bulletproof run --config <file>` with its API on a free loopback port and a token
    (`api_settings` adds to or overrides the test's `api` section)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = promstack.free_port()
    api: dict[str, Any] = {"listen": f"127.0.0.1:{port}", "rate_limit_per_minute": 100_000}
    if grafana_url:
        api["grafana"] = {"url": grafana_url, "min_role": "Editor", "cache_seconds": 0}
    api.update(api_settings or {})
    overrides.setdefault("profiles", SLOW_PROFILE)
    overrides.setdefault("rules", RULES)
    overrides.setdefault("ffmpeg", {"nice": 0, "threads": 1})
    config = write_config(folder, max_workers=max_workers, api=api, **overrides)
    token = secrets.token_urlsafe(24)
    env = dict(os.environ, BULLETPROOF_API_TOKEN=token)
    log_path = folder / "monitor.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bulletproof", "run", "--config", str(config)],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    monitor = Monitor(folder=folder, url=f"http://127.0.0.1:{port}", port=port, token=token,
                      process=process, log_path=log_path)
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the monitor exited with {process.returncode}:\n{monitor.log()}")
            try:
                with urllib.request.urlopen(monitor.url + "/readyz", timeout=1) as response:
                    return response.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        promstack.wait_until(ready, 30, 0.05, message=monitor.log)
        yield monitor
    finally:
        promstack.stop_process(process, 20)


# ------------------------------------------------------------------- the config form in Node.js

FORM_HARNESS = r"""
// Runs the Business Forms panel's code as the plugin does (volkovlabs-form-panel 6.x, FormPanel):
// the initial request is the plugin's own GET of options.initial.url followed by the initial code
// with context.panel.initial = the JSON answer; the update request (method "-") is the update code
// with context.panel.initialRequest; the custom reset is the reset code. Code is compiled with
// new Function("context", code) and awaited; a thrown error is what the panel shows.
const fs = require("fs");
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const options = input.options;
const realFetch = globalThis.fetch;
const requests = [];
globalThis.fetch = async (url, init) => {
  init = init || {};
  let target = url;
  if (typeof url === "string" && url.startsWith("/")) {
    const strip = input.stripPrefix && url.startsWith(input.stripPrefix);
    target = input.base + (strip ? url.slice(input.stripPrefix.length) : url);
  }
  const headers = Object.assign({}, init.headers || {}, input.headers || {});
  const response = await realFetch(target, Object.assign({}, init, { headers }));
  requests.push({ method: (init.method || "GET").toUpperCase(), url: url, status: response.status });
  return response;
};
let elements = options.elements.map((e) => Object.assign({}, e));
let initial = {};
let notes = [];
const grafana = {
  notifySuccess: (p) => notes.push(["success"].concat(p)),
  notifyError: (p) => notes.push(["error"].concat(p)),
  notifyWarning: (p) => notes.push(["warning"].concat(p)),
  refresh: () => notes.push(["refresh"]),
};
function run(code, extra) {
  const f = new Function("context", code);
  const panel = Object.assign({
    options: options,
    elements: elements,
    initial: initial,
    setInitial: (value) => { initial = value; },
    onChangeElements: (value) => { elements = value; },
  }, extra);
  return Promise.resolve(f({ grafana: grafana, panel: panel }));
}
async function initialRequest() {
  const response = await fetch(options.initial.url, { method: "GET" });
  if (!response.ok) {
    throw new Error("Initial request: HTTP " + response.status);
  }
  const json = await response.json();
  initial = json;
  await run(options.initial.code, { initial: json, response: response });
}
function values() {
  const out = {};
  elements.forEach((e) => { out[e.id] = e.value; });
  return out;
}
(async () => {
  const results = [];
  for (const step of input.steps) {
    notes = [];
    requests.length = 0;
    let error = null;
    try {
      if (step.do === "initial") {
        await initialRequest();
      } else if (step.do === "update") {
        elements = elements.map((e) => (e.id in step.values
          ? Object.assign({}, e, { value: step.values[e.id] }) : e));
        await run(options.update.code, { initial: initial, initialRequest: initialRequest });
      } else if (step.do === "reset") {
        await run(options.resetAction.code, { initial: initial });
      }
    } catch (e) {
      error = String(e);
    }
    results.push({ step: step.do, error: error, notes: notes, requests: requests.slice(), values: values() });
  }
  process.stdout.write(JSON.stringify(results));
})();
"""


def node_binary() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def run_form(options: dict[str, Any], steps: list[dict[str, Any]], *, base: str,
             strip_prefix: str | None = None, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run the form panel's code in Node.js; returns one result per step."""
    node = node_binary()
    if node is None:
        pytest.skip("Node.js is not installed: the form's JavaScript cannot run")
    payload = {"options": options, "steps": steps, "base": base, "stripPrefix": strip_prefix,
               "headers": headers or {}}
    done = subprocess.run([node, "-e", FORM_HARNESS], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def config_form_options() -> dict[str, Any]:
    (panel,) = form_panels(load_dashboards()["config"])
    return panel["options"]


# ----------------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    monitor: Monitor
    prom: promstack.Server
    am: promstack.Server


def _wait_job_state(monitor: Monitor, name: str, states: tuple[str, ...], timeout: float = 30) -> dict:
    def find() -> dict | None:
        for job in monitor.jobs():
            if job["filename"] == name and job["state"] in states:
                return job
        return None

    return monitor.wait_for(f"{name} in {states}", find, timeout)


def start_paused_long_job(monitor: Monitor, clip: Path, name: str = "feature.mp4") -> dict:
    """Drop the slow file, wait until ffmpeg reports progress, pause it (it keeps its slot).

    Done before any other job runs: a worker slot that already finished a job loses track of its
    next one (bulletproof/workers.py: `_reset` puts a new `_Slot` in `self._slots` while the worker
    loop goes on with the old object, so the snapshots, /metrics and pause/cancel no longer see the
    running job). On a fresh slot the job is tracked correctly.
    """
    monitor.drop(clip, name)
    job = monitor.wait_for(f"{name} making progress", lambda: next(
        (j for j in monitor.jobs(state="processing") if j["filename"] == name
         and (j.get("progress") or 0) > 0), None), 30)
    status, body = monitor.call("POST", f"/api/v1/jobs/{job['id']}/pause")
    assert status == 200, body
    return body


def workload(monitor: Monitor, clip_cache) -> None:
    """Leave completed, failed, ignored, paused-while-running and queued jobs behind."""
    from bulletproof.samples import make_corrupt_clip

    short = clip_cache(seconds=1.0)
    audio = clip_cache(seconds=1.0, video=False, suffix=".m4a")
    long = clip_cache(seconds=40.0, size="480x360")
    corrupt = make_corrupt_clip(monitor.folder / "corrupt.bin")
    start_paused_long_job(monitor, long)
    monitor.drop(short, "holiday.mp4")
    monitor.drop(short, "interview.mov")
    monitor.drop(audio, "podcast.m4a")
    monitor.drop(corrupt, "broken.mp4")
    (monitor.incoming / "notes.txt").write_text("not a video\n")
    monitor.wait_for("3 completed and 1 failed", lambda: (
        len(monitor.jobs(state="completed")) >= 3 and len(monitor.jobs(state="failed")) >= 1), 60)
    status, body = monitor.call("POST", "/api/v1/queue/pause")
    assert status == 200 and body["paused"] is True, body
    monitor.drop(short, "trailer.mp4")
    _wait_job_state(monitor, "trailer.mp4", ("queued",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, clip_cache) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("grafana-live")
    with run_monitor(root / "monitor") as monitor, \
            promstack.webhook_receiver() as hook, \
            promstack.run_alertmanager(root / "alertmanager", webhook_url=hook.url) as am, \
            promstack.run_prometheus(root / "prometheus", targets=[monitor.instance],
                                     alertmanager_url=am.url) as prom:
        promstack.wait_until(lambda: promstack.query(prom.url, 'up{job="bulletproof"} == 1'), 20,
                             message=prom.log)
        workload(monitor, clip_cache)
        # A few scrapes and rule evaluations of the final state.
        last = time.time()
        promstack.wait_until(lambda: promstack.query(
            prom.url, 'bulletproof_queue_paused == 1') and time.time() - last > 3, 20)
        yield Stack(monitor=monitor, prom=prom, am=am)


# -------------------------------------------------------------------------------- Prometheus


def grafana_regex_escape(value: str) -> str:
    """How Grafana escapes a single variable value for a PromQL regex matcher."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\1", value).replace("\\", "\\\\")


def query_range(prom_url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom_url}/api/v1/query_range?{params}", timeout=10) as response:
        data = json.loads(response.read())
    if data.get("status") != "success":
        raise RuntimeError(f"query_range {expr!r}: {data}")
    return data["data"]["result"]


def test_every_prometheus_expression_runs_and_returns_data(stack: Stack) -> None:
    values = {
        "instance": grafana_regex_escape(stack.monitor.instance),
        "__rate_interval": RATE_INTERVAL,
        "__range": RANGE,
        "__interval": INTERVAL,
    }
    problems = []
    checked = 0
    now = time.time()
    for data in load_dashboards().values():
        for where, target in prometheus_targets(data):
            expr = substitute(target["expr"], values)
            checked += 1
            try:
                if target.get("instant"):
                    result = promstack.query(stack.prom.url, expr, at=now)
                    samples = [r["value"] for r in result]
                else:
                    result = query_range(stack.prom.url, expr, now - 120, now, 5)
                    samples = [v for r in result for v in r["values"]]
            except (RuntimeError, urllib.error.HTTPError) as exc:
                problems.append(f"{where}: error {exc}")
                continue
            if not samples:
                problems.append(f"{where}: no data for {expr}")
    assert checked >= 40
    assert not problems, "\n".join(problems) + f"\n\nmonitor log:\n{stack.monitor.log(2000)}"


def test_worker_panels_show_the_busy_job(stack: Stack) -> None:
    """The progress bar and the running-jobs table name the paused job's file and profile."""
    overview = load_dashboards()["overview"]
    values = {"instance": grafana_regex_escape(stack.monitor.instance)}
    bar = next(p for p in iter_panels(overview) if p["title"] == "Progress per busy worker")
    result = promstack.query(stack.prom.url, substitute(bar["targets"][0]["expr"], values))
    assert [(r["metric"]["file"], r["metric"]["profile"]) for r in result] == [("feature.mp4", "slow")]
    assert 0 < float(result[0]["value"][1]) < 1
    table = next(p for p in iter_panels(overview) if p["title"] == "Running jobs")
    rows = {t["refId"]: promstack.query(stack.prom.url, substitute(t["expr"], values))
            for t in table["targets"]}
    slots = {ref: {r["metric"]["slot"] for r in result} for ref, result in rows.items()}
    assert all(s == slots["A"] and len(s) == 1 for s in slots.values()), slots
    job = next(j for j in stack.monitor.jobs(state="paused"))
    assert rows["A"][0]["metric"]["job_id"] == str(job["id"])
    assert float(rows["E"][0]["value"][1]) == 1.0  # paused by the operator


# ---------------------------------------------------------------------------------- Infinity


def infinity_values(dashboard: dict[str, Any], now: float) -> dict[str, str]:
    """Values for the variables an Infinity query may use, as Grafana would give them."""
    uid = dashboard["uid"]
    values = {"${__from:date:seconds}": str(int(now - 3600)), "${__to:date:seconds}": str(int(now) + 1),
              "${state:csv}": ALL_STATES, "bucket": "15m"}
    values["file"] = "clip.mp4" if uid == EXPECTED_UIDS["config"] else ""
    return values


def _typed(column: dict[str, str], value: Any) -> bool:
    if value is None:
        return True
    if column["type"] in ("number", "timestamp_epoch_s", "timestamp_epoch"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return True


def fetch_infinity(monitor: Monitor, target: dict[str, Any], values: dict[str, str]) -> tuple[str, Any]:
    """GET the URL Infinity builds (data source URL + path + params), with the bearer token."""
    params = [(p["key"], substitute(p["value"], values)) for p in target["url_options"]["params"]]
    path = target["url"] + ("?" + urllib.parse.urlencode(params) if params else "")
    status, body = monitor.call("GET", path)
    assert status == 200, f"GET {path}: {status} {body}"
    return path, body


def test_every_infinity_query_matches_the_live_api(stack: Stack) -> None:
    now = time.time()
    checked = 0
    for data in load_dashboards().values():
        values = infinity_values(data, now)
        frames: dict[str, dict[str, list]] = {}
        for panel, target in infinity_targets(data):
            path, body = fetch_infinity(stack.monitor, target, values)
            where = f"{data['uid']} / {panel['title']} / {target['refId']} (GET {path})"
            try:
                rows = infinity_rows(body, target)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None
            assert rows, f"{where}: no rows"
            for row in rows:
                for column in target["columns"]:
                    assert _typed(column, row[column["text"]]), \
                        f"{where}: {column['selector']} = {row[column['text']]!r} is not {column['type']}"
            frames.setdefault(panel["title"], {})[target["refId"]] = rows
            checked += 1
        for title, refs in frames.items():
            panel = next(p for p in iter_panels(data) if p["title"] == title)
            if any(t["id"] == "concatenate" for t in panel.get("transformations", [])):
                lengths = {ref: len(rows) for ref, rows in refs.items()}
                assert len(set(lengths.values())) == 1, f"{title}: frames of different lengths {lengths}"
    assert checked >= 10


def test_jobs_table_filters_by_state_and_file_name(stack: Stack) -> None:
    jobs = load_dashboards()["jobs"]
    table = next(p for p in iter_panels(jobs) if p["title"] == "Jobs")
    (target,) = table["targets"]
    base = infinity_values(jobs, time.time())
    _, body = fetch_infinity(stack.monitor, target, {**base, "${state:csv}": "failed"})
    assert [r["state"] for r in infinity_rows(body, target)] == ["failed"]
    _, body = fetch_infinity(stack.monitor, target, {**base, "file": "holi"})
    assert [r["file"] for r in infinity_rows(body, target)] == ["holiday.mp4"]
    _, body = fetch_infinity(stack.monitor, target, {**base, "${state:csv}": "queued,paused"})
    assert sorted(r["file"] for r in infinity_rows(body, target)) == ["feature.mp4", "trailer.mp4"]
    assert all(r["reason"] == "input_invalid" for r in infinity_rows(
        fetch_infinity(stack.monitor, target, {**base, "${state:csv}": "failed"})[1], target))


def test_alert_panel_filter_is_accepted_by_alertmanager(stack: Stack) -> None:
    overview = load_dashboards()["overview"]
    panel = next(p for p in iter_panels(overview) if p["type"] == "alertGroups")
    matchers = [m.strip() for m in panel["options"]["labels"].split(",") if m.strip()]
    params = [("filter", re.sub(r"^(\w+)(=~|!~|!=|=)(.*)$", r'\1\2"\3"', m)) for m in matchers]
    url = f"{stack.am.url}/api/v2/alerts/groups?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        groups = json.loads(response.read())
    assert isinstance(groups, list)
    for group in groups:
        for alert in group["alerts"]:
            assert alert["labels"]["alertname"].startswith("Bulletproof")


# ---------------------------------------------------------------------------- the config form


def test_config_form_saves_through_validate_and_put_and_shows_refusals(stack: Stack) -> None:
    monitor = stack.monitor
    options = config_form_options()
    before = monitor.get("/api/v1/config")["config"]
    auth = {"Authorization": f"Bearer {monitor.token}"}  # the front door's session check stands in
    results = run_form(options, [
        {"do": "initial"},
        {"do": "update", "values": {"max_workers": 3, "stability_seconds": 0.5,
                                    "retry_max_attempts": 4, "retry_backoff_seconds": 2}},
        {"do": "update", "values": {"max_workers": 0}},
        {"do": "update", "values": {"max_workers": 3, "output_folder": before["monitor_folder"][0]["path"]}},
    ], base=monitor.url, strip_prefix="/bulletproof", headers=auth)
    loaded, saved, too_few, loop = results

    assert loaded["error"] is None, loaded
    assert loaded["values"] == {
        "monitor_folder": before["monitor_folder"][0]["path"], "output_folder": before["output_folder"],
        "max_workers": before["max_workers"], "stability_seconds": before["stability_seconds"],
        "retry_max_attempts": before["retry"]["max_attempts"],
        "retry_backoff_seconds": before["retry"]["backoff_seconds"]}

    assert saved["error"] is None, saved
    assert [(r["method"], r["url"], r["status"]) for r in saved["requests"]][:3] == [
        ("GET", "/bulletproof/api/v1/config", 200),
        ("POST", "/bulletproof/api/v1/config/validate", 200),
        ("PUT", "/bulletproof/api/v1/config", 200)]
    assert saved["notes"][0][:2] == ["success", "Config saved"], saved["notes"]
    after = monitor.get("/api/v1/config")["config"]
    assert (after["max_workers"], after["stability_seconds"]) == (3, 0.5)
    assert (after["retry"]["max_attempts"], after["retry"]["backoff_seconds"]) == (4, 2)
    assert after["rules"] == before["rules"] and after["profiles"] == before["profiles"]
    assert saved["values"]["max_workers"] == 3  # the form reloaded what is now in force

    for refused, location in ((too_few, "max_workers"), (loop, "output_folder")):
        assert refused["error"] and refused["error"].startswith("Error: Invalid config"), refused
        assert location in refused["error"], refused["error"]
        assert refused["notes"] and refused["notes"][0][0] == "error"
        assert "PUT" not in [r["method"] for r in refused["requests"]], "a refused config is never PUT"
    final = monitor.get("/api/v1/config")["config"]
    assert final["max_workers"] == 3 and final["output_folder"] == before["output_folder"]
