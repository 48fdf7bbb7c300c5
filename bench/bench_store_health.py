"""Benchmark: what the store's fault checks cost against 1k, 10k and 100k jobs of history.

    python bench/bench_store_health.py [--sizes 1000,10000,100000] [--runs 200] [--quick]

For each size it builds a fresh SQLite job store (the fast fill of bench_metrics.py: rows shaped
as the store leaves them), then measures:

- **open**: `SqliteJobStore(path)` on the closed file: the lock, `PRAGMA quick_check`, the schema and
  the recount: what a start costs before anything else happens (median of 5 opens);
- **quick_check**: the `PRAGMA quick_check(5)` alone on that file, so its share is visible;
- **probe**: one tiny write on the meta row (`SqliteJobStore.probe`), the write an idle monitor makes
  every few seconds to know its store takes writes (median of `--runs`);
- **health**: `MonitorView.health()` on a started Monitor over that store (what `/readyz` and
  every scrape read; median of `--runs`);
- **bytes/job**: the database file size divided by the jobs in it.

Goal: open well under a second at 100k jobs; probe and health in the low milliseconds, flat
across sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_config  # noqa: E402
from bench.bench_metrics import fill_fast  # noqa: E402
from bulletproof.service import Monitor  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402


def median_ms(fn, runs: int) -> float:
    """Median wall time of `fn()` in milliseconds over `runs` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def time_open(path: Path, runs: int) -> float:
    def once() -> None:
        SqliteJobStore(path).close()
    return median_ms(once, runs)


def time_quick_check(path: Path, runs: int) -> float:
    def once() -> None:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA quick_check(5)").fetchall() == [("ok",)]
        conn.close()
    return median_ms(once, runs)


async def bench_size(n: int, runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        base = Path(tmp)
        (base / "incoming").mkdir()
        config = bench_config(base, stability_seconds=1, rescan_interval=3600)
        store = SqliteJobStore(config.database)
        fill_fast(store, n, base / "incoming", random.Random(n))
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        size = config.database.stat().st_size
        opened = time_open(config.database, 5)
        checked = time_quick_check(config.database, 5)
        monitor = Monitor(config)
        await monitor.start()
        try:
            probe = median_ms(monitor.store.probe, runs)
            health = median_ms(monitor.view.health, runs)
            assert not any(monitor.view.health().values()), monitor.view.health()
        finally:
            await monitor.stop()
    return {"n": n, "open": opened, "quick_check": checked, "probe": probe, "health": health,
            "bytes_per_job": size / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="jobs of history per run")
    parser.add_argument("--runs", type=int, default=200, help="calls timed for probe and health")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 50 runs")
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 50 if args.quick else args.runs
    results = [asyncio.run(bench_size(n, runs)) for n in sizes]
    print(f"{'jobs':>8} {'open ms':>9} {'quick_check ms':>15} {'probe ms':>9} {'health ms':>10} "
          f"{'bytes/job':>10}")
    for r in results:
        print(f"{r['n']:>8} {r['open']:>9.1f} {r['quick_check']:>15.1f} {r['probe']:>9.2f} "
              f"{r['health']:>10.2f} {r['bytes_per_job']:>10.0f}")


if __name__ == "__main__":
    main()
