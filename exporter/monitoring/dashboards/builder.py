"""Small builders of Grafana 12 dashboard JSON: data sources, targets, panels, variables, actions.

Each helper returns plain dicts in the classic dashboard model (the format of provisioned files,
schemaVersion 41). Defaults are the values the dashboards share; a panel states only what differs.
"""

from __future__ import annotations

import copy
from typing import Any

from exporter.monitoring.config import MonitoringConfig

JSON = dict[str, Any]

INFINITY = "yesoreyeram-infinity-datasource"
# Panels reach their data sources through the dashboard variables, so that an operator whose
# data sources are named differently picks theirs instead of editing the JSON.
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
API = {"type": INFINITY, "uid": "${api}"}
PROXY_PREFIX = "/bulletproof"
SCHEMA_VERSION = 41


# ------------------------------------------------------------------------------------ targets


def prom(expr: str, ref: str = "A", legend: str = "", *, instant: bool = False,
         format_: str | None = None) -> JSON:
    """A PromQL target on the `datasource` variable (a range query unless ``instant``)."""
    target = {"datasource": PROMETHEUS, "editorMode": "code", "expr": expr, "instant": instant,
              "legendFormat": legend, "range": not instant, "refId": ref}
    if format_ is not None:
        target["format"] = format_
    return target


def column(selector: str, text: str | None = None, type_: str = "string") -> JSON:
    """A column of an Infinity table: JSON field ``selector`` shown as ``text``."""
    return {"selector": selector, "text": selector if text is None else text, "type": type_}


def api_get(url: str, ref: str = "A", *, root: str = "", params: dict[str, str] | None = None,
            columns: list[JSON] | None = None) -> JSON:
    "An Infinity target that GETs ``url`` of the monitor's JSON API server-side (token in the data "
    'source).'
    target: JSON = {
        "datasource": API, "refId": ref, "type": "json", "source": "url", "parser": "backend",
        "format": "table", "url": url,
        'url_options'
: {"method": "GET", "params": [{"key": k, "value": v} for k, v in (params or {}).items()],
                        "headers": [], "data": "", "body_type": "none"},
        "root_selector": root,
    }
    if columns is not None:
        target["columns"] = columns
    target["filters"] = []
    target["computed_columns"] = []
    return target


# ------------------------------------------------------------------------------- field config


def steps(*pairs: tuple[str, float | None]) -> JSON:
    """Absolute thresholds: (color, value) pairs, the first one the base (value None)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


GREEN = steps(("green", None))


def value_map(*entries: tuple[str, str, str]) -> JSON:
    """A value mapping: (value, color, text) entries, indexed in order."""
    return {"type": "value", "options": {value: {"color": color, "index": i, "text": text}
                                         for i, (value, color, text) in enumerate(entries)}}


def by_name(name: str, properties: dict[str, Any]) -> JSON:
    """A field override for the field ``name``: property id -> value, in order."""
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k, "value": v} for k, v in properties.items()]}


def field_config(unit: str, *, thresholds: JSON = GREEN, mappings: list[JSON] | None = None,
                 overrides: list[JSON] | None = None, **defaults: Any) -> JSON:
    """fieldConfig with these defaults (unit, thresholds, mappings, then the rest) and overrides."""
    return {"defaults": {"unit": unit, "thresholds": thresholds, "mappings": mappings or [], **defaults},
            "overrides": overrides or []}


def fixed_color(name: str, color: str) -> JSON:
    """A field override giving the field ``name`` one fixed colour (a series of a chart)."""
    return by_name(name, {"color": {"mode": "fixed", "fixedColor": color}})


# Cell settings every table shares: automatic cells, a filter in each header.
_TABLE_CUSTOM = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False, "filterable": True}


def table_field_config(*, overrides: list[JSON] | None = None, **defaults: Any) -> JSON:
    """fieldConfig of a table: unit short, the shared cell settings after ``defaults`` (noValue, actions)."""
    return field_config("short", overrides=overrides, **defaults, custom=copy.deepcopy(_TABLE_CUSTOM))


def _series_custom(*, stacked_bars: bool) -> JSON:
    """The custom field config of a timeseries: thin unstacked lines, or stacked bars."""
    return {"drawStyle": "bars" if stacked_bars else "line", "lineWidth": 1,
            "fillOpacity": 80 if stacked_bars else 10, "gradientMode": "none", "showPoints": "never",
            "pointSize": 4, "spanNulls": False, "axisPlacement": "auto", "axisLabel": "", "axisSoftMin": 0,
            "stacking": {"mode": "normal" if stacked_bars else "none", "group": "A"},
            "thresholdsStyle": {"mode": "off"}, "lineInterpolation": "linear", "barAlignment": 0,
            "hideFrom": {"legend": False, "tooltip": False, "viz": False}}


def fetch(title: str, path: str, *, method: str = "POST", body: str = "{}",
          confirmation: str | None = None) -> JSON:
    """A panel action calling the control API behind the front door with the viewer's session."""
    action: JSON = {"type": "fetch", "title": title,
                    "fetch": {"method": method, "url": f"{PROXY_PREFIX}{path}", "body": body,
                              "queryParams": [], "headers": [["Content-Type", "application/json"]]},
                    "oneClick": False}
    if confirmation is not None:
        action["confirmation"] = confirmation
    return action


