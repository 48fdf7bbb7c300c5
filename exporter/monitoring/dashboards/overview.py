"""The Overview dashboard (uid bulletproof-overview)."""

from __future__ import annotations

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    JSON,
    QUEUE_PAUSED_ANNOTATION,
    by_name,
    dashboard,
    datasource_variable,
    fetch,
    field_config,
    grid,
    instance_variable,
    options,
    panel,
    prom,
    row,
    stat_panel,
    steps,
    table_field_config,
    table_options,
    timeseries_panel,
    value_map,
)
from exporter.monitoring.dashboards.panels import (
    config_reload_stat,
    failed_jobs_link,
    job_actions,
    jobs_by_state_stat,
    of_selected_fleets,
    per_hour,
    progress_gauge,
    state_colors,
    status_field_config,
)

DESCRIPTION = (
    'Bulletproof at a glance: totals, live counts, queue controls, worker progress, throughput, failures and '
    'firing alerts. docs/dashboards.md describes every panel and button.'
)


def _per_busy_slot(series: str) -> str:
    """PromQL: ``series`` of the busy worker slots, labelled slot="<instance>/<worker>"."""
    return (f'max by (slot) (label_join({series} and on (instance, worker) '
            'bulletproof_worker_busy{instance=~"$instance"} == 1, "slot", "/", "instance", "worker"))')


# The Nodes table's columns: its query (a fleet rule of the registry) and the column's name.
_NODE_COLUMNS = (
    ('fleet_node:bulletproof_node_up:max', 'up'),
    ('fleet_node:bulletproof_node_draining:max', 'draining'),
    ('fleet_node:bulletproof_node_workers_busy:max', 'busy'),
    ('fleet_node:bulletproof_node_workers_max:max', 'workers'),
    ('time() - fleet_node:bulletproof_node_last_heartbeat_timestamp_seconds:max', 'last heartbeat'),
)


def _nodes_table() -> JSON:
    """The Nodes table: one row per node of the selected monitors' fleets, from the registry."""
    refs = "ABCDE"
    return panel(
        'table',
        31,
        'Nodes',
        (
            'Every node of the fleet(s) of the selected monitors, as the job store\'s registry tells it '
            '(read by every node alike and counted once): up (alive: heartbeats arriving, not stopped), '
            'draining (finishes its jobs, takes no new ones), busy and configured worker slots, and '
            'how long ago its last heartbeat was written. A node that is down for long is '
            'BulletproofNodeDown.'
        ),
        grid(0, 49, 14, 8),
        targets=[prom(of_selected_fleets(expr), ref, instant=True, format_='table')
                 for ref, (expr, _) in zip(refs, _NODE_COLUMNS, strict=True)],
        field_config=table_field_config(
            overrides=[
                state_colors('up', value_map(('0', 'red', 'down'), ('1', 'green', 'up'))),
                state_colors('draining', value_map(('0', 'green', 'no'), ('1', 'orange', 'draining'))),
                by_name('last heartbeat', {'unit': 's', 'decimals': 0}),
            ],
            noValue='no node registered',
        ),
        options=table_options(),
        transformations=[
            {'id': 'joinByField', 'options': {'byField': 'node', 'mode': 'outer'}},
            {'id': 'filterFieldsByName',
             'options': {'include': {'pattern': '^(node|Value #[A-E])$'}}},
            {
                'id': 'organize',
                'options': {
                    'excludeByName': {},
                    'indexByName': {'node': 0, **{f'Value #{ref}': i + 1 for i, ref in enumerate(refs)}},
                    'renameByName': {f'Value #{ref}': name
                                     for ref, (_, name) in zip(refs, _NODE_COLUMNS, strict=True)},
                },
            },
        ],
    )


def _by_node(counter: str) -> str:
    """PromQL: ``counter`` per hour on the selected monitors, summed by their node name."""
    return (f'sum by (node) (rate({counter}{{instance=~"$instance"}}[$__rate_interval]) '
            f'* on (instance, job) group_left (node) bulletproof_fleet_info{{instance=~"$instance"}}) * 3600')


