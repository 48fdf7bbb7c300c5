"""The shipped Prometheus/Alertmanager configuration: checked by the real tools and by rules of ours.

* ``promtool check config`` / ``check rules`` / ``test rules`` and ``amtool check-config`` on the
  files as shipped (Debian's prometheus and prometheus-alertmanager packages);
* every alert has ``for``, a known severity, summary/description/runbook_url, a runbook section,
  promtool tests that fire it and that keep it silent; every recording rule is well named and
  tested; every metric the rules read is in the metric contract (docs/metrics.md);
* the notification templates render, and routing sends each severity where docs/alerting.md says.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.monitoring.durations import parse_duration

try:
    from tests import promstack
except ImportError:  # tests/ on sys.path instead of the repository root
    import promstack  # type: ignore[no-redef]

REPO = promstack.REPO
PROM = REPO / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
ALERTING_DOC = REPO / "docs" / "alerting.md"
METRICS_DOC = REPO / "docs" / "metrics.md"
RUNBOOK_PREFIX = "https://github.com/bulletproof-video/bulletproof/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning", "info"}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
ALERT_NAME = re.compile(r"^Bulletproof[A-Z][A-Za-z0-9]+$")

# The metric contract, used while docs/metrics.md does not exist; once it does, the
# names it lists are the contract. bulletproof_worker_paused (0/1 per worker slot: the slot's job
# is paused on purpose) is an addition the stall/slow-job alerts need; the exporter exports it.
CONTRACT_FALLBACK = {
    "bulletproof_build_info", "bulletproof_queue_paused", "bulletproof_workers_max",
    "bulletproof_workers_busy", "bulletproof_jobs", "bulletproof_queue_oldest_job_timestamp_seconds",
    "bulletproof_last_job_finished_timestamp_seconds", "bulletproof_worker_busy",
    "bulletproof_worker_progress_ratio", "bulletproof_worker_speed_ratio",
    "bulletproof_worker_eta_seconds", "bulletproof_worker_job_started_timestamp_seconds",
    "bulletproof_worker_last_progress_timestamp_seconds", "bulletproof_worker_job_media_seconds",
    "bulletproof_worker_job_info", "bulletproof_worker_paused", "bulletproof_watch_folder_up",
    "bulletproof_output_volume_free_bytes", "bulletproof_output_volume_size_bytes",
    "bulletproof_config_last_reload_successful",
    "bulletproof_config_last_reload_success_timestamp_seconds",
    "bulletproof_queue_paused_since_timestamp_seconds", "bulletproof_files_detected_total",
    "bulletproof_files_ignored_total", "bulletproof_jobs_enqueued_total",
    "bulletproof_jobs_completed_total", "bulletproof_jobs_failed_total",
    "bulletproof_jobs_cancelled_total", "bulletproof_jobs_retried_total",
    "bulletproof_input_bytes_total", "bulletproof_output_bytes_total",
    "bulletproof_media_seconds_total", "bulletproof_transcode_seconds_total",
    "bulletproof_job_duration_seconds", "bulletproof_job_queue_wait_seconds",
    "bulletproof_http_requests_total", "bulletproof_http_request_duration_seconds",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
KNOWN_LABELS = {"instance", "job", "profile", "reason", "worker", "le", "state", "outcome",
                "folder", "trigger", "handler", "method", "code", "job_id", "file", "result",
                "fleet", "node"}


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited with {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def load_rules() -> list[tuple[str, dict]]:
    """(group name, rule) for every rule in the shipped rule files."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend((group["name"], rule) for rule in group["rules"])
    return out


ALERTS = [r for _, r in load_rules() if "alert" in r]
RECORDS = [r for _, r in load_rules() if "record" in r]
ALERT_NAMES = sorted(r["alert"] for r in ALERTS)
RECORD_NAMES = sorted(r["record"] for r in RECORDS)


