"""The Config dashboard (uid bulletproof-config)."""

from __future__ import annotations

from typing import Any

from exporter.monitoring.config import MonitoringConfig
from exporter.monitoring.dashboards.builder import (
    API,
    JSON,
    api_get,
    api_variables,
    by_name,
    column,
    dashboard,
    field_config,
    grid,
    panel,
    prom,
    stat_panel,
    table_field_config,
    table_options,
    textbox_variable,
    value_map,
)
from exporter.monitoring.dashboards.panels import config_reload_stat, state_colors

DESCRIPTION = (
    "Edit the monitor's settings (validated before they are saved), reset them to the defaults, list the "
    'profiles and rules, and test which rule a file name gets.'
)


def _form_element(id_: str, title: str, type_: str, tooltip: str, *, unit: str = '', **extra: Any) -> JSON:
    """A field of the Settings form bound to the setting ``id_`` (uid bp-<id with dashes>)."""
    return {'uid': 'bp-' + id_.replace('_', '-'), 'id': id_, 'title': title, 'type': type_, 'labelWidth': 24,
            'width': 60, 'tooltip': tooltip, 'section': '', 'unit': unit, 'value': None, **extra}


def _config_table(id_: int, title: str, description: str, pos: JSON, targets: list[JSON], *,
                  overrides: list[JSON] | None = None, transformations: list[JSON] | None = None) -> JSON:
    """A table of what the monitor's API says about its config (unsorted, unit short)."""
    return panel('table', id_, title, description, pos, targets=targets, datasource=API,
                 field_config=table_field_config(overrides=overrides), options=table_options(),
                 transformations=transformations)


