"""A real Prometheus discovers every node of a fleet through one node's GET /api/v1/sd
(http_sd_configs) and scrapes each: three in-process monitors, each with its own node_name and
API port, on one real PostgreSQL database. A node that stops leaves the list and the targets."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bulletproof.config import load_config
from exporter.plugin import ExporterPlugin
from tests import promstack
from tests.api_fixtures import TEST_API
from tests.conftest import until, write_config

pytestmark = pytest.mark.skipif(not promstack.PROMETHEUS_BIN, reason="needs Debian's prometheus")

FAST = {"heartbeat_seconds": 1, "lease_seconds": 5}
NAMES = ("alpha", "beta", "gamma")


def up_by_node(prom_url: str) -> dict[str, float]:
    """`up` of the bulletproof job, by instance: the node name, relabelled from the discovery's
    `__meta_bulletproof_node` (as prometheus/fleet.yml does)."""
    return {r["metric"].get("instance", "?"): float(r["value"][1])
            for r in promstack.query(prom_url, 'up{job="bulletproof"}')}


def target_nodes(prom_url: str) -> set[str]:
    return {t["labels"].get("instance", "?") for t in promstack.targets(prom_url)
            if t["labels"].get("job") == "bulletproof"}


async def sd_list(url: str) -> list[dict]:
    """A node's SD list (asked on the test's loop, which serves the nodes' APIs)."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v1/sd") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        return await resp.json()


async def test_prometheus_discovers_and_scrapes_every_node(tmp_path: Path, postgres_url: str,
                                                           monitor_factory) -> None:
    sd_port = promstack.free_port()  # alpha's API: where Prometheus asks for the targets
    sd_url = f"http://127.0.0.1:{sd_port}/api/v1/sd"
    # Prometheus first: its start-up wait blocks, and the monitors' heartbeats must not stall.
    with promstack.run_prometheus(tmp_path / "prometheus", rule_files=[], sd_urls=[sd_url]) as prom:
        monitors, plugins = {}, {}
        try:
            for name in NAMES:
                listen = f"127.0.0.1:{sd_port}" if name == "alpha" else "127.0.0.1:0"
                config = load_config(write_config(
                    tmp_path / name, node_name=name, fleet=FAST, database=postgres_url,
                    api={**TEST_API, "listen": listen}))
                monitors[name] = await monitor_factory(config)
                plugins[name] = ExporterPlugin(monitors[name].context())
                await plugins[name].start()
            groups = await sd_list(plugins["alpha"].url)
            assert [(g["labels"]["__meta_bulletproof_node"], g["targets"]) for g in groups] == [
                (name, [f"127.0.0.1:{plugins[name].port}"]) for name in NAMES]

            await until(lambda: up_by_node(prom.url) == dict.fromkeys(NAMES, 1.0), timeout=30)
            # Each target is the node it says it is: the scrape reached that node's exporter.
            for name in NAMES:
                [target] = [t for t in promstack.targets(prom.url)
                            if t["labels"].get("instance") == name]
                assert target["scrapeUrl"] == f"http://127.0.0.1:{plugins[name].port}/metrics"
                assert target["health"] == "up" and "node" not in target["labels"]

            await plugins["gamma"].stop()
            await monitors["gamma"].stop()  # a clean stop: stopped_at in the registry
            left = await sd_list(plugins["beta"].url)  # any node answers for the whole fleet
            assert [g["labels"]["__meta_bulletproof_node"] for g in left] == ["alpha", "beta"]
            await until(lambda: target_nodes(prom.url) == {"alpha", "beta"}, timeout=30)
            # gamma's series ends (a stale marker once its target is gone); the others stay up.
            await until(lambda: up_by_node(prom.url) == {"alpha": 1.0, "beta": 1.0}, timeout=30)
        finally:
            for plugin in plugins.values():
                await plugin.stop()
