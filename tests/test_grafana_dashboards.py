"""Static checks of the Grafana provisioning and dashboards in grafana/ (no Grafana server runs here).

The dashboards are generated (`python -m exporter.monitoring`, see tests/test_monitoring.py); these
tests check what is generated:

* Grafana's own schema: every dashboard validates against `dashboard.jsonschema.json` (Grafana
  v12.3.3, as grafana-foundation-sdk generates it; vendored in tests/data/grafana-schema/ with its
  provenance), and each panel's `options` / `fieldConfig.defaults.custom` against its panel type's
  schema. The generated schemas' known quirks are allowed as named exceptions (`quirk_*`), nothing
  else. Plus what a schema cannot express: unique panel ids and refIds, panels inside the
  24-column grid without overlap, thresholds whose first step is the base.
* Actions only on panel types that show them (Grafana 12: bar chart, candlestick, state timeline,
  status history, table, time series, trend, XY chart, canvas); the queue buttons keep their
  requests.
* Every data source reference resolves to a provisioned uid (grafana/provisioning/datasources) of
  the right type, or to a datasource variable of the dashboard whose default is one; the
  `datasource` and `instance` variables.
* Product lint: titles, descriptions, units, thresholds; every PromQL selector filtered by
  instance=~"$instance" (a fleet rule: joined to the fleets of the selected monitors); counters
  (_total, _bucket, _count, _sum) only inside rate/irate/increase;
  range windows only $__rate_interval (or $__range for "in the time range" stats), never fixed.
* Every metric in an expression is in the metric contract (docs/metrics.md) or is a recording
  rule of prometheus/rules/recording.yml.
* Provisioning YAML parses; plugins are pinned to exact versions; dashboard links point to
  existing uids; every action and every Infinity query names a real route of the control API
  (its OpenAPI document) with declared parameters; no token anywhere in a dashboard.

The helpers at the top are shared with tests/test_grafana_live.py and tests/test_frontdoor.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GRAFANA = REPO / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "bulletproof.yml"
PROVIDERS_YML = GRAFANA / "provisioning" / "dashboards" / "bulletproof.yml"
PLUGINS_ENV = GRAFANA / "plugins.env"
NGINX_TEMPLATE = GRAFANA / "nginx" / "default.conf.template"
METRICS_DOC = REPO / "docs" / "metrics.md"
RECORDING_RULES = REPO / "prometheus" / "rules" / "recording.yml"
DASHBOARDS_DOC = REPO / "docs" / "dashboards.md"

EXPECTED_UIDS = {
    "overview": "bulletproof-overview",
    "jobs": "bulletproof-jobs",
    "history": "bulletproof-history",
    "config": "bulletproof-config",
}
PROXY_PREFIX = "/bulletproof"
INFINITY = "yesoreyeram-infinity-datasource"
FORM_PANEL = "volkovlabs-form-panel"
NGINX_VARIABLES = {"FRONTDOOR_PORT", "GRAFANA_UPSTREAM", "BULLETPROOF_UPSTREAM"}
# Panel types that come with Grafana itself (anything else must be a pinned plugin).
CORE_PANELS = {"row", "stat", "timeseries", "table", "bargauge", "gauge", "heatmap", "alertGroups",
               "alertlist", "text", "barchart", "piechart", "state-timeline", "status-history"}
CORE_DATASOURCES = {"prometheus", "alertmanager", "grafana"}
# Panels that show no numbers of their own: no unit or thresholds to lint.
NO_FIELD_CONFIG = {"row", "alertGroups", FORM_PANEL, "text"}
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
ALLOWED_WINDOWS = {"$__rate_interval", "$__range"}


# ------------------------------------------------------------------------------------ loading


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard file by its stem (overview, jobs, history, config)."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS.glob("*.json"))}


def load_datasources() -> list[dict[str, Any]]:
    return yaml.safe_load(DATASOURCES_YML.read_text())["datasources"]


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, panels of collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def panel_datasource_type(panel: dict[str, Any], target: dict[str, Any]) -> str | None:
    ds = target.get("datasource") or panel.get("datasource") or {}
    return ds.get("type")


def prometheus_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, target) for every PromQL expression: panel targets and annotation queries."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []) or []:
            if panel_datasource_type(panel, target) == "prometheus":
                yield f"{dashboard['uid']} / {panel['title']} / {target['refId']}", target
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if (annotation.get("datasource") or {}).get("type") == "prometheus":
            yield f"{dashboard['uid']} / annotation {annotation['name']}", annotation


def infinity_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []) or []:
            if panel_datasource_type(panel, target) == INFINITY:
                yield panel, target


def panel_actions(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, action) for every native panel action (field defaults and overrides)."""
    for panel in iter_panels(dashboard):
        config = panel.get("fieldConfig") or {}
        for action in (config.get("defaults") or {}).get("actions", []) or []:
            yield panel, action
        for override in config.get("overrides", []) or []:
            for prop in override.get("properties", []):
                if prop.get("id") == "actions":
                    for action in prop.get("value") or []:
                        yield panel, action


