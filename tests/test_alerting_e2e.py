"""End to end: real faults in a real monitor raise the shipped alerts all the way to a webhook.

Started on free loopback ports, all of them real processes:

* the monitor: ``python -m bulletproof run --config monitor.yaml`` with real ffmpeg, two watch
  folders, ``api.listen`` on a free port (the exporter serves ``/metrics`` there);
* Debian's ``prometheus`` (tests/promstack.py): scrape and rule evaluation every second, loading the
  *test copy* of ``prometheus/rules/*.yml`` that the rules' generator (exporter.monitoring) renders
  with every ``for:``, window, offset and length-of-time threshold divided by ``FACTOR`` (never a
  hand-edited second set);
* Debian's ``prometheus-alertmanager`` with the shipped routes, grouping and inhibit rules, every
  receiver redirected to a webhook receiver this test runs.

Then the faults happen for real and the alerts must reach the webhook with their labels and
annotations, then resolve:

1. a watch folder is removed (``shutil.rmtree``) -> ``BulletproofWatchFolderDown{folder=...}``;
   re-created -> resolved;
2. a burst of corrupt inputs (``make_corrupt_clip``) -> ``BulletproofJobFailureBurst
   {reason="input_invalid"}`` and, as 12 attempts pass the volume guard of 10,
   ``BulletproofHighFailureRatio``; both resolve once their (scaled) window has passed;
3. the monitor is stopped (SIGTERM) -> ``BulletproofDown``, and Alertmanager holds the failure-ratio
   alert of the same instance, still firing in Prometheus (its window still holds the burst), as
   suppressed by it (the inhibit rule); restarted -> resolved.

Each alert's time from its fault to the webhook is measured and printed (``pytest -rP`` shows it;
docs/alerting.md "Measured alert latency" has the figures). A second test evaluates every ``expr`` of
the shipped (unscaled) rule files as an instant query against the live Prometheus after the workload.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from bulletproof.samples import make_corrupt_clip
from exporter.monitoring.durations import format_duration, parse_duration
from tests.conftest import write_config

try:
    from tests import promstack
except ImportError:  # tests/ on sys.path instead of the repository root
    import promstack  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (promstack.PROMETHEUS_BIN and promstack.ALERTMANAGER_BIN),
                       reason="needs Debian's prometheus and prometheus-alertmanager"),
]

# The test copy of the rules divides every duration by this: `for: 2m` -> 4s, `[15m]` -> 30s,
# `[30m]` -> 1m, `for: 10m` -> 20s. 30 (not promstack's default 60) keeps the failure-ratio window
# (1 min) long enough to still hold the burst when BulletproofDown fires, so the inhibition is seen
# on a real in-flight alert, while the whole module stays under ~2 minutes.
FACTOR = 30.0
CORRUPT_FILES = 12  # > the burst threshold (5) and >= the failure-ratio volume guard (10)
GOOD_FILES = 2
RUNBOOK = "https://github.com/bulletproof-video/bulletproof/blob/main/docs/runbook.md#"
EXPECTED_ALERTS = {"BulletproofWatchFolderDown", "BulletproofJobFailureBurst",
                   "BulletproofHighFailureRatio", "BulletproofDown"}


def _shipped_rules() -> list[dict]:
    return [rule for path in sorted(promstack.RULES_DIR.glob("*.yml"))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


SHIPPED_FOR = {r["alert"]: parse_duration(r["for"]) for r in _shipped_rules() if "alert" in r}


# --------------------------------------------------------------------------------------------
# The monitor as a subprocess
# --------------------------------------------------------------------------------------------


class MonitorProcess:
    """`bulletproof run` as a real subprocess; start/stop it as often as needed (same port)."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.instance = f"127.0.0.1:{port}"
        self.url = f"http://{self.instance}"
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self, timeout: float = 30.0) -> float:
        """Start it and wait until /metrics answers; returns the spawn time (unix)."""
        log = self.config.parent / f"run-{len(self.logs) + 1}.log"
        self.logs.append(log)
        spawned = time.time()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bulletproof", "run", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.config.parent)
        promstack.wait_until(self._ready, timeout=timeout, interval=0.1,
                             message=lambda: f"the monitor's /metrics did not answer:\n{self.log()}")
        return spawned

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the monitor exited with {self.process and self.process.returncode}:"
                               f"\n{self.log()}")
        try:
            return "bulletproof_watch_folder_up" in self.metrics()
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=2) as resp:
            return resp.read().decode()

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit code."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        return promstack.stop_process(proc, grace)

    def log(self, tail: int = 6000) -> str:
        text = "".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs if p.exists())
        return text[-tail:]


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