# ------------------------------------------------------------------------------------ options

# The options every panel of a type shares, complete as the panel type's schema asks.
_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}
_OPTIONS: dict[str, JSON] = {
    "stat": {"reduceOptions": _REDUCE_LAST, "orientation": "auto", "textMode": "auto",
             "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "wideLayout": True,
             "showPercentChange": False, "percentChangeColorMode": "standard"},
    "state-timeline": {"showValue": "auto", "rowHeight": 0.9, "mergeValues": True, "alignValue": "center",
                       'legend'
: {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []},
                       "tooltip": {"mode": "single", "sort": "none"}},
    "table": {"showHeader": True, "cellHeight": "sm", "frameIndex": 0,
              "footer": {"show": False, "reducer": ["sum"], "fields": [], "countRows": False}},
    "timeseries": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                   "tooltip": {"mode": "multi", "sort": "desc"}},
    "bargauge": {"orientation": "horizontal", "displayMode": "basic", "valueMode": "color",
                 "namePlacement": "left", "showUnfilled": True, "sizing": "auto", "minVizHeight": 10,
                 "minVizWidth": 8, "maxVizHeight": 300, "reduceOptions": _REDUCE_LAST,
                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []}},
}


def options(panel_type: str, **changes: Any) -> JSON:
    """The shared options of ``panel_type`` with ``changes`` (top-level keys replaced)."""
    base = copy.deepcopy(_OPTIONS.get(panel_type, {}))
    base.update(changes)
    return base


def table_options(sort_by: str | None = None) -> JSON:
    """The shared table options, sorted by the column ``sort_by`` descending (None: unsorted)."""
    return options("table", sortBy=[] if sort_by is None else [{"displayName": sort_by, "desc": True}])


# ------------------------------------------------------------------------------------- panels


def grid(x: int, y: int, w: int, h: int) -> JSON:
    """A gridPos (24 columns)."""
    return {"h": h, "w": w, "x": x, "y": y}


def panel(panel_type: str, id_: int, title: str, description: str, pos: JSON, *,
          targets: list[JSON] | None = None, datasource: JSON | None = PROMETHEUS,
          field_config: JSON | None = None, options: JSON | None = None,
          transformations: list[JSON] | None = None) -> JSON:
    """A panel; the data source is the Prometheus variable unless told otherwise (None: none)."""
    out: JSON = {"id": id_, "type": panel_type, "title": title, "description": description, "gridPos": pos}
    if datasource is not None:
        out["datasource"] = datasource
    if targets is not None:
        out["targets"] = targets
    if field_config is not None:
        out["fieldConfig"] = field_config
    if options is not None:
        out["options"] = options
    if transformations is not None:
        out["transformations"] = transformations
    return out


def stat_panel(id_: int, title: str, description: str, pos: JSON, targets: list[JSON], field_config: JSON,
               *, datasource: JSON | None = PROMETHEUS, **option_changes: Any) -> JSON:
    """A stat panel with the shared stat options and ``option_changes`` (textMode, colorMode...)."""
    return panel("stat", id_, title, description, pos, targets=targets, datasource=datasource,
                 field_config=field_config, options=options("stat", **option_changes))


def timeseries_panel(id_: int, title: str, description: str, pos: JSON, targets: list[JSON], unit: str, *,
                     decimals: int, stacked_bars: bool = False, thresholds: JSON = GREEN,
                     overrides: list[JSON] | None = None, datasource: JSON | None = PROMETHEUS,
                     **defaults: Any) -> JSON:
    """A timeseries of lines (or ``stacked_bars``) in ``unit``, palette colours, a list legend below."""
    return panel("timeseries", id_, title, description, pos, targets=targets, datasource=datasource,
                 field_config=field_config(unit, thresholds=thresholds, overrides=overrides,
                                           color={"mode": "palette-classic"}, decimals=decimals,
                                           custom=_series_custom(stacked_bars=stacked_bars), **defaults),
                 options=options("timeseries"))


def row(id_: int, title: str, y: int) -> JSON:
    """An expanded row across the grid."""
    return {"id": id_, "type": "row", "title": title, "collapsed": False, "gridPos": grid(0, y, 24, 1),
            "panels": []}


# ---------------------------------------------------------------------------------- variables


