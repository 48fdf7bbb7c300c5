"""Bulletproof building blocks of the dashboards: job tables, job buttons, counters per hour, status stats.

builder.py knows Grafana; this module knows the monitor (its API's job fields, its job actions, its
metrics), so that a dashboard module states only what its panels do differently.
"""

from __future__ import annotations

from exporter.monitoring.dashboards.builder import (
    API,
    JSON,
    api_get,
    by_name,
    column,
    fetch,
    field_config,
    panel,
    prom,
    stat_panel,
    steps,
    table_field_config,
    table_options,
    value_map,
)

# ------------------------------------------------------------------------------- expressions


def per_second(counter: str, by: str | None = None) -> str:
    """PromQL: the rate per second of ``counter`` on the selected monitors, summed (by the ``by`` labels)."""
    grouping = f"sum by ({by}) " if by else "sum"
    return f'{grouping}(rate({counter}{{instance=~"$instance"}}[$__rate_interval]))'


def of_selected_fleets(expr: str) -> str:
    """PromQL: a fleet rule's ``expr`` (no instance label) kept for the fleets of the selected monitors.

    The store's gauges are counted once per fleet (docs/metrics.md, "Counted once"); a panel
    shows the fleets the `instance` variable's monitors belong to, each once.
    """
    return f'{expr} and on (job, fleet) bulletproof_fleet_info{{instance=~"$instance"}}'


def per_hour(counter: str, by: str | None = None) -> str:
    """PromQL: the rate per hour of ``counter`` on the selected monitors, summed (by the ``by`` labels)."""
    return f"{per_second(counter, by)} * 3600"


# --------------------------------------------------------------------------------- job tables

# The columns of GET /api/v1/jobs (and /queue) by the name a table shows: the JSON field and its type.
JOB_COLUMNS: dict[str, JSON] = {
    "id": column("id", "id", "number"),
    "state": column("state"),
    "file": column("filename", "file"),
    "profile": column("profile"),
    "progress": column("progress", "progress", "number"),
    "speed": column("speed", "speed", "number"),
    "eta": column("eta_seconds", "eta", "number"),
    "attempts": column("attempts", "attempts", "number"),
    "queued": column("queued_at", "queued", "timestamp_epoch_s"),
    "created": column("created_at", "created", "timestamp_epoch_s"),
    "started": column("started_at", "started", "timestamp_epoch_s"),
    "finished": column("finished_at", "finished", "timestamp_epoch_s"),
    "duration": column("duration", "duration", "number"),
    "media": column("media_duration", "media", "number"),
    "input": column("input_bytes", "input", "number"),
    "output": column("output_bytes", "output", "number"),
    "reason": column("reason"),
    "error": column("error"),
    "path": column("rel_path", "path"),
    "rule": column("rule"),
    "priority": column("priority", "priority", "number"),
}

# Job states and the colour each is shown in.
JOB_STATE_COLORS = value_map(
    ("queued", "text", "queued"),
    ("processing", "blue", "processing"),
    ("paused", "orange", "paused"),
    ("completed", "green", "completed"),
    ("failed", "red", "failed"),
    ("cancelled", "gray", "cancelled"),
    ("skipped", "purple", "skipped"),
)


def job_columns(*names: str) -> list[JSON]:
    """The Infinity columns of a job table, by the names the table shows (keys of JOB_COLUMNS)."""
    return [dict(JOB_COLUMNS[name]) for name in names]


def units(unit: str, *names: str, decimals: int | None = None) -> list[JSON]:
    """Field overrides showing each of the fields ``names`` in ``unit`` (with ``decimals`` if given)."""
    properties: JSON = {"unit": unit} if decimals is None else {"unit": unit, "decimals": decimals}
    return [by_name(name, dict(properties)) for name in names]


def timestamps(*names: str) -> list[JSON]:
    """Field overrides showing the epoch-second fields ``names`` as ISO date-times."""
    return units("dateTimeAsIso", *names)


def state_colors(name: str, mapping: JSON) -> JSON:
    """A field override colouring the text of the field ``name`` by the value mapping ``mapping``."""
    return by_name(name, {"mappings": [mapping], "custom.cellOptions": {"type": "color-text"}})