@dataclass
class Latency:
    alert: str
    fault: str
    firing_s: float | None = None
    resolved_s: float | None = None
    resolved_after: str = ""
    pipeline_s: float | None = None  # Prometheus startsAt -> webhook
    pending_s: float | None = None  # fault -> the alert's activeAt (pending) in Prometheus


@dataclass
class Stack:
    workdir: Path
    monitor: MonitorProcess
    incoming: Path
    second: Path
    hook: promstack.WebhookReceiver
    am: promstack.Server
    prom: promstack.Server
    latencies: list[Latency] = field(default_factory=list)
    workload_done: bool = False

    @property
    def instance(self) -> str:
        return self.monitor.instance

    def q(self, expr: str) -> float | None:
        return promstack.query_value(self.prom.url, expr)

    def diagnostics(self) -> str:
        parts = [f"=== webhook received:\n{json.dumps(self.hook.summary(), indent=1)}"]
        with contextlib.suppress(Exception):
            parts.append("=== prometheus alerts:\n" + json.dumps(
                [(a["labels"]["alertname"], a["state"], a.get("activeAt"), a["labels"])
                 for a in promstack.prometheus_alerts(self.prom.url)], indent=1))
        with contextlib.suppress(Exception):
            parts.append("=== rules not ok:\n" + json.dumps(
                [(r["name"], r["health"], r.get("lastError"))
                 for g in promstack.rule_groups(self.prom.url) for r in g["rules"] if r["health"] != "ok"]))
        with contextlib.suppress(Exception):
            parts.append("=== alertmanager alerts:\n" + json.dumps(
                [(a["labels"]["alertname"], a["status"])
                 for a in promstack.alertmanager_alerts(self.am.url)]))
        with contextlib.suppress(Exception):
            parts.append("=== monitor /metrics (state, and counters above 0):\n" + "\n".join(
                line for line in self.monitor.metrics().splitlines()
                if line.startswith(("bulletproof_jobs{", "bulletproof_watch", "bulletproof_workers"))
                or (line.startswith("bulletproof_") and "_total" in line and not line.endswith(" 0.0"))))
        parts.append(f"=== monitor log:\n{self.monitor.log()}")
        parts.append(f"=== prometheus log:\n{self.prom.log(3000)}")
        parts.append(f"=== alertmanager log:\n{self.am.log(3000)}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """On any failure, print every process's log and what the webhook got."""
        try:
            yield
        except BaseException:
            print(self.diagnostics())
            raise

    def table(self) -> str:
        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        rows = [f"Alert latency, rules scaled by 1/{FACTOR:g} (scrape 1s, eval 1s, "
                f"group_wait/interval 1s):",
                f"{'alert':30} {'for (shipped/test)':19} {'fault':38} {'to firing':>10} "
                f"{'to resolved':>12}  {'(resolved after)':22} {'to pending':>10} {'startsAt->hook':>14}"]
        for lat in self.latencies:
            shipped = SHIPPED_FOR[lat.alert]
            fors = f"{format_duration(shipped)}/{format_duration(shipped / FACTOR)}"
            rows.append(f"{lat.alert:30} {fors:19} {lat.fault:38} {num(lat.firing_s):>10} "
                        f"{num(lat.resolved_s):>12}  {lat.resolved_after:22} {num(lat.pending_s):>10} "
                        f"{num(lat.pipeline_s):>14}")
        return "\n".join(rows)


def _wait_http_ok(url: str, timeout: float) -> None:
    def ok() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.HTTPError):
            return False
    promstack.wait_until(ok, timeout=timeout, message=f"{url} never answered")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerting-e2e")
    mon_dir = workdir / "monitor"
    mon_dir.mkdir()
    second = mon_dir / "second"
    second.mkdir()
    port = promstack.free_port()
    config = write_config(
        mon_dir,
        monitor_folder=["incoming", "second"],
        max_workers=2,
        stability_seconds=0.3,
        rescan_interval=1,  # the folder health check runs every min(rescan_interval, 5) s
        api={"listen": f"127.0.0.1:{port}"},
    )
    monitor = MonitorProcess(config, port)
    with contextlib.ExitStack() as stop:
        stop.callback(monitor.stop)
        monitor.start()
        hook = stop.enter_context(promstack.webhook_receiver())
        am = stop.enter_context(promstack.run_alertmanager(workdir / "alertmanager", webhook_url=hook.url))
        prom = stop.enter_context(promstack.run_prometheus(
            workdir / "prometheus", targets=[monitor.instance], alertmanager_url=am.url, factor=FACTOR))
        s = Stack(workdir=workdir, monitor=monitor, incoming=mon_dir / "incoming", second=second,
                  hook=hook, am=am, prom=prom)
        try:
            yield s
        finally:
            if s.latencies:
                print(s.table())
                (workdir / "alert-latency.json").write_text(
                    json.dumps([lat.__dict__ for lat in s.latencies], indent=1))