def contract() -> tuple[set[str], str]:
    if METRICS_DOC.exists():
        names = set(re.findall(r"\bbulletproof_[a-z0-9_]+", METRICS_DOC.read_text()))
        return names, str(METRICS_DOC.relative_to(REPO))
    return set(CONTRACT_FALLBACK), "CONTRACT_FALLBACK in this test (docs/metrics.md is missing)"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def strip_promql(expr: str) -> str:
    """The expression without string literals and comments."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    return re.sub(r"#[^\n]*", "", expr)


# --------------------------------------------------------------------------------------------
# The real tools
# --------------------------------------------------------------------------------------------

needs_promtool = pytest.mark.skipif(not promstack.PROMTOOL_BIN, reason="promtool is not installed")
needs_amtool = pytest.mark.skipif(not promstack.AMTOOL_BIN, reason="amtool is not installed")


@needs_promtool
def test_promtool_check_config():
    # Resolves rule_files (rules/*.yml) and the file_sd files (targets/*.yml) relative to it.
    proc = run(promstack.PROMTOOL_BIN, "check", "config", "prometheus/prometheus.yml")
    assert_ok(proc)
    assert "2 rule files found" in proc.stdout + proc.stderr


@needs_promtool
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    assert_ok(run(promstack.PROMTOOL_BIN, "check", "rules", str(path.relative_to(REPO))))


@needs_promtool
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path):
    assert_ok(run(promstack.PROMTOOL_BIN, "test", "rules", str(path.relative_to(REPO))))


@needs_amtool
def test_amtool_check_config():
    proc = run(promstack.AMTOOL_BIN, "check-config", "prometheus/alertmanager.yml")
    assert_ok(proc)
    assert "1 templates" in proc.stdout or "templates" in proc.stdout


@needs_amtool
@pytest.mark.parametrize("labels,receiver", [
    ({"alertname": "BulletproofDown", "severity": "critical"}, "bulletproof-critical"),
    ({"alertname": "BulletproofJobStalled", "severity": "warning"}, "bulletproof-warning"),
    ({"alertname": "BulletproofQueuePausedLong", "severity": "info"}, "bulletproof-info"),
    ({"alertname": "SomethingElse"}, "bulletproof-default"),
])
def test_routing_by_severity(labels: dict, receiver: str):
    proc = run(promstack.AMTOOL_BIN, "config", "routes", "test",
               "--config.file=prometheus/alertmanager.yml", "--verify.receivers=" + receiver,
               *[f"{k}={v}" for k, v in labels.items()])
    assert_ok(proc)


ALERT_DATA = {
    "receiver": "bulletproof-critical",
    "status": "firing",
    "externalURL": "http://alertmanager:9093",
    "groupLabels": {"alertname": "BulletproofJobFailureBurst", "instance": "bulletproof:8080"},
    "commonLabels": {"alertname": "BulletproofJobFailureBurst", "instance": "bulletproof:8080",
                     "job": "bulletproof", "severity": "warning"},
    "commonAnnotations": {},
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "BulletproofJobFailureBurst", "instance": "bulletproof:8080",
                    "job": "bulletproof", "severity": "warning", "reason": "input_invalid"},
         "annotations": {"summary": "Burst of input_invalid failures on bulletproof:8080",
                         "description": "7 transcode attempts failed with reason input_invalid.",
                         "runbook_url": RUNBOOK_PREFIX + "bulletproofjobfailureburst"},
         "startsAt": "2024-05-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus:9090/graph?g0.expr=x", "fingerprint": "1"},
        {"status": "resolved",
         "labels": {"alertname": "BulletproofJobFailureBurst", "instance": "bulletproof:8080",
                    "job": "bulletproof", "severity": "warning", "reason": "timeout"},
         "annotations": {"summary": "Burst of timeout failures on bulletproof:8080",
                         "description": "5 transcode attempts failed with reason timeout.",
                         "runbook_url": RUNBOOK_PREFIX + "bulletproofjobfailureburst"},
         "startsAt": "2024-05-01T09:00:00Z", "endsAt": "2024-05-01T09:30:00Z",
         "generatorURL": "http://prometheus:9090/graph?g0.expr=y", "fingerprint": "2"},
    ],
}
TEMPLATE_FILES = sorted((PROM / "templates").glob("*.tmpl"))
TEMPLATE_NAMES = sorted({name for path in TEMPLATE_FILES
                         for name in re.findall(r'\{\{-?\s*define\s+"([^"]+)"', path.read_text())})


def test_templates_are_used_by_the_config():
    config = (PROM / "alertmanager.yml").read_text()
    assert TEMPLATE_FILES, "no notification templates in prometheus/templates/"
    for name in re.findall(r'template "([^"]+)"', config):
        assert name in TEMPLATE_NAMES, f"alertmanager.yml uses an undefined template {name!r}"


@needs_amtool
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_templates_render(name: str, tmp_path: Path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(ALERT_DATA))
    kind = "html" if name.endswith(".html") else "text"
    text = f'{{{{ template "{name}" . }}}}'
    if name.startswith("bulletproof.alert."):  # these render one alert, not a notification
        text = f"{{{{ range .Alerts }}}}{text}{{{{ end }}}}"
    proc = run(promstack.AMTOOL_BIN, "template", "render",
               f"--template.glob={PROM / 'templates' / '*.tmpl'}", f"--template.data={data}",
               f"--template.type={kind}", f"--template.text={text}")
    assert_ok(proc)
    assert proc.stdout.strip(), f"{name} rendered nothing"
    assert "<no value>" not in proc.stdout, proc.stdout
    if name.endswith((".text", ".html")):
        assert "Burst of input_invalid failures on bulletproof:8080" in proc.stdout
        assert RUNBOOK_PREFIX + "bulletproofjobfailureburst" in proc.stdout
        assert "Burst of timeout failures" in proc.stdout  # the resolved one is listed too


# --------------------------------------------------------------------------------------------
# Our own rules about the rules
# --------------------------------------------------------------------------------------------


def test_there_are_alerts_and_recording_rules():
    assert len(ALERTS) >= 14 and len(RECORDS) >= 10
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES), "duplicate alert names"
    assert len(set(RECORD_NAMES)) == len(RECORD_NAMES), "duplicate recording rules"


@pytest.mark.parametrize("rule", ALERTS, ids=lambda r: r["alert"])
def test_alert_has_for_severity_and_annotations(rule: dict):
    name = rule["alert"]
    assert ALERT_NAME.match(name), f"{name}: alert names are PascalCase and start with Bulletproof"
    assert rule.get("for"), f"{name} has no `for`"
    parse_duration(str(rule["for"]))
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name} has no {key}"
    assert annotations["runbook_url"] == RUNBOOK_PREFIX + name.lower()


def test_every_runbook_url_has_a_section():
    anchors = {github_anchor(line[3:]) for line in RUNBOOK.read_text().splitlines()
               if line.startswith("## ")}
    missing = [r["alert"] for r in ALERTS
               if r["annotations"]["runbook_url"].rsplit("#", 1)[1] not in anchors]
    assert not missing, f"docs/runbook.md has no `## <AlertName>` section for {missing}"


def test_alerting_doc_lists_every_alert_and_recording_rule():
    text = ALERTING_DOC.read_text()
    missing = [n for n in ALERT_NAMES + RECORD_NAMES if f"`{n}`" not in text and n not in text]
    assert not missing, f"docs/alerting.md does not mention {missing}"


@pytest.mark.parametrize("rule", RECORDS, ids=lambda r: r["record"])
def test_recording_rule_name(rule: dict):
    assert RECORD_NAME.match(rule["record"]), rule["record"]
    level = rule["record"].split(":")[0]
    # instance: one monitor's numbers; fleet: the monitors sharing one store, counted once
    assert level.startswith(("instance", "fleet")), f"{rule['record']}: level should name the kept labels"


def _tests() -> list[dict]:
    out = []
    for path in TEST_FILES:
        data = yaml.safe_load(path.read_text())
        for test in data.get("tests", []):
            out.append(dict(test, _file=path.name))
    return out


def test_every_alert_is_tested_firing_and_silent():
    firing: set[str] = set()
    silent: set[str] = set()
    for test in _tests():
        for case in test.get("alert_rule_test", []) or []:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert not set(ALERT_NAMES) - firing, f"never tested firing: {sorted(set(ALERT_NAMES) - firing)}"
    assert not set(ALERT_NAMES) - silent, f"never tested silent: {sorted(set(ALERT_NAMES) - silent)}"


def test_every_recording_rule_is_tested():
    exprs = " ".join(str(case["expr"]) for test in _tests()
                     for case in test.get("promql_expr_test", []) or [])
    untested = [n for n in RECORD_NAMES if not re.search(rf"(?<![\w:]){re.escape(n)}(?![\w:])", exprs)]
    assert not untested, f"no promql_expr_test for {untested}"


def test_test_files_evaluate_every_group_in_a_fixed_order():
    # promtool evaluates groups in random order unless told: recording rules must come first.
    groups = [g["name"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    for path in TEST_FILES:
        data = yaml.safe_load(path.read_text())
        order = data.get("group_eval_order") or []
        assert sorted(order) == sorted(groups), f"{path.name}: group_eval_order must list {groups}"
        recording = [g for g in order if g.startswith("bulletproof.recording")]
        assert order[: len(recording)] == recording, f"{path.name}: recording groups first"
        assert sorted(data["rule_files"]) == sorted(f"../rules/{p.name}" for p in RULE_FILES)


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w:])bulletproof_[a-z0-9_]+", text))


def test_rules_only_read_metrics_of_the_contract():
    names, source = contract()
    used: set[str] = set()
    for rule in ALERTS + RECORDS:
        used |= _metric_names(strip_promql(str(rule["expr"])))
        for value in (rule.get("annotations") or {}).values():  # queries inside templates
            used |= _metric_names(str(value))
    unknown = set()
    for name in used:
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in names:
                base = name[: -len(suffix)]
        if base not in names:
            unknown.add(name)
    assert not unknown, f"metrics not in the contract ({source}): {sorted(unknown)}"


def test_rules_only_use_defined_recording_rules_and_known_labels():
    for rule in ALERTS + RECORDS:
        expr = strip_promql(str(rule["expr"]))
        for ref in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", expr):
            assert ref in RECORD_NAMES, f"{rule.get('alert') or rule.get('record')}: unknown {ref}"
        for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
            labels = {lab.strip() for lab in group.split(",") if lab.strip()}
            assert labels <= KNOWN_LABELS, f"unknown label(s) {labels - KNOWN_LABELS} in {expr}"


def test_rules_carry_no_hand_marked_durations():
    # The shortened test copy comes from the generator (exporter.monitoring) with a time scale,
    # not from editing these files: a `# duration` marker would be a leftover nobody scales.
    for rule in ALERTS + RECORDS:
        assert "# duration" not in str(rule["expr"]), rule.get("alert") or rule.get("record")


def test_inhibit_rules_name_real_alerts():
    config = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    names = set(ALERT_NAMES)
    for rule in config["inhibit_rules"]:
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            m = re.fullmatch(r'\s*alertname\s*(=|!=|=~|!~)\s*"([^"]*)"\s*', matcher)
            if not m:
                continue
            op, value = m.groups()
            if op == "=":
                assert value in names, f"inhibit rule names an unknown alert {value!r}"
            elif op == "=~":
                assert any(re.fullmatch(value, n) for n in names), f"{value!r} matches no alert"
    down = [r for r in config["inhibit_rules"]
            if 'alertname="BulletproofDown"' in r.get("source_matchers", [])]
    assert down and down[0]["equal"] == ["instance"]


def test_no_secret_in_the_alertmanager_config():
    text = (PROM / "alertmanager.yml").read_text()
    config = yaml.safe_load(text)
    assert "hooks.slack.com" not in text
    for key in ("smtp_auth_password", "slack_api_url", "smtp_auth_secret"):
        assert key not in config.get("global", {}), f"global.{key}: use the *_file variant"
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []) or []:
            assert "api_url" not in slack
        for email in receiver.get("email_configs", []) or []:
            assert "auth_password" not in email
        for hook in receiver.get("webhook_configs", []) or []:
            auth = (hook.get("http_config") or {}).get("authorization") or {}
            assert "credentials" not in auth, "use credentials_file"


def test_scrape_config_targets_the_compose_service_and_alertmanager():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["evaluation_interval"] == "5s"
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "bulletproof")
    assert job["static_configs"][0]["targets"] == ["bulletproof:8080"]
    assert job["file_sd_configs"][0]["files"] == ["targets/*.yml"]
    assert (PROM / "targets" / "bulletproof.example.yml").exists()
    assert config["rule_files"] == ["rules/*.yml"]
    am = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"]
