"""A real Prometheus scraping a fleet of three monitors on one PostgreSQL store.

Two monitors run in this process (their exporter on a real socket), the third is a real
`bulletproof run` subprocess, all on one database. Through Prometheus's HTTP API, with the
generated rule files loaded:

* the fleet recording rules count the store's jobs once (the raw gauges, summed, count them three
  times), and the Overview dashboard's own expression gives the store's total;
* the per-node counters, summed by node, are the jobs each node finished (`claimed_by`);
* a lease in node-c's name that lapses is counted by the sweeping node for node-c, and
  `BulletproofLeasesExpiring` fires for node-c;
* `bulletproof_node_up` is 1 for the three nodes; after the subprocess is killed (SIGKILL: no
  clean stop), the others report it 0 and `BulletproofNodeDown` fires for it (its `for` shortened
  through MonitoringConfig), while the fleet's job counts stay right without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bulletproof.config import load_config
from bulletproof.models import JobState
from bulletproof.postgres_store import PostgresJobStore
from exporter.monitoring.config import DEFAULT
from exporter.monitoring.generate import scaled_rule_files
from exporter.plugin import ExporterPlugin
from tests import promstack
from tests.conftest import until, write_config

pytestmark = pytest.mark.skipif(not promstack.PROMETHEUS_BIN, reason="prometheus is not installed")

FLEET = {"heartbeat_seconds": 1, "lease_seconds": 5}
DONE, WAITING = 4, 3  # jobs completed before the queue is paused, and left queued after
OVERVIEW = promstack.REPO / "grafana" / "dashboards" / "overview.json"


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run the blocking ``check`` (Prometheus queries) off the loop until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        last = await asyncio.to_thread(check)
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check} (last: {last!r})")
        await asyncio.sleep(0.3)


def by_label(result: list[dict], label: str) -> dict[str, float]:
    """An instant query's result as {label value: value}."""
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def overview_exprs(title: str) -> list[str]:
    """The PromQL of an Overview panel's queries, as Grafana sends them with every monitor selected."""
    data = json.loads(OVERVIEW.read_text(encoding="utf-8"))
    panel = next(p for p in data["panels"] if p.get("title") == title and p["type"] != "row")
    return [t["expr"].replace("$instance", ".+").replace("$__rate_interval", "1m")
            for t in panel["targets"]]


def overview_expr(title: str) -> str:
    """The PromQL of an Overview panel's first query, with every monitor selected."""
    return overview_exprs(title)[0]