def form_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in iter_panels(dashboard):
        if panel.get("type") == FORM_PANEL:
            yield panel


def all_actions() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(d["uid"], p, a) for d in load_dashboards().values() for p, a in panel_actions(d)]


# ------------------------------------------------------------------------------------- PromQL

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan", "atan2", "start", "end"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def strip_promql(expr: str) -> str:
    """The expression without string literals, label matchers, grouping label lists and ranges."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    return text


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (identifiers that are not functions/keywords)."""
    text = strip_promql(expr)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):
            continue  # a function call
        if name.lower() in _KEYWORDS or name.startswith("$"):
            continue
        if match.start() > 0 and text[match.start() - 1] in "$.":
            continue  # a variable ($__range) or a number's exponent part
        names.add(name)
    return names


def selectors(expr: str) -> Iterator[tuple[str, str | None, int, int]]:
    """(metric, label matchers or None, start, end) for every vector selector of the expression."""
    masked = _STRING.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1], expr)
    grouping_spans = [m.span() for m in _GROUPING.finditer(masked)]
    for match in _IDENT.finditer(masked):
        start, end = match.span()
        if any(a <= start < b for a, b in grouping_spans):
            continue
        rest = re.sub(r"^\s*(by|without)\s*\([^)]*\)", "", masked[end:])
        if rest.lstrip().startswith("(") or match.group(0).lower() in _KEYWORDS:
            continue  # a function or an aggregation
        if start > 0 and masked[start - 1] in "$.":
            continue
        if re.match(r"\s*(=|!=|=~|!~)", masked[end:]):
            continue  # a label name inside {...}
        if re.fullmatch(r"\d", masked[start - 1:start] or "x"):
            continue
        brace = re.match(r"\s*\{", masked[end:])
        if brace:
            close = masked.index("}", end)
            yield match.group(0), expr[end + brace.end():close], start, close + 1
        else:
            yield match.group(0), None, start, end


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana-style variable substitution ($name, ${name}, ${name:format} as given in values)."""
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        key = m.group(0) if m.group(0) in values else name
        if key not in values:
            raise KeyError(f"no value for {m.group(0)!r}")
        return values[key]

    return re.sub(r"\$\{([A-Za-z0-9_.]+(?::[A-Za-z0-9_]+)*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


# -------------------------------------------------------------------------------- the contract

# Used only if docs/metrics.md is missing: the metric contract as the exporter defines it.
FALLBACK_CONTRACT = {
    "bulletproof_build_info", "bulletproof_queue_paused", "bulletproof_queue_paused_since_timestamp_seconds",
    "bulletproof_workers_max", "bulletproof_workers_busy", "bulletproof_jobs",
    "bulletproof_queue_oldest_job_timestamp_seconds", "bulletproof_last_job_finished_timestamp_seconds",
    "bulletproof_worker_busy", "bulletproof_worker_paused", "bulletproof_worker_progress_ratio",
    "bulletproof_worker_speed_ratio", "bulletproof_worker_eta_seconds",
    "bulletproof_worker_job_started_timestamp_seconds", "bulletproof_worker_last_progress_timestamp_seconds",
    "bulletproof_worker_job_media_seconds", "bulletproof_worker_job_info", "bulletproof_watch_folder_up",
    "bulletproof_output_volume_free_bytes", "bulletproof_output_volume_size_bytes",
    "bulletproof_config_last_reload_successful", "bulletproof_config_last_reload_success_timestamp_seconds",
    "bulletproof_files_detected_total", "bulletproof_files_ignored_total", "bulletproof_jobs_enqueued_total",
    "bulletproof_jobs_completed_total", "bulletproof_jobs_failed_total", "bulletproof_jobs_cancelled_total",
    "bulletproof_jobs_retried_total", "bulletproof_input_bytes_total", "bulletproof_output_bytes_total",
    "bulletproof_media_seconds_total", "bulletproof_transcode_seconds_total",
    "bulletproof_http_requests_total", "process_start_time_seconds",
    *(f"{h}{s}" for h in ("bulletproof_job_duration_seconds", "bulletproof_job_queue_wait_seconds",
                          "bulletproof_http_request_duration_seconds")
      for s in ("_bucket", "_sum", "_count")),
}


def metric_contract() -> set[str]:
    """Every sample name of docs/metrics.md (histograms expanded to _bucket/_sum/_count)."""
    if not METRICS_DOC.exists():
        return set(FALLBACK_CONTRACT)
    names: set[str] = set()
    text = METRICS_DOC.read_text(encoding="utf-8")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) >= 2 and re.fullmatch(r"`[a-z_:][a-z0-9_:]*`", cells[0]):
            name = cells[0].strip("`")
            if cells[1].startswith("histogram"):
                names.update(f"{name}{s}" for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(name)
    # The default collectors are listed in prose.
    names.update(re.findall(r"`((?:process|python)_[a-z0-9_]+)", text))
    return names


def recording_rule_names() -> set[str]:
    if not RECORDING_RULES.exists():
        return set()
    data = yaml.safe_load(RECORDING_RULES.read_text())
    return {r["record"] for g in data.get("groups", []) for r in g.get("rules", []) if "record" in r}


# --------------------------------------------------------------------------- small GJSON subset


def gjson_get(data: Any, path: str) -> tuple[bool, Any]:
    """(exists, value) of a GJSON path, for the subset the dashboards use: dotted keys, array
    indexes, `#` (length) / `#.key` (map over an array), and the modifiers @this, @keys, @values.
    Infinity's backend parser (jsonframer) evaluates root selectors and column selectors with GJSON
    first; an empty root selector is the whole document."""
    if path == "":
        return True, data
    parts = path.split(".")
    value = data
    for i, part in enumerate(parts):
        if part == "@this":
            continue
        if part == "@keys":
            if not isinstance(value, dict):
                return False, None
            value = list(value.keys())
            continue
        if part == "@values":
            if not isinstance(value, dict):
                return False, None
            value = list(value.values())
            continue
        if part == "#":
            if not isinstance(value, list):
                return False, None
            rest = ".".join(parts[i + 1:])
            if not rest:
                return True, len(value)
            out = []
            for item in value:
                found, v = gjson_get(item, rest)
                if found:
                    out.append(v)
            return True, out
        if isinstance(value, dict):
            if part not in value:
                return False, None
            value = value[part]
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            if index >= len(value):
                return False, None
            value = value[index]
        else:
            return False, None
    return True, value


def infinity_rows(document: Any, target: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as Infinity's backend parser frames them: root selector, then one value per column
    (GJSON on each item of an array root, or on the object root as a single row). Raises
    AssertionError naming the selector that matches nothing."""
    found, root = gjson_get(document, target.get("root_selector", ""))
    assert found, f"root selector {target['root_selector']!r} matches nothing"
    items = root if isinstance(root, list) else [root]
    rows = []
    for item in items:
        row = {}
        for column in target["columns"]:
            found, value = gjson_get(item, column["selector"])
            assert found, f"column selector {column['selector']!r} matches nothing in {item!r}"
            row[column["text"]] = value
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ nginx template


