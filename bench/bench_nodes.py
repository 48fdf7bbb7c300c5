"""Benchmark: what the node registry costs the API: GET /api/v1/status (which now lists every
node), GET /api/v1/nodes and GET /api/v1/sd against registries of 1 to 1000 nodes.

    python bench/bench_nodes.py [--sizes 1,10,100,1000] [--requests 300] [--quick]

Set-up: a real Monitor on SQLite (no jobs) and its exporter plugin on 127.0.0.1; the other nodes
are registry rows written through the store's own heartbeat, all alive and advertising an API
address (the worst case for /api/v1/sd). The client is aiohttp on the same event loop, requests
one after another; latency is from just before a request is sent until its body has been read.
Printed: p50 and p99 per route and registry size, and the answer's size.

Goal: status p99 within a few ms of its one-node figure up to 100 nodes (a fleet's dashboards
poll it every few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from bench._common import bench_config  # noqa: E402
from bulletproof.service import Monitor  # noqa: E402
from bulletproof.store import NodeInfo  # noqa: E402
from exporter.plugin import ExporterPlugin  # noqa: E402

ROUTES = ("/api/v1/status", "/api/v1/nodes", "/api/v1/sd")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def add_nodes(monitor: Monitor, total: int) -> None:
    """Fill the registry up to `total` nodes (this monitor is one of them)."""
    have = len(monitor.view.nodes())
    now = time.time()
    row = NodeInfo(name="", instance="bench", host="bench-host", pid=1, version="0.0", workers=8,
                   busy=4, started_at=now, last_seen=now, heartbeat_seconds=3600.0,
                   api_address="10.0.0.1:8080")
    for i in range(have, total):
        monitor.store.heartbeat(replace(row, name=f"node-{i:04d}",
                                        api_address=f"10.0.{i // 250}.{i % 250 + 1}:8080"))


async def time_route(session: aiohttp.ClientSession, url: str, n: int) -> tuple[list[float], int]:
    latencies, size = [], 0
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(url) as resp:
            body = await resp.read()
        latencies.append(time.perf_counter() - start)
        assert resp.status == 200, (url, resp.status)
        size = len(body)
    return latencies, size


async def main(sizes: list[int], requests: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    try:
        (root / "incoming").mkdir()
        config = bench_config(root, node_name="bench-0",
                              api={"listen": "127.0.0.1:0", "rate_limit_per_minute": 1_000_000})
        monitor = Monitor(config)
        await monitor.start()
        plugin = ExporterPlugin(monitor.context())
        await plugin.start()
        rows = []
        try:
            async with aiohttp.ClientSession() as session:
                for size in sizes:
                    add_nodes(monitor, size)
                    for route in ROUTES:
                        await time_route(session, plugin.url + route, 20)  # warm-up
                        latencies, body = await time_route(session, plugin.url + route, requests)
                        rows.append((size, route, pct(latencies, 50) * 1000,
                                     pct(latencies, 99) * 1000, body))
        finally:
            await plugin.stop()
            await monitor.stop()
        print(f"\n{'nodes':>6}  {'route':<16} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>9}")
        for size, route, p50, p99, body in rows:
            print(f"{size:>6}  {route:<16} {p50:>8.2f} {p99:>8.2f} {body:>9}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,100,1000",
                        help="registry sizes, comma-separated (default 1,10,100,1000)")
    parser.add_argument("--requests", type=int, default=300, help="requests per route and size")
    parser.add_argument("--quick", action="store_true", help="sizes 1,10 and 30 requests")
    args = parser.parse_args()
    chosen = [1, 10] if args.quick else [int(s) for s in args.sizes.split(",")]
    asyncio.run(main(chosen, 30 if args.quick else args.requests))