def post(url: str) -> int:
    request = urllib.request.Request(url, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.status


async def test_prometheus_counts_a_fleet_of_three_once_and_sees_a_node_die(
        tmp_path: Path, postgres_url: str, monitor_factory, clip_cache) -> None:
    config = load_config(write_config(tmp_path, database=postgres_url, fleet=FLEET,
                                      api={"listen": "127.0.0.1:0"}))
    incoming = config.monitor_folder[0].path

    # node-c: a real process on the same folders and store, killed later without a clean stop.
    c_port = promstack.free_port()
    c_config = write_config(tmp_path / "node-c", database=postgres_url, fleet=FLEET, node_name="node-c",
                            monitor_folder=str(incoming), output_folder=str(config.output_folder),
                            api={"listen": f"127.0.0.1:{c_port}"})
    c_log = tmp_path / "node-c.log"
    with open(c_log, "wb") as out:
        node_c = subprocess.Popen([sys.executable, "-m", "bulletproof", "run", "--config", str(c_config)],
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=c_config.parent)
    plugins: list[ExporterPlugin] = []
    try:
        monitors = [await monitor_factory(config.model_copy(update={"node_name": name}))
                    for name in ("node-a", "node-b")]
        for monitor in monitors:
            plugin = ExporterPlugin(monitor.context())
            await plugin.start()
            plugins.append(plugin)
        targets = [f"127.0.0.1:{p.port}" for p in plugins] + [f"127.0.0.1:{c_port}"]
        store = monitors[0].view
        await until(lambda: node_c.poll() is None and {n.name for n in store.nodes()} ==
                    {"node-a", "node-b", "node-c"}, timeout=30)

        # The rules as shipped, with the node alerts' `for` shortened for the test.
        test_config = dataclasses.replace(
            DEFAULT, for_durations={**DEFAULT.for_durations, "BulletproofNodeDown": "1s",
                                    "BulletproofLeasesExpiring": "1s"})
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        rule_files = []
        for name, text in scaled_rule_files(test_config, 1.0).items():
            (rules_dir / name).write_text(text, encoding="utf-8")
            rule_files.append(rules_dir / name)

        # Some jobs done by whichever node claims them first, then some left queued.
        for i in range(DONE):
            shutil.copy(clip_cache(), incoming / f"done-{i}.mp4")
        await until(lambda: store.counts()[JobState.COMPLETED] == DONE, timeout=90)
        for monitor in monitors:
            monitor.pause_queue()
        assert await asyncio.to_thread(post, f"http://127.0.0.1:{c_port}/api/v1/queue/pause") == 200
        for i in range(WAITING):
            shutil.copy(clip_cache(), incoming / f"waiting-{i}.mp4")
        await until(lambda: store.counts()[JobState.QUEUED] == WAITING, timeout=30)
        counts = {state.value: float(n) for state, n in store.counts().items()}
        jobs, total = store.list_jobs()
        assert total == DONE + WAITING
        finished_by = Counter(j.claimed_by for j in jobs if j.state is JobState.COMPLETED)

        with promstack.run_prometheus(tmp_path / "prometheus", targets=targets,
                                      rule_files=rule_files) as prom:
            def q(expr: str) -> list[dict]:
                return promstack.query(prom.url, expr)

            # The store's gauges, once: the fleet rule equals the job table, state by state.
            fleet_counts = await eventually(
                lambda: (got := by_label(q("fleet_state:bulletproof_jobs:max"), "state")) == counts and got)
            assert fleet_counts["completed"] == DONE and fleet_counts["queued"] == WAITING
            # Summed raw over the three instances (once all three are scraped) they count three times.
            await eventually(lambda: by_label(q('sum(up{job="bulletproof"})'), "") == {"": 3.0})
            await eventually(lambda: by_label(q("sum(bulletproof_jobs)"), "") == {"": 3.0 * total})
            # What the Overview's panels show with every monitor selected: the store's numbers.
            assert by_label(q(overview_expr("Total jobs")), "") == {"": float(total)}
            assert by_label(q(overview_expr("Successful")), "") == {"": float(DONE)}

            # The nodes' own counters, summed by node: the jobs each node finished.
            per_node = by_label(q("sum by (node) (bulletproof_jobs_completed_total * on (instance, job) "
                                  "group_left (node) bulletproof_fleet_info)"), "node")
            assert per_node == {name: float(finished_by.get(name, 0))
                                for name in ("node-a", "node-b", "node-c")}
            assert sum(per_node.values()) == DONE
            print(f"jobs finished by node: {per_node}")

            up = await eventually(lambda: (got := by_label(q("fleet_node:bulletproof_node_up:max"), "node"))
                                  == {"node-a": 1.0, "node-b": 1.0, "node-c": 1.0} and got)
            assert len(up) == 3
            # The Nodes table: one row per node, from each of its queries (up, draining, busy,
            # workers, heartbeat age); the per-node chart names the three nodes.
            nodes = [by_label(q(expr), "node") for expr in overview_exprs("Nodes")]
            assert [set(column) for column in nodes] == [{"node-a", "node-b", "node-c"}] * 5
            assert nodes[0] == up and set(nodes[3].values()) == {1.0}  # up; one worker each
            assert all(0 <= age < 10 for age in nodes[4].values())  # heartbeats of the last seconds
            per_hour = overview_exprs("Jobs per hour by node")[0]  # rate(): two scrapes at least
            await eventually(lambda: set(by_label(q(per_hour), "node")) == {"node-a", "node-b", "node-c"})

            # A claim in node-c's name that nobody renews (as if node-c froze while it held the
            # job): a sweep takes it back, the lease is counted for node-c, and the alert fires.
            frozen = PostgresJobStore(postgres_url)
            try:
                claim = frozen.claim("node-c", now=time.time(), lease_seconds=2)
            finally:
                frozen.close()
            assert claim is not None
            await until(lambda: store.get_job(claim.job.id).state is JobState.QUEUED, timeout=30)
            await eventually(lambda: by_label(q("sum by (node) (bulletproof_leases_expired_total)"), "node")
                             == {"node-a": 0.0, "node-b": 0.0, "node-c": 1.0})
            leases = await eventually(lambda: [a for a in promstack.prometheus_alerts(prom.url)
                                               if a["labels"]["alertname"] == "BulletproofLeasesExpiring"
                                               and a["state"] == "firing"])
            assert [(a["labels"]["node"], a["labels"]["fleet"]) for a in leases] == [
                ("node-c", store.store_id())]

            # node-c dies without a word: the others report it down, and the alert fires.
            killed = time.monotonic()
            node_c.kill()
            node_c.wait(timeout=10)
            await eventually(lambda: by_label(q('up{job="bulletproof"}'), "instance").get(
                f"127.0.0.1:{c_port}") == 0.0)
            await eventually(lambda: by_label(q("fleet_node:bulletproof_node_up:max"), "node")
                             == {"node-a": 1.0, "node-b": 1.0, "node-c": 0.0}, timeout=30)
            print(f"node-c killed -> node_up 0 in Prometheus: {time.monotonic() - killed:.1f} s")
            firing = await eventually(lambda: [a for a in promstack.prometheus_alerts(prom.url)
                                               if a["labels"]["alertname"] == "BulletproofNodeDown"
                                               and a["state"] == "firing"], timeout=30)
            print(f"node-c killed -> BulletproofNodeDown firing: {time.monotonic() - killed:.1f} s")
            assert [a["labels"]["node"] for a in firing] == ["node-c"]
            description = firing[0]["annotations"]["description"]
            assert f"Its own target 127.0.0.1:{c_port} is down too." in description
            # Two readers left: the fleet's counts are still the store's, once.
            assert by_label(q("fleet_state:bulletproof_jobs:max"), "state") == counts
    finally:
        for plugin in plugins:
            await plugin.stop()
        if node_c.poll() is None:
            node_c.kill()
            node_c.wait(timeout=10)
        if c_log.exists():
            print(c_log.read_text(errors="replace")[-3000:])
