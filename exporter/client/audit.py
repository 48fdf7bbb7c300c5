"""`bulletproof audit`: the control API's audit trail (who paused, retried, changed the config),
newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from exporter.client.api_client import JSON
from exporter.client.command import Api, api_command
from exporter.client.formatting import when

if TYPE_CHECKING:
    from rich.table import Table

MAX_LIMIT = 1000


def _who(entry: JSON) -> str:
    name = entry.get("principal")
    if not name:
        return "-"
    role = entry.get("role")
    return f"{name} ({role})" if role else str(name)


def _text(value: Any) -> str:
    from rich.markup import escape  # rich loads only when a table is printed (CLI start-up time)

    return "-" if value is None else escape(str(value))


def audit_table(entries: list[JSON]) -> Table:
    """One row per audited call."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("ID", "TIME", "WHO", "FROM", "ACTION", "JOB", "STATUS", "RESULT"):
        table.add_column(name, no_wrap=name != "WHO", justify="right" if name in ("ID", "JOB") else "left")
    for entry in entries:
        result = str(entry.get("result"))
        if entry.get("code") and result != "ok":
            result += f" ({entry['code']})"
        table.add_row(_text(entry.get("id")), when(entry.get("at")), _text(_who(entry)),
                      _text(entry.get("address")), _text(entry.get("action")),
                      _text(entry.get("job_id")), _text(entry.get("status")), _text(result))
    return table


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True,
              help="How many entries (newest first).")
@click.option("--before", type=click.IntRange(1), default=None,
              help="Only entries older than this id (the footer gives the next page's).")
@api_command
def audit_cmd(api: Api, limit: int, before: int | None) -> None:
    """Show the audit trail: who called which control or config change, from where, and how it
    ended (refused calls included). Needs the token or a Grafana Admin."""
    data = api.client.audit(limit=limit, before=before)
    if api.out.as_json:
        api.out.json(data)
        return
    entries = data.get("entries") or []
    if not entries:
        api.out.line("no audit entries")
        return
    api.out.print(audit_table(entries))
    more = data.get("next_before")
    footer = f"{len(entries)} entr{'ies' if len(entries) != 1 else 'y'}"
    if more is not None:
        footer += f"; older: --before {more}"
    api.out.line(footer)
