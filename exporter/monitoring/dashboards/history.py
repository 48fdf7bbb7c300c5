"""The History dashboard (uid bulletproof-history)."""

from __future__ import annotations

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    API,
    JSON,
    QUEUE_PAUSED_ANNOTATION,
    api_get,
    api_variables,
    by_name,
    column,
    custom_variable,
    dashboard,
    field_config,
    fixed_color,
    grid,
    panel,
    prom,
    stat_panel,
    steps,
    timeseries_panel,
)
from exporter.monitoring.dashboards.panels import (
    flag_from_one,
    job_table,
    per_hour,
    per_second,
    timestamps,
    units,
)

DESCRIPTION = (
    'What Bulletproof did over time: jobs finished by outcome, duration distribution, queue wait, realtime '
    'factor, bytes in/out and saved, the longest and largest jobs.'
)


def _completed_jobs_table(id_: int, title: str, description: str, x: int, *, sort: str, sort_by: str) -> JSON:
    """The 10 completed jobs of the time range first by ``sort`` (an API sort key), sorted by ``sort_by``."""
    return job_table(
        id_, title, description, grid(x, 29, 12, 8),
        params={'state': 'completed', 'sort': sort, 'order': 'desc', 'limit': '10',
                'since': '${__from:date:seconds}', 'until': '${__to:date:seconds}'},
        columns=['id', 'file', 'profile', 'duration', 'media', 'input', 'output', 'finished'],
        overrides=[*units('s', 'duration', 'media', decimals=1), *units('bytes', 'input', 'output'),
                   *timestamps('finished')],
        no_value='no job completed',
        sort_by=sort_by,
    )


