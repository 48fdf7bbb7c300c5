"""The History dashboard (uid bulletproof-history)."""

from __future__ import annotations

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    API,
    JSON,
    PROMETHEUS,
    QUEUE_PAUSED_ANNOTATION,
    api_get,
    api_variable,
    by_name,
    column,
    dashboard,
    datasource_variable,
    field_config,
    grid,
    instance_variable,
    options,
    panel,
    prom,
    steps,
)

DESCRIPTION = (
    'What Bulletproof did over time: jobs finished by outcome, duration distribution, queue wait, realtime '
    'factor, bytes in/out and saved, the longest and largest jobs.'
)


def build(config: MonitoringConfig) -> JSON:
    """The dashboard as Grafana's JSON model."""
    return dashboard(
        "history", DESCRIPTION, time_from='now-24h', refresh='1m',
        variables=[
            datasource_variable(config),
            api_variable(config),
            instance_variable(config),
            {
                'name': 'bucket',
                'label': 'Bucket',
                'description': (
                    "Bucket size of the job-history chart (the API's step; at least 1 minute, at most 2000 "
                    'buckets in the time range).'
                ),
                'type': 'custom',
                'query': '5m,15m,1h,6h,1d',
                'current': {'selected': True, 'text': '1h', 'value': '1h'},
                'includeAll': False,
                'multi': False,
                'options': [],
                'hide': 0,
                'skipUrlSync': False,
            },
        ],
        annotations=[QUEUE_PAUSED_ANNOTATION],
        panels=[
            panel(
                'timeseries',
                1,
                'Jobs finished per hour by outcome',
                (
                    'Completed jobs, failed attempts, cancelled and skipped jobs per hour, from the counters '
                    "(reset when a monitor restarts; Prometheus' rate() handles that)."
                ),
                grid(0, 0, 12, 8),
                targets=[
                    prom(
                        (
                            'sum(rate(bulletproof_jobs_completed_total{instance=~"$instance"}[$__rate_interva'
                            'l])) * 3600'
                        ),
                        legend='completed',
                    ),
                    prom(
                        (
                            'sum(rate(bulletproof_jobs_failed_total{instance=~"$instance"}[$__rate_interval])'
                            ') * 3600'
                        ),
                        'B',
                        legend='failed attempts',
                    ),
                    prom(
                        (
                            'sum(rate(bulletproof_jobs_cancelled_total{instance=~"$instance"}[$__rate_interva'
                            'l])) * 3600'
                        ),
                        'C',
                        legend='cancelled',
                    ),
                    prom(
                        (
                            'sum(rate(bulletproof_jobs_skipped_total{instance=~"$instance"}[$__rate_interval]'
                            ')) * 3600'
                        ),
                        'D',
                        legend='skipped',
                    ),
                ],
                field_config=field_config(
                    'suffix:/h',
                    overrides=[
                        by_name('completed', {'color': {'mode': 'fixed', 'fixedColor': 'green'}}),
                        by_name('failed attempts', {'color': {'mode': 'fixed', 'fixedColor': 'red'}}),
                        by_name('cancelled', {'color': {'mode': 'fixed', 'fixedColor': 'gray'}}),
                    ],
                    color={'mode': 'palette-classic'},
                    decimals=1,
                    custom={
                        'drawStyle': 'bars',
                        'lineWidth': 1,
                        'fillOpacity': 80,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'normal', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'timeseries',
                2,
                'Jobs finished per bucket (job history)',
                (
                    'Jobs that reached a final state in each bucket of the Bucket variable, from the job '
                    "history in the monitor's store (GET /api/v1/stats/history): survives restarts, one "
                    'monitor (the Monitor API data source). Mean duration of the completed ones on the right '
                    'axis.'
                ),
                grid(12, 0, 12, 8),
                targets=[
                    api_get(
                        '/api/v1/stats/history',
                        root='buckets',
                        params={
                            'since': '${__from:date:seconds}',
                            'until': '${__to:date:seconds}',
                            'step': '${bucket}',
                        },
                        columns=[
                            column('start', 'time', 'timestamp_epoch_s'),
                            column('completed', 'completed', 'number'),
                            column('failed', 'failed', 'number'),
                            column('cancelled', 'cancelled', 'number'),
                            column('skipped', 'skipped', 'number'),
                            column('avg_duration', 'mean duration', 'number'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name('completed', {'color': {'mode': 'fixed', 'fixedColor': 'green'}}),
                        by_name('failed', {'color': {'mode': 'fixed', 'fixedColor': 'red'}}),
                        by_name('cancelled', {'color': {'mode': 'fixed', 'fixedColor': 'gray'}}),
                        by_name('skipped', {'color': {'mode': 'fixed', 'fixedColor': 'purple'}}),
                        by_name(
                            'mean duration',
                            {
                                'unit': 's',
                                'custom.drawStyle': 'line',
                                'custom.axisPlacement': 'right',
                                'custom.stacking': {'mode': 'none', 'group': 'A'},
                                'custom.fillOpacity': 0,
                                'decimals': 1,
                            },
                        ),
                    ],
                    color={'mode': 'palette-classic'},
                    decimals=0,
                    custom={
                        'drawStyle': 'bars',
                        'lineWidth': 1,
                        'fillOpacity': 80,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'normal', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'heatmap',
                3,
                'Job duration distribution',
                (
                    'How long completed jobs took (busy time, pauses excluded): one column per interval, '
                    'cells by histogram bucket (1 s to 8 h), darker = more jobs.'
                ),
                grid(0, 8, 12, 9),
                targets=[
                    {
                        'datasource': PROMETHEUS,
                        'editorMode': 'code',
                        'expr': (
                            'sum by (le) (increase(bulletproof_job_duration_seconds_bucket{instance=~"$instan'
                            'ce"}[$__rate_interval]))'
                        ),
                        'instant': False,
                        'legendFormat': '{{le}}',
                        'range': True,
                        'refId': 'A',
                        'format': 'heatmap',
                    },
                ],
                field_config=field_config(
                    'short',
                    decimals=0,
                    custom={
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                        'scaleDistribution': {'type': 'linear'},
                    },
                ),
                options={
                    'calculate': False,
                    'cellGap': 1,
                    'color': {
                        'mode': 'scheme',
                        'scheme': 'Oranges',
                        'scale': 'exponential',
                        'exponent': 0.5,
                        'fill': 'dark-orange',
                        'reverse': False,
                        'steps': 64,
                    },
                    'exemplars': {'color': 'rgba(255,0,255,0.7)'},
                    'filterValues': {'le': 1e-09},
                    'legend': {'show': True},
                    'rowsFrame': {'layout': 'auto'},
                    'tooltip': {'mode': 'single', 'yHistogram': True, 'showColorScale': False},
                    'yAxis': {'axisPlacement': 'left', 'reverse': False, 'unit': 's'},
                    'cellValues': {'unit': 'short'},
                    'showValue': 'auto',
                },
            ),
            panel(
                'timeseries',
                4,
                'Job duration p50 / p95',
                (
                    'Median and 95th percentile of job duration over a sliding hour, per monitor, from the '
                    'recording rules instance:bulletproof_job_duration_seconds:p50_rate1h / p95_rate1h '
                    '(prometheus/rules/recording.yml must be loaded). Empty while no job completed in the '
                    'hour.'
                ),
                grid(12, 8, 12, 9),
                targets=[
                    prom(
                        'instance:bulletproof_job_duration_seconds:p50_rate1h{instance=~"$instance"}',
                        legend='p50 {{instance}}',
                    ),
                    prom(
                        'instance:bulletproof_job_duration_seconds:p95_rate1h{instance=~"$instance"}',
                        'B',
                        legend='p95 {{instance}}',
                    ),
                ],
                field_config=field_config(
                    's',
                    color={'mode': 'palette-classic'},
                    decimals=1,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'timeseries',
                5,
                'Queue wait p50 / p95',
                (
                    'How long jobs waited in the queue before a worker took them (median and 95th percentile '
                    'over the rate interval). Rising while the workers are all busy or the queue is paused.'
                ),
                grid(0, 17, 8, 8),
                targets=[
                    prom(
                        (
                            'histogram_quantile(0.5, sum by (le) (rate(bulletproof_job_queue_wait_seconds_buc'
                            'ket{instance=~"$instance"}[$__rate_interval])))'
                        ),
                        legend='p50',
                    ),
                    prom(
                        (
                            'histogram_quantile(0.95, sum by (le) (rate(bulletproof_job_queue_wait_seconds_bu'
                            'cket{instance=~"$instance"}[$__rate_interval])))'
                        ),
                        'B',
                        legend='p95',
                    ),
                ],
                field_config=field_config(
                    's',
                    color={'mode': 'palette-classic'},
                    decimals=1,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'timeseries',
                6,
                'Realtime factor',
                (
                    'Seconds of media transcoded per second of worker busy time: 2× means twice as fast as '
                    'playback. Per profile from the recording rule '
                    'instance_profile:bulletproof_realtime_factor:ratio_rate5m, overall over the rate '
                    'interval.'
                ),
                grid(8, 17, 8, 8),
                targets=[
                    prom(
                        (
                            'sum(rate(bulletproof_media_seconds_total{instance=~"$instance"}[$__rate_interval'
                            '])) / (sum(rate(bulletproof_transcode_seconds_total{instance=~"$instance"}[$__ra'
                            'te_interval])) > 0)'
                        ),
                        legend='all profiles',
                    ),
                    prom(
                        'instance_profile:bulletproof_realtime_factor:ratio_rate5m{instance=~"$instance"}',
                        'B',
                        legend='{{profile}} ({{instance}})',
                    ),
                ],
                field_config=field_config(
                    'suffix:×',
                    color={'mode': 'palette-classic'},
                    decimals=2,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'timeseries',
                7,
                'Input / output bytes',
                'Bytes per second read from the sources and written to the outputs of successful jobs.',
                grid(16, 17, 8, 8),
                targets=[
                    prom(
                        'sum(rate(bulletproof_input_bytes_total{instance=~"$instance"}[$__rate_interval]))',
                        legend='input (sources)',
                    ),
                    prom(
                        'sum(rate(bulletproof_output_bytes_total{instance=~"$instance"}[$__rate_interval]))',
                        'B',
                        legend='output',
                    ),
                ],
                field_config=field_config(
                    'Bps',
                    color={'mode': 'palette-classic'},
                    decimals=1,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'stat',
                8,
                'Space saved in the time range',
                (
                    'Source bytes minus output bytes of the jobs that completed in the time range (negative: '
                    'outputs are bigger than their sources).'
                ),
                grid(0, 25, 6, 4),
                targets=[
                    prom(
                        (
                            'sum(increase(bulletproof_input_bytes_total{instance=~"$instance"}[$__range])) - '
                            'sum(increase(bulletproof_output_bytes_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='saved',
                        instant=True,
                    ),
                ],
                field_config=field_config('bytes'
, thresholds=steps(('orange', None), ('green', 0)), decimals=1),
                options=options('stat'),
            ),
            panel(
                'stat',
                9,
                'Output size / input size',
                'Output bytes as a share of input bytes for the jobs completed in the time range.',
                grid(6, 25, 6, 4),
                targets=[
                    prom(
                        (
                            'sum(increase(bulletproof_output_bytes_total{instance=~"$instance"}[$__range])) /'
                            ' sum(increase(bulletproof_input_bytes_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='ratio',
                        instant=True,
                    ),
                ],
                field_config=field_config(
                    'percentunit',
                    thresholds=steps(('green', None), ('orange', 1)),
                    decimals=0,
                    noValue='nothing completed',
                ),
                options=options('stat'),
            ),
            panel(
                'stat',
                10,
                'Media transcoded in the time range',
                'Seconds of media transcoded successfully in the time range.',
                grid(12, 25, 6, 4),
                targets=[
                    prom(
                        'sum(increase(bulletproof_media_seconds_total{instance=~"$instance"}[$__range]))',
                        legend='media',
                        instant=True,
                    ),
                ],
                field_config=field_config('s', decimals=0),
                options=options('stat'),
            ),
            panel(
                'stat',
                11,
                'All-time totals (job history)',
                (
                    "The monitor's job statistics from its store (GET /api/v1/stats/summary): total jobs, "
                    'successful, failed, cancelled and the average duration of the completed ones. Counts the'
                    ' whole history, whatever the time range.'
                ),
                grid(18, 25, 6, 4),
                targets=[
                    api_get(
                        '/api/v1/stats/summary',
                        columns=[
                            column('total_jobs', 'total', 'number'),
                            column('successful', 'successful', 'number'),
                            column('failed', 'failed', 'number'),
                            column('cancelled', 'cancelled', 'number'),
                            column('avg_duration', 'average time', 'number'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name('average time', {'unit': 's', 'decimals': 1}),
                        by_name('failed', {'thresholds': steps(('green', None), ('red', 1))}),
                    ],
                    decimals=0,
                ),
                options=options('stat', textMode='value_and_name'),
            ),
            panel(
                'table',
                12,
                'Longest jobs in the time range',
                (
                    'The 10 completed jobs that took longest among those finished in the time range (GET '
                    '/api/v1/jobs?state=completed&sort=duration).'
                ),
                grid(0, 29, 12, 8),
                targets=[
                    api_get(
                        '/api/v1/jobs',
                        root='jobs',
                        params={
                            'state': 'completed',
                            'sort': 'duration',
                            'order': 'desc',
                            'limit': '10',
                            'since': '${__from:date:seconds}',
                            'until': '${__to:date:seconds}',
                        },
                        columns=[
                            column('id', 'id', 'number'),
                            column('filename', 'file'),
                            column('profile'),
                            column('duration', 'duration', 'number'),
                            column('media_duration', 'media', 'number'),
                            column('input_bytes', 'input', 'number'),
                            column('output_bytes', 'output', 'number'),
                            column('finished_at', 'finished', 'timestamp_epoch_s'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name('duration', {'unit': 's', 'decimals': 1}),
                        by_name('media', {'unit': 's', 'decimals': 1}),
                        by_name('input', {'unit': 'bytes'}),
                        by_name('output', {'unit': 'bytes'}),
                        by_name('finished', {'unit': 'dateTimeAsIso'}),
                    ],
                    noValue='no job completed',
                    custom={
                        'align': 'auto',
                        'cellOptions': {'type': 'auto'},
                        'inspect': False,
                        'filterable': True,
                    },
                ),
                options=options('table', sortBy=[{'displayName': 'duration', 'desc': True}]),
            ),
            panel(
                'table',
                13,
                'Largest jobs in the time range',
                (
                    'The 10 completed jobs with the biggest sources among those finished in the time range '
                    '(GET /api/v1/jobs?state=completed&sort=size).'
                ),
                grid(12, 29, 12, 8),
                targets=[
                    api_get(
                        '/api/v1/jobs',
                        root='jobs',
                        params={
                            'state': 'completed',
                            'sort': 'size',
                            'order': 'desc',
                            'limit': '10',
                            'since': '${__from:date:seconds}',
                            'until': '${__to:date:seconds}',
                        },
                        columns=[
                            column('id', 'id', 'number'),
                            column('filename', 'file'),
                            column('profile'),
                            column('duration', 'duration', 'number'),
                            column('media_duration', 'media', 'number'),
                            column('input_bytes', 'input', 'number'),
                            column('output_bytes', 'output', 'number'),
                            column('finished_at', 'finished', 'timestamp_epoch_s'),
                        ],
                    ),
                ],
                datasource=API,
                field_config=field_config(
                    'short',
                    overrides=[
                        by_name('duration', {'unit': 's', 'decimals': 1}),
                        by_name('media', {'unit': 's', 'decimals': 1}),
                        by_name('input', {'unit': 'bytes'}),
                        by_name('output', {'unit': 'bytes'}),
                        by_name('finished', {'unit': 'dateTimeAsIso'}),
                    ],
                    noValue='no job completed',
                    custom={
                        'align': 'auto',
                        'cellOptions': {'type': 'auto'},
                        'inspect': False,
                        'filterable': True,
                    },
                ),
                options=options('table', sortBy=[{'displayName': 'input', 'desc': True}]),
            ),
            panel(
                'timeseries',
                14,
                'Output quality (SSIM) p10 / p50 by profile',
                (
                    'Quality gate scores of outputs against their sources (profiles with quality: {metric: '
                    'ssim}), 10th percentile and median per profile over the rate interval. Empty for '
                    'profiles without a gate; psnr and vmaf gates have their own metrics (docs/metrics.md).'
                ),
                grid(0, 37, 12, 8),
                targets=[
                    prom(
                        (
                            'histogram_quantile(0.1, sum by (le, profile) (rate(bulletproof_quality_ssim_rati'
                            'o_bucket{instance=~"$instance"}[$__rate_interval])))'
                        ),
                        legend='p10 {{profile}}',
                    ),
                    prom(
                        (
                            'histogram_quantile(0.5, sum by (le, profile) (rate(bulletproof_quality_ssim_rati'
                            'o_bucket{instance=~"$instance"}[$__rate_interval])))'
                        ),
                        'B',
                        legend='p50 {{profile}}',
                    ),
                ],
                field_config=field_config(
                    'percentunit',
                    thresholds=steps(('red', None), ('orange', 0.9), ('green', 0.95)),
                    color={'mode': 'palette-classic'},
                    decimals=3,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                    min=0,
                    max=1,
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
            panel(
                'timeseries',
                15,
                'Output checks by result',
                (
                    'Finished outputs checked before publishing per hour, by result: passed, failed (a bad '
                    'output from a whole source: verification_failed), input_truncated (the source ends '
                    'early), disabled (verify.level off).'
                ),
                grid(12, 37, 12, 8),
                targets=[
                    prom(
                        (
                            'sum by (result) '
                            '(rate(bulletproof_verifications_total{instance=~"$instance"}[$__rate_interval]))'
                            ' * 3600'
                        ),
                        legend='{{result}}',
                    ),
                ],
                field_config=field_config(
                    'suffix:/h',
                    color={'mode': 'palette-classic'},
                    decimals=1,
                    custom={
                        'drawStyle': 'line',
                        'lineWidth': 1,
                        'fillOpacity': 10,
                        'gradientMode': 'none',
                        'showPoints': 'never',
                        'pointSize': 4,
                        'spanNulls': False,
                        'axisPlacement': 'auto',
                        'axisLabel': '',
                        'axisSoftMin': 0,
                        'stacking': {'mode': 'none', 'group': 'A'},
                        'thresholdsStyle': {'mode': 'off'},
                        'lineInterpolation': 'linear',
                        'barAlignment': 0,
                        'hideFrom': {'legend': False, 'tooltip': False, 'viz': False},
                    },
                ),
                options={
                    'legend': {'displayMode': 'list', 'placement': 'bottom', 'showLegend': True, 'calcs': []},
                    'tooltip': {'mode': 'multi', 'sort': 'desc'},
                },
            ),
        ],
    )