def progress_gauge(name: str = "progress", **extra: object) -> JSON:
    """A field override drawing the 0-1 field ``name`` as a percentage gauge in its cell."""
    gauge = {"type": "gauge", "mode": "basic", "valueDisplayMode": "text"}
    return by_name(name, {"unit": "percentunit", "min": 0, "max": 1, "decimals": 0,
                          "custom.cellOptions": gauge, **extra})


def wrapped_text(name: str, width: int | None = None) -> JSON:
    """A field override wrapping the long text of the field ``name`` (in a column ``width`` wide)."""
    properties: JSON = {"custom.cellOptions": {"type": "auto", "wrapText": True}}
    if width is not None:
        properties["custom.width"] = width
    return by_name(name, properties)


def job_table(id_: int, title: str, description: str, pos: JSON, *, columns: list[str],
              url: str = "/api/v1/jobs", params: dict[str, str] | None = None,
              overrides: list[JSON] | None = None, no_value: str, actions: list[JSON] | None = None,
              sort_by: str | None = None) -> JSON:
    """A table of jobs from the monitor's API (``url`` with ``params``), the ``columns`` by shown name."""
    defaults: JSON = {"noValue": no_value}
    if actions is not None:
        defaults["actions"] = actions
    return panel("table", id_, title, description, pos,
                 targets=[api_get(url, root="jobs", params=params, columns=job_columns(*columns))],
                 datasource=API, field_config=table_field_config(overrides=overrides, **defaults),
                 options=table_options(sort_by))


# ---------------------------------------------------------------------------------- job buttons

# Per-row job buttons: API verb -> (button title, confirmation with {job} for the job's id and file).
_JOB_ACTIONS = {
    "cancel": ("Cancel job", "Cancel job {job}? A running transcode is stopped and its partial output is "
                             "deleted; a queued job will not run."),
    "retry": ("Retry job", "Queue job {job} again? Its attempts start over."),
    "pause": ("Pause job", "Pause job {job}? ffmpeg is suspended and keeps its worker slot."),
    "resume": ("Resume job", "Resume job {job}?"),
    "prioritize": ("Move to front", "Move job {job} to the front of the queue?"),
}


def job_actions(*verbs: str, id_field: str = "id") -> list[JSON]:
    """Per-row buttons calling POST /api/v1/jobs/<id>/<verb> (cancel, retry, pause, resume, prioritize)."""
    job_id = "${__data.fields." + id_field + "}"
    job = job_id + " (${__data.fields.file})"
    return [fetch(_JOB_ACTIONS[verb][0], f"/api/v1/jobs/{job_id}/{verb}",
                  confirmation=_JOB_ACTIONS[verb][1].format(job=job))
            for verb in verbs]


# ------------------------------------------------------------------------------- status stats

def failed_jobs_link() -> JSON:
    """A data link from a failure count to the Jobs dashboard showing the failed jobs (same time range)."""
    return {"title": "Failed jobs", "url": "/d/bulletproof-jobs?var-state=failed&${__url_time_range}"}


def flag_from_one(name: str, color: str) -> JSON:
    """A field override for a count that should stay 0: green at 0, ``color`` from 1 up."""
    return by_name(name, {"thresholds": steps(("green", None), (color, 1))})


def jobs_by_state_stat(id_: int, description: str, pos: JSON, *, flagged: dict[str, str]) -> JSON:
    """A stat of the jobs in each state now, each ``flagged`` state in its colour from one job up."""
    return stat_panel(id_, "Jobs by state", description, pos,
                      [prom(f'sum by (state) ({of_selected_fleets("fleet_state:bulletproof_jobs:max")})',
                            legend="{{state}}", instant=True)],
                      field_config("short", overrides=[flag_from_one(state, color)
                                                       for state, color in flagged.items()], decimals=0),
                      textMode="value_and_name")


def status_field_config(down: str, up: str) -> JSON:
    """fieldConfig of a 0/1 status: 0 red with the text ``down``, 1 green with the text ``up``."""
    return field_config("none", thresholds=steps(("red", None), ("green", 1)),
                        mappings=[value_map(("0", "red", down), ("1", "green", up))])


def config_reload_stat(id_: int, title: str, description: str, pos: JSON) -> JSON:
    """A stat: whether the last config reload of the selected monitors was accepted."""
    return stat_panel(id_, title, description, pos,
                      [prom('min(bulletproof_config_last_reload_successful{instance=~"$instance"})',
                            legend="config", instant=True)],
                      status_field_config("reload failed", "ok"), colorMode="background")