def build(config: MonitoringConfig) -> JSON:
    """The dashboard as Grafana's JSON model."""
    return dashboard(
        "config", DESCRIPTION, time_from='now-1h', refresh='',
        variables=[
            *api_variables(config),
            textbox_variable(
                'file',
                'File to test',
                'A file name or a path relative to a watch folder, for the Rule tester.',
                'holiday/clip.mp4',
            ),
        ],
        annotations=[],
        panels=[
            panel(
                'volkovlabs-form-panel',
                1,
                'Settings',
                (
                    "The monitor's main settings (monitor.yaml). Validate and save: the form reads the config"
                    ' in force, applies these values, dry-runs it with POST /api/v1/config/validate and only '
                    'if it is valid replaces it with PUT /api/v1/config (written atomically, previous file '
                    "kept as .bak, applied without a restart). A rejected value is shown here with the API's "
                    'message. Reset to defaults (asks first) writes the default config with POST '
                    '/api/v1/config/reset. Admins only (api.grafana.config_role); Editors and Viewers get '
                    "'forbidden'. The other keys of monitor.yaml (rules, profiles, api...) are kept as they "
                    'are.'
                ),
                grid(0, 0, 12, 14),
                targets=[],
                datasource=None,
                options={
                    'layout': {
                        'variant': 'single',
                        'padding': 10,
                        'sections': [],
                        'orientation': 'horizontal',
                        'sectionVariant': 'default',
                    },
                    'elements': [
                        _form_element(
                            'monitor_folder',
                            'Watch folder(s)',
                            'textarea',
                            (
                                'monitor_folder: one folder per line (absolute, or relative to monitor.yaml).'
                                ' Existing folders keep their recursive/polling settings.'
                            ),
                            rows=3,
                        ),
                        _form_element(
                            'output_folder',
                            'Output folder',
                            'string',
                            'output_folder: where finished files go (must not be a watch folder).',
                            hidden=False,
                        ),
                        _form_element(
                            'max_workers',
                            'Max workers',
                            'number',
                            'max_workers: ffmpeg processes at once (1-64).',
                            min=1,
                            max=64,
                        ),
                        _form_element(
                            'stability_seconds',
                            'Stability window',
                            'number',
                            (
                                'stability_seconds: a file is queued once its size and mtime have not changed'
                                ' for this long (0-3600 s).'
                            ),
                            unit='s',
                            min=0,
                            max=3600,
                        ),
                        _form_element(
                            'retry_max_attempts',
                            'Retry: max attempts',
                            'number',
                            'retry.max_attempts: attempts per job before it stays failed (1-100).',
                            min=1,
                            max=100,
                        ),
                        _form_element(
                            'retry_backoff_seconds',
                            'Retry: backoff',
                            'number',
                            (
                                'retry.backoff_seconds: wait before the second attempt, multiplied by '
                                'retry.backoff_factor for each further one (0-86400 s).'
                            ),
                            unit='s',
                            min=0,
                            max=86400,
                        ),
                    ],
                    'sync': True,
                    'initial': {
                        'method': 'GET',
                        'url': '/bulletproof/api/v1/config',
                        'header': [],
                        'contentType': 'application/json',
                        'datasource': '',
                        'code': (
                            "// Runs after the panel's GET /bulletproof/api/v1/config (answer: {path, "
                            'last_reload_ok, config}).\n// Fills the form with the config in force; '
                            'setInitial() '
                            'makes the form highlight what is edited.\nvar body = context.panel.initial ||'
                            ' {};\nvar'
                            ' cfg = body.config;\nif (!cfg) {\n  return;\n}\nvar values = {\n  '
                            'monitor_folder: '
                            '(cfg.monitor_folder || [])\n    .map(function (folder) {\n      return '
                            'folder.path;'
                            '\n    })\n    .join("\\n"),\n  output_folder: cfg.output_folder,\n  '
                            'max_workers: '
                            'cfg.max_workers,\n  stability_seconds: cfg.stability_seconds,\n  '
                            'retry_max_attempts: '
                            'cfg.retry.max_attempts,\n  retry_backoff_seconds: cfg.retry.backoff_seconds,\n'
                            '};\n'
                            'context.panel.onChangeElements(\n  context.panel.elements.map(function '
                            '(element) {'
                            '\n    return Object.assign({}, element, { value: values[element.id] });\n  })\n'
                            ');\n'
                            'context.panel.setInitial(Object.assign({}, body, values));\n'
                        ),
                        'highlight': True,
                        'highlightColor': '#F2CC0C',
                        'payload': {},
                        'getPayload': 'return {}',
                    },
                    'update': {
                        'method': '-',
                        'url': '',
                        'header': [],
                        'contentType': 'application/json',
                        'datasource': '',
                        'code': (
                            "// Save: read the config in force, apply the form's values, dry-run it with\n"
                            '// POST '
                            '/api/v1/config/validate, and only then replace it with PUT /api/v1/config.\n// '
                            "Requests go through the front door (/bulletproof/) with the viewer's Grafana "
                            'session;\n// the monitor needs an Admin (api.grafana.config_role). This code '
                            'adds no '
                            'credentials of its own.\nvar API = "/bulletproof/api/v1/config";\nvar HEADERS '
                            '= { '
                            '"Content-Type": "application/json", "X-Grafana-Action": "1" };\nvar form = {};\n'
                            'context.panel.elements.forEach(function (element) {\n  form[element.id] = '
                            'element.value;\n});\n\nfunction problemText(problems) {\n  return (problems || '
                            '[])\n    '
                            '.map(function (problem) {\n      return (problem.location ? problem.location '
                            '+ ": " :'
                            ' "") + problem.message;\n    })\n    .join("; ");\n}\n\nfunction refuse(title, '
                            'message) {'
                            '\n  context.grafana.notifyError([title, message]);\n  throw new Error(title + '
                            '": " + '
                            'message);\n}\n\nasync function readJson(response) {\n  try {\n    return await '
                            'response.json();\n  } catch (error) {\n    return {};\n  }\n}\n\nfunction '
                            'errorText(body, '
                            'response) {\n  var error = body.error || {};\n  var text = error.message || '
                            '"HTTP " + '
                            'response.status;\n  if (Array.isArray(error.details) && error.details.length)'
                            ' {\n    '
                            'text += " (" + problemText(error.details) + ")";\n  }\n  return text;\n}\n\n'
                            'async '
                            'function save() {\n  var current = await fetch(API, { headers: { Accept: '
                            '"application/json" } });\n  var currentBody = await readJson(current);\n  if '
                            '(!current.ok || !currentBody.config) {\n    refuse("Cannot read the config", '
                            'errorText(currentBody, current));\n  }\n  var config = currentBody.config;\n  '
                            'var known'
                            ' = {};\n  (config.monitor_folder || []).forEach(function (folder) {\n    '
                            'known[folder.path] = folder;\n  });\n  config.monitor_folder = '
                            'String(form.monitor_folder || "")\n    .split("\\n")\n    .map(function (line) '
                            '{\n      '
                            'return line.trim();\n    })\n    .filter(function (line) {\n      return '
                            'line.length > '
                            '0;\n    })\n    .map(function (path) {\n      return known[path] || { path: '
                            'path };'
                            '\n    });\n  config.output_folder = form.output_folder;\n  config.max_workers = '
                            'form.max_workers;\n  config.stability_seconds = form.stability_seconds;\n  '
                            'config.retry = Object.assign({}, config.retry, {\n    max_attempts: '
                            'form.retry_max_attempts,\n    backoff_seconds: form.retry_backoff_seconds,\n  '
                            '});\n\n  '
                            'var check = await fetch(API + "/validate", { method: "POST", headers: '
                            'HEADERS, body:'
                            ' JSON.stringify(config) });\n  var verdict = await readJson(check);\n  if '
                            '(!check.ok) '
                            '{\n    refuse("Cannot validate the config", errorText(verdict, check));\n  }'
                            '\n  if '
                            '(!verdict.valid) {\n    refuse("Invalid config, nothing saved", '
                            'problemText(verdict.errors));\n  }\n\n  var put = await fetch(API, { method: '
                            '"PUT", '
                            'headers: HEADERS, body: JSON.stringify(config) });\n  var result = await '
                            'readJson(put);\n  if (!put.ok) {\n    refuse("Config not saved", '
                            'errorText(result, '
                            'put));\n  }\n  if (result.restart_required && result.restart_required.length) '
                            '{\n    '
                            'context.grafana.notifyWarning(["Config saved", "Restart the monitor to '
                            'apply: " + '
                            'result.restart_required.join(", ")]);\n  } else {\n    '
                            'context.grafana.notifySuccess(["Config saved", "The new config is in force '
                            '(previous'
                            ' file kept as .bak)."]);\n  }\n  if (typeof context.panel.initialRequest === '
                            '"function") {\n    await context.panel.initialRequest();\n  }\n}\n\nreturn '
                            'save();\n'
                        ),
                        'confirm': True,
                        'payloadMode': 'all',
                        'getPayload': 'return {}',
                        'payload': {},
                    },
                    'updateEnabled': 'auto',
                    'elementValueChanged': '',
                    'confirmModal': {
                        'title': 'Save the config?',
                        'body': (
                            'These values will be validated by the monitor and, if valid, written to '
                            'monitor.yaml and put in force at once:'
                        ),
                        'columns': {
                            'include': ['name', 'oldValue', 'newValue'],
                            'name': 'Setting',
                            'oldValue': 'In force',
                            'newValue': 'New',
                        },
                        'confirm': 'Validate and save',
                        'cancel': 'Cancel',
                        'elementDisplayMode': 'modified',
                    },
                    'buttonGroup': {'orientation': 'left', 'size': 'md'},
                    'submit': {
                        'variant': 'primary',
                        'icon': 'cloud-upload',
                        'text': 'Validate and save',
                        'foregroundColor': 'yellow',
                        'backgroundColor': 'purple',
                    },
                    'reset': {
                        'variant': 'destructive',
                        'icon': 'history',
                        'text': 'Reset to defaults',
                        'foregroundColor': 'yellow',
                        'backgroundColor': 'purple',
                    },
                    'resetAction': {
                        'mode': 'custom',
                        'code': (
                            '// Reset to defaults: POST /api/v1/config/reset writes the default '
                            'monitor.yaml (the'
                            ' previous\n// file is kept as monitor.yaml.bak) and puts it in force. Asks for '
                            'confirmation first.\nasync function reset() {\n  var response = await '
                            'fetch("/bulletproof/api/v1/config/reset", {\n    method: "POST",\n    headers:'
                            ' { '
                            '"Content-Type": "application/json", "X-Grafana-Action": "1" },\n    body: '
                            '"{}",\n  });'
                            '\n  var body = {};\n  try {\n    body = await response.json();\n  } catch '
                            '(error) {\n    '
                            'body = {};\n  }\n  if (!response.ok) {\n    var message = (body.error && '
                            'body.error.message) || "HTTP " + response.status;\n    '
                            'context.grafana.notifyError(["Config not reset", message]);\n    throw new '
                            'Error("Config not reset: " + message);\n  }\n  '
                            'context.grafana.notifySuccess(["Config '
                            'reset", "The default config is in force (previous file kept as .bak)."]);\n  if '
                            '(typeof context.panel.initialRequest === "function") {\n    await '
                            'context.panel.initialRequest();\n  } else {\n    context.grafana.refresh();\n  '
                            '}\n}\n\n'
                            'return reset();\n'
                        ),
                        'confirm': True,
                        'datasource': '',
                        'getPayload': 'return {}',
                        'payload': {},
                    },
                    'saveDefault': {'variant': 'hidden', 'icon': 'save', 'text': 'Save Default'},
                },
            ),
            config_reload_stat(
                2,
                'Config reload',
                (
                    'Whether the last config reload was accepted (a rejected file leaves the previous config '
                    'in force).'
                ),
                grid(12, 0, 6, 4),
            ),
            stat_panel(
                3,
                'Config in force since',
                (
                    'Time since a config was last loaded successfully (start-up, a file change or a save from'
                    ' this dashboard).'
                ),
                grid(18, 0, 6, 4),
                [
                    prom(
                        (
                            'time() - max(bulletproof_config_last_reload_success_timestamp_seconds{instance=~'
                            '"$instance"})'
                        ),
                        legend='age',
                        instant=True,
                    ),
                ],
                field_config('s', decimals=0),
            ),
            _config_table(
                4,
                'Rule tester',
                (
                    "Type a file name (or a path relative to a watch folder) in the 'File to test' variable "
                    'above: which rule matches it, the profile and priority it would get, and where its '
                    "output would go (GET /api/v1/rules/match?path=...). 'matched: false' means the file "
                    'would be ignored (no_rule).'
                ),
                grid(0, 14, 12, 5),
                [
                    api_get(
                        '/api/v1/rules/match',
                        params={'path': '${file}'},
                        columns=[
                            column('path'),
                            column('matched'),
                            column('rule'),
                            column('profile'),
                            column('priority', 'priority', 'number'),
                            column('output_path', 'output'),
                        ],
                    ),
                ],
                overrides=[
                    state_colors(
                        'matched', value_map(('true', 'green', 'yes'), ('false', 'red', 'no (ignored)')),
                    ),
                ],
            ),
            _config_table(
                5,
                'Profiles',
                (
                    'Every ffmpeg profile (built-in and from monitor.yaml) with its container, codecs, output'
                    ' extension and the rules that use it (GET /api/v1/profiles).'
                ),
                grid(0, 19, 24, 8),
                [
                    api_get(
                        '/api/v1/profiles',
                        root='profiles.@keys',
                        columns=[column('@this', 'profile')],
                    ),
                    api_get(
                        '/api/v1/profiles',
                        'B',
                        root='profiles.@values',
                        columns=[
                            column('description'),
                            column('container'),
                            column('video_codec', 'video codec'),
                            column('audio_codec', 'audio codec'),
                            column('crf', 'crf', 'number'),
                            column('max_height', 'max height', 'number'),
                            column('extension'),
                            column('builtin', 'built-in'),
                            column('used_by_rules', 'used by rules'),
                        ],
                    ),
                ],
                transformations=[{'id': 'concatenate', 'options': {'frameNameMode': 'drop'}}],
            ),
            _config_table(
                6,
                'Rules',
                (
                    'The rules of monitor.yaml in order (the first match wins): which files they take and '
                    'which profile they give (GET /api/v1/config).'
                ),
                grid(0, 27, 12, 7),
                [
                    api_get(
                        '/api/v1/config',
                        root='config.rules',
                        columns=[
                            column('name'),
                            column('profile'),
                            column('extensions'),
                            column('glob'),
                            column('regex'),
                            column('priority', 'priority', 'number'),
                        ],
                    ),
                ],
            ),
            _config_table(
                7,
                'Watch folders',
                (
                    'The watch folders of monitor.yaml and how they are watched (GET /api/v1/config); the '
                    "Overview's Watch folders panel says whether each is up."
                ),
                grid(12, 27, 12, 7),
                [
                    api_get(
                        '/api/v1/config',
                        root='config.monitor_folder',
                        columns=[
                            column('path'),
                            column('recursive'),
                            column('polling'),
                            column('poll_interval', 'poll interval', 'number'),
                        ],
                    ),
                ],
                overrides=[by_name('poll interval', {'unit': 's'})],
            ),
        ],
    )
