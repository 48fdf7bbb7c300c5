"""Recording and alert rules as Python data, rendered with the one config (config.py).

Expressions and annotations are templates: `%{name}` is a threshold of `Thresholds` (fields ending
in `_seconds` are lengths of time and shrink with the time scale of the test copy), `%{job_selector}`
and `%{job_name}` the scrape job, `%{for_text}` the alert's own `for` in words, `%{range:5m}` a range
window and `%{offset:1h}` an offset (both shrink with the time scale; windows stay at least
`min_range` seconds so that rate() still sees several samples), `%{pct:x}` and `%{dur:x}` a
threshold written as a percentage or a duration. The time scale exists for the end-to-end alerting
test, which runs the same rules with every length of time divided by a factor.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from typing import Any

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.durations import duration_in_words, format_duration, format_number, parse_duration


@dataclass(frozen=True)
class Rule:
    """One recording rule (record) or alert (alert with severity, summary, description)."""

    expr: str
    record: str | None = None
    alert: str | None = None
    severity: str | None = None
    summary: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Group:
    """A named rule group."""

    name: str
    rules: list[Rule]


def record(name: str, expr: str) -> Rule:
    """A recording rule."""
    return Rule(expr=expr, record=name)


def alert(name: str, *, expr: str, severity: str, summary: str, description: str) -> Rule:
    """An alert; its `for` comes from the config, its runbook_url from the runbook base URL."""
    return Rule(expr=expr, alert=name, severity=severity, summary=summary, description=description)


def group(name: str, rules: list[Rule]) -> Group:
    """A rule group."""
    return Group(name, rules)


# Names follow level:metric:operation: level is the labels kept besides `job`, metric the name
# without `_total`, operation what was done (rate5m, increase15m, ratio_rate30m, p95_rate1h...).
# The names keep their window in the shortened test copy.
# A fleet named by its nodes (bulletproof_fleet_info, by name), in alert texts: " a" for a lone
# monitor, " a, b, c" for a fleet of three, " fleet <id>" while none of its nodes is scraped.
FLEET = ('{{- range $i, $n := printf "bulletproof_fleet_info{fleet=%q,job=%q}" $labels.fleet $labels.job '
         '| query | sortByLabel "node" }}{{ if $i }},{{ end }} {{ $n.Labels.node }}'
         '{{ else }} fleet {{ $labels.fleet }}{{ end }}')

RECORDING_GROUPS: list[Group] = [
    group('bulletproof.recording.throughput', [
        # Jobs per second, by profile and in total.
        record('instance_profile:bulletproof_jobs_enqueued:rate5m',
               'sum by (instance, job, profile) (rate(bulletproof_jobs_enqueued_total[%{range:5m}]))'),
        record('instance_profile:bulletproof_jobs_completed:rate5m',
               'sum by (instance, job, profile) (rate(bulletproof_jobs_completed_total[%{range:5m}]))'),
        record('instance_profile:bulletproof_jobs_failed:rate5m',
               'sum by (instance, job, profile) (rate(bulletproof_jobs_failed_total[%{range:5m}]))'),
        record('instance_reason:bulletproof_jobs_failed:rate5m',
               'sum by (instance, job, reason) (rate(bulletproof_jobs_failed_total[%{range:5m}]))'),
        record('instance:bulletproof_jobs_completed:rate5m',
               'sum by (instance, job) (rate(bulletproof_jobs_completed_total[%{range:5m}]))'),
        record('instance:bulletproof_jobs_failed:rate5m',
               'sum by (instance, job) (rate(bulletproof_jobs_failed_total[%{range:5m}]))'),
        # Failed attempts per reason over 15 minutes (BulletproofJobFailureBurst).
        record('instance_reason:bulletproof_jobs_failed:increase15m',
               'sum by (instance, job, reason) (increase(bulletproof_jobs_failed_total[%{range:15m}]))'),
        # Output verifications by result over 30 minutes (BulletproofOutputVerificationFailed).
        record('instance_result:bulletproof_verifications:increase30m',
               'sum by (instance, job, result) (increase(bulletproof_verifications_total[%{range:30m}]))'),
        # Finished attempts (completed + failed; cancellations excluded) over 30 minutes: the
        # minimum-volume guard of BulletproofHighFailureRatio.
        record('instance:bulletproof_job_attempts:increase30m',
               (
                   'sum by (instance, job) (increase(bulletproof_jobs_completed_total[%{range:30m}]))\n'
                   '+ on (instance, job)\n'
                   'sum by (instance, job) (increase(bulletproof_jobs_failed_total[%{range:30m}]))\n'
               )),
        # Share of finished attempts that failed (0..1). No series while nothing finished.
        record('instance:bulletproof_jobs_failed:ratio_rate15m',
               (
                   'sum by (instance, job) (rate(bulletproof_jobs_failed_total[%{range:15m}]))\n'
                   '/ on (instance, job)\n'
                   '(\n'
                   '  (\n'
                   '    sum by (instance, job) (rate(bulletproof_jobs_failed_total[%{range:15m}]))\n'
                   '    + on (instance, job)\n'
                   '    sum by (instance, job) (rate(bulletproof_jobs_completed_total[%{range:15m}]))\n'
                   '  ) > 0\n'
                   ')\n'
               )),
        record('instance:bulletproof_jobs_failed:ratio_rate30m',
               (
                   'sum by (instance, job) (rate(bulletproof_jobs_failed_total[%{range:30m}]))\n'
                   '/ on (instance, job)\n'
                   '(\n'
                   '  (\n'
                   '    sum by (instance, job) (rate(bulletproof_jobs_failed_total[%{range:30m}]))\n'
                   '    + on (instance, job)\n'
                   '    sum by (instance, job) (rate(bulletproof_jobs_completed_total[%{range:30m}]))\n'
                   '  ) > 0\n'
                   ')\n'
               )),
        record('instance_profile:bulletproof_jobs_failed:ratio_rate1h',
               (
                   'sum by (instance, job, profile) (rate(bulletproof_jobs_failed_total[%{range:1h}]))\n'
                   '/ on (instance, job, profile)\n'
                   '(\n'
                   '  (\n'
                   '    sum by (instance, job, profile) (rate(bulletproof_jobs_failed_total[%{range:1h}]))\n'
                   '    + on (instance, job, profile)\n'
                   '    sum by (instance, job, profile) '
                   '(rate(bulletproof_jobs_completed_total[%{range:1h}]))\n'
                   '  ) > 0\n'
                   ')\n'
               )),
        # Media seconds transcoded per wall-clock second (how many "hours of video per hour").
        record('instance:bulletproof_media_seconds:rate5m',
               'sum by (instance, job) (rate(bulletproof_media_seconds_total[%{range:5m}]))'),
        # Realtime factor: media seconds per second of worker busy time (2 = twice as fast as
        # playback). No series while no worker time was spent.
        record('instance_profile:bulletproof_realtime_factor:ratio_rate5m',
               (
                   'sum by (instance, job, profile) (rate(bulletproof_media_seconds_total[%{range:5m}]))\n'
                   '/ on (instance, job, profile)\n'
                   '(sum by (instance, job, profile) '
                   '(rate(bulletproof_transcode_seconds_total[%{range:5m}])) > 0)\n'
               )),
        record('instance:bulletproof_realtime_factor:ratio_rate5m',
               (
                   'sum by (instance, job) (rate(bulletproof_media_seconds_total[%{range:5m}]))\n'
                   '/ on (instance, job)\n'
                   '(sum by (instance, job) (rate(bulletproof_transcode_seconds_total[%{range:5m}])) > 0)\n'
               )),
    ]),
    group('bulletproof.recording.bytes', [
        # Bytes per second read from sources and written to outputs.
        record('instance_profile:bulletproof_input_bytes:rate5m',
               'sum by (instance, job, profile) (rate(bulletproof_input_bytes_total[%{range:5m}]))'),
        record('instance_profile:bulletproof_output_bytes:rate5m',
               'sum by (instance, job, profile) (rate(bulletproof_output_bytes_total[%{range:5m}]))'),
        # Bytes saved per second (input minus output; negative when outputs are bigger).
        record('instance_profile:bulletproof_bytes_saved:rate5m',
               (
                   'sum by (instance, job, profile) (rate(bulletproof_input_bytes_total[%{range:5m}]))\n'
                   '- on (instance, job, profile)\n'
                   'sum by (instance, job, profile) (rate(bulletproof_output_bytes_total[%{range:5m}]))\n'
               )),
        record('instance:bulletproof_bytes_saved:rate5m',
               (
                   'sum by (instance, job) (rate(bulletproof_input_bytes_total[%{range:5m}]))\n'
                   '- on (instance, job)\n'
                   'sum by (instance, job) (rate(bulletproof_output_bytes_total[%{range:5m}]))\n'
               )),
        # Output size as a share of input size (0.3 = outputs are 30 % of their sources).
        record('instance_profile:bulletproof_output_to_input_bytes:ratio_rate1h',
               (
                   'sum by (instance, job, profile) (rate(bulletproof_output_bytes_total[%{range:1h}]))\n'
                   '/ on (instance, job, profile)\n'
                   '(sum by (instance, job, profile) (rate(bulletproof_input_bytes_total[%{range:1h}])) >'
                   ' 0)\n'
               )),
    ]),
    group('bulletproof.recording.latency', [
        # Job duration (start of the attempt to its end) quantiles over the last hour. Jobs last
        # minutes to hours, so a 5m window would hold too few of them. No series (instead of NaN)
        # while no job finished in the window.
        record('instance_profile:bulletproof_job_duration_seconds:p50_rate1h',
               (
                   'histogram_quantile(0.5, sum by (instance, job, profile, le) '
                   '(rate(bulletproof_job_duration_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job, profile)\n'
                   'sum by (instance, job, profile) '
                   '(rate(bulletproof_job_duration_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance_profile:bulletproof_job_duration_seconds:p95_rate1h',
               (
                   'histogram_quantile(0.95, sum by (instance, job, profile, le) '
                   '(rate(bulletproof_job_duration_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job, profile)\n'
                   'sum by (instance, job, profile) '
                   '(rate(bulletproof_job_duration_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance:bulletproof_job_duration_seconds:p50_rate1h',
               (
                   'histogram_quantile(0.5, sum by (instance, job, le) '
                   '(rate(bulletproof_job_duration_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job)\n'
                   'sum by (instance, job) (rate(bulletproof_job_duration_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance:bulletproof_job_duration_seconds:p95_rate1h',
               (
                   'histogram_quantile(0.95, sum by (instance, job, le) '
                   '(rate(bulletproof_job_duration_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job)\n'
                   'sum by (instance, job) (rate(bulletproof_job_duration_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance_profile:bulletproof_job_duration_seconds:mean_rate1h',
               (
                   'sum by (instance, job, profile) '
                   '(rate(bulletproof_job_duration_seconds_sum[%{range:1h}]))\n'
                   '/ on (instance, job, profile)\n'
                   '(sum by (instance, job, profile) '
                   '(rate(bulletproof_job_duration_seconds_count[%{range:1h}])) > 0)\n'
               )),
        # Time jobs spent queued before a worker took them.
        record('instance_profile:bulletproof_job_queue_wait_seconds:p50_rate1h',
               (
                   'histogram_quantile(0.5, sum by (instance, job, profile, le) '
                   '(rate(bulletproof_job_queue_wait_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job, profile)\n'
                   'sum by (instance, job, profile) '
                   '(rate(bulletproof_job_queue_wait_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance_profile:bulletproof_job_queue_wait_seconds:p95_rate1h',
               (
                   'histogram_quantile(0.95, sum by (instance, job, profile, le) '
                   '(rate(bulletproof_job_queue_wait_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job, profile)\n'
                   'sum by (instance, job, profile) '
                   '(rate(bulletproof_job_queue_wait_seconds_count[%{range:1h}])) > 0\n'
               )),
        record('instance:bulletproof_job_queue_wait_seconds:p50_rate1h',
               (
                   'histogram_quantile(0.5, sum by (instance, job, le) '
                   '(rate(bulletproof_job_queue_wait_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job)\n'
                   'sum by (instance, job) (rate(bulletproof_job_queue_wait_seconds_count[%{range:1h}])) '
                   '> 0\n'
               )),
        record('instance:bulletproof_job_queue_wait_seconds:p95_rate1h',
               (
                   'histogram_quantile(0.95, sum by (instance, job, le) '
                   '(rate(bulletproof_job_queue_wait_seconds_bucket[%{range:1h}])))\n'
                   'and on (instance, job)\n'
                   'sum by (instance, job) (rate(bulletproof_job_queue_wait_seconds_count[%{range:1h}])) '
                   '> 0\n'
               )),
    ]),
    group('bulletproof.recording.state', [
        # Share of worker slots busy (0..1).
        record('instance:bulletproof_workers_utilization:ratio',
               (
                   'sum by (instance, job) (bulletproof_workers_busy)\n'
                   '/ on (instance, job)\n'
                   '(sum by (instance, job) (bulletproof_workers_max) > 0)\n'
               )),
        # Share of the output volume still free (0..1).
        record('instance:bulletproof_output_volume_free:ratio',
               (
                   'sum by (instance, job) (bulletproof_output_volume_free_bytes)\n'
                   '/ on (instance, job)\n'
                   '(sum by (instance, job) (bulletproof_output_volume_size_bytes) > 0)\n'
               )),
    ]),
    # Counted once (docs/metrics.md): every monitor of a fleet (the monitors sharing one store)
    # exports the store's gauges, labelled fleet=<the store's id>; these rules keep one copy per
    # fleet. Dashboards and alerts read the store's gauges only through them. Explicit `by`
    # lists (not `without (instance)`), so that other target labels cannot split a fleet.
    group('bulletproof.recording.fleet', [
        record('fleet_state:bulletproof_jobs:max', 'max by (job, fleet, state) (bulletproof_jobs)'),
        record('fleet:bulletproof_queue_paused:max', 'max by (job, fleet) (bulletproof_queue_paused)'),
        record('fleet:bulletproof_queue_paused_since_timestamp_seconds:max',
               'max by (job, fleet) (bulletproof_queue_paused_since_timestamp_seconds)'),
        record('fleet:bulletproof_queue_oldest_job_timestamp_seconds:max',
               'max by (job, fleet) (bulletproof_queue_oldest_job_timestamp_seconds)'),
        record('fleet_outcome:bulletproof_last_job_finished_timestamp_seconds:max',
               'max by (job, fleet, outcome) (bulletproof_last_job_finished_timestamp_seconds)'),
        # The node registry, as the fleet's monitors read it (a node that every reader
        # judges gone is 0; one reader's view suffices while the others are down).
        record('fleet_node:bulletproof_node_up:max', 'max by (job, fleet, node) (bulletproof_node_up)'),
        record('fleet_node:bulletproof_node_last_heartbeat_timestamp_seconds:max',
               'max by (job, fleet, node) (bulletproof_node_last_heartbeat_timestamp_seconds)'),
        record('fleet_node:bulletproof_node_heartbeat_interval_seconds:max',
               'max by (job, fleet, node) (bulletproof_node_heartbeat_interval_seconds)'),
        record('fleet_node:bulletproof_node_stopped:max',
               'max by (job, fleet, node) (bulletproof_node_stopped)'),
        record('fleet_node:bulletproof_node_draining:max',
               'max by (job, fleet, node) (bulletproof_node_draining)'),
        record('fleet_node:bulletproof_node_workers_max:max',
               'max by (job, fleet, node) (bulletproof_node_workers_max)'),
        record('fleet_node:bulletproof_node_workers_busy:max',
               'max by (job, fleet, node) (bulletproof_node_workers_busy)'),
        # The nodes' own numbers summed over the fleet (bulletproof_fleet_info names each
        # instance's fleet).
        record('fleet:bulletproof_workers_busy:sum',
               'sum by (job, fleet) (bulletproof_workers_busy * on (instance, job) group_left (fleet) '
               'bulletproof_fleet_info)'),
        record('fleet:bulletproof_workers_max:sum',
               'sum by (job, fleet) (bulletproof_workers_max * on (instance, job) group_left (fleet) '
               'bulletproof_fleet_info)'),
        record('fleet:bulletproof_jobs_completed:rate5m',
               'sum by (job, fleet) (instance:bulletproof_jobs_completed:rate5m * on (instance, job) '
               'group_left (fleet) bulletproof_fleet_info)'),
        record('fleet:bulletproof_jobs_failed:rate5m',
               'sum by (job, fleet) (instance:bulletproof_jobs_failed:rate5m * on (instance, job) '
               'group_left (fleet) bulletproof_fleet_info)'),
        record('fleet:bulletproof_job_attempts:increase30m',
               'sum by (job, fleet) (instance:bulletproof_job_attempts:increase30m * on (instance, job) '
               'group_left (fleet) bulletproof_fleet_info)'),
        # The fleet's share of finished attempts that failed (BulletproofNodeFailingMore compares
        # each node with it). No series while nothing finished.
        record('fleet:bulletproof_jobs_failed:ratio_rate30m',
               (
                   'sum by (job, fleet) (rate(bulletproof_jobs_failed_total[%{range:30m}])\n'
                   '  * on (instance, job) group_left (fleet) bulletproof_fleet_info)\n'
                   '/ on (job, fleet)\n'
                   '(\n'
                   '  (\n'
                   '    sum by (job, fleet) (rate(bulletproof_jobs_failed_total[%{range:30m}])\n'
                   '      * on (instance, job) group_left (fleet) bulletproof_fleet_info)\n'
                   '    + on (job, fleet)\n'
                   '    sum by (job, fleet) (rate(bulletproof_jobs_completed_total[%{range:30m}])\n'
                   '      * on (instance, job) group_left (fleet) bulletproof_fleet_info)\n'
                   '  ) > 0\n'
                   ')\n'
               )),
        # Leases taken back by the fleet's sweeps in 15 minutes, by the node that held them.
        record('fleet_node:bulletproof_leases_expired:increase15m',
               'sum by (job, fleet, node) (increase(bulletproof_leases_expired_total[%{range:15m}])\n'
               '  * on (instance, job) group_left (fleet) bulletproof_fleet_info)'),
    ]),
]

ALERT_GROUPS: list[Group] = [
    group('bulletproof.availability', [
        alert('BulletproofDown',
              expr='up{%{job_selector}} == 0',
              severity='critical',
              summary='Bulletproof monitor {{ $labels.instance }} is down',
              description=(
                  'Prometheus has failed every scrape of {{ $labels.instance }} (job {{ $labels.job }}) for '
                  'more than %{for_text}. Nothing is known about its queue, workers or jobs, and its other '
                  'alerts are inhibited until it is back.'
              )),
        alert('BulletproofAbsent',
              expr='absent(up{%{job_selector}})',
              severity='critical',
              summary='No Bulletproof monitor is known to Prometheus',
              description=(
                  'There has been no target in the Prometheus job "%{job_name}" for more than %{for_text}: '
                  'the scrape configuration or service discovery lost the monitor, so none of the Bulletproof'
                  ' alerts can fire.'
              )),
        alert('BulletproofWatchFolderDown',
              expr='bulletproof_watch_folder_up == 0',
              severity='critical',
              summary='Watch folder {{ $labels.folder }} is unavailable on {{ $labels.instance }}',
              description=(
                  'The watch folder {{ $labels.folder }} on {{ $labels.instance }} has been missing, '
                  'unmounted or unreadable for more than %{for_text}. Files dropped there are not being '
                  'picked up.'
              )),
        alert('BulletproofConfigReloadFailed',
              expr='bulletproof_config_last_reload_successful == 0',
              severity='warning',
              summary='Bulletproof on {{ $labels.instance }} failed to reload its configuration',
              description=(
                  'The last configuration reload on {{ $labels.instance }} failed and it is still running '
                  'with the configuration it last loaded successfully {{- with printf '
                  '"bulletproof_config_last_reload_success_timestamp_seconds{instance=%q,job=%q} > 0" '
                  '$labels.instance $labels.job | query }} at {{ . | first | value | humanizeTimestamp }}{{ '
                  'end }}.'
              )),
        alert('BulletproofApiAuthFailures',
              expr=(
                  'sum by (instance, job) (increase(bulletproof_api_control_requests_total{result=~"unauthori'
                  'zed|rate_limited"}[%{range:10m}])) > %{api_auth_failures_10m}'
              ),
              severity='warning',
              summary='Control calls without valid credentials on {{ $labels.instance }}',
              description=(
                  '{{ $value | humanize }} control or config calls to {{ $labels.instance }} in the last 10 '
                  'minutes had no or wrong credentials, or were locked out after too many: someone is '
                  'guessing the API token, or a script or data source has a wrong one. `bulletproof audit` '
                  'shows the addresses.'
              )),
        # A watch folder that is down alone is BulletproofWatchFolderDown's to report.
        alert('BulletproofNotReady',
              expr=(
                  'bulletproof_ready == 0 unless on (instance, job) min by (instance, job) '
                  '(bulletproof_component_healthy{component!="watcher"}) == 1'
              ),
              severity='critical',
              summary='Bulletproof on {{ $labels.instance }} is not ready',
              description=(
                  '{{ $labels.instance }} has answered /readyz with 503 for more than %{for_text}, so it may '
                  'not be queueing or transcoding what arrives. Unhealthy: {{- range printf '
                  '"bulletproof_component_healthy{instance=%q,job=%q} == 0" $labels.instance $labels.job | '
                  'query }} {{ .Labels.component }}{{ end }}. GET /readyz lists the reasons.'
              )),
        alert('BulletproofWorkerRestarting',
              expr='sum by (instance, job) (increase(bulletproof_worker_restarts_total[%{range:15m}])) > '
                   '%{worker_restarts_15m}',
              severity='warning',
              summary='Worker slots of {{ $labels.instance }} keep failing',
              description=(
                  'The worker slots of {{ $labels.instance }} caught {{ printf "%.0f" $value }} errors in 15 '
                  'minutes and restarted after each (with a growing delay). Jobs start late or not at all; '
                  "the monitor's log has each error."
              )),
    ]),
    group('bulletproof.jobs', [
        alert('BulletproofJobFailureBurst',
              expr='instance_reason:bulletproof_jobs_failed:increase15m >= %{failure_burst_15m}',
              severity='warning',
              summary='Burst of {{ $labels.reason }} failures on {{ $labels.instance }}',
              description=(
                  '{{ printf "%.0f" $value }} transcode attempts failed with reason {{ $labels.reason }} on '
                  '{{ $labels.instance }} in the last 15 minutes (threshold: %{failure_burst_15m}).'
              )),
        # Outputs ffmpeg called good that failed the check before publishing, with a source that
        # was whole (a truncated source is `input_truncated`, left to the failure burst alert).
        alert('BulletproofOutputVerificationFailed',
              expr='instance_result:bulletproof_verifications:increase30m{result="failed"} >= '
                   '%{verification_failures_30m}',
              severity='warning',
              summary='Outputs fail verification on {{ $labels.instance }}',
              description=(
                  '{{ printf "%.0f" $value }} finished outputs on {{ $labels.instance }} failed the check '
                  'before publishing in the last 30 minutes (wrong duration, missing stream or decode errors)'
                  ' although their sources were whole. Nothing was published for them; the encoder, a profile'
                  ' or the output storage is suspect.'
              )),
        alert('BulletproofHighFailureRatio',
              expr=(
                  'instance:bulletproof_jobs_failed:ratio_rate30m > %{failure_ratio}\n'
                  'and on (instance, job)\n'
                  'instance:bulletproof_job_attempts:increase30m >= %{failure_ratio_min_attempts}\n'
              ),
              severity='warning',
              summary='{{ $value | humanizePercentage }} of transcodes fail on {{ $labels.instance }}',
              description=(
                  '{{ $value | humanizePercentage }} of the transcode attempts that finished on {{ '
                  '$labels.instance }} in the last 30 minutes failed {{- with printf '
                  '"instance:bulletproof_job_attempts:increase30m{instance=%q,job=%q}" $labels.instance '
                  '$labels.job | query }} (out of {{ . | first | value | printf "%.0f" }} attempts){{ end }};'
                  ' the threshold is %{pct:failure_ratio} with at least %{failure_ratio_min_attempts} '
                  'attempts.'
              )),
        # Seconds since the slot's ffmpeg last reported progress (or since the attempt started,
        # before its first report), for busy slots whose job is not paused on purpose.
        alert('BulletproofJobStalled',
              expr=(
                  'time() - (\n'
                  '    bulletproof_worker_last_progress_timestamp_seconds > '
                  'bulletproof_worker_job_started_timestamp_seconds\n'
                  '  or\n'
                  '    bulletproof_worker_job_started_timestamp_seconds > 0\n'
                  ') > %{stall_seconds}\n'
                  'and on (instance, job, worker) bulletproof_worker_busy == 1\n'
                  'unless on (instance, job, worker) bulletproof_worker_paused == 1\n'
              ),
              severity='warning',
              summary='Job on worker {{ $labels.worker }} of {{ $labels.instance }} makes no progress',
              description=(
                  'Worker {{ $labels.worker }} on {{ $labels.instance }} has had no progress report from '
                  'ffmpeg for {{ $value | humanizeDuration }} {{- with printf '
                  '"bulletproof_worker_job_info{instance=%q,job=%q,worker=%q}" $labels.instance $labels.job '
                  '$labels.worker | query }} {{- with . | first }} (job {{ .Labels.job_id }}, {{ .Labels.file'
                  " }}, profile {{ .Labels.profile }}){{ end }}{{ end }}. The monitor's own stall watchdog "
                  'should have failed this attempt already.'
              )),
        # Elapsed seconds of the running attempt, when it exceeds 10x the media duration plus
        # 10 minutes (or 8 hours when the media duration is unknown).
        alert('BulletproofJobTooSlow',
              expr=(
                  '(\n'
                  '    time() - (bulletproof_worker_job_started_timestamp_seconds > 0)\n'
                  '      > on (instance, job, worker)\n'
                  '    %{too_slow_media_factor} * bulletproof_worker_job_media_seconds + '
                  '%{too_slow_grace_seconds}\n'
                  '    and on (instance, job, worker) bulletproof_worker_job_media_seconds > 0\n'
                  '  or\n'
                  '    time() - (bulletproof_worker_job_started_timestamp_seconds > 0) > '
                  '%{too_slow_unknown_seconds}\n'
                  '    and on (instance, job, worker) bulletproof_worker_job_media_seconds == 0\n'
                  ')\n'
                  'and on (instance, job, worker) bulletproof_worker_busy == 1\n'
                  'unless on (instance, job, worker) bulletproof_worker_paused == 1\n'
              ),
              severity='warning',
              summary='Job on worker {{ $labels.worker }} of {{ $labels.instance }} is far too slow',
              description=(
                  'The job on worker {{ $labels.worker }} of {{ $labels.instance }} {{- with printf '
                  '"bulletproof_worker_job_info{instance=%q,job=%q,worker=%q}" $labels.instance $labels.job '
                  '$labels.worker | query }} {{- with . | first }} (job {{ .Labels.job_id }}, {{ .Labels.file'
                  ' }}, profile {{ .Labels.profile }}){{ end }}{{ end }} has been running for {{ $value | '
                  'humanizeDuration }}, for {{- with printf '
                  '"bulletproof_worker_job_media_seconds{instance=%q,job=%q,worker=%q} > 0" $labels.instance '
                  '$labels.job $labels.worker | query }} {{ . | first | value | humanizeDuration }} of media '
                  '(limit: %{too_slow_media_factor}x the media duration plus %{dur:too_slow_grace_seconds}). '
                  '{{- else }} media of unknown duration (limit: %{dur:too_slow_unknown_seconds}).{{ end }}'
              )),
    ]),
    # The queue is the fleet's (one store, however many monitors read it): these alerts read the
    # de-duplicated fleet rules and carry the labels job and fleet; their texts name the fleet by
    # its nodes (FLEET).
    group('bulletproof.queue', [
        # Jobs are queued, the queue is not paused, and either no worker of the fleet is busy
        # although a runnable job has waited more than a minute (jobs waiting out a retry backoff
        # have a queued time in the future), or nothing at all has finished for 6 hours while a
        # job has been waiting that long.
        alert('BulletproofQueueStuck',
              expr=(
                  'fleet_state:bulletproof_jobs:max{state="queued"} > 0\n'
                  'and on (job, fleet) fleet:bulletproof_queue_paused:max == 0\n'
                  'and on (job, fleet)\n'
                  '(\n'
                  '    fleet:bulletproof_workers_busy:sum == 0\n'
                  '    and on (job, fleet)\n'
                  '    time() - (fleet:bulletproof_queue_oldest_job_timestamp_seconds:max > 0) > '
                  '%{queue_stuck_wait_seconds}\n'
                  '  or\n'
                  '    time() - max by (job, fleet) '
                  '(fleet_outcome:bulletproof_last_job_finished_timestamp_seconds:max) '
                  '> %{queue_stuck_idle_seconds}\n'
                  '    and on (job, fleet)\n'
                  '    time() - (fleet:bulletproof_queue_oldest_job_timestamp_seconds:max > 0) > '
                  '%{queue_stuck_idle_seconds}\n'
                  ')\n'
              ),
              severity='critical',
              summary='Bulletproof queue on' + FLEET + ' is stuck',
              description=(
                  '{{ $value | printf "%.0f" }} jobs are queued on' + FLEET + ' and the queue is '
                  'not paused, yet nothing moves: {{- with printf '
                  '"fleet:bulletproof_workers_busy:sum{fleet=%q,job=%q}" $labels.fleet $labels.job '
                  '| query }} {{ '
                  '. | first | value | printf "%.0f" }}{{ end }} of {{- with printf '
                  '"fleet:bulletproof_workers_max:sum{fleet=%q,job=%q}" $labels.fleet $labels.job '
                  '| query }} {{ .'
                  ' | first | value | printf "%.0f" }}{{ end }} workers are busy, {{- with printf "time() - '
                  '(fleet:bulletproof_queue_oldest_job_timestamp_seconds:max{fleet=%q,job=%q} > 0)" '
                  '$labels.fleet $labels.job | query }} the oldest queued job has waited '
                  '{{ . | first | value | '
                  'humanizeDuration }}{{ end }} and {{- with printf "time() - '
                  'max(fleet_outcome:bulletproof_last_job_finished_timestamp_seconds:max'
                  '{fleet=%q,job=%q} > 0)" '
                  '$labels.fleet $labels.job | query }} the last job finished {{ . | first | value | '
                  'humanizeDuration }} ago. {{- else }} no job has finished yet.{{ end }}'
              )),
        # The number of queued jobs rose in each of the last two hours and, at the rate of the
        # last two hours, will pass 100 within 4 hours. A single batch of files (one step up,
        # then draining) does not qualify: it needs growth in two consecutive hours.
        alert('BulletproofBacklogGrowing',
              expr=(
                  'predict_linear(fleet_state:bulletproof_jobs:max{state="queued"}[%{range:2h}],\n'
                  '  %{backlog_horizon_seconds}\n'
                  ') > %{backlog_jobs}\n'
                  'and fleet_state:bulletproof_jobs:max{state="queued"} > '
                  'fleet_state:bulletproof_jobs:max{state="queued"} offset %{offset:1h}\n'
                  'and fleet_state:bulletproof_jobs:max{state="queued"} offset %{offset:1h} > '
                  'fleet_state:bulletproof_jobs:max{state="queued"} offset %{offset:2h}\n'
              ),
              severity='warning',
              summary='Bulletproof backlog on' + FLEET + ' keeps growing',
              description=(
                  'Jobs arrive on' + FLEET + ' faster than they finish: the queue {{- with printf '
                  '"fleet_state:bulletproof_jobs:max{fleet=%q,job=%q,state=\\"queued\\"}" $labels.fleet '
                  '$labels.job | query }} holds {{ . | first | value | printf "%.0f" }} jobs now, '
                  'and{{ end }} '
                  'at the rate of the last 2 hours it will hold {{ $value | printf "%.0f" }} in 4 hours '
                  '(threshold: %{backlog_jobs}).'
              )),
        alert('BulletproofOldestJobTooOld',
              expr=(
                  'time() - (fleet:bulletproof_queue_oldest_job_timestamp_seconds:max > 0) > '
                  '%{oldest_job_seconds}\n'
                  'and on (job, fleet) fleet:bulletproof_queue_paused:max == 0\n'
              ),
              severity='warning',
              summary=(
                  'A job has waited {{ $value | humanizeDuration }} in the queue of' + FLEET
              ),
              description=(
                  'The oldest queued job on' + FLEET + ' has been waiting for {{ $value | '
                  'humanizeDuration }} (threshold: %{dur:oldest_job_seconds}) while the queue is running: the'
                  ' workers do not keep up with the files that arrive.'
              )),
        alert('BulletproofQueuePausedLong',
              expr=(
                  'time() - (fleet:bulletproof_queue_paused_since_timestamp_seconds:max > 0) > '
                  '%{paused_seconds}\n'
                  'and on (job, fleet) fleet:bulletproof_queue_paused:max == 1\n'
              ),
              severity='info',
              summary=(
                  'Bulletproof queue on' + FLEET + ' has been paused for {{ $value | '
                  'humanizeDuration }}'
              ),
              description=(
                  'The queue on' + FLEET + ' has been paused for {{ $value | humanizeDuration }} '
                  '(threshold: %{dur:paused_seconds}) {{- with printf '
                  '"fleet_state:bulletproof_jobs:max{fleet=%q,job=%q,state=\\"queued\\"}" $labels.fleet '
                  '$labels.job | query }} and {{ . | first | value | printf "%.0f" }} jobs are '
                  'waiting{{ end }}. '
                  'Resume it when the maintenance is over.'
              )),
    ]),
    # The nodes of a fleet, from the registry every node exports (so a node whose own target is
    # down is still reported by the others).
    group('bulletproof.fleet', [
        # Seconds since the node's last heartbeat, when that is more than N of its heartbeats and
        # it did not stop cleanly.
        alert('BulletproofNodeDown',
              expr=(
                  'time() - fleet_node:bulletproof_node_last_heartbeat_timestamp_seconds:max\n'
                  '  > on (job, fleet, node)\n'
                  '%{node_down_missed_heartbeats}'
                  ' * fleet_node:bulletproof_node_heartbeat_interval_seconds:max\n'
                  'unless on (job, fleet, node) fleet_node:bulletproof_node_stopped:max == 1\n'
              ),
              severity='warning',
              summary='Bulletproof node {{ $labels.node }} has stopped sending heartbeats',
              description=(
                  'The node {{ $labels.node }} has not written its heartbeat for {{ $value | '
                  'humanizeDuration }} (more than %{node_down_missed_heartbeats} heartbeats) and did not '
                  'stop cleanly: it crashed, froze or lost the store. The other nodes take back its '
                  'running jobs when their leases lapse. {{- with printf '
                  '"up{job=%q} == 0 and on (instance, job) '
                  'last_over_time(bulletproof_fleet_info{job=%q,fleet=%q,node=%q}[1h])" $labels.job '
                  '$labels.job $labels.fleet $labels.node | query }} Its own target {{ . | first | label '
                  '"instance" }} is down too.{{ end }}'
              )),
        alert('BulletproofLeasesExpiring',
              expr='fleet_node:bulletproof_leases_expired:increase15m >= %{leases_expired_15m}',
              severity='warning',
              summary='Leases of running jobs of node {{ $labels.node }} expire',
              description=(
                  '{{ printf "%.0f" $value }} leases of jobs running on {{ $labels.node }} lapsed '
                  'unrenewed in the last 15 minutes (threshold: %{leases_expired_15m}), and other nodes '
                  'took the jobs back: the node dies, freezes or loses the store while it transcodes.'
              )),
        # One node's failure ratio far above its fleet's, with enough attempts on that node.
        alert('BulletproofNodeFailingMore',
              expr=(
                  'instance:bulletproof_jobs_failed:ratio_rate30m\n'
                  '  * on (instance, job) group_left (fleet, node) bulletproof_fleet_info\n'
                  '> on (job, fleet) group_left\n'
                  '%{node_failing_factor} * fleet:bulletproof_jobs_failed:ratio_rate30m\n'
                  'and on (instance, job)\n'
                  'instance:bulletproof_job_attempts:increase30m >= %{node_failing_min_attempts}\n'
              ),
              severity='warning',
              summary=(
                  'Node {{ $labels.node }} fails {{ $value | humanizePercentage }} of its transcodes, '
                  'far more than its fleet'
              ),
              description=(
                  '{{ $value | humanizePercentage }} of the transcode attempts that finished on node {{ '
                  '$labels.node }} ({{ $labels.instance }}) in the last 30 minutes failed {{- with printf '
                  '"fleet:bulletproof_jobs_failed:ratio_rate30m{fleet=%q,job=%q}" $labels.fleet $labels.job '
                  '| query }}, against {{ . | first | value | humanizePercentage }} for the whole '
                  'fleet{{ end '
                  '}} (threshold: %{node_failing_factor}x the fleet, with at least '
                  '%{node_failing_min_attempts} attempts on the node). Its ffmpeg, its disks or its mounts '
                  'differ from the other nodes.'
              )),
    ]),
    group('bulletproof.storage', [
        alert('BulletproofOutputVolumeAlmostFull',
              expr='instance:bulletproof_output_volume_free:ratio < %{volume_free_ratio}',
              severity='warning',
              summary=(
                  'Output volume of {{ $labels.instance }} is {{ $value | humanizePercentage }} free'
              ),
              description=(
                  'Only {{ $value | humanizePercentage }} {{- with printf '
                  '"bulletproof_output_volume_free_bytes{instance=%q,job=%q}" $labels.instance $labels.job | '
                  'query }} ({{ . | first | value | humanize1024 }}B){{ end }} of the output volume of {{ '
                  '$labels.instance }} is free (threshold: %{pct:volume_free_ratio}). Transcodes will fail '
                  'with output_error when it is full.'
              )),
        # At the rate of the last 6 hours the volume is full within 24 hours; only once less
        # than 40 % is left, so that a big volume's normal churn does not page anyone.
        alert('BulletproofOutputVolumeFillingUp',
              expr=(
                  'predict_linear(bulletproof_output_volume_free_bytes[%{range:6h}],\n'
                  '  %{volume_fill_horizon_seconds}\n'
                  ') < 0\n'
                  'and on (instance, job) instance:bulletproof_output_volume_free:ratio < '
                  '%{volume_fill_guard_ratio}\n'
              ),
              severity='warning',
              summary='Output volume of {{ $labels.instance }} will be full within 24 hours',
              description=(
                  'At the rate of the last 6 hours the output volume of {{ $labels.instance }} {{- with '
                  'printf "bulletproof_output_volume_free_bytes{instance=%q,job=%q}" $labels.instance '
                  '$labels.job | query }} ({{ . | first | value | humanize1024 }}B free now){{ end }} will be'
                  ' full within 24 hours.'
              )),
    ]),
]


class _Template(string.Template):
    """`%{name}` placeholders only, so that `%q`/`%.0f` of Go templates pass through untouched."""

    # string.Template needs all four groups; only `braced` can match.
    pattern = (r"(?P<escaped>(?!))|(?P<named>(?!))"
               r"|%\{(?P<braced>[a-z0-9_]+(?::[a-z0-9_]+)?)\}|(?P<invalid>(?!))")


class _Values(dict):
    """The values of the placeholders of one rule, computed on lookup."""

    def __init__(self, config: MonitoringConfig, time_scale: float, min_range: float, for_: str | None):
        super().__init__()
        self.config, self.time_scale, self.min_range, self.for_ = config, time_scale, min_range, for_

    def _threshold(self, name: str) -> float:
        if name not in _THRESHOLD_NAMES:
            raise KeyError(f"unknown placeholder %{{{name}}}")
        return getattr(self.config.thresholds, name)

    def __missing__(self, key: str) -> str:
        kind, _, arg = key.partition(":")
        if kind == "range":
            return format_duration(max(parse_duration(arg) / self.time_scale, self.min_range))
        if kind == "offset":
            return format_duration(max(parse_duration(arg) / self.time_scale, 1.0))
        if kind == "pct":
            return f"{format_number(self._threshold(arg) * 100)}%"
        if kind == "dur":
            return format_duration(self._threshold(arg))
        if key == "job_selector":
            return self.config.job_selector
        if key == "job_name":
            return self.config.job_name
        if key == "for_text":
            return duration_in_words(self.for_ or "0s")
        value = self._threshold(key)
        if key.endswith("_seconds"):
            value = value / self.time_scale
        return format_number(value)


_THRESHOLD_NAMES = {f.name for f in fields(MonitoringConfig().thresholds)}


def _render_rule(rule: Rule, config: MonitoringConfig, time_scale: float, min_range: float) -> dict[str, Any]:
    if rule.record:
        values = _Values(config, time_scale, min_range, None)
        return {"record": rule.record, "expr": _Template(rule.expr).substitute(values)}
    if not (rule.alert and rule.severity and rule.summary and rule.description):
        raise ValueError(f"rule {rule.alert or rule.expr!r} is neither a recording rule nor a complete alert")
    for_ = config.for_durations[rule.alert]
    # Annotations always speak of the shipped thresholds (unscaled), also in the test copy.
    text = _Values(config, 1.0, min_range, for_)
    return {
        "alert": rule.alert,
        "expr": _Template(rule.expr).substitute(_Values(config, time_scale, min_range, for_)),
        "for": format_duration(parse_duration(for_) / time_scale),
        "labels": {"severity": rule.severity},
        "annotations": {
            "summary": _Template(rule.summary).substitute(text),
            "description": _Template(rule.description).substitute(text),
            "runbook_url": config.runbook_url(rule.alert),
        },
    }


def render_groups(groups: list[Group], config: MonitoringConfig, *, time_scale: float = 1.0,
                  min_range: float = 4.0) -> dict[str, Any]:
    """A Prometheus rule file (as data) of ``groups``; every length of time divided by ``time_scale``."""
    return {"groups": [{"name": g.name, "rules": [_render_rule(r, config, time_scale, min_range)
                                                  for r in g.rules]} for g in groups]}


def rule_files(config: MonitoringConfig, *, time_scale: float = 1.0,
               min_range: float = 4.0) -> dict[str, dict[str, Any]]:
    """Every rule file by name (recording.yml, alerts.yml), rendered with ``config``."""
    return {
        "recording.yml": render_groups(RECORDING_GROUPS, config, time_scale=time_scale, min_range=min_range),
        "alerts.yml": render_groups(ALERT_GROUPS, config, time_scale=time_scale, min_range=min_range),
    }
