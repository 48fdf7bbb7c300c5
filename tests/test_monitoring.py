"""The monitoring mixin (exporter/monitoring/): the committed rules and dashboards are its output.

Regenerating (`python -m exporter.monitoring`) must change nothing: the files in prometheus/rules/
and grafana/dashboards/ are compared in memory with what the Python renders. A threshold, job name
or runbook URL changed in the one config shows up in every rule that uses it; the package imports
nothing else of the exporter (it is pure data generation).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.monitoring import rules
from exporter.monitoring.__main__ import main
from exporter.monitoring.config import DEFAULT, MonitoringConfig, Thresholds
from exporter.monitoring.generate import rendered_files, scaled_rule_files

REPO = Path(__file__).resolve().parents[1]


def _alerts(config: MonitoringConfig) -> dict[str, dict]:
    return {r["alert"]: r for g in rules.rule_files(config)["alerts.yml"]["groups"] for r in g["rules"]}


@pytest.mark.parametrize("relative", sorted(rendered_files(DEFAULT)))
def test_committed_file_is_what_the_generator_renders(relative: str) -> None:
    committed = (REPO / relative).read_text(encoding="utf-8")
    assert committed == rendered_files(DEFAULT)[relative], (
        f"{relative} differs from its generator: edit exporter/monitoring/, then run "
        "`python -m exporter.monitoring` and commit the output")


def test_the_generator_writes_every_rule_file_and_dashboard() -> None:
    files = set(rendered_files(DEFAULT))
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "prometheus" / "rules").glob("*.yml")} <= files
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "grafana" / "dashboards").glob("*.json")} <= files


def test_a_threshold_lives_in_one_place() -> None:
    config = dataclasses.replace(DEFAULT, thresholds=Thresholds(failure_burst_15m=7, stall_seconds=600,
                                                                volume_free_ratio=0.05))
    alerts = _alerts(config)
    burst = alerts["BulletproofJobFailureBurst"]
    assert burst["expr"].endswith(">= 7")
    assert "(threshold: 7)" in burst["annotations"]["description"]
    assert ") > 600\n" in alerts["BulletproofJobStalled"]["expr"]
    assert alerts["BulletproofOutputVolumeAlmostFull"]["expr"].endswith("< 0.05")
    assert "(threshold: 5%)" in alerts["BulletproofOutputVolumeAlmostFull"]["annotations"]["description"]
    assert _alerts(DEFAULT)["BulletproofJobFailureBurst"]["expr"].endswith(">= 5")


def test_every_threshold_and_for_is_used() -> None:
    templates = json.dumps([dataclasses.asdict(r) for g in rules.RECORDING_GROUPS + rules.ALERT_GROUPS
                            for r in g.rules])
    unused = [f.name for f in dataclasses.fields(Thresholds) if f.name not in templates]
    assert not unused, f"thresholds no rule uses: {unused}"
    alerts = {r.alert for g in rules.ALERT_GROUPS for r in g.rules}
    assert set(DEFAULT.for_durations) == alerts


def test_job_runbook_and_for_come_from_the_config() -> None:
    config = dataclasses.replace(DEFAULT, job_name="transcoder", runbook_base_url="https://wiki.example/rb",
                                 for_durations={**DEFAULT.for_durations, "BulletproofDown": "3m"})
    alerts = _alerts(config)
    assert alerts["BulletproofDown"]["expr"] == 'up{job="transcoder"} == 0'
    assert alerts["BulletproofAbsent"]["expr"] == 'absent(up{job="transcoder"})'
    assert alerts["BulletproofDown"]["for"] == "3m"
    assert "for more than 3 minutes" in alerts["BulletproofDown"]["annotations"]["description"]
    for name, rule in alerts.items():
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example/rb#{name.lower()}"
    dashboard = json.loads(rendered_files(config)["grafana/dashboards/overview.json"])
    instance = {v["name"]: v for v in dashboard["templating"]["list"]}["instance"]
    assert "transcoder scrape job" in instance["description"]


def test_every_alert_has_for_severity_and_annotations() -> None:
    for name, rule in _alerts(DEFAULT).items():
        assert rule["for"] and rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert "%{" not in json.dumps(rule), f"{name}: a placeholder was left unrendered"


def test_scaled_copy_keeps_names_labels_annotations() -> None:
    shipped = rules.rule_files(DEFAULT)
    scaled = {name: yaml.safe_load(text) for name, text in scaled_rule_files(DEFAULT, 30).items()}
    assert set(scaled) == set(shipped)
    for name in shipped:
        for g_ship, g_copy in zip(shipped[name]["groups"], scaled[name]["groups"], strict=True):
            for r_ship, r_copy in zip(g_ship["rules"], g_copy["rules"], strict=True):
                for key in ("alert", "record", "labels", "annotations"):
                    assert r_ship.get(key) == r_copy.get(key)
    assert _alerts(DEFAULT)["BulletproofHighFailureRatio"]["for"] == "10m"
    copy = {r["alert"]: r for g in scaled["alerts.yml"]["groups"] for r in g["rules"] if "alert" in r}
    assert copy["BulletproofHighFailureRatio"]["for"] == "20s"


def test_unknown_placeholder_is_a_clear_error() -> None:
    broken = rules.alert("BulletproofDown", expr="up == %{no_such_threshold}", severity="critical",
                         summary="s", description="d")
    with pytest.raises(KeyError, match="unknown placeholder %{no_such_threshold}"):
        rules.render_groups([rules.group("g", [broken])], DEFAULT)


def test_main_is_idempotent_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--test-rules", str(tmp_path), "--time-scale", "60"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alerts.yml", "recording.yml"]
    assert main(["--test-rules", str(tmp_path), "--time-scale", "60"]) == 0
    assert capsys.readouterr().out.endswith("up to date\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--test-rules", str(tmp_path), "--time-scale", "0"])
    assert exit_info.value.code == 2
    assert "--time-scale must be greater than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path)])
    assert "is not the repository root" in capsys.readouterr().err


def test_the_package_imports_nothing_else_of_the_exporter() -> None:
    code = ("import sys, exporter.monitoring.generate, exporter.monitoring.__main__; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('exporter')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    modules = set(out.stdout.split())
    assert modules, out.stderr
    assert {m for m in modules if m != "exporter" and not m.startswith("exporter.monitoring")} == set()