def render_nginx_template(env: dict[str, str], text: str | None = None) -> str:
    """What the official nginx image's envsubst step makes of the template: ${VAR} replaced for
    the variables it is given (the image substitutes only defined environment variables)."""
    text = NGINX_TEMPLATE.read_text() if text is None else text

    def repl(m: re.Match) -> str:
        return env[m.group(1)] if m.group(1) in env else m.group(0)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", repl, text)


# ----------------------------------------------------------------------- Grafana's own schema

SCHEMA_DIR = REPO / "tests" / "data" / "grafana-schema"
# Panel types whose schema is vendored (file stem by panel type); others have none to check.
PANEL_SCHEMAS = {"stat": "stat", "table": "table", "timeseries": "timeseries", "bargauge": "bargauge",
                 "gauge": "gauge", "heatmap": "heatmap", "state-timeline": "statetimeline"}
# Panel types on which Grafana 12 shows panel actions (its docs; canvas has its own). An action on
# any other panel type (a stat, say) is saved in the JSON but never shown.
ACTION_PANELS = {"barchart", "candlestick", "state-timeline", "status-history", "table", "timeseries",
                 "trend", "xychart", "canvas"}


def _load_schema(stem: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{stem}.jsonschema.json").read_text(encoding="utf-8"))


# The known quirks of the generated schemas (tests/data/grafana-schema/README.md): Grafana accepts
# these, the generated JSON Schema does not. Each is patched in memory, by name, and first checks
# that the schema still has the quirk, so that a fixed upstream schema drops the exception.


def quirk_override_value_is_any(defs: dict[str, Any]) -> None:
    """DynamicConfigValue.value is typed object; Grafana's source says any (units, numbers...)."""
    assert defs["DynamicConfigValue"]["properties"]["value"]["type"] == "object"
    defs["DynamicConfigValue"]["properties"]["value"] = {}


def quirk_matcher_options_is_any(defs: dict[str, Any]) -> None:
    """MatcherConfig.options is typed object; matchers such as byName take a string."""
    assert defs["MatcherConfig"]["properties"]["options"]["type"] == "object"
    defs["MatcherConfig"]["properties"]["options"] = {}


def quirk_variable_query_is_any_object(defs: dict[str, Any]) -> None:
    """VariableModel.query as an object is typed a map of objects; Grafana takes any object
    (the Prometheus variable editor writes {"qryType": 1, "query": "...", "refId": "..."})."""
    query = defs["VariableModel"]["properties"]["query"]
    assert query["oneOf"][1]["additionalProperties"] == {"type": "object", "additionalProperties": {}}
    defs["VariableModel"]["properties"]["query"] = {"oneOf": [{"type": "string"}, {"type": "object"}]}


def quirk_field_links_are_data_links(defs: dict[str, Any]) -> None:
    """FieldConfig.links items are typed DashboardLink; a field's links are data links."""
    assert defs["FieldConfig"]["properties"]["links"]["items"] == {"$ref": "#/definitions/DashboardLink"}
    defs["FieldConfig"]["properties"]["links"]["items"] = {
        "type": "object", "additionalProperties": False, "required": ["title", "url"],
        "properties": {"title": {"type": "string"}, "url": {"type": "string"},
                       "targetBlank": {"type": "boolean"}}}


def quirk_table_cell_options_any_of(defs: dict[str, Any]) -> None:
    """TableCellOptions is a oneOf whose branches all accept every `type`, so {"type": "auto"}
    matches several; Grafana picks the branch by `type`. Read as anyOf."""
    cell = defs["TableCellOptions"]
    assert "oneOf" in cell
    cell["anyOf"] = cell.pop("oneOf")


DASHBOARD_QUIRKS = (quirk_override_value_is_any, quirk_matcher_options_is_any,
                    quirk_variable_query_is_any_object, quirk_field_links_are_data_links)
PANEL_QUIRKS = {"table": (quirk_table_cell_options_any_of,)}


def dashboard_validator() -> jsonschema.Draft7Validator:
    """Validator of Grafana's classic dashboard model (v12.3.3), the documented quirks allowed."""
    schema = _load_schema("dashboard")
    for quirk in DASHBOARD_QUIRKS:
        quirk(schema["definitions"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def panel_validators(panel_type: str) -> dict[str, jsonschema.Draft7Validator]:
    """Validators of a panel type's `options` and `fieldConfig.defaults.custom` (where defined)."""
    stem = PANEL_SCHEMAS.get(panel_type)
    if stem is None:
        return {}
    defs = _load_schema(stem)["definitions"]
    for quirk in PANEL_QUIRKS.get(panel_type, ()):
        quirk(defs)
    return {part: jsonschema.Draft7Validator({"$ref": f"#/definitions/{name}", "definitions": defs})
            for part, name in (("options", "Options"), ("custom", "FieldConfig")) if name in defs}


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors under a oneOf/anyOf mismatch, in the branch that came closest (fewest errors)."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    closest = min(branches.values(), key=len)
    return [leaf for sub in closest for leaf in _leaf_errors(sub)]


def schema_errors(validator: jsonschema.Draft7Validator, data: Any) -> list[str]:
    """Every error (for a oneOf/anyOf mismatch: those of its closest branch) as 'path: message'."""
    return sorted(f"{'/'.join(map(str, leaf.absolute_path))}: {leaf.message[:300]}"
                  for error in validator.iter_errors(data) for leaf in _leaf_errors(error))


def openapi_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path template) -> OpenAPI operation of the control API."""
    from exporter.api.openapi import openapi_document

    doc = openapi_document()
    return {(method.upper(), path): op for path, ops in doc["paths"].items()
            for method, op in ops.items() if method.lower() in ("get", "post", "put", "delete", "patch")}


def match_route(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The OpenAPI path template and operation a concrete (or templated) path falls under."""
    for (m, template), op in openapi_operations().items():
        if m != method:
            continue
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template, op
    return None


# ======================================================================================= tests

DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))


