"""The end-to-end harness (tests/promstack.py) proven with the real processes, without the monitor.

Starts Debian's prometheus and prometheus-alertmanager on free loopback ports, with the test copy of
the shipped rules and the shipped Alertmanager routing/inhibition redirected to a webhook this test
runs, then checks: every rule group loads and evaluates, Prometheus scrapes itself, an alert goes
Prometheus -> Alertmanager -> webhook (BulletproofDown for a target nobody listens on), alerts posted
to Alertmanager are delivered firing then resolved with labels and annotations, and the inhibit
rule silences a warning while BulletproofDown fires for the same instance.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from exporter.monitoring.config import DEFAULT
from exporter.monitoring.durations import format_duration, parse_duration
from exporter.monitoring.generate import scaled_rule_files

try:
    from tests import promstack
except ImportError:  # tests/ on sys.path instead of the repository root
    import promstack  # type: ignore[no-redef]

pytestmark = pytest.mark.skipif(
    not (promstack.PROMETHEUS_BIN and promstack.ALERTMANAGER_BIN),
    reason="needs Debian's prometheus and prometheus-alertmanager",
)

RUNBOOK = "https://github.com/bulletproof-video/bulletproof/blob/main/docs/runbook.md#"


@pytest.fixture(scope="module")
def hook():
    with promstack.webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def am(hook, tmp_path_factory):
    with promstack.run_alertmanager(tmp_path_factory.mktemp("alertmanager"),
                                    webhook_url=hook.url) as server:
        yield server


@pytest.fixture(scope="module")
def dead_target():
    """A loopback address nobody listens on: the `bulletproof` target that is down."""
    return f"127.0.0.1:{promstack.free_port()}"


@pytest.fixture(scope="module")
def prom(am, dead_target, tmp_path_factory):
    started = time.monotonic()
    with promstack.run_prometheus(tmp_path_factory.mktemp("prometheus"), targets=[dead_target],
                                  alertmanager_url=am.url) as server:
        server.extra["started"] = started
        yield server


# --------------------------------------------------------------------------------------------
# The test copy of the rules (no process)
# --------------------------------------------------------------------------------------------


def _scaled_rules(factor: float) -> dict[str, dict]:
    rules = {}
    for text in scaled_rule_files(DEFAULT, factor, min_range=4).values():
        for group in yaml.safe_load(text)["groups"]:
            rules.update({r.get("alert") or r["record"]: r for r in group["rules"]})
    return rules


@pytest.mark.parametrize("rule,expected", [
    ("instance:bulletproof_jobs_completed:rate5m", "rate(bulletproof_jobs_completed_total[5s])"),
    ("instance_reason:bulletproof_jobs_failed:increase15m", "[15s]"),
    ("instance:bulletproof_jobs_failed:ratio_rate30m", "[30s]"),
    ("BulletproofBacklogGrowing", "offset 1m > fleet_state:bulletproof_jobs"),  # offsets scale too
    ("BulletproofBacklogGrowing", "offset 2m\n"),
    ("BulletproofJobStalled", ") > 5\n"),                                    # 300 s -> 5 s
    ("BulletproofOldestJobTooOld", "> 240\n"),                              # 4 h -> 4 min
    ("BulletproofJobFailureBurst", ">= 5"),                                 # counts do not scale
    ("BulletproofHighFailureRatio", "> 0.25"),                              # nor ratios
])
def test_scaled_copy_shrinks_lengths_of_time_only(rule, expected):
    assert expected in _scaled_rules(60)[rule]["expr"]


def test_scaled_windows_keep_a_minimum_range():
    # 5m / 300 = 1 s, kept at min_range (4 s) so that rate() still sees several samples.
    assert "[4s]" in _scaled_rules(300)["instance:bulletproof_jobs_completed:rate5m"]["expr"]


def test_durations_round_trip():
    assert parse_duration("1h30m") == 5400
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.5) == "500ms"
    assert format_duration(parse_duration("2m") / 60) == "2s"
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration("2 minutes")


def test_scaled_copy_is_generated_from_the_shipped_rules(tmp_path: Path):
    written = promstack.write_scaled_rules(tmp_path, 60)
    assert sorted(p.name for p in written) == sorted(p.name for p in promstack.RULES_DIR.glob("*.yml"))
    for path in written:
        shipped = yaml.safe_load((promstack.RULES_DIR / path.name).read_text())
        copy = yaml.safe_load(path.read_text())
        assert [g["name"] for g in copy["groups"]] == [g["name"] for g in shipped["groups"]]
        for g_ship, g_copy in zip(shipped["groups"], copy["groups"], strict=True):
            for r_ship, r_copy in zip(g_ship["rules"], g_copy["rules"], strict=True):
                assert r_ship.get("alert") == r_copy.get("alert")
                assert r_ship.get("record") == r_copy.get("record")
                assert r_ship.get("labels") == r_copy.get("labels")
                assert r_ship.get("annotations") == r_copy.get("annotations")
                if "for" in r_ship:
                    assert parse_duration(r_copy["for"]) == pytest.approx(
                        parse_duration(r_ship["for"]) / 60)
                assert "[1h]" not in r_copy["expr"] and "[30m]" not in r_copy["expr"]
    if promstack.PROMTOOL_BIN:
        import subprocess
        proc = subprocess.run([promstack.PROMTOOL_BIN, "check", "rules", *map(str, written)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alertmanager_test_config_keeps_routes_and_inhibition():
    shipped = yaml.safe_load(promstack.ALERTMANAGER_CONFIG.read_text())
    config = promstack.alertmanager_test_config("http://127.0.0.1:1/hook")
    assert config["inhibit_rules"] == shipped["inhibit_rules"]
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in shipped["receivers"]]
    assert all(r["webhook_configs"][0]["url"] == "http://127.0.0.1:1/hook" for r in config["receivers"])
    assert [r["matchers"] for r in config["route"]["routes"]] == \
        [r["matchers"] for r in shipped["route"]["routes"]]
    assert config["route"]["group_by"] == shipped["route"]["group_by"]
    assert config["route"]["group_wait"] == "1s"
    assert not any(k.startswith(("smtp_", "slack_")) for k in config["global"])
    assert all(Path(t).is_absolute() for t in config["templates"])


# --------------------------------------------------------------------------------------------
# Real processes
# --------------------------------------------------------------------------------------------


def test_prometheus_loads_and_evaluates_every_rule_group(prom):
    shipped_groups = [g["name"] for p in sorted(promstack.RULES_DIR.glob("*.yml"))
                      for g in yaml.safe_load(p.read_text())["groups"]]

    def all_evaluated():
        groups = promstack.rule_groups(prom.url)
        rules = [r for g in groups for r in g["rules"]]
        return groups if rules and all(r["health"] == "ok" for r in rules) else None

    groups = promstack.wait_until(
        all_evaluated, timeout=20,
        message=lambda: f"rules: {[(r['name'], r['health'], r.get('lastError')) for g in promstack.rule_groups(prom.url) for r in g['rules'] if r['health'] != 'ok']}\n{prom.log()}")
    assert sorted(g["name"] for g in groups) == sorted(shipped_groups)
    assert all(not r.get("lastError") for g in groups for r in g["rules"])
    assert sum(len(g["rules"]) for g in groups) >= 40


def test_prometheus_scrapes_itself_and_sees_the_dead_target(prom, dead_target):
    promstack.wait_until(lambda: promstack.query_value(prom.url, 'up{job="prometheus"}') == 1,
                         timeout=15, message=prom.log)
    promstack.wait_until(
        lambda: promstack.query_value(prom.url, f'up{{job="bulletproof",instance="{dead_target}"}}') == 0,
        timeout=15, message=prom.log)
    assert promstack.query(prom.url, "vector(1)")[0]["value"][1] == "1"
    with pytest.raises(RuntimeError):
        promstack.query(prom.url, "rate(")


def test_alert_goes_from_prometheus_through_alertmanager_to_the_webhook(prom, hook, dead_target):
    alert = hook.wait_for_alert("BulletproofDown", status="firing", timeout=30, instance=dead_target)
    elapsed = time.monotonic() - prom.extra["started"]
    assert alert["receiver"] == "bulletproof-critical"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "bulletproof"
    assert alert["annotations"]["runbook_url"] == RUNBOOK + "bulletproofdown"
    assert dead_target in alert["annotations"]["summary"]
    assert alert["generatorURL"].startswith(prom.url)
    assert elapsed < 30


def test_alertmanager_delivers_firing_then_resolved(am, hook):
    labels = {"alertname": "BulletproofWatchFolderDown", "severity": "critical",
              "job": "bulletproof", "instance": "delivery-test:8080", "folder": "/videos/incoming"}
    annotations = {"summary": "Watch folder /videos/incoming is unavailable on delivery-test:8080",
                   "description": "The watch folder has been missing for more than 2 minutes.",
                   "runbook_url": RUNBOOK + "bulletproofwatchfolderdown"}
    starts = time.time() - 5
    promstack.post_alerts(am.url, [{"labels": labels, "annotations": annotations,
                                    "startsAt": promstack.rfc3339(starts),
                                    "generatorURL": "http://prometheus.test/graph"}])
    firing = hook.wait_for_alert("BulletproofWatchFolderDown", status="firing", timeout=15,
                                 instance="delivery-test:8080")
    assert firing["receiver"] == "bulletproof-critical"
    assert firing["labels"] == labels
    assert firing["annotations"] == annotations

    promstack.post_alerts(am.url, [{"labels": labels, "annotations": annotations,
                                    "startsAt": promstack.rfc3339(starts),
                                    "endsAt": promstack.rfc3339(time.time() - 1)}])
    resolved = hook.wait_for_alert("BulletproofWatchFolderDown", status="resolved", timeout=15,
                                   instance="delivery-test:8080")
    assert resolved["labels"] == labels
    assert resolved["annotations"]["runbook_url"] == annotations["runbook_url"]


def test_monitor_down_inhibits_its_other_alerts(am, hook):
    def alert(name, severity, instance, **extra):
        return {"labels": {"alertname": name, "severity": severity, "job": "bulletproof",
                           "instance": instance, **extra},
                "annotations": {"summary": f"{name} on {instance}", "description": "test",
                                "runbook_url": RUNBOOK + name.lower()}}

    promstack.post_alerts(am.url, [
        alert("BulletproofDown", "critical", "inhibit-a:8080"),
        alert("BulletproofJobStalled", "warning", "inhibit-a:8080", worker="0"),
        alert("BulletproofJobStalled", "warning", "inhibit-b:8080", worker="0"),
    ])
    # The same warning for another instance gets through, and so does BulletproofDown ...
    other = hook.wait_for_alert("BulletproofJobStalled", timeout=15, instance="inhibit-b:8080")
    assert other["receiver"] == "bulletproof-warning"
    hook.wait_for_alert("BulletproofDown", timeout=15, instance="inhibit-a:8080")

    # ... while Alertmanager holds the one of the down instance as inhibited by it.
    def inhibited():
        found = promstack.alertmanager_alerts(am.url, alertname="BulletproofJobStalled",
                                              instance="inhibit-a:8080")
        return found and found[0]["status"]["state"] == "suppressed" and found[0]["status"]["inhibitedBy"]

    promstack.wait_until(inhibited, timeout=10)
    time.sleep(2.5)  # more than group_wait + group_interval of the test config
    assert not hook.find("BulletproofJobStalled", instance="inhibit-a:8080"), hook.summary()
