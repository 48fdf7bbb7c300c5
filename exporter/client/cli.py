"""The API client's commands: `bulletproof status | jobs | job | pause | resume | clear | cancel |
retry | retry-failed | prioritize | enqueue | config get|validate|apply | audit |
node list|drain|undrain|forget`.

Added to the core's `bulletproof` group through the `bulletproof.commands` entry point
(`client = "exporter.client.cli:register"`). Every command talks to a running monitor's control API
(`--url` / `$BULLETPROOF_URL`, token from `--token` / `$BULLETPROOF_API_TOKEN`), prints tables for
people and, with `--json`, the API's JSON for scripts. HTTP stays in `exporter.client.api_client`.

Exit codes (`exporter.client.command`): 0 ok; 1 API or runtime error (404 unknown job, 409 state
conflict, 429, 5xx, a lost stream); 2 invalid input or config (usage errors, 400/413/415/422, an
invalid config file); 4 cannot connect to the API; 5 unauthorized or forbidden (401/403).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from bulletproof.models import JobState
from bulletproof.safe_yaml import YamlTooLarge, load_yaml
from exporter.client.api_client import JSON, ApiError
from exporter.client.audit import audit_cmd
from exporter.client.command import EXIT_ERROR, EXIT_INVALID, Api, Output, api_command, fail
from exporter.client.follow import EventFilter, follow_events
from exporter.client.formatting import (
    STATES,
    event_line,
    job_view,
    jobs_table,
    nodes_table,
    status_view,
    when,
    workers_table,
)
from exporter.client.nodes import node_group

__all__ = ["COMMANDS", "EventFilter", "event_line", "register"]

SORTS = ["created", "finished", "started", "duration", "size", "id"]


# -- commands: reads ----------------------------------------------------------------------------


@click.command("status")
@api_command
def status_cmd(api: Api) -> None:
    """Show the queue, the workers, the job counts and the nodes of a running monitor."""
    data = api.client.status()
    if api.out.as_json:
        api.out.json(data)
        return
    api.out.print(status_view(data, api.client.stats_summary()))
    workers = workers_table((data.get("workers") or {}).get("slots") or [])
    if workers is not None:
        api.out.print("")
        api.out.print(workers)
    nodes = data.get("nodes") or []
    if nodes:
        api.out.print("")
        api.out.print(nodes_table(nodes, data.get("node")))


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
        follow_events(api, EventFilter(states, profile, search))
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
    api.out.print(jobs_table(jobs))
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
    api.out.print(job_view(data))
    tail = data.get("stderr_tail")
    if tail:
        api.out.line("")
        api.out.line("ffmpeg stderr (last lines):")
        for line in str(tail).rstrip("\n").splitlines():
            api.out.line(f"  {line}")


def _job_line(job: JSON) -> str:
    return f"job {job.get('id')} ({job.get('rel_path') or job.get('filename')})"


# -- commands: the queue ------------------------------------------------------------------------


@click.command("pause")
@click.argument("job_id", type=click.IntRange(1), metavar="[ID]", required=False)
@api_command
def pause_cmd(api: Api, job_id: int | None) -> None:
    """Pause the queue (running jobs finish, nothing new starts; files are still queued), or with
    ID suspend that running job's ffmpeg until `resume ID`."""
    if job_id is not None:
        job = api.client.pause_job(job_id)
        api.out.result(job, f"{_job_line(job)} paused (its ffmpeg is suspended; "
                            f"`bulletproof resume {job_id}` continues it)")
        return
    data = api.client.pause_queue()
    api.out.result(data, f"queue paused (since {when(data.get('paused_since'))}); "
                    "running jobs finish, queued ones wait")


@click.command("resume")
@click.argument("job_id", type=click.IntRange(1), metavar="[ID]", required=False)
@api_command
def resume_cmd(api: Api, job_id: int | None) -> None:
    """Resume the queue, or with ID continue that paused job."""
    if job_id is not None:
        job = api.client.resume_job(job_id)
        api.out.result(job, f"{_job_line(job)} resumed")
        return
    data = api.client.resume_queue()
    api.out.result(data, "queue resumed")


@click.command("clear")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when stdin "
                                                "is not a terminal).")
@api_command
def clear_cmd(api: Api, yes: bool) -> None:
    """Cancel every queued job (running jobs are not touched)."""
    if not yes:
        if not sys.stdin.isatty():
            fail(api.out, "refusing to clear the queue without confirmation: stdin is not a "
                           "terminal; pass --yes", EXIT_INVALID)
        queued = (api.client.status().get("counts") or {}).get("queued", 0)
        if not click.confirm(f"Cancel all {queued} queued job{'s' if queued != 1 else ''} "
                             f"on {api.client.url}?", default=False, err=True):
            fail(api.out, "not confirmed; nothing cleared", EXIT_ERROR)
    data = api.client.clear_queue()
    if api.out.as_json:
        api.out.json(data)
    else:
        n = data.get("cleared", 0)
        api.out.line(f"cleared {n} queued job{'s' if n != 1 else ''}")


# -- commands: jobs -----------------------------------------------------------------------------


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
    api.out.result(job, f"{_job_line(job)} queued again")


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
    api.out.result(job, f"{_job_line(job)} moved to the front of the queue")


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
    api.out.result(job, f"queued {_job_line(job)} with profile {job.get('profile')}, "
                    f"priority {job.get('priority')}")


# -- commands: config ---------------------------------------------------------------------------


@click.group("config")
def config_group() -> None:
    """Read, check or replace the running monitor's config through the API."""


def _read_config_file(out: Output, path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(out, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", EXIT_INVALID)
    try:
        data = load_yaml(text)
    except YamlTooLarge as exc:  # an alias bomb: refused before anything is built or sent
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        fail(out, f"{path} refused (nothing sent): {exc.problem}{where}", EXIT_INVALID)
    except yaml.YAMLError as exc:
        fail(out, f"{path} is not valid YAML: {exc}", EXIT_INVALID)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(out, f"invalid config {path}:", EXIT_INVALID,
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
        fail(api.out, f"invalid config {file}:", EXIT_INVALID, data.get("errors"))
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
            fail(api.out, f"config {file} rejected (nothing changed):", EXIT_INVALID, exc.details)
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



COMMANDS: list[click.Command] = [
    status_cmd, jobs_cmd, job_cmd, pause_cmd, resume_cmd, clear_cmd, cancel_cmd, retry_cmd,
    retry_failed_cmd, prioritize_cmd, enqueue_cmd, config_group, audit_cmd, node_group,
]


def register(group: click.Group) -> None:
    """Add the client commands to the `bulletproof` group (never replacing a core command)."""
    for command in COMMANDS:
        if command.name not in group.commands:
            group.add_command(command)