def _check_alert(alert: dict, *, name: str, severity: str, instance: str, receiver: str,
                 **labels: str) -> None:
    lab = alert["labels"]
    assert lab["alertname"] == name
    assert lab["severity"] == severity
    assert lab["instance"] == instance
    assert lab["job"] == "bulletproof"
    for key, value in labels.items():
        assert lab.get(key) == value, (key, lab)
    assert alert["receiver"] == receiver
    ann = alert["annotations"]
    assert ann["runbook_url"] == RUNBOOK + name.lower()
    assert ann["summary"].strip() and ann["description"].strip()
    assert "{{" not in ann["summary"] + ann["description"]  # templates expanded
    assert "<no value>" not in ann["summary"] + ann["description"]


def _unix(rfc3339: str) -> float:
    """An RFC 3339 UTC time of Prometheus or Alertmanager (nanoseconds allowed) as unix time."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head[:19] + "+00:00").timestamp()
    return whole + (float("0." + frac) if frac else 0.0)


def _pipeline(alert: dict) -> float | None:
    """Seconds from Prometheus's startsAt to the webhook receiving the notification."""
    return alert["_received_at"] - _unix(alert["startsAt"])


def _active_at(s: Stack, name: str) -> float | None:
    """When Prometheus's alert `name` of the monitor went pending (its activeAt), if still active."""
    for alert in promstack.prometheus_alerts(s.prom.url):
        if alert["labels"]["alertname"] == name and alert["labels"].get("instance") == s.instance:
            return _unix(alert["activeAt"])
    return None


def _since(t0: float, t1: float | None) -> float | None:
    return None if t1 is None else t1 - t0


def _received(hook: promstack.WebhookReceiver, alert: dict) -> float:
    """When the webhook received the notification that carried this alert."""
    for payload in hook.payloads:
        for a in payload.get("alerts", []):
            if a.get("fingerprint") == alert.get("fingerprint") and a.get("status") == alert.get("status"):
                return payload["_received_at"]
    raise AssertionError(f"alert not found in the payloads: {alert}")


def _wait_alert(s: Stack, name: str, status: str, timeout: float, **labels: str) -> tuple[dict, float]:
    alert = s.hook.wait_for_alert(name, status=status, timeout=timeout, instance=s.instance, **labels)
    alert = dict(alert, _received_at=_received(s.hook, alert))
    return alert, alert["_received_at"]