def test_the_four_dashboards_parse_with_their_stable_uids() -> None:
    dashboards = load_dashboards()
    assert set(dashboards) == set(EXPECTED_UIDS), sorted(dashboards)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for stem, data in dashboards.items():
        assert data["uid"] == EXPECTED_UIDS[stem]
        assert "bulletproof" in data["tags"]
        assert data.get("id") is None, "provisioned dashboards must not carry a database id"
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)


def test_vendored_schemas_are_unchanged() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text(encoding="utf-8")
    listed = dict((name, digest) for digest, name in re.findall(r"^    ([0-9a-f]{64})  (\S+)$", readme, re.M))
    files = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert set(listed) == files and (SCHEMA_DIR / "LICENSE").exists()
    for name, digest in listed.items():
        assert hashlib.sha256((SCHEMA_DIR / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboard_passes_grafanas_schema(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    errors = schema_errors(dashboard_validator(), data)
    for panel in iter_panels(data):
        validators = panel_validators(panel["type"])
        parts = {"options": panel.get("options"),
                 "custom": ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("custom")}
        for part, validator in validators.items():
            if parts[part] is not None:
                errors += [f"{panel['title']} {part}: {e}" for e in schema_errors(validator, parts[part])]
    assert not errors, "\n".join(errors)

    # What a schema cannot express: unique ids and refIds, the grid, ordered thresholds.
    panels = list(iter_panels(data))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refIds {refs}"
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} leaves the 24-column grid"
        steps = (panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds") or {}).get("steps")
        if steps:
            assert steps[0]["value"] is None, f"{panel['title']}: first threshold step must be the base"
            values = [s["value"] for s in steps[1:]]
            assert values == sorted(values), f"{panel['title']}: threshold steps out of order"
    cells: dict[tuple[int, int], str] = {}
    for panel in data["panels"]:  # top level (collapsed rows keep their panels inside)
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"
    variables = [v["name"] for v in data["templating"]["list"]]
    assert len(variables) == len(set(variables))


def test_the_schema_check_rejects_what_grafana_rejects() -> None:
    data = load_dashboards()["overview"]
    broken = json.loads(json.dumps(data))
    broken["templating"]["list"][1]["allValue"] = None
    broken["panels"][1]["gridPos"]["w"] = "wide"
    broken["panels"][1]["colour"] = "red"
    errors = "\n".join(schema_errors(dashboard_validator(), broken))
    assert "allValue: None is not of type 'string'" in errors
    assert "'wide' is not of type 'integer'" in errors
    assert "'colour' was unexpected" in errors
    stat = panel_validators("stat")["options"]
    assert any("percentChangeColorMode" in e for e in schema_errors(stat, {"graphMode": "none"}))


def test_actions_sit_on_panels_that_show_them() -> None:
    actions = all_actions()
    assert actions
    for uid, panel, action in actions:
        assert panel["type"] in ACTION_PANELS, (
            f"{uid} / {panel['title']}: Grafana shows no actions on a {panel['type']} panel "
            f"({action['title']})")


def test_queue_buttons_keep_their_requests() -> None:
    overview = load_dashboards()["overview"]
    headers = [["Content-Type", "application/json"]]
    expected = {
        "Pause queue": {"method": "POST", "url": "/bulletproof/api/v1/queue/pause", "body": "{}",
                        "queryParams": [], "headers": headers},
        "Resume queue": {"method": "POST", "url": "/bulletproof/api/v1/queue/resume", "body": "{}",
                         "queryParams": [], "headers": headers},
        "Clear queue": {"method": "POST", "url": "/bulletproof/api/v1/queue/clear", "body": "{}",
                        "queryParams": [], "headers": headers},
        "Retry all failed": {"method": "POST", "url": "/bulletproof/api/v1/jobs/retry-failed", "body": "{}",
                             "queryParams": [], "headers": headers},
    }
    found = {a["title"]: (p, a) for p, a in panel_actions(overview) if a["title"] in expected}
    assert set(found) == set(expected)
    for title, (panel, action) in found.items():
        assert panel["title"] == "Queue" and panel["type"] in ACTION_PANELS
        assert action["fetch"] == expected[title], title
    assert "Running jobs" in found["Clear queue"][1].get("confirmation", "") or \
        "Running jobs go on" in found["Clear queue"][1]["confirmation"]


def _datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield f"{path}/{key}", value
            else:
                yield from _datasource_refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasource_refs(value, f"{path}/{i}")


def test_every_datasource_reference_resolves() -> None:
    provisioned = {ds["uid"]: ds for ds in load_datasources()}
    names = {ds["name"]: ds for ds in load_datasources()}
    for data in load_dashboards().values():
        ds_vars = {v["name"]: v for v in data["templating"]["list"] if v["type"] == "datasource"}
        for var in ds_vars.values():
            default = var["current"]["value"]
            assert default in provisioned, f"{data['uid']}: ${var['name']} defaults to unknown {default}"
            assert provisioned[default]["type"] == var["query"]
        for where, ref in _datasource_refs(data):
            uid = ref["uid"]
            if uid == "-- Grafana --":
                assert ref.get("type") == "grafana"
                continue
            var = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
            if var:
                name = var.group(1) or var.group(2)
                assert name in ds_vars, f"{data['uid']}{where}: ${name} is not a datasource variable"
                assert ref.get("type") == ds_vars[name]["query"], f"{data['uid']}{where}: type mismatch"
            else:
                assert uid in provisioned, f"{data['uid']}{where}: unknown datasource uid {uid}"
                assert ref.get("type") == provisioned[uid]["type"]
        for panel in iter_panels(data):
            if panel["type"] == "alertGroups":
                source = panel["options"]["alertmanager"]
                assert source in names and names[source]["type"] == "alertmanager", source
            if panel["type"] == FORM_PANEL:
                for request in ("initial", "update"):
                    assert not panel["options"][request].get("datasource"), \
                        "the form talks to the API through the front door, not a data source"


def test_datasource_and_instance_variables() -> None:
    for data in load_dashboards().values():
        variables = {v["name"]: v for v in data["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        assert ds["current"]["value"] == "bulletproof-prometheus"
        inst = variables["instance"]
        assert inst["type"] == "query" and inst["multi"] and inst["includeAll"]
        assert inst["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert inst["definition"] == "label_values(bulletproof_build_info, instance)"
        assert inst["query"]["query"] == inst["definition"]
        if any(True for _ in infinity_targets(data)):
            api = variables["api"]
            assert api["type"] == "datasource" and api["query"] == INFINITY
            assert api["current"]["value"] == "bulletproof-api"


def test_panels_have_titles_descriptions_units_and_thresholds() -> None:
    problems = []
    for data in load_dashboards().values():
        for panel in iter_panels(data):
            name = f"{data['uid']} / {panel.get('title')}"
            if panel["type"] == "row":
                continue
            if len(panel.get("description", "")) < 30:
                problems.append(f"{name}: no real description")
            if panel["type"] in NO_FIELD_CONFIG:
                continue
            defaults = panel["fieldConfig"]["defaults"]
            if not defaults.get("unit"):
                problems.append(f"{name}: no unit")
            if not (defaults.get("thresholds") or {}).get("steps"):
                problems.append(f"{name}: no thresholds")
            if not panel.get("targets"):
                problems.append(f"{name}: no query")
    assert not problems, "\n".join(problems)


def test_promql_lint() -> None:
    problems = []
    count = 0
    for data in load_dashboards().values():
        for where, target in prometheus_targets(data):
            count += 1
            expr = target["expr"]
            ds = target["datasource"]
            if ds != {"type": "prometheus", "uid": "${datasource}"}:
                problems.append(f"{where}: datasource must be ${{datasource}}, not {ds}")
            for window in re.findall(r"\[([^\]]*)\]", expr):
                if window not in ALLOWED_WINDOWS:
                    problems.append(f"{where}: fixed range window [{window}] (use $__rate_interval)")
            found = list(selectors(expr))
            if not found:
                problems.append(f"{where}: no metric selector in {expr!r}")
            # A fleet rule (the store's gauges counted once) has no instance: it is narrowed to
            # the fleets of the selected monitors by a join with their bulletproof_fleet_info.
            of_selected_fleets = re.search(
                r'and on \(job, fleet\) bulletproof_fleet_info\{instance=~"\$instance"\}', expr)
            for metric, matchers, start, end in found:
                if metric.startswith("fleet") and ":" in metric and of_selected_fleets:
                    continue
                if matchers is None or 'instance=~"$instance"' not in matchers:
                    problems.append(f"{where}: {metric} is not filtered by instance=~\"$instance\"")
                if metric.endswith(COUNTER_SUFFIXES):
                    before = expr[:start]
                    after = expr[end:]
                    func = re.search(r"(\w+)\s*\(\s*$", before)
                    if not (func and func.group(1) in RANGE_FUNCTIONS and re.match(r"\s*\[", after)):
                        problems.append(f"{where}: counter {metric} outside rate()/increase()")
    assert count >= 40, f"only {count} PromQL expressions found"
    assert not problems, "\n".join(problems)


def test_promql_helpers() -> None:
    expr = ('sum by (le) (rate(x_bucket{instance=~"$instance", a="b{c}"}[$__rate_interval])) '
            '* on (instance, worker) group_left (file) y{instance=~"$instance"} and time() - z')
    assert metric_names(expr) == {"x_bucket", "y", "z"}
    assert [s[0] for s in selectors(expr)] == ["x_bucket", "y", "z"]
    values = {"$__range": "5m", "${x:csv}": "1,2", "y": "Y"}
    assert substitute("a[$__range] ${x:csv} $y", values) == "a[5m] 1,2 Y"


def test_every_metric_is_in_the_contract() -> None:
    contract = metric_contract()
    recorded = recording_rule_names()
    assert "bulletproof_jobs_completed_total" in contract
    assert "bulletproof_job_duration_seconds_bucket" in contract
    unknown = []
    for data in load_dashboards().values():
        for where, target in prometheus_targets(data):
            for name in metric_names(target["expr"]):
                if name not in contract and name not in recorded:
                    unknown.append(f"{where}: {name}")
        for var in data["templating"]["list"]:
            if var["type"] == "query":
                for name in metric_names(re.sub(r"^label_values\((.*)\)$", r"\1", var["definition"])):
                    if name not in contract and name != "instance":
                        unknown.append(f"{data['uid']} variable {var['name']}: {name}")
    assert not unknown, "\n".join(unknown)


def test_provisioning_yaml() -> None:
    sources = {ds["uid"]: ds for ds in load_datasources()}
    assert set(sources) == {"bulletproof-prometheus", "bulletproof-alertmanager", "bulletproof-api"}
    prom = sources["bulletproof-prometheus"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    am = sources["bulletproof-alertmanager"]
    assert am["type"] == "alertmanager" and am["url"] == "http://alertmanager:9093"
    assert am["jsonData"]["implementation"] == "prometheus"
    api = sources["bulletproof-api"]
    assert api["type"] == INFINITY and api["url"] == "http://bulletproof:8080"
    assert api["jsonData"]["auth_method"] == "bearerToken"
    assert api["jsonData"]["allowedHosts"] == ["http://bulletproof:8080/"]
    # The token comes from Grafana's environment, never from the file itself.
    assert api["secureJsonData"] == {"bearerToken": "${BULLETPROOF_API_TOKEN}"}
    assert "bearerToken" not in api["jsonData"]
    for data in load_dashboards().values():
        for _, target in infinity_targets(data):
            url = api["url"] + target["url"]
            assert any(url.startswith(h) for h in api["jsonData"]["allowedHosts"]), url

    providers = yaml.safe_load(PROVIDERS_YML.read_text())["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file" and provider["folder"] == "Bulletproof"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    assert provider["options"]["foldersFromFilesStructure"] is False
    assert provider["disableDeletion"] is True


def test_plugins_are_pinned_and_cover_what_the_dashboards_use() -> None:
    env = dict(line.split("=", 1) for line in PLUGINS_ENV.read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    entries = [e for e in re.split(r"[,\s]+", env["GF_PLUGINS_PREINSTALL_SYNC"]) if e]
    pinned = {}
    for entry in entries:
        match = re.fullmatch(r"([a-z0-9-]+)@(\d+\.\d+\.\d+)", entry)
        assert match, f"{entry!r} is not pinned to an exact version (plugin-id@X.Y.Z)"
        pinned[match.group(1)] = match.group(2)
    assert set(pinned) == {INFINITY, FORM_PANEL}
    assert env["GF_PLUGINS_PREINSTALL_AUTO_UPDATE"] == "false"
    used = set()
    for data in load_dashboards().values():
        for panel in iter_panels(data):
            if panel["type"] not in CORE_PANELS:
                used.add(panel["type"])
        for _, ref in _datasource_refs(data):
            if ref.get("type") and ref["type"] not in CORE_DATASOURCES:
                used.add(ref["type"])
    for ds in load_datasources():
        if ds["type"] not in CORE_DATASOURCES:
            used.add(ds["type"])
    assert used <= set(pinned), f"plugins used but not installed: {used - set(pinned)}"


def test_links_point_to_existing_dashboards() -> None:
    dashboards = load_dashboards()
    uids = {d["uid"] for d in dashboards.values()}
    for data in dashboards.values():
        linked = set()
        for link in data["links"]:
            assert link["type"] == "link"
            match = re.fullmatch(r"/d/([\w-]+)", link["url"])
            assert match and match.group(1) in uids, link["url"]
            assert link["keepTime"] and link["includeVars"]
            linked.add(match.group(1))
        assert linked == uids - {data["uid"]}, f"{data['uid']} does not link to every other dashboard"
        for panel in iter_panels(data):
            text = json.dumps(panel.get("fieldConfig", {}))
            for uid in re.findall(r'"/d/([\w-]+)', text):
                assert uid in uids, f"{panel['title']}: link to unknown dashboard {uid}"


def _field_names(panel: dict[str, Any]) -> set[str]:
    """Fields a table row carries: Infinity column texts, or the labels a Prometheus table query
    keeps (`max by (...)`)."""
    names = set()
    for target in panel.get("targets", []):
        if target.get("columns"):
            names.update(c["text"] for c in target["columns"])
        elif target.get("expr"):
            grouping = re.match(r"\s*\w+ by \(([^)]*)\)", target["expr"])
            if grouping:
                names.update(n.strip() for n in grouping.group(1).split(","))
    return names


DESTRUCTIVE = ("cancel", "clear", "DELETE")


def test_actions_are_relative_safe_and_name_real_routes() -> None:
    actions = all_actions()
    titles = {a["title"] for _, _, a in actions}
    assert {"Pause queue", "Resume queue", "Clear queue", "Retry all failed", "Cancel job",
            "Retry job", "Pause job", "Resume job", "Move to front"} <= titles
    for uid, panel, action in actions:
        fetch = action["fetch"]
        url = fetch["url"]
        where = f"{uid} / {panel['title']} / {action['title']}"
        assert url.startswith(PROXY_PREFIX + "/api/v1/"), f"{where}: not a relative front-door URL: {url}"
        assert "?" not in url, f"{where}: query strings go in queryParams (Grafana sets the path only)"
        route = match_route(fetch["method"], url[len(PROXY_PREFIX):])
        assert route, f"{where}: {fetch['method']} {url} is no route of the control API"
        for field in re.findall(r"\$\{__data\.fields\.(\w+)\}", json.dumps(action)):
            assert field in _field_names(panel), f"{where}: the row has no field {field!r}"
        assert dict(fetch.get("headers", [])).get("Content-Type") == "application/json"
        if any(word in url or word == fetch["method"] for word in DESTRUCTIVE):
            assert len(action.get("confirmation", "")) > 20, f"{where}: destroys work, must ask first"


def test_no_token_in_any_dashboard() -> None:
    for path in DASHBOARD_FILES:
        text = path.read_text(encoding="utf-8")
        for needle in ("Authorization", "Bearer", "X-Bulletproof-Token", "BULLETPROOF_API_TOKEN",
                       "api_token", "apiToken"):
            assert needle not in text, f"{path.name} contains {needle!r}"


def test_infinity_queries_name_real_routes_with_declared_parameters() -> None:
    count = 0
    for data in load_dashboards().values():
        for panel, target in infinity_targets(data):
            count += 1
            where = f"{data['uid']} / {panel['title']} / {target['refId']}"
            assert target["type"] == "json" and target["source"] == "url", where
            assert target["parser"] == "backend", f"{where}: server-side parsing (alerts, public dashboards)"
            assert target["url_options"]["method"] == "GET", where
            assert target["url"].startswith("/api/v1/"), f"{where}: relative to the data source URL"
            route = match_route("GET", target["url"])
            assert route, f"{where}: GET {target['url']} is no route of the control API"
            declared = {p["name"] for p in route[1].get("parameters", []) if p.get("in") == "query"}
            for param in target["url_options"]["params"]:
                assert param["key"] in declared, f"{where}: {param['key']} is not a parameter of {route[0]}"
            assert target["columns"], f"{where}: no columns"
            for column in target["columns"]:
                assert column["type"] in ("string", "number", "timestamp", "timestamp_epoch",
                                          "timestamp_epoch_s"), where
    assert count >= 10


def _node() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def test_config_form_is_wired_to_validate_then_put() -> None:
    panels = list(form_panels(load_dashboards()["config"]))
    assert len(panels) == 1
    options = panels[0]["options"]
    ids = [e["id"] for e in options["elements"]]
    assert ids == ["monitor_folder", "output_folder", "max_workers", "stability_seconds",
                   "retry_max_attempts", "retry_backoff_seconds"]
    assert options["initial"]["method"] == "GET"
    assert options["initial"]["url"] == PROXY_PREFIX + "/api/v1/config"
    update = options["update"]["code"]
    assert options["update"]["method"] == "-", "the update is custom code: validate, then PUT"
    assert update.index("/validate") < update.index('method: "PUT"')
    assert options["update"]["confirm"] is True
    assert options["resetAction"]["mode"] == "custom" and options["resetAction"]["confirm"] is True
    assert "/config/reset" in options["resetAction"]["code"]
    for code in (options["initial"]["code"], update, options["resetAction"]["code"]):
        # Grafana runs replaceVariables() over the code first: a `$` could be eaten as a variable.
        assert "$" not in code
        assert "Authorization" not in code and "token" not in code.lower()
        for url in re.findall(r'"(/[^"]*/[^"]*)"', code):  # absolute paths (not suffixes like "/validate")
            assert url.startswith(PROXY_PREFIX + "/api/v1/"), url
    node = _node()
    if node:
        for code in (options["initial"]["code"], update, options["resetAction"]["code"]):
            compile_only = "new Function('context', require('fs').readFileSync(0, 'utf8'))"
            check = subprocess.run([node, "-e", compile_only], input=code, capture_output=True,
                                   text=True, timeout=30)
            assert check.returncode == 0, check.stderr


def test_nginx_template_uses_only_its_variables_and_adds_no_credentials() -> None:
    text = NGINX_TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) == NGINX_VARIABLES
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "Authorization" not in code and "X-Bulletproof-Token" not in code
    assert re.search(r"location /bulletproof/ \{[^}]*proxy_pass http://\$\{BULLETPROOF_UPSTREAM\}/;", code)
    assert "client_max_body_size" in code
    rendered = render_nginx_template({"FRONTDOOR_PORT": "80", "GRAFANA_UPSTREAM": "g:3000",
                                      "BULLETPROOF_UPSTREAM": "b:8080"})
    assert "${" not in rendered


def test_docs_describe_every_panel_and_button() -> None:
    text = DASHBOARDS_DOC.read_text(encoding="utf-8")
    missing = []
    for data in load_dashboards().values():
        if data["title"] not in text:
            missing.append(data["title"])
        for panel in iter_panels(data):
            if panel["type"] != "row" and panel["title"] not in text:
                missing.append(f"{data['uid']}: panel {panel['title']}")
    for _, _, action in all_actions():
        if action["title"] not in text:
            missing.append(f"button {action['title']}")
    assert not missing, "docs/dashboards.md does not mention:\n" + "\n".join(missing)
