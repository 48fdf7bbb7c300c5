"""The API client's commands: `bulletproof status | jobs | job | pause | resume | clear | cancel |
retry | retry-failed | prioritize | enqueue | config get|validate|apply`.

Added to the core's `bulletproof` group through the `bulletproof.commands` entry point
(`client = "exporter.cli:register"`). Every command talks to a running monitor's control API
(`--url` / `$BULLETPROOF_URL`, token from `--token` / `$BULLETPROOF_API_TOKEN`), prints tables for
people and, with `--json`, the API's JSON for scripts. HTTP stays in `exporter.client`.

Exit codes: 0 ok; 1 API or runtime error (404 unknown job, 409 state conflict, 429, 5xx, a lost
stream); 2 invalid input or config (usage errors, 400/413/415/422, an invalid config file);
4 cannot connect to the API; 5 unauthorized or forbidden (401/403).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import yaml

from bulletproof.models import JobState
from exporter.client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    JSON,
    TOKEN_ENV,
    URL_ENV,
    ApiError,
    BulletproofClient,
    ClientError,
    ConnectError,
    InvalidUrl,
    StreamClosed,
    Unauthorized,
)

if TYPE_CHECKING:  # rich is imported when a command prints (the core loads this module always)
    from rich.console import Console
    from rich.table import Table

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_CONNECT = 4
EXIT_AUTH = 5

STATES = [s.value for s in JobState]
SORTS = ["created", "finished", "started", "duration", "size", "id"]
_INVALID_STATUSES = frozenset({400, 413, 415, 422})
_WIDE = 200  # console width when the output is not a terminal (pipes, logs): no wrapped names


# -- output -------------------------------------------------------------------------------------


class Output:
    """Where a command writes: rich tables for people, raw JSON with --json."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console.width = _WIDE
        return console

    def json(self, data: Any) -> None:
        """The API's JSON, as received (indented)."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))

    def line(self, text: str) -> None:
        """A plain line on stdout, flushed (a follower reads it right away)."""
        click.echo(text)
        sys.stdout.flush()

    def print(self, renderable: Any) -> None:
        """A rich renderable; in a pipe without the padding at the ends of lines."""
        if self.console.is_terminal:
            self.console.print(renderable)
            return
        with self.console.capture() as capture:
            self.console.print(renderable)
        for line in capture.get().splitlines():
            click.echo(line.rstrip())

    def error(self, text: str) -> None:
        click.echo(text, err=True)


def _fail(out: Output, message: str, code: int, details: Any = None) -> NoReturn:
    out.error(f"error: {message}")
    for line in _detail_lines(details):
        out.error(f"  {line}")
    sys.exit(code)


def _detail_lines(details: Any) -> list[str]:
    """`[{"location", "message"}]` as `location: message` lines (the config's key paths)."""
    lines: list[str] = []
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and "message" in item:
                location = item.get("location") or ""
                lines.append(f"{location}: {item['message']}" if location else str(item["message"]))
            else:
                lines.append(str(item))
    return lines


def _exit_code(exc: ApiError) -> int:
    if isinstance(exc, Unauthorized) or exc.status in (401, 403):
        return EXIT_AUTH
    if exc.status in _INVALID_STATUSES:
        return EXIT_INVALID
    return EXIT_ERROR


@contextlib.contextmanager
def _api_errors(out: Output) -> Iterator[None]:
    """Turn the client's exceptions into a message on stderr and the exit code."""
    try:
        yield
    except ApiError as exc:
        if out.as_json and exc.body is not None:
            out.json(exc.body)
        message = exc.message
        if exc.status == 401:
            message += f" (check --token or ${TOKEN_ENV})"
        elif exc.status == 429 and isinstance(exc.details, dict):
            wait = exc.details.get("retry_after_seconds")
            if wait:
                message += f" (retry in {wait} s)"
        _fail(out, message, _exit_code(exc), exc.details)
    except ConnectError as exc:
        _fail(out, f"{exc.message} (is `bulletproof run` serving the API there? set --url or "
                   f"${URL_ENV})", EXIT_CONNECT)
    except InvalidUrl as exc:
        _fail(out, exc.message, EXIT_INVALID)
    except ClientError as exc:
        _fail(out, exc.message, EXIT_ERROR)


class Api:
    """What a command gets: the client and the output."""

    def __init__(self, client: BulletproofClient, out: Output) -> None:
        self.client = client
        self.out = out


def api_command(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command the shared options (--url, --token, --timeout, --json) and an `Api` as its
    first argument; API errors become messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, url: str, token: str | None, timeout: float, as_json: bool,
                **kwargs: Any) -> None:
        out = Output(as_json)
        try:
            with _api_errors(out):
                client = BulletproofClient(url, token, timeout=timeout)
                func(Api(client, out), *args, **kwargs)
        except BrokenPipeError:  # `bulletproof jobs | head`: the reader has all it wanted
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the exit flush quiet

    options = [
        click.option("--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True,
                     metavar="URL", help=f"The API's base URL [env: {URL_ENV}]."),
        click.option("--token", envvar=TOKEN_ENV, default=None, show_default=False,
                     metavar="TOKEN",
                     help=f"The API token [env: {TOKEN_ENV}; prefer the variable: a flag shows "
                          f"in the process list]."),
        click.option("--timeout", type=click.FloatRange(min=0.1, max=3600.0),
                     default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
                     help="How long to wait for an answer."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print the API's JSON instead of tables (for scripts)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# -- formatting ---------------------------------------------------------------------------------


def _when(ts: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "-"
    return time.strftime(fmt, time.localtime(ts))


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _size(value: Any) -> str:
    if not isinstance(value, (int, float)) or value < 0:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{max(0.0, min(1.0, value)) * 100:.0f}%"


def _speed(value: Any) -> str:
    return f"{value:.2f}x" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _e(value: Any) -> str:
    """Text for a rich table cell (no markup interpretation of file names)."""
    from rich.markup import escape

    return escape("" if value is None else str(value))


_STATE_STYLE = {"queued": "cyan", "processing": "yellow", "paused": "magenta",
                "completed": "green", "failed": "red", "cancelled": "dim"}


def _state(value: Any) -> str:
    text = _e(value)
    style = _STATE_STYLE.get(str(value))
    return f"[{style}]{text}[/{style}]" if style else text


def _jobs_table(jobs: list[JSON]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", justify="right", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("FILE", overflow="fold")
    table.add_column("PROFILE", no_wrap=True)
    table.add_column("PROGRESS", justify="right", no_wrap=True)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("REASON", overflow="fold")
    for job in jobs:
        table.add_row(_e(job.get("id")), _state(job.get("state")),
                      _e(job.get("rel_path") or job.get("filename")), _e(job.get("profile")),
                      _percent(job.get("progress")), _e(job.get("attempts")),
                      _e(job.get("reason") or ""))
    return table


def _status_view(data: JSON) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    if data.get("paused"):
        since = data.get("paused_since")
        queue = f"[magenta]paused[/magenta] since {_when(since)}" if since else "[magenta]paused[/magenta]"
    else:
        queue = "[green]running[/green]"
    grid.add_row("Queue", queue)
    workers = data.get("workers") or {}
    grid.add_row("Workers", f"{workers.get('busy', 0)} busy / {workers.get('max', '?')} max")
    counts = data.get("counts") or {}
    grid.add_row("Jobs", "  ".join(f"{state} {counts.get(state, 0)}" for state in STATES))
    oldest = (data.get("queue") or {}).get("oldest_queued_at")
    if oldest is not None:
        grid.add_row("Oldest queued", f"{_when(oldest)} ({_duration(time.time() - oldest)} ago)")
    ffmpeg = data.get("ffmpeg_version")
    grid.add_row("Version", f"bulletproof {_e(data.get('version'))}"
                            + (f", ffmpeg {_e(ffmpeg)}" if ffmpeg else ""))
    grid.add_row("Uptime", _duration(data.get("uptime_seconds")))
    for folder in data.get("watch_folders") or []:
        up = "[green]up[/green]" if folder.get("up") else "[red]DOWN[/red]"
        grid.add_row("Watch folder", f"{_e(folder.get('path'))} ({up})")
    volume = data.get("output_volume")
    if volume:
        grid.add_row("Output volume", f"{_size(volume.get('free_bytes'))} free of "
                                      f"{_size(volume.get('size_bytes'))}")
    config = data.get("config") or {}
    if config:
        ok = config.get("last_reload_ok")
        state = "[green]ok[/green]" if ok else "[red]last reload failed[/red]"
        grid.add_row("Config", f"{_e(config.get('path') or '(no file)')} ({state})")
    return grid


def _workers_table(slots: list[JSON]) -> Table | None:
    from rich.table import Table

    busy = [s for s in slots if s.get("job_id") is not None]
    if not busy:
        return None
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in (("WORKER", "right"), ("JOB", "right"), ("FILE", "left"),
                          ("PROFILE", "left"), ("PROGRESS", "right"), ("SPEED", "right"),
                          ("ETA", "right"), ("", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for slot in busy:
        table.add_row(_e(slot.get("slot")), _e(slot.get("job_id")), _e(slot.get("filename")),
                      _e(slot.get("profile")), _percent(slot.get("progress")),
                      _speed(slot.get("speed")), _duration(slot.get("eta_seconds")),
                      "[magenta]paused[/magenta]" if slot.get("paused") else "")
    return table


_JOB_FIELDS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("id", "Job", str),
    ("state", "State", str),
    ("rel_path", "File", str),
    ("source_path", "Source", str),
    ("output_path", "Output", str),
    ("profile", "Profile", str),
    ("rule", "Rule", str),
    ("priority", "Priority", str),
    ("attempts", "Attempts", str),
    ("progress", "Progress", _percent),
    ("speed", "Speed", _speed),
    ("eta_seconds", "ETA", _duration),
    ("worker", "Worker", str),
    ("created_at", "Created", _when),
    ("queued_at", "Queued", _when),
    ("not_before", "Not before", _when),
    ("started_at", "Started", _when),
    ("finished_at", "Finished", _when),
    ("duration", "Duration", _duration),
    ("media_duration", "Media length", _duration),
    ("input_bytes", "Input size", _size),
    ("output_bytes", "Output size", _size),
    ("reason", "Reason", str),
    ("error", "Error", str),
]


def _job_view(job: JSON) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, label, fmt in _JOB_FIELDS:
        value = job.get(key)
        if value is None or value == "":
            continue
        if key == "eta_seconds" and job.get("state") not in ("processing", "paused"):
            continue
        grid.add_row(label, _state(value) if key == "state" else _e(fmt(value)))
    return grid


# -- commands: reads ----------------------------------------------------------------------------


@click.command("status")
@api_command
def status_cmd(api: Api) -> None:
    """Show the queue, the workers and the job counts of a running monitor."""
    data = api.client.status()
    if api.out.as_json:
        api.out.json(data)
        return
    api.out.print(_status_view(data))
    workers = _workers_table((data.get("workers") or {}).get("slots") or [])
    if workers is not None:
        api.out.print("")
        api.out.print(workers)


@click.command("jobs")
@click.option("--state", "states", type=click.Choice(STATES, case_sensitive=False), multiple=True,
              help="Only jobs in this state (repeat for several).")
@click.option("--profile", help="Only jobs of this profile.")
@click.option("--search", metavar="TEXT", help="Only jobs whose file path contains TEXT.")
@click.option("--sort", type=click.Choice(SORTS), default="created", show_default=True)
@click.option("--asc", is_flag=True, help="Oldest/smallest first (default: newest first).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--follow", "-f", is_flag=True,
              help="Stream job and queue events (WebSocket) until Ctrl-C; the filters apply to "
                   "job events.")
@api_command
def jobs_cmd(api: Api, states: tuple[str, ...], profile: str | None, search: str | None,
             sort: str, asc: bool, limit: int, offset: int, follow: bool) -> None:
    """List jobs (newest first), or follow events as they happen with --follow."""
    states = tuple(s.lower() for s in states)
    if follow:
        _follow(api, EventFilter(states, profile, search))
        return
    data = api.client.jobs(states=states, profile=profile, search=search, sort=sort,
                           order="asc" if asc else "desc", limit=limit, offset=offset)
    if api.out.as_json:
        api.out.json(data)
        return
    jobs = data.get("jobs") or []
    total = data.get("total", len(jobs))
    if not jobs:
        filtered = states or profile or search
        api.out.line("no jobs match" if filtered else "no jobs")
        return
    api.out.print(_jobs_table(jobs))
    more = data.get("next_offset")
    footer = f"{len(jobs)} of {total} job{'s' if total != 1 else ''}"
    if offset:
        footer += f" (from offset {offset})"
    if more is not None:
        footer += f"; next page: --offset {more}"
    api.out.line(footer)


@click.command("job")
@click.argument("job_id", type=click.IntRange(1), metavar="ID")
@api_command
def job_cmd(api: Api, job_id: int) -> None:
    """Show everything the monitor knows about one job (with ffmpeg's last lines)."""
    data = api.client.job(job_id)
    if api.out.as_json:
        api.out.json(data)
        return
    api.out.print(_job_view(data))
    tail = data.get("stderr_tail")
    if tail:
        api.out.line("")
        api.out.line("ffmpeg stderr (last lines):")
        for line in str(tail).rstrip("\n").splitlines():
            api.out.line(f"  {line}")


# -- commands: the queue ------------------------------------------------------------------------


@click.command("pause")
@api_command
def pause_cmd(api: Api) -> None:
    """Pause the queue: running jobs finish, nothing new starts (files are still queued)."""
    data = api.client.pause_queue()
    if api.out.as_json:
        api.out.json(data)
    else:
        api.out.line(f"queue paused (since {_when(data.get('paused_since'))}); "
                     "running jobs finish, queued ones wait")


@click.command("resume")
@api_command
def resume_cmd(api: Api) -> None:
    """Resume the queue."""
    data = api.client.resume_queue()
    if api.out.as_json:
        api.out.json(data)
    else:
        api.out.line("queue resumed")


@click.command("clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when stdin "
                                                "is not a terminal).")
@api_command
def clear_cmd(api: Api, yes: bool) -> None:
    """Cancel every queued job (running jobs are not touched)."""
    if not yes:
        if not sys.stdin.isatty():
            _fail(api.out, "refusing to clear the queue without confirmation: stdin is not a "
                           "terminal; pass --yes", EXIT_INVALID)
        queued = (api.client.status().get("counts") or {}).get("queued", 0)
        if not click.confirm(f"Cancel all {queued} queued job{'s' if queued != 1 else ''} "
                             f"on {api.client.url}?", default=False, err=True):
            _fail(api.out, "not confirmed; nothing cleared", EXIT_ERROR)
    data = api.client.clear_queue()
    if api.out.as_json:
        api.out.json(data)
    else:
        n = data.get("cleared", 0)
        api.out.line(f"cleared {n} queued job{'s' if n != 1 else ''}")


# -- commands: jobs -----------------------------------------------------------------------------


def _job_line(job: JSON) -> str:
    return f"job {job.get('id')} ({job.get('rel_path') or job.get('filename')})"


@click.command("cancel")
@click.argument("job_id", type=click.IntRange(1), metavar="ID")
@api_command
def cancel_cmd(api: Api, job_id: int) -> None:
    """Cancel a queued job, or stop a running one."""
    job = api.client.cancel(job_id)
    if api.out.as_json:
        api.out.json(job)
    elif job.get("state") == JobState.CANCELLED.value:
        api.out.line(f"{_job_line(job)} cancelled")
    else:
        api.out.line(f"{_job_line(job)} is {job.get('state')}: stopping it (see `bulletproof job "
                     f"{job_id}` for the outcome)")


@click.command("retry")
@click.argument("job_id", type=click.IntRange(1), metavar="ID")
@api_command
def retry_cmd(api: Api, job_id: int) -> None:
    """Queue a failed, cancelled or completed job again."""
    job = api.client.retry(job_id)
    if api.out.as_json:
        api.out.json(job)
    else:
        api.out.line(f"{_job_line(job)} queued again")


@click.command("retry-failed")
@api_command
def retry_failed_cmd(api: Api) -> None:
    """Queue every failed job again."""
    data = api.client.retry_failed()
    if api.out.as_json:
        api.out.json(data)
        return
    n = data.get("retried", 0)
    ids = ", ".join(str(i) for i in (data.get("ids") or []))
    api.out.line(f"queued {n} failed job{'s' if n != 1 else ''} again" + (f": {ids}" if ids else ""))


@click.command("prioritize")
@click.argument("job_id", type=click.IntRange(1), metavar="ID")
@api_command
def prioritize_cmd(api: Api, job_id: int) -> None:
    """Move a queued job to the front of the queue."""
    job = api.client.prioritize(job_id)
    if api.out.as_json:
        api.out.json(job)
    else:
        api.out.line(f"{_job_line(job)} moved to the front of the queue")


@click.command("enqueue")
@click.argument("path")
@click.option("--profile", help="The profile to use (default: the matching rule's).")
@click.option("--priority", type=click.IntRange(-1000, 1000),
              help="Higher runs first (default: the matching rule's).")
@api_command
def enqueue_cmd(api: Api, path: str, profile: str | None, priority: int | None) -> None:
    """Queue a file in a watch folder (even one done before).

    PATH is as the server sees it: absolute inside a watch folder, or relative to one.
    """
    job = api.client.enqueue(path, profile=profile, priority=priority)
    if api.out.as_json:
        api.out.json(job)
    else:
        api.out.line(f"queued {_job_line(job)} with profile {job.get('profile')}, "
                     f"priority {job.get('priority')}")


# -- commands: config ---------------------------------------------------------------------------


@click.group("config")
def config_group() -> None:
    """Read, check or replace the running monitor's config through the API."""


def _read_config_file(out: Output, path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(out, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", EXIT_INVALID)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        _fail(out, f"{path} is not valid YAML: {exc}", EXIT_INVALID)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(out, f"invalid config {path}:", EXIT_INVALID,
              [{"location": "", "message": "the config must be a mapping of keys"}])
    # YAML knows types JSON does not (dates, sets): send them as their text, the server's
    # validation then says what it thinks of them.
    return json.loads(json.dumps(data, default=str))


@config_group.command("get")
@api_command
def config_get(api: Api) -> None:
    """Print the config in force (YAML; apply an edited copy with `config apply`)."""
    data = api.client.get_config()
    if api.out.as_json:
        api.out.json(data)
        return
    status = "last reload ok" if data.get("last_reload_ok") else "LAST RELOAD FAILED"
    api.out.line(f"# config in force on {api.client.url} (file: {data.get('path') or 'none'}; "
                 f"{status})")
    click.echo(yaml.safe_dump(data.get("config") or {}, sort_keys=False, allow_unicode=True),
               nl=False)


@config_group.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@api_command
def config_validate(api: Api, file: Path) -> None:
    """Check a config file against the running monitor (a dry run): "ok", or every problem with
    its key path (exit 2). Relative paths are taken from the monitor's config folder."""
    data = api.client.validate_config(_read_config_file(api.out, file))
    valid = bool(data.get("valid"))
    if api.out.as_json:
        api.out.json(data)
        if not valid:
            sys.exit(EXIT_INVALID)
        return
    if not valid:
        _fail(api.out, f"invalid config {file}:", EXIT_INVALID, data.get("errors"))
    api.out.line("ok")


@config_group.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@api_command
def config_apply(api: Api, file: Path) -> None:
    """Replace the running monitor's config with FILE: validated, written (the old file kept as
    .bak) and applied without a restart. A rejected config changes nothing (exit 2)."""
    try:
        data = api.client.apply_config(_read_config_file(api.out, file))
    except ApiError as exc:
        if exc.status == 422 and exc.code == "invalid_config":
            if api.out.as_json and exc.body is not None:
                api.out.json(exc.body)
            _fail(api.out, f"config {file} rejected (nothing changed):", EXIT_INVALID, exc.details)
        raise
    if api.out.as_json:
        api.out.json(data)
        return
    where = f"written to {data['path']}" if data.get("path") else "not written (no config file)"
    if data.get("backup"):
        where += f", previous file kept as {data['backup']}"
    api.out.line(f"applied {file}; {where}")
    restart = data.get("restart_required") or []
    if restart:
        api.out.error(f"note: changes to {', '.join(restart)} take effect only after a restart")


# -- jobs --follow ------------------------------------------------------------------------------


class EventFilter:
    """The `jobs` filters, applied to job events (other events always pass)."""

    def __init__(self, states: tuple[str, ...], profile: str | None, search: str | None) -> None:
        self.states = set(states)
        self.profile = profile
        self.search = search.lower() if search else None
        self.active = bool(states or profile or search)
        self._matching: set[int] = set()

    def passes(self, message: JSON) -> bool:
        if not self.active:
            return True
        job = message.get("job")
        if isinstance(job, dict):
            ok = ((not self.states or job.get("state") in self.states)
                  and (self.profile is None or job.get("profile") == self.profile)
                  and (self.search is None or self.search in str(job.get("rel_path", "")).lower()))
            job_id = job.get("id")
            if isinstance(job_id, int):
                (self._matching.add if ok else self._matching.discard)(job_id)
            return ok
        job_id = message.get("job_id")
        if job_id is not None:  # progress or removal: as the job was last seen
            return job_id in self._matching
        return True


def event_line(message: JSON) -> str:
    """One human line for a stream message."""
    kind = str(message.get("type", "?"))
    at = _when(message.get("at"), "%H:%M:%S")
    job = message.get("job") if isinstance(message.get("job"), dict) else None
    parts: list[str] = []
    if kind == "snapshot":
        status = message.get("status") or {}
        workers = status.get("workers") or {}
        parts.append(f"queue {'paused' if status.get('paused') else 'running'}, "
                     f"{workers.get('busy', 0)}/{workers.get('max', '?')} workers busy, "
                     f"{(status.get('queue') or {}).get('length', 0)} queued")
    elif job is not None:
        parts.append(f"#{job.get('id')} {job.get('rel_path') or job.get('filename')}")
        if kind == "job_queued":
            parts.append(f"profile={job.get('profile')} priority={job.get('priority')} "
                         f"trigger={message.get('trigger')}")
        elif kind == "job_started":
            parts.append(f"worker={message.get('worker')} "
                         f"waited={_duration(message.get('queue_wait'))} attempt={job.get('attempts')}")
        elif kind == "job_finished":
            outcome = str(message.get("outcome"))
            if message.get("reason"):
                outcome += f" ({message['reason']})"
            parts.append(outcome)
            if message.get("busy_seconds"):
                parts.append(f"in {_duration(message.get('busy_seconds'))}")
            if message.get("will_retry"):
                parts.append("will retry")
        elif kind in ("job_paused", "job_resumed"):
            parts.append(f"worker={message.get('worker')}")
        else:
            parts.append(f"state={job.get('state')}")
    elif kind == "job_progress":
        parts.append(f"#{message.get('job_id')} {_percent(message.get('progress'))} "
                     f"speed={_speed(message.get('speed'))} eta={_duration(message.get('eta_seconds'))}")
    elif kind == "job_removed":
        parts.append(f"#{message.get('job_id')}")
    elif kind == "queue_cleared":
        parts.append(f"{message.get('count')} jobs cancelled")
    elif kind == "config_reloaded":
        parts.append(("ok" if message.get("success") else "rejected") + f" from {message.get('source')}")
        if message.get("error"):
            parts.append(str(message["error"]))
    elif kind == "watch_folder_status":
        parts.append(f"{message.get('folder')} {'up' if message.get('up') else 'DOWN'}")
        if message.get("error"):
            parts.append(str(message["error"]))
    else:
        rest = {k: v for k, v in message.items() if k not in ("type", "at")}
        if rest:
            parts.append(json.dumps(rest, separators=(",", ":"), default=str))
    return f"{at} {kind:<19} {' '.join(parts)}".rstrip()


def _follow(api: Api, flt: EventFilter) -> None:
    out = api.out

    def show(message: JSON) -> None:
        if message.get("type") == "pong" or not flt.passes(message):
            return
        if out.as_json:
            out.line(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
        else:
            out.line(event_line(message))

    async def run() -> bool:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            async for message in api.client.events():
                show(message)
        except asyncio.CancelledError:
            return False
        return True

    try:
        closed_by_server = asyncio.run(run())
    except KeyboardInterrupt:
        return
    except StreamClosed as exc:
        _fail(out, exc.message, EXIT_ERROR)
    if closed_by_server:
        out.error("the server closed the event stream")


COMMANDS: list[click.Command] = [
    status_cmd, jobs_cmd, job_cmd, pause_cmd, resume_cmd, clear_cmd, cancel_cmd, retry_cmd,
    retry_failed_cmd, prioritize_cmd, enqueue_cmd, config_group,
]


def register(group: click.Group) -> None:
    """Add the client commands to the `bulletproof` group (never replacing a core command)."""
    for command in COMMANDS:
        if command.name not in group.commands:
            group.add_command(command)
