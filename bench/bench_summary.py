"""Benchmark: the stats summary (with space saved) against 1k, 10k, 100k and 1M jobs of history.

    python bench/bench_summary.py [--sizes 1000,10000,100000,1000000] [--runs 50] [--quick]

For each size it builds a fresh SQLite job store in a temporary folder, fills it with finished
jobs (`bench_metrics.fill_fast`: 90 % completed, 8 % failed, 2 % cancelled), and times
`SqliteJobStore.space_saved()` (the input/output/saved byte totals) and the whole
`SqliteJobStore.summary()` that `GET /api/v1/stats/summary` answers, over `--runs` runs after a
warm-up. It prints the query plan of the byte totals.

The summary runs on request, not on every scrape; the byte totals are read from the
(state, input_bytes, output_bytes) index alone, so they cost a walk of the completed entries
of that index (no table rows), linear in the number of completed jobs but small per row.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_metrics import fill_fast, percentile  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402

SAVED_SQL = ("SELECT COUNT(*), COALESCE(SUM(input_bytes), 0), COALESCE(SUM(output_bytes), 0) "
             "FROM jobs WHERE state = 'completed' AND input_bytes IS NOT NULL "
             "AND output_bytes IS NOT NULL")


def timed_ms(call, runs: int) -> list[float]:
    call()  # warm the page cache and the statement cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated history sizes (jobs)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per size")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 10 runs")
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 10 if args.quick else args.runs
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bp-bench-summary-") as tmp:
            folder = Path(tmp) / "incoming"
            store = SqliteJobStore(Path(tmp) / "bulletproof.db")
            fill_fast(store, size, folder, random.Random(size))
            if size == sizes[-1]:
                plan = " / ".join(str(r[3]) for r in store._query("EXPLAIN QUERY PLAN " + SAVED_SQL))
                print(f"query plan of the byte totals ({size} jobs): {plan}")
            saved = timed_ms(store.space_saved, runs)
            summary = timed_ms(lambda s=store: s.summary(now=time.time()), runs)
            totals = store.space_saved()
            store.close()
        rows.append((size, totals["sized_jobs"], statistics.median(saved), percentile(saved, 0.95),
                     statistics.median(summary), percentile(summary, 0.95)))
    print(f"\n{'jobs':>9} {'completed':>9} {'saved p50 ms':>13} {'saved p95 ms':>13} "
          f"{'summary p50 ms':>15} {'summary p95 ms':>15}")
    for size, completed, s50, s95, m50, m95 in rows:
        print(f"{size:>9} {completed:>9} {s50:>13.2f} {s95:>13.2f} {m50:>15.2f} {m95:>15.2f}")


if __name__ == "__main__":
    main()