def datasource_variable(config: MonitoringConfig) -> JSON:
    """The `datasource` variable: which Prometheus (default: the provisioned one)."""
    return {"name": "datasource", "label": "Prometheus",
            "description": "The Prometheus that scrapes the monitors (default: the provisioned one).",
            "type": "datasource", "query": "prometheus",
            'current'
: {"selected": False, "text": "Bulletproof Prometheus", "value": config.datasources.prometheus_uid},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
            "skipUrlSync": False}


def api_variable(config: MonitoringConfig) -> JSON:
    """The `api` variable: which Infinity data source reads the monitor's JSON API."""
    return {"name": "api", "label": "Monitor API",
            "description": "The Infinity data source that reads one monitor's JSON API server-side, with the "
                           "API token in its secureJsonData (default: the provisioned one).",
            "type": "datasource", "query": INFINITY,
            "current": {"selected": False, "text": "Bulletproof API", "value": config.datasources.api_uid},
            "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
            "skipUrlSync": False}


def instance_variable(config: MonitoringConfig) -> JSON:
    """The `instance` variable: which monitor(s), by the instance label (multi, All by default)."""
    query = "label_values(bulletproof_build_info, instance)"
    return {"name": "instance", "label": "Monitor",
            'description'
: f"Which Bulletproof monitor(s) the Prometheus panels show (the instance label of the "
                           f"{config.job_name} scrape job).",
            "type": "query", "datasource": PROMETHEUS, "definition": query,
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "includeAll": True, "multi": True, "options": [], "refresh": 2, "regex": "", "sort": 1,
            "hide": 0, "skipUrlSync": False}


def custom_variable(name: str, label: str, description: str, values: list[str], *,
                    default: str | None = None) -> JSON:
    """A custom variable over ``values``: one ``default`` value, or (None) multi-select with All selected."""
    if default is None:
        current: JSON = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        current = {"selected": True, "text": default, "value": default}
    return {"name": name, "label": label, "description": description, "type": "custom",
            "query": ",".join(values), "current": current, "includeAll": default is None,
            "multi": default is None, "options": [], "hide": 0, "skipUrlSync": False}


def textbox_variable(name: str, label: str, description: str, default: str = "") -> JSON:
    """A free-text variable holding ``default`` until the viewer types something else."""
    return {"name": name, "label": label, "description": description, "type": "textbox", "query": default,
            "current": {"selected": False, "text": default, "value": default},
            "options": [{"selected": True, "text": default, "value": default}] if default else [],
            "hide": 0, "skipUrlSync": False}


def api_variables(config: MonitoringConfig) -> list[JSON]:
    """The variables of a dashboard reading Prometheus and the monitor's API: datasource, api, instance."""
    return [datasource_variable(config), api_variable(config), instance_variable(config)]


# -------------------------------------------------------------------------------- annotations


BUILT_IN_ANNOTATIONS = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts", "type": "dashboard"}

QUEUE_PAUSED_ANNOTATION = {
    "datasource": PROMETHEUS, "enable": True, "hide": False, "iconColor": "orange", "name": "Queue paused",
    "expr": ('max by (fleet) (fleet:bulletproof_queue_paused:max and on (job, fleet) '
             'bulletproof_fleet_info{instance=~"$instance"}) == 1'), "step": "30s",
    "titleFormat": "Queue paused",
    "textFormat": "No new job starts while the queue is paused (running ones finish).",
    "useValueForTime": False, "tagKeys": "fleet"}


# ---------------------------------------------------------------------------------- dashboard

DASHBOARDS = {"overview": "Overview", "jobs": "Jobs", "history": "History", "config": "Config"}


def dashboard_links(own: str) -> list[JSON]:
    """Links to the other Bulletproof dashboards, keeping the time range and variables."""
    return [{"type": "link", "title": title, "tooltip": f"Open Bulletproof / {title}",
             "url": f"/d/bulletproof-{name}", "icon": "dashboard", "asDropdown": False, "includeVars": True,
             "keepTime": True, "targetBlank": False, "tags": []}
            for name, title in DASHBOARDS.items() if name != own]


def dashboard(name: str, description: str, *, time_from: str, refresh: str, variables: list[JSON],
              panels: list[JSON], annotations: list[JSON] | None = None) -> JSON:
    """A Bulletproof dashboard: uid bulletproof-<name>, title "Bulletproof / <Name>"."""
    return {
        'uid'
: f"bulletproof-{name}", "title": f"Bulletproof / {DASHBOARDS[name]}", "description": description,
        "tags": ["bulletproof"], "timezone": "browser", "editable": True, "graphTooltip": 1,
        "fiscalYearStartMonth": 0, "liveNow": False, "schemaVersion": SCHEMA_VERSION, "version": 1,
        "refresh": refresh, "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m", "15m"]},
        "links": dashboard_links(name),
        "annotations": {"list": [BUILT_IN_ANNOTATIONS, *(annotations or [])]},
        "templating": {"list": variables},
        "panels": panels,
    }
