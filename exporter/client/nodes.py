"""`bulletproof node list | drain | undrain | forget`: the monitors sharing one job store."""

from __future__ import annotations

import time

import click

from exporter.client.api_client import JSON
from exporter.client.command import Api, api_command
from exporter.client.formatting import nodes_table

# Jobs that hold a worker slot: what a draining node still runs.
ACTIVE_STATES = ("processing", "paused")
POLL_SECONDS = 1.0


def _find(data: JSON, name: str) -> JSON | None:
    return next((n for n in data.get("nodes") or [] if n.get("name") == name), None)


def _running_jobs(api: Api, name: str) -> list[int]:
    """Ids of the jobs that node holds a worker slot for."""
    jobs = api.client.jobs(states=ACTIVE_STATES, limit=1000).get("jobs") or []
    return [j["id"] for j in jobs if j.get("claimed_by") == name]


def wait_drained(api: Api, name: str, drained_at: float) -> None:
    """Poll until the node runs no job: a heartbeat after `drained_at` (its last_seen when the
    drain was answered) counts no busy slot and no active job is claimed by it; or it is gone."""
    shown: list[int] | None = None
    while True:
        node = _find(api.client.nodes(), name)
        if node is None:
            api.out.line(f"node {name} left the registry")
            return
        if not node.get("alive"):
            api.out.line(f"node {name} is not running: it runs no job")
            return
        running = _running_jobs(api, name)
        if node.get("last_seen", 0) > drained_at and not node.get("busy") and not running:
            api.out.line(f"node {name} drained: it runs no job")
            return
        if running and running != shown:  # (none: only its next heartbeat is awaited)
            listed = ", ".join(str(i) for i in running)
            api.out.line(f"waiting: node {name} runs {len(running)} job"
                         f"{'s' if len(running) != 1 else ''} ({listed})")
            shown = running
        time.sleep(POLL_SECONDS)


@click.group("node")
def node_group() -> None:
    """See the monitors sharing the job store, drain one, forget a gone one."""


@node_group.command("list")
@api_command
def node_list(api: Api) -> None:
    """List every node of the job store (the one answering is marked *)."""
    data = api.client.nodes()
    if api.out.as_json:
        api.out.json(data)
        return
    api.out.print(nodes_table(data.get("nodes") or [], data.get("node")))


@node_group.command("drain")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the node runs no job (polls the API).")
@api_command
def node_drain(api: Api, name: str, wait: bool) -> None:
    """Let node NAME finish its running jobs and take no new ones (until `node undrain NAME`;
    it stays draining across its restarts)."""
    node = api.client.drain_node(name)
    if api.out.as_json and not wait:
        api.out.json(node)
        return
    if not api.out.as_json:
        api.out.line(f"node {name} draining: its running jobs finish, it takes no new ones "
                     f"(`bulletproof node undrain {name}` ends it)")
    if wait:
        wait_drained(api, name, float(node.get("last_seen") or 0.0))
        if api.out.as_json:
            api.out.json(_find(api.client.nodes(), name) or node)


@node_group.command("undrain")
@click.argument("name")
@api_command
def node_undrain(api: Api, name: str) -> None:
    """Let draining node NAME take jobs again."""
    node = api.client.undrain_node(name)
    api.out.result(node, f"node {name} takes jobs again")


@node_group.command("forget")
@click.argument("name")
@api_command
def node_forget(api: Api, name: str) -> None:
    """Remove node NAME from the registry: only a node that is not running (a retired or
    renamed monitor); a running one is refused."""
    api.client.forget_node(name)
    if api.out.as_json:
        api.out.json({"forgotten": name})
    else:
        api.out.line(f"node {name} forgotten")