def _failed_total(s: Stack) -> float:
    total = 0.0
    for line in s.monitor.metrics().splitlines():
        if line.startswith("bulletproof_jobs_failed_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _warm_up(s: Stack, clip: Path) -> None:
    """A few good jobs, so that completions, durations and bytes exist before the faults."""
    for i in range(GOOD_FILES):
        shutil.copy(clip, s.incoming / f"good-{i}.mp4")
    promstack.wait_until(
        lambda: s.q(f'bulletproof_jobs{{instance="{s.instance}",state="completed"}}') == GOOD_FILES,
        timeout=60, interval=0.3, message="the good clips were not transcoded")
    s.workload_done = True


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_real_faults_fire_alerts_that_reach_the_webhook_and_resolve(stack: Stack, clip_cache) -> None:
    s = stack
    with s.explained():
        # The baseline: the monitor is scraped, every rule of the test copy evaluates.
        promstack.wait_until(lambda: s.q(f'up{{instance="{s.instance}"}}') == 1, timeout=20,
                             message="Prometheus does not scrape the monitor")
        promstack.wait_until(
            lambda: all(r["health"] == "ok" for g in promstack.rule_groups(s.prom.url) for r in g["rules"]),
            timeout=20, message="rules of the test copy do not evaluate")
        assert s.q(f'bulletproof_watch_folder_up{{instance="{s.instance}",folder="{s.second}"}}') == 1
        _warm_up(s, clip_cache(seconds=1))
        assert not s.hook.find("BulletproofWatchFolderDown"), s.hook.summary()

        # 1. A watch folder disappears, then comes back.
        t_fault = time.time()
        shutil.rmtree(s.second)
        firing, t_firing = _wait_alert(s, "BulletproofWatchFolderDown", "firing", 60, folder=str(s.second))
        folder_pending = _since(t_fault, _active_at(s, "BulletproofWatchFolderDown"))
        _check_alert(firing, name="BulletproofWatchFolderDown", severity="critical",
                     instance=s.instance, receiver="bulletproof-critical", folder=str(s.second))
        assert str(s.second) in firing["annotations"]["summary"]
        assert s.q(f'bulletproof_watch_folder_up{{instance="{s.instance}",folder="{s.second}"}}') == 0
        assert s.q(f'bulletproof_watch_folder_up{{instance="{s.instance}",folder="{s.incoming}"}}') == 1
        t_fixed = time.time()
        s.second.mkdir()
        _, t_resolved = _wait_alert(s, "BulletproofWatchFolderDown", "resolved", 60, folder=str(s.second))
        s.latencies.append(Latency("BulletproofWatchFolderDown", "rmtree a watch folder",
                                   t_firing - t_fault, t_resolved - t_fixed, "mkdir again",
                                   _pipeline(firing), folder_pending))

        # 2. A burst of corrupt inputs: input_invalid failures, never retried.
        before = _failed_total(s)
        t_burst = time.time()
        for i in range(CORRUPT_FILES):
            make_corrupt_clip(s.incoming / f"corrupt-{i:02d}.mp4", size=4096 + 512 * i)
        promstack.wait_until(lambda: _failed_total(s) - before >= CORRUPT_FILES, timeout=60, interval=0.1,
                             message=lambda: f"the corrupt files did not all fail:\n{s.monitor.log()}")
        t_all_failed = time.time()
        burst, t_burst_firing = _wait_alert(s, "BulletproofJobFailureBurst", "firing", 60,
                                            reason="input_invalid")
        burst_pending = _since(t_burst, _active_at(s, "BulletproofJobFailureBurst"))
        _check_alert(burst, name="BulletproofJobFailureBurst", severity="warning",
                     instance=s.instance, receiver="bulletproof-warning", reason="input_invalid")
        assert "input_invalid" in burst["annotations"]["summary"]
        ratio, t_ratio_firing = _wait_alert(s, "BulletproofHighFailureRatio", "firing", 90)
        ratio_pending = _since(t_burst, _active_at(s, "BulletproofHighFailureRatio"))
        _check_alert(ratio, name="BulletproofHighFailureRatio", severity="warning",
                     instance=s.instance, receiver="bulletproof-warning")
        assert "attempts" in ratio["annotations"]["description"]
        _, t_burst_resolved = _wait_alert(s, "BulletproofJobFailureBurst", "resolved", 90,
                                          reason="input_invalid")
        s.latencies.append(Latency("BulletproofJobFailureBurst", f"{CORRUPT_FILES} corrupt files dropped",
                                   t_burst_firing - t_burst, t_burst_resolved - t_all_failed,
                                   "the last failure", _pipeline(burst), burst_pending))
        ratio_latency = Latency("BulletproofHighFailureRatio", f"{CORRUPT_FILES} corrupt files dropped",
                                t_ratio_firing - t_burst, None, "the last failure", _pipeline(ratio),
                                ratio_pending)
        s.latencies.append(ratio_latency)

        # 3. The monitor stops. The failure ratio still fires in Prometheus (its window holds the
        # burst), so Alertmanager must hold it as inhibited by BulletproofDown.
        assert any(a["labels"]["alertname"] == "BulletproofHighFailureRatio" and a["state"] == "firing"
                   for a in promstack.prometheus_alerts(s.prom.url)), "the ratio alert resolved too early"
        t_stop = time.time()
        assert s.monitor.stop() == 0, s.monitor.log()
        down, t_down_firing = _wait_alert(s, "BulletproofDown", "firing", 60)
        down_pending = _since(t_stop, _active_at(s, "BulletproofDown"))
        _check_alert(down, name="BulletproofDown", severity="critical", instance=s.instance,
                     receiver="bulletproof-critical")
        assert s.instance in down["annotations"]["summary"]

        def ratio_inhibited() -> list[str] | None:
            held = promstack.alertmanager_alerts(s.am.url, alertname="BulletproofHighFailureRatio",
                                                 instance=s.instance)
            active = [a for a in held if a["status"]["state"] != "unprocessed"]
            if active and active[0]["status"]["state"] == "suppressed":
                return active[0]["status"]["inhibitedBy"]
            return None

        inhibited_by = promstack.wait_until(ratio_inhibited, timeout=10,
                                            message=lambda: f"{promstack.alertmanager_alerts(s.am.url)}")
        assert inhibited_by == [down["fingerprint"]]
        still_firing = [a for a in promstack.prometheus_alerts(s.prom.url)
                        if a["labels"]["alertname"] == "BulletproofHighFailureRatio"]
        assert still_firing and still_firing[0]["state"] == "firing"  # inhibited, not resolved
        # Nothing but BulletproofDown reached the webhook for this instance while it fired.
        late = [a for p in s.hook.payloads if p["_received_at"] > t_down_firing for a in p.get("alerts", [])
                if a["labels"].get("instance") == s.instance and a["status"] == "firing"
                and a["labels"]["alertname"] != "BulletproofDown"]
        assert not late, late

        t_restart = s.monitor.start()
        ready_after = time.time() - t_restart
        _, t_down_resolved = _wait_alert(s, "BulletproofDown", "resolved", 60)
        s.latencies.append(Latency("BulletproofDown", "SIGTERM to the monitor", t_down_firing - t_stop,
                                   t_down_resolved - t_restart, f"restart (up in {ready_after:.1f} s)",
                                   _pipeline(down),
                                   down_pending))

        # The ratio resolves once its window no longer holds the burst.
        _, t_ratio_resolved = _wait_alert(s, "BulletproofHighFailureRatio", "resolved", 90)
        ratio_latency.resolved_s = t_ratio_resolved - t_all_failed

        # No other alert fired for this instance along the way (no false positive of the
        # queue/stall/volume rules on this workload).
        fired = {a["labels"]["alertname"] for a in s.hook.alerts()
                 if a["labels"].get("instance") == s.instance}
        assert fired == EXPECTED_ALERTS, s.hook.summary()
        # Every alert the webhook got carries the shipped annotations.
        for a in s.hook.alerts():
            if a["labels"].get("instance") == s.instance:
                assert set(a["annotations"]) >= {"summary", "description", "runbook_url"}, a
        print(s.table())


@pytest.mark.timeout(180)
def test_every_shipped_rule_expression_evaluates_on_the_live_prometheus(stack: Stack, clip_cache) -> None:
    """Every `expr` of prometheus/rules/*.yml, as shipped (unscaled), as an instant query."""
    s = stack
    with s.explained():
        if not s.workload_done:  # the first test did not get that far
            promstack.wait_until(lambda: s.q(f'up{{instance="{s.instance}"}}') == 1, timeout=20)
            _warm_up(s, clip_cache(seconds=1))
            make_corrupt_clip(s.incoming / "corrupt-extra.mp4")
            time.sleep(3)
        errors, with_data, empty = [], [], []
        rules = _shipped_rules()
        for rule in rules:
            name = rule.get("alert") or rule.get("record")
            try:
                result = promstack.query(s.prom.url, rule["expr"])
            except Exception as exc:  # noqa: BLE001 - every failure is collected
                errors.append(f"{name}: {exc}")
                continue
            (with_data if result else empty).append(name)
        print(f"{len(rules)} shipped expressions evaluated: {len(with_data)} with data, {len(empty)} empty")
        print("empty:", ", ".join(empty))
        assert not errors, "\n".join(errors)
        assert len(rules) >= 40
        # The scaled copy that Prometheus evaluates on its own is healthy too, after the workload.
        bad = [(r["name"], r.get("lastError")) for g in promstack.rule_groups(s.prom.url)
               for r in g["rules"] if r["health"] != "ok"]
        assert not bad, bad
        # And the workload left data behind for the rules to chew on.
        assert "instance:bulletproof_job_attempts:increase30m" in with_data or \
            "instance:bulletproof_jobs_completed:rate5m" in with_data