def build(config: MonitoringConfig) -> JSON:
    """The dashboard as Grafana's JSON model."""
    return dashboard(
        "history", DESCRIPTION, time_from='now-24h', refresh='1m',
        variables=[
            *api_variables(config),
            custom_variable(
                'bucket', 'Bucket',
                (
                    "Bucket size of the job-history chart (the API's step; at least 1 minute, at most 2000 "
                    'buckets in the time range).'
                ),
                ['5m', '15m', '1h', '6h', '1d'],
                default='1h',
            ),
        ],
        annotations=[QUEUE_PAUSED_ANNOTATION],
        panels=[
            timeseries_panel(
                1,
                'Jobs finished per hour by outcome',
                (
                    'Completed jobs, failed attempts, cancelled and skipped jobs per hour, from the counters '
                    "(reset when a monitor restarts; Prometheus' rate() handles that)."
                ),
                grid(0, 0, 12, 8),
                [
                    prom(per_hour('bulletproof_jobs_completed_total'), legend='completed'),
                    prom(per_hour('bulletproof_jobs_failed_total'), 'B', legend='failed attempts'),
                    prom(per_hour('bulletproof_jobs_cancelled_total'), 'C', legend='cancelled'),
                    prom(per_hour('bulletproof_jobs_skipped_total'), 'D', legend='skipped'),
                ],
                'suffix:/h',
                decimals=1,
                stacked_bars=True,
                overrides=[
                    fixed_color('completed', 'green'),
                    fixed_color('failed attempts', 'red'),
                    fixed_color('cancelled', 'gray'),
                ],
            ),
            timeseries_panel(
                2,
                'Jobs finished per bucket (job history)',
                (
                    'Jobs that reached a final state in each bucket of the Bucket variable, from the job '
                    "history in the monitor's store (GET /api/v1/stats/history): survives restarts, one "
                    'monitor (the Monitor API data source). Mean duration of the completed ones on the right '
                    'axis.'
                ),
                grid(12, 0, 12, 8),
                [
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
                'short',
                decimals=0,
                stacked_bars=True,
                datasource=API,
                overrides=[
                    fixed_color('completed', 'green'),
                    fixed_color('failed', 'red'),
                    fixed_color('cancelled', 'gray'),
                    fixed_color('skipped', 'purple'),
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
                    prom(
                        (
                            'sum by (le) (increase(bulletproof_job_duration_seconds_bucket{instance=~"$instan'
                            'ce"}[$__rate_interval]))'
                        ),
                        legend='{{le}}',
                        format_='heatmap',
                    ),
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
            timeseries_panel(
                4,
                'Job duration p50 / p95',
                (
                    'Median and 95th percentile of job duration over a sliding hour, per monitor, from the '
                    'recording rules instance:bulletproof_job_duration_seconds:p50_rate1h / p95_rate1h '
                    '(prometheus/rules/recording.yml must be loaded). Empty while no job completed in the '
                    'hour.'
                ),
                grid(12, 8, 12, 9),
                [
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
                's',
                decimals=1,
            ),
            timeseries_panel(
                5,
                'Queue wait p50 / p95',
                (
                    'How long jobs waited in the queue before a worker took them (median and 95th percentile '
                    'over the rate interval). Rising while the workers are all busy or the queue is paused.'
                ),
                grid(0, 17, 8, 8),
                [
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
                's',
                decimals=1,
            ),
            timeseries_panel(
                6,
                'Realtime factor',
                (
                    'Seconds of media transcoded per second of worker busy time: 2× means twice as fast as '
                    'playback. Per profile from the recording rule '
                    'instance_profile:bulletproof_realtime_factor:ratio_rate5m, overall over the rate '
                    'interval.'
                ),
                grid(8, 17, 8, 8),
                [
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
                'suffix:×',
                decimals=2,
            ),
            timeseries_panel(
                7,
                'Input / output bytes',
                'Bytes per second read from the sources and written to the outputs of successful jobs.',
                grid(16, 17, 8, 8),
                [
                    prom(
                        per_second('bulletproof_input_bytes_total'),
                        legend='input (sources)',
                    ),
                    prom(
                        per_second('bulletproof_output_bytes_total'),
                        'B',
                        legend='output',
                    ),
                ],
                'Bps',
                decimals=1,
            ),
            stat_panel(
                8,
                'Space saved in the time range',
                (
                    'Source bytes minus output bytes of the jobs that completed in the time range (negative: '
                    'outputs are bigger than their sources).'
                ),
                grid(0, 25, 6, 4),
                [
                    prom(
                        (
                            'sum(increase(bulletproof_input_bytes_total{instance=~"$instance"}[$__range])) - '
                            'sum(increase(bulletproof_output_bytes_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='saved',
                        instant=True,
                    ),
                ],
                field_config('bytes', thresholds=steps(('orange', None), ('green', 0)), decimals=1),
            ),
            stat_panel(
                9,
                'Output size / input size',
                'Output bytes as a share of input bytes for the jobs completed in the time range.',
                grid(6, 25, 6, 4),
                [
                    prom(
                        (
                            'sum(increase(bulletproof_output_bytes_total{instance=~"$instance"}[$__range])) /'
                            ' sum(increase(bulletproof_input_bytes_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='ratio',
                        instant=True,
                    ),
                ],
                field_config(
                    'percentunit',
                    thresholds=steps(('green', None), ('orange', 1)),
                    decimals=0,
                    noValue='nothing completed',
                ),
            ),
            stat_panel(
                10,
                'Media transcoded in the time range',
                'Seconds of media transcoded successfully in the time range.',
                grid(12, 25, 6, 4),
                [
                    prom(
                        'sum(increase(bulletproof_media_seconds_total{instance=~"$instance"}[$__range]))',
                        legend='media',
                        instant=True,
                    ),
                ],
                field_config('s', decimals=0),
            ),
            stat_panel(
                11,
                'All-time totals (job history)',
                (
                    "The monitor's job statistics from its store (GET /api/v1/stats/summary): total jobs, "
                    'successful, failed, cancelled and the average duration of the completed ones. Counts the'
                    ' whole history, whatever the time range.'
                ),
                grid(18, 25, 6, 4),
                [
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
                field_config(
                    'short',
                    overrides=[
                        by_name('average time', {'unit': 's', 'decimals': 1}),
                        flag_from_one('failed', 'red'),
                    ],
                    decimals=0,
                ),
                datasource=API,
                textMode='value_and_name',
            ),
            _completed_jobs_table(
                12,
                'Longest jobs in the time range',
                (
                    'The 10 completed jobs that took longest among those finished in the time range (GET '
                    '/api/v1/jobs?state=completed&sort=duration).'
                ),
                0,
                sort='duration',
                sort_by='duration',
            ),
            _completed_jobs_table(
                13,
                'Largest jobs in the time range',
                (
                    'The 10 completed jobs with the biggest sources among those finished in the time range '
                    '(GET /api/v1/jobs?state=completed&sort=size).'
                ),
                12,
                sort='size',
                sort_by='input',
            ),
            timeseries_panel(
                14,
                'Output quality (SSIM) p10 / p50 by profile',
                (
                    'Quality gate scores of outputs against their sources (profiles with quality: {metric: '
                    'ssim}), 10th percentile and median per profile over the rate interval. Empty for '
                    'profiles without a gate; psnr and vmaf gates have their own metrics (docs/metrics.md).'
                ),
                grid(0, 37, 12, 8),
                [
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
                'percentunit',
                decimals=3,
                thresholds=steps(('red', None), ('orange', 0.9), ('green', 0.95)),
                min=0,
                max=1,
            ),
            timeseries_panel(
                15,
                'Output checks by result',
                (
                    'Finished outputs checked before publishing per hour, by result: passed, failed (a bad '
                    'output from a whole source: verification_failed), input_truncated (the source ends '
                    'early), disabled (verify.level off).'
                ),
                grid(12, 37, 12, 8),
                [prom(per_hour('bulletproof_verifications_total', by='result'), legend='{{result}}')],
                'suffix:/h',
                decimals=1,
            ),
        ],
    )
