"""The Jobs dashboard (uid bulletproof-jobs)."""

from __future__ import annotations

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    JSON,
    api_variables,
    by_name,
    custom_variable,
    dashboard,
    field_config,
    grid,
    prom,
    stat_panel,
    textbox_variable,
)
from exporter.monitoring.dashboards.panels import (
    JOB_STATE_COLORS,
    job_actions,
    job_table,
    jobs_by_state_stat,
    progress_gauge,
    state_colors,
    timestamps,
    units,
    wrapped_text,
)

DESCRIPTION = (
    "Every job from the monitor's API, with state and file-name filters and per-row buttons (cancel, retry, "
    'pause, resume, move to front). docs/dashboards.md describes them.'
)


def build(config: MonitoringConfig) -> JSON:
    """The dashboard as Grafana's JSON model."""
    return dashboard(
        "jobs", DESCRIPTION, time_from='now-24h', refresh='10s',
        variables=[
            *api_variables(config),
            custom_variable(
                'state', 'State', "Show jobs in these states (the API's state filter).",
                ['queued', 'processing', 'paused', 'completed', 'failed', 'cancelled', 'skipped'],
            ),
            textbox_variable(
                'file',
                'File name',
                "Show jobs whose path contains this text (the API's q filter); empty: all.",
            ),
        ],
        annotations=[],
        panels=[
            jobs_by_state_stat(
                1,
                'Jobs in each state now, from Prometheus (all selected monitors).',
                grid(0, 0, 16, 4),
                flagged={'failed': 'red'},
            ),
            stat_panel(
                2,
                'Retries in the time range',
                (
                    'Jobs queued again in the time range: auto (the retry policy, after a transient failure) '
                    'and manual (Retry job, Retry all failed).'
                ),
                grid(16, 0, 8, 4),
                [
                    prom(
                        (
                            'sum by (trigger) '
                            '(increase(bulletproof_jobs_retried_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='{{trigger}}',
                        instant=True,
                    ),
                ],
                field_config('short', decimals=0),
                textMode='value_and_name',
            ),
            job_table(
                3,
                'Jobs',
                (
                    "Jobs from the monitor's API (GET /api/v1/jobs, newest first, 500 at most), filtered by "
                    "the State and File name variables above. Click a cell for the row's buttons: Cancel job "
                    '(asks first; stops a running transcode and deletes its partial output), Retry job, Pause'
                    " job, Resume job, Move to front. A button that does not fit the job's state answers 409."
                    " The id links to the job's full record, with ffmpeg's stderr. Editors and Admins may "
                    "press the buttons; Viewers get 'forbidden'."
                ),
                grid(0, 4, 24, 14),
                params={'state': '${state:csv}', 'q': '${file}', 'sort': 'created', 'order': 'desc',
                        'limit': '500'},
                columns=['id', 'state', 'file', 'profile', 'progress', 'speed', 'eta', 'attempts', 'created',
                         'started', 'finished', 'duration', 'input', 'output', 'reason', 'error', 'path',
                         'rule', 'priority'],
                overrides=[
                    state_colors('state', JOB_STATE_COLORS),
                    progress_gauge(color={'mode': 'continuous-BlPu'}),
                    by_name('speed', {'unit': 'suffix:×', 'decimals': 2}),
                    *units('s', 'eta', 'duration'),
                    *units('bytes', 'input', 'output'),
                    *timestamps('created', 'started', 'finished'),
                    wrapped_text('error', width=400),
                    by_name(
                        'reason',
                        {
                            'custom.cellOptions': {'type': 'color-text'},
                            'color': {'mode': 'fixed', 'fixedColor': 'red'},
                        },
                    ),
                    by_name(
                        'id',
                        {
                            'links': [
                                {
                                    'title': "Job details (JSON, with ffmpeg's stderr)",
                                    'url': '/bulletproof/api/v1/jobs/${__data.fields.id}',
                                    'targetBlank': True,
                                },
                            ],
                        },
                    ),
                ],
                no_value='no job matches',
                actions=job_actions('cancel', 'retry', 'pause', 'resume', 'prioritize'),
                sort_by='id',
            ),
            job_table(
                4,
                'Queue (run order)',
                (
                    'Queued jobs in the order they will run (GET /api/v1/queue): priority first, then age. '
                    'Move to front puts a job first; Cancel job removes it from the queue (asks first).'
                ),
                grid(0, 18, 12, 9),
                url='/api/v1/queue',
                columns=['id', 'file', 'profile', 'priority', 'attempts', 'queued', 'rule'],
                overrides=timestamps('queued'),
                no_value='queue empty',
                actions=job_actions('cancel', 'prioritize'),
            ),
            job_table(
                5,
                'Recent failures',
                (
                    "The 50 jobs that failed most recently, with the failure reason and ffmpeg's message (GET"
                    ' /api/v1/jobs?state=failed). Retry job queues one again.'
                ),
                grid(12, 18, 12, 9),
                params={'state': 'failed', 'sort': 'finished', 'order': 'desc', 'limit': '50'},
                columns=['id', 'file', 'profile', 'reason', 'error', 'attempts', 'finished'],
                overrides=[*timestamps('finished'), wrapped_text('error')],
                no_value='no failed job',
                actions=job_actions('retry'),
            ),
        ],
    )