def build(config: MonitoringConfig) -> JSON:
    """The dashboard as Grafana's JSON model."""
    return dashboard(
        "overview", DESCRIPTION, time_from='now-6h', refresh='10s',
        variables=[
            datasource_variable(config),
            instance_variable(config),
        ],
        annotations=[QUEUE_PAUSED_ANNOTATION],
        panels=[
            row(1, 'Totals', 0),
            stat_panel(
                2,
                'Total jobs',
                (
                    'Jobs in the job history of the selected monitors, in every state. Falls when finished '
                    'jobs are deleted from the history.'
                ),
                grid(0, 1, 4, 4),
                [prom(f'sum({of_selected_fleets("fleet_state:bulletproof_jobs:max")})', legend='total',
                      instant=True)],
                field_config('short', decimals=0),
            ),
            stat_panel(
                3,
                'Successful',
                "Jobs in the history whose last attempt completed.",
                grid(4, 1, 4, 4),
                [
                    prom(
                        'sum('
                        + of_selected_fleets('fleet_state:bulletproof_jobs:max{state="completed"}')
                        + ')',
                        legend='completed',
                        instant=True,
                    ),
                ],
                field_config('short', decimals=0),
            ),
            stat_panel(
                4,
                'Failed',
                (
                    'Jobs in the history that failed for good (retries used up or not retryable). Click for '
                    "the failed jobs; 'Retry all failed' on the Queue panel queues them again."
                ),
                grid(8, 1, 4, 4),
                [
                    prom(
                        'sum(' + of_selected_fleets('fleet_state:bulletproof_jobs:max{state="failed"}') + ')',
                        legend='failed',
                        instant=True,
                    ),
                ],
                field_config(
                    'short',
                    thresholds=steps(('green', None), ('red', 1)),
                    decimals=0,
                    links=[failed_jobs_link()],
                ),
            ),
            stat_panel(
                5,
                'Average time',
                (
                    "Mean busy time of the jobs that completed in the dashboard's time range (from the "
                    'bulletproof_job_duration_seconds histogram; pauses excluded).'
                ),
                grid(12, 1, 4, 4),
                [
                    prom(
                        (
                            'sum(rate(bulletproof_job_duration_seconds_sum{instance=~"$instance"}[$__range]))'
                            ' / sum(rate(bulletproof_job_duration_seconds_count{instance=~"$instance"}[$__ran'
                            'ge]))'
                        ),
                        legend='mean',
                        instant=True,
                    ),
                ],
                field_config(
                    's',
                    thresholds=steps(('green', None), ('orange', 3600), ('red', 14400)),
                    decimals=1,
                    noValue='no job completed',
                ),
            ),
            stat_panel(
                6,
                'Success ratio',
                (
                    'Completed attempts / (completed + failed attempts) in the time range. An attempt that '
                    'failed and was retried counts as a failure here.'
                ),
                grid(16, 1, 4, 4),
                [
                    prom(
                        (
                            'sum(increase(bulletproof_jobs_completed_total{instance=~"$instance"}[$__range]))'
                            ' / (sum(increase(bulletproof_jobs_completed_total{instance=~"$instance"}[$__rang'
                            'e])) + '
                            'sum(increase(bulletproof_jobs_failed_total{instance=~"$instance"}[$__range])))'
                        ),
                        legend='ratio',
                        instant=True,
                    ),
                ],
                field_config(
                    'percentunit',
                    thresholds=steps(('red', None), ('orange', 0.9), ('green', 0.98)),
                    decimals=1,
                    noValue='nothing finished',
                    min=0,
                    max=1,
                ),
            ),
            stat_panel(
                7,
                'Uptime',
                'Time since the monitor process started (the shortest when several are selected).',
                grid(20, 1, 4, 4),
                [
                    prom(
                        'min(time() - process_start_time_seconds{job="bulletproof", instance=~"$instance"})',
                        legend='uptime',
                        instant=True,
                    ),
                ],
                field_config('s', thresholds=steps(('orange', None), ('green', 600)), decimals=0),
            ),
            row(8, 'Now', 5),
            jobs_by_state_stat(
                9,
                (
                    'Jobs in each state now: queued, processing, paused, completed, failed, cancelled, '
                    'skipped.'
                ),
                grid(0, 6, 8, 5),
                flagged={'failed': 'red', 'paused': 'orange'},
            ),
            # A state timeline, not a stat: Grafana 12 shows actions only on some panel types
            # (a stat's would be invisible). Clicking the bar pins its tooltip with the buttons.
            panel(
                'state-timeline',
                10,
                'Queue',
                (
                    'Running (green) or Paused (orange) over the time range (running jobs finish, none start;'
                    ' the watcher keeps queueing). Click the bar for the buttons: Pause queue, Resume queue, '
                    'Clear queue (cancels every queued job, asks first) and Retry all failed. They call the '
                    'monitor behind the front door (/bulletproof/) with your Grafana session: Editors and '
                    "Admins may press them, Viewers get 'forbidden'."
                ),
                grid(8, 6, 4, 5),
                targets=[prom(f'max({of_selected_fleets("fleet:bulletproof_queue_paused:max")})',
                              legend='queue')],
                field_config=field_config(
                    'none',
                    thresholds=steps(('green', None), ('orange', 1)),
                    mappings=[value_map(('0', 'green', 'Running'), ('1', 'orange', 'Paused'))],
                    color={'mode': 'thresholds'},
                    custom={'fillOpacity': 80, 'lineWidth': 0},
                    actions=[
                        fetch('Pause queue', '/api/v1/queue/pause'),
                        fetch('Resume queue', '/api/v1/queue/resume'),
                        fetch(
                            'Clear queue',
                            '/api/v1/queue/clear',
                            confirmation=(
                                'Cancel every queued job? They will not run unless retried one by one. '
                                'Running jobs go on.'
                            ),
                        ),
                        fetch(
                            'Retry all failed',
                            '/api/v1/jobs/retry-failed',
                            confirmation='Queue every failed job again (their attempts start over)?',
                        ),
                    ],
                ),
                options=options('state-timeline'),
            ),
            stat_panel(
                11,
                'Paused for',
                (
                    'How long the queue has been paused (empty while it runs). The BulletproofQueuePausedLong'
                    ' alert fires after a long pause.'
                ),
                grid(12, 6, 4, 5),
                [
                    prom(
                        (
                            'time() - max('
                            + of_selected_fleets(
                                'fleet:bulletproof_queue_paused_since_timestamp_seconds:max > 0')
                            + ')'
                        ),
                        legend='paused for',
                        instant=True,
                    ),
                ],
                field_config(
                    's',
                    thresholds=steps(('green', None), ('orange', 1800), ('red', 14400)),
                    decimals=0,
                    noValue='not paused',
                ),
            ),
            stat_panel(
                12,
                'Workers busy',
                'Worker slots holding a job (running or paused) and configured slots (max_workers).',
                grid(16, 6, 4, 5),
                [
                    prom('sum(bulletproof_workers_busy{instance=~"$instance"})', legend='busy', instant=True),
                    prom(
                        'sum(bulletproof_workers_max{instance=~"$instance"})',
                        'B',
                        legend='max',
                        instant=True,
                    ),
                ],
                field_config('short', decimals=0),
                textMode='value_and_name',
            ),
            stat_panel(
                13,
                'Oldest queued job waiting',
                (
                    'Time since the longest-waiting queued job was queued (empty when the queue is empty). '
                    'Grows while the queue is paused or the workers are all busy.'
                ),
                grid(20, 6, 4, 5),
                [
                    prom(
                        (
                            'time() - min('
                            + of_selected_fleets(
                                'fleet:bulletproof_queue_oldest_job_timestamp_seconds:max > 0')
                            + ')'
                        ),
                        legend='oldest',
                        instant=True,
                    ),
                ],
                field_config(
                    's',
                    thresholds=steps(('green', None), ('orange', 1800), ('red', 7200)),
                    decimals=0,
                    noValue='queue empty',
                ),
            ),
            row(14, 'Workers', 11),
            panel(
                'bargauge',
                15,
                'Progress per busy worker',
                (
                    'One bar per busy worker slot: the file, its profile and the slot, and how far ffmpeg has'
                    ' got. A bar that stops moving is a stalled job (see the Running jobs table for speed and'
                    ' ETA).'
                ),
                grid(0, 12, 9, 7),
                targets=[
                    prom(
                        (
                            'bulletproof_worker_progress_ratio{instance=~"$instance"} * on (instance, worker)'
                            ' group_left (job_id, file, profile) '
                            'bulletproof_worker_job_info{instance=~"$instance"}'
                        ),
                        legend='{{file}} · {{profile}} · slot {{worker}}',
                        instant=True,
                    ),
                ],
                field_config=field_config(
                    'percentunit',
                    thresholds=steps(('blue', None), ('green', 0.99)),
                    decimals=0,
                    noValue='all workers idle',
                    min=0,
                    max=1,
                ),
                options=options('bargauge', displayMode='gradient', namePlacement='top', minVizHeight=16),
            ),
            panel(
                'table',
                16,
                'Running jobs',
                (
                    "The jobs the workers hold now, one row per busy slot: file, profile, progress, ffmpeg's "
                    'speed (media seconds per second), ETA, time running, and whether an operator paused it. '
                    'Click a cell for Pause job / Resume job / Cancel job (cancel asks first and deletes the '
                    'partial output); Editors and Admins only.'
                ),
                grid(9, 12, 15, 7),
                targets=[
                    prom(
                        (
                            'max by (slot, instance, worker, job_id, file, profile) '
                            '(label_join(bulletproof_worker_progress_ratio{instance=~"$instance"} * on '
                            '(instance, worker) group_left (job_id, file, profile) '
                            'bulletproof_worker_job_info{instance=~"$instance"}, "slot", "/", "instance", '
                            '"worker"))'
                        ),
                        instant=True,
                        format_='table',
                    ),
                    prom(_per_busy_slot('bulletproof_worker_speed_ratio{instance=~"$instance"}'), 'B',
                         instant=True, format_='table'),
                    prom(_per_busy_slot('bulletproof_worker_eta_seconds{instance=~"$instance"}'), 'C',
                         instant=True, format_='table'),
                    prom(_per_busy_slot('time() - bulletproof_worker_job_started_timestamp_seconds'
                                        '{instance=~"$instance"}'), 'D',
                         instant=True, format_='table'),
                    prom(_per_busy_slot('bulletproof_worker_paused{instance=~"$instance"}'), 'E',
                         instant=True, format_='table'),
                ],
                field_config=table_field_config(
                    overrides=[
                        progress_gauge(),
                        by_name('speed', {'unit': 'suffix:×', 'decimals': 2}),
                        by_name('ETA', {'unit': 's', 'decimals': 0}),
                        by_name('running for', {'unit': 's', 'decimals': 0}),
                        state_colors(
                            'paused', value_map(('0', 'green', 'running'), ('1', 'orange', 'paused')),
                        ),
                    ],
                    noValue='all workers idle',
                    actions=job_actions('cancel', 'pause', 'resume', id_field='job_id'),
                ),
                options=table_options(),
                transformations=[
                    {'id': 'joinByField', 'options': {'byField': 'slot', 'mode': 'outer'}},
                    {
                        'id': 'filterFieldsByName',
                        'options': {
                            'include': {'pattern': '^(job_id|file|profile|instance|worker|Value #[A-E])$'},
                        },
                    },
                    {
                        'id': 'organize',
                        'options': {
                            'excludeByName': {},
                            'indexByName': {
                                'job_id': 0,
                                'file': 1,
                                'profile': 2,
                                'Value #A': 3,
                                'Value #B': 4,
                                'Value #C': 5,
                                'Value #D': 6,
                                'Value #E': 7,
                                'worker': 8,
                                'instance': 9,
                            },
                            'renameByName': {
                                'Value #A': 'progress',
                                'Value #B': 'speed',
                                'Value #C': 'ETA',
                                'Value #D': 'running for',
                                'Value #E': 'paused',
                            },
                        },
                    },
                ],
            ),
            row(17, 'Throughput and failures', 19),
            timeseries_panel(
                18,
                'Throughput',
                (
                    'Jobs completed per hour by profile, failed attempts per hour, and stable files detected '
                    'per hour in the watch folders.'
                ),
                grid(0, 20, 12, 8),
                [
                    prom(
                        per_hour('bulletproof_jobs_completed_total', by='profile'),
                        legend='{{profile}} completed',
                    ),
                    prom(per_hour('bulletproof_jobs_failed_total'), 'B', legend='failed attempts'),
                    prom(per_hour('bulletproof_files_detected_total'), 'C', legend='files detected'),
                ],
                'suffix:/h',
                decimals=1,
            ),
            timeseries_panel(
                19,
                'Failures by reason',
                (
                    'Failed attempts per hour by reason (input_invalid, input_missing, ffmpeg_error, timeout,'
                    ' stalled, output_error, interrupted). Retried attempts count too.'
                ),
                grid(12, 20, 12, 8),
                [prom(per_hour('bulletproof_jobs_failed_total', by='reason'), legend='{{reason}}')],
                'suffix:/h',
                decimals=1,
                stacked_bars=True,
                thresholds=steps(('green', None), ('red', 1)),
            ),
            panel(
                'bargauge',
                20,
                'Failures by reason in the time range',
                "Failed attempts in the dashboard's time range, by reason. Click a bar for the failed jobs.",
                grid(0, 28, 8, 7),
                targets=[
                    prom(
                        (
                            'sum by (reason) '
                            '(increase(bulletproof_jobs_failed_total{instance=~"$instance"}[$__range]))'
                        ),
                        legend='{{reason}}',
                        instant=True,
                    ),
                ],
                field_config=field_config(
                    'short',
                    thresholds=steps(('green', None), ('orange', 1), ('red', 5)),
                    decimals=0,
                    links=[failed_jobs_link()],
                ),
                options=options('bargauge'),
            ),
            timeseries_panel(
                21,
                'Backlog',
                'Jobs waiting (queued) and in flight (processing or paused) over time.',
                grid(8, 28, 8, 7),
                [
                    prom('sum(' + of_selected_fleets('fleet_state:bulletproof_jobs:max{state="queued"}')
                         + ')',
                         legend='queued'),
                    prom(
                        'sum('
                        + of_selected_fleets('fleet_state:bulletproof_jobs:max{state=~"processing|paused"}')
                        + ')',
                        'B',
                        legend='in flight',
                    ),
                ],
                'short',
                decimals=0,
            ),
            timeseries_panel(
                22,
                'Files ignored by reason',
                (
                    'Files seen in the watch folders but not queued, per hour: no_rule (no rule matches), '
                    'already_done, temporary, outside_watch_folder (a symlink leading out of the '
                    'watch folder).'
                ),
                grid(16, 28, 8, 7),
                [prom(per_hour('bulletproof_files_ignored_total', by='reason'), legend='{{reason}}')],
                'suffix:/h',
                decimals=1,
            ),
            row(23, 'Alerts and health', 35),
            panel(
                'alertGroups',
                24,
                'Firing alerts',
                (
                    'Alerts that Alertmanager holds now for Bulletproof (alertname Bulletproof*), grouped as '
                    "Alertmanager groups them. Read from the provisioned 'Bulletproof Alertmanager' data "
                    'source. The runbook link of each alert is in its annotations (docs/runbook.md).'
                ),
                grid(0, 36, 12, 8),
                datasource=None,
                options={
                    'alertmanager': config.datasources.alertmanager_name,
                    'expandAll': True,
                    'labels': 'alertname=~Bulletproof.+',
                },
            ),
            stat_panel(
                25,
                'Watch folders',
                (
                    '1 (up) while a watch folder is readable and watched; 0 (down) when it is unmounted or '
                    'unreadable (BulletproofWatchFolderDown).'
                ),
                grid(12, 36, 6, 4),
                [
                    prom(
                        'bulletproof_watch_folder_up{instance=~"$instance"}',
                        legend='{{folder}}',
                        instant=True,
                    ),
                ],
                status_field_config('down', 'up'),
                textMode='value_and_name',
                colorMode='background',
            ),
            panel(
                'gauge',
                26,
                'Output volume free',
                (
                    "Free space on the output folder's filesystem, as a share of its size "
                    '(BulletproofOutputVolumeAlmostFull fires under 10 %).'
                ),
                grid(18, 36, 6, 4),
                targets=[
                    prom(
                        (
                            'bulletproof_output_volume_free_bytes{instance=~"$instance"} / '
                            'bulletproof_output_volume_size_bytes{instance=~"$instance"}'
                        ),
                        legend='{{instance}}',
                        instant=True,
                    ),
                ],
                field_config=field_config(
                    'percentunit',
                    thresholds=steps(('red', None), ('orange', 0.1), ('green', 0.2)),
                    decimals=0,
                    min=0,
                    max=1,
                ),
                options={
                    'reduceOptions': {'calcs': ['lastNotNull'], 'fields': '', 'values': False},
                    'showThresholdLabels': False,
                    'showThresholdMarkers': True,
                    'orientation': 'auto',
                    'sizing': 'auto',
                    'minVizHeight': 75,
                    'minVizWidth': 75,
                },
            ),
            config_reload_stat(
                27,
                'Config',
                (
                    'Whether the last config reload was accepted (a rejected one leaves the previous config '
                    'in force; BulletproofConfigReloadFailed).'
                ),
                grid(0, 44, 6, 4),
            ),
            stat_panel(
                28,
                'Version',
                "The monitor's version and the ffmpeg it runs, per instance.",
                grid(6, 44, 6, 4),
                [
                    prom(
                        'bulletproof_build_info{instance=~"$instance"}',
                        legend='{{version}} · ffmpeg {{ffmpeg_version}}',
                        instant=True,
                    ),
                ],
                field_config('none'),
                textMode='name',
                colorMode='none',
            ),
            stat_panel(
                29,
                'Health by component',
                (
                    'What /readyz checks, one cell per part: store (takes writes, not damaged), watcher '
                    '(every folder watched), workers (every slot running, none restarting), queue (moving '
                    'when it should). Any red cell makes the monitor not ready (BulletproofNotReady); '
                    'docs/runbook.md says what to do for each.'
                ),
                grid(12, 40, 12, 4),
                [
                    prom(
                        'min by (component) (bulletproof_component_healthy{instance=~"$instance"})',
                        legend='{{component}}',
                        instant=True,
                    ),
                ],
                status_field_config('unhealthy', 'healthy'),
                textMode='value_and_name',
                colorMode='background',
            ),
            row(30, 'Nodes', 48),
            _nodes_table(),
            timeseries_panel(
                32,
                'Jobs per hour by node',
                (
                    'Jobs completed and attempts failed per hour by each selected node (its own '
                    'counters, named by bulletproof_fleet_info). Nodes of one fleet take jobs from one '
                    'queue: one node failing far more than the others is BulletproofNodeFailingMore.'
                ),
                grid(14, 49, 10, 8),
                [
                    prom(_by_node('bulletproof_jobs_completed_total'), legend='{{node}} completed'),
                    prom(_by_node('bulletproof_jobs_failed_total'), 'B', legend='{{node}} failed'),
                ],
                'suffix:/h',
                decimals=1,
            ),
        ],
    )
