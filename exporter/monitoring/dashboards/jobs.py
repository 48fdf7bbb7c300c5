"""The Jobs dashboard (uid bulletproof-jobs)."""

from __future__ import annotations

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    API,
    JSON,
    api_get,
    api_variable,
    by_name,
    column,
    dashboard,
    datasource_variable,
    fetch,
    field_config,
    grid,
    instance_variable,
    options,
    panel,
    prom,
    steps,
    value_map,
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
            datasource_variable(config),
            api_variable(config),
            instance_variable(config),
            {
                'name': 'state',
                'label': 'State',
                'description': "Show jobs in these states (the API's state filter).",
                'type': 'custom',
                'query': 'queued,processing,paused,completed,failed,cancelled,skipped',
                'current': {'selected': True, 'text': ['All'], 'value': ['$__all']},
                'includeAll': True,
                'multi': True,
                'options': [],
                'hide': 0,
                'skipUrlSync': False,
            },
            {
                'name': 'file',
                'label': 'File name',
                'description': "Show jobs whose path contains this text (the API's q filter); empty: all.",
                'type': 'textbox',
                'query': '',
                'current': {'selected': False, 'text': '', 'value': ''},
                'options': [],
                'hide': 0,
                'skipUrlSync': False,
            },
        ],
        annotations=[],
        panels=[
            panel(
                'stat',
                1,
                'Jobs by state',
                'Jobs in each state now, from Prometheus (all selected monitors).',
                grid(0, 0, 16, 4),
                targets=[
                    prom(
                        'sum by (state) (bulletproof_jobs{instance=~"$instance"})',
                        legend='{{state}}',
                        instant=True,
                    ),
                ],
                field_config=field_config(
                    'short',
                    overrides=[by_name('failed', {'thresholds': steps(('green', None), ('red', 1))})],
                    decimals=0,
                ),
                options=options('stat', textMode='value_and_name'),
            ),
            panel(
                'stat',
                2,
                'Retries in the time range',
                (
                    'Jobs queued again in the time range: auto (the retry policy, after a transient failure) '
                    'and manual (Retry job, Retry all failed).'
                ),
                grid(16, 0, 8, 4),
                targets=[
                    prom(
                        (
                            'sum by (trigger) '
                            '(increase(bulletproof_jobs_retried_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='{{trigger}}',
                        instant=True,
                    ),
                ],
                field_config=field_config('short', decimals=0),
                options=options('stat', textMode='value_and_name'),
            ),
            panel(
                'table',
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
                targets=[
                    api_get(
                        '/api/v1/jobs',
                        root='jobs',
                        params={
                            'state': '${state:csv}',
                            'q': '${file}',
                            'sort': 'created',
                            'order': 'desc',
                            'limit': '500',
                        },
                        columns=[
                            column('id', 'id', 'number'),
                            column('state'),
                            column('filename', 'file'),
                            column('profile'),
                            column('progress', 'progress', 'number'),
                            column('speed', 'speed', 'number'),
                            column('eta_seconds', 'eta', 'number'),
                            column('attempts', 'attempts', 'number'),
                            column('created_at', 'created', 'timestamp_epoch_s'),
                            column('started_at', 'started', 'timestamp_epoch_s'),
                            column('finished_at', 'finished', 'timestamp_epoch_s'),
                            column('duration', 'duration', 'number'),
                            column('input_bytes', 'input', 'number'),
                            column('output_bytes', 'output', 'number'),
                            column('reason'),
                            column('error'),
                            column('rel_path', 'path'),
                            column('rule'),
                            column('priority', 'priority', 'number'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name(
                            'state',
                            {
                                'mappings': [
                                    value_map(
                                        ('queued', 'text', 'queued'),
                                        ('processing', 'blue', 'processing'),
                                        ('paused', 'orange', 'paused'),
                                        ('completed', 'green', 'completed'),
                                        ('failed', 'red', 'failed'),
                                        ('cancelled', 'gray', 'cancelled'),
                                        ('skipped', 'purple', 'skipped'),
                                    ),
                                ],
                                'custom.cellOptions': {'type': 'color-text'},
                            },
                        ),
                        by_name(
                            'progress',
                            {
                                'unit': 'percentunit',
                                'min': 0,
                                'max': 1,
                                'decimals': 0,
                                'custom.cellOptions'
: {'type': 'gauge', 'mode': 'basic', 'valueDisplayMode': 'text'},
                                'color': {'mode': 'continuous-BlPu'},
                            },
                        ),
                        by_name('speed', {'unit': 'suffix:×', 'decimals': 2}),
                        by_name('eta', {'unit': 's'}),
                        by_name('duration', {'unit': 's'}),
                        by_name('input', {'unit': 'bytes'}),
                        by_name('output', {'unit': 'bytes'}),
                        by_name('created', {'unit': 'dateTimeAsIso'}),
                        by_name('started', {'unit': 'dateTimeAsIso'}),
                        by_name('finished', {'unit': 'dateTimeAsIso'}),
                        by_name(
                            'error',
                            {
                                'custom.cellOptions': {'type': 'auto', 'wrapText': True},
                                'custom.width': 400,
                            },
                        ),
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
                    noValue='no job matches',
                    actions=[
                        fetch(
                            'Cancel job',
                            '/api/v1/jobs/${__data.fields.id}/cancel',
                            confirmation=(
                                'Cancel job ${__data.fields.id} (${__data.fields.file})? A running transcode '
                                'is stopped and its partial output is deleted; a queued job will not run.'
                            ),
                        ),
                        fetch(
                            'Retry job',
                            '/api/v1/jobs/${__data.fields.id}/retry',
                            confirmation=(
                                'Queue job ${__data.fields.id} (${__data.fields.file}) again? Its attempts '
                                'start over.'
                            ),
                        ),
                        fetch(
                            'Pause job',
                            '/api/v1/jobs/${__data.fields.id}/pause',
                            confirmation=(
                                'Pause job ${__data.fields.id} (${__data.fields.file})? ffmpeg is suspended '
                                'and keeps its worker slot.'
                            ),
                        ),
                        fetch(
                            'Resume job',
                            '/api/v1/jobs/${__data.fields.id}/resume',
                            confirmation='Resume job ${__data.fields.id} (${__data.fields.file})?',
                        ),
                        fetch(
                            'Move to front',
                            '/api/v1/jobs/${__data.fields.id}/prioritize',
                            confirmation='Move job ${__data.fields.id} (${__data.fields.file}) to the '
                                         'front of the queue?',
                        ),
                    ],
                    custom={
                        'align': 'auto',
                        'cellOptions': {'type': 'auto'},
                        'inspect': False,
                        'filterable': True,
                    },
                ),
                options=options('table', sortBy=[{'displayName': 'id', 'desc': True}]),
            ),
            panel(
                'table',
                4,
                'Queue (run order)',
                (
                    'Queued jobs in the order they will run (GET /api/v1/queue): priority first, then age. '
                    'Move to front puts a job first; Cancel job removes it from the queue (asks first).'
                ),
                grid(0, 18, 12, 9),
                targets=[
                    api_get(
                        '/api/v1/queue',
                        root='jobs',
                        columns=[
                            column('id', 'id', 'number'),
                            column('filename', 'file'),
                            column('profile'),
                            column('priority', 'priority', 'number'),
                            column('attempts', 'attempts', 'number'),
                            column('queued_at', 'queued', 'timestamp_epoch_s'),
                            column('rule'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[by_name('queued', {'unit': 'dateTimeAsIso'})],
                    noValue='queue empty',
                    actions=[
                        fetch(
                            'Cancel job',
                            '/api/v1/jobs/${__data.fields.id}/cancel',
                            confirmation=(
                                'Cancel job ${__data.fields.id} (${__data.fields.file})? A running transcode '
                                'is stopped and its partial output is deleted; a queued job will not run.'
                            ),
                        ),
                        fetch(
                            'Move to front',
                            '/api/v1/jobs/${__data.fields.id}/prioritize',
                            confirmation='Move job ${__data.fields.id} (${__data.fields.file}) to the '
                                         'front of the queue?',
                        ),
                    ],
                    custom={
                        'align': 'auto',
                        'cellOptions': {'type': 'auto'},
                        'inspect': False,
                        'filterable': True,
                    },
                ),
                options=options('table', sortBy=[]),
            ),
            panel(
                'table',
                5,
                'Recent failures',
                (
                    "The 50 jobs that failed most recently, with the failure reason and ffmpeg's message (GET"
                    ' /api/v1/jobs?state=failed). Retry job queues one again.'
                ),
                grid(12, 18, 12, 9),
                targets=[
                    api_get(
                        '/api/v1/jobs',
                        root='jobs',
                        params={'state': 'failed', 'sort': 'finished', 'order': 'desc', 'limit': '50'},
                        columns=[
                            column('id', 'id', 'number'),
                            column('filename', 'file'),
                            column('profile'),
                            column('reason'),
                            column('error'),
                            column('attempts', 'attempts', 'number'),
                            column('finished_at', 'finished', 'timestamp_epoch_s'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name('finished', {'unit': 'dateTimeAsIso'}),
                        by_name('error', {'custom.cellOptions': {'type': 'auto', 'wrapText': True}}),
                    ],
                    noValue='no failed job',
                    actions=[
                        fetch(
                            'Retry job',
                            '/api/v1/jobs/${__data.fields.id}/retry',
                            confirmation=(
                                'Queue job ${__data.fields.id} (${__data.fields.file}) again? Its attempts '
                                'start over.'
                            ),
                        ),
                    ],
                    custom={
                        'align': 'auto',
                        'cellOptions': {'type': 'auto'},
                        'inspect': False,
                        'filterable': True,
                    },
                ),
                options=options('table', sortBy=[]),
            ),
        ],
    )
