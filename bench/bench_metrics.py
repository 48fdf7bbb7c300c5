"""Benchmark: /metrics render time and body size against 1k, 10k and 100k jobs of history.

    python bench/bench_metrics.py [--sizes 1000,10000,100000] [--runs 200] [--queued 20]

For each size it builds a fresh SQLite job store in a temporary folder, fills it with finished
jobs, starts a real Monitor over it (empty watch folder, real worker pool, real ffmpeg
discovery; no transcodes run), attaches BulletproofMetrics and times `render()` (plain text,
OpenMetrics, and plain text + gzip) over `--runs` runs after a short warm-up.

How the history is built: a fast `executemany` on the SqliteJobStore's own SQLite connection inside
one transaction (rows shaped exactly as SqliteJobStore.add + mark_started + mark_completed/mark_failed
leave them: 90 % completed, 8 % failed, 2 % cancelled, over the four built-in profiles, finished
over the past 30 days). Going through the SqliteJobStore methods costs ~4 commits per job, minutes at
100k, and yields the same table; `--via-store` does that instead (slow; use with small sizes).
A few queued jobs are added through SqliteJobStore.add so the queue gauges have something to read.

Goal: flat across sizes, p50 under 5 ms.

The store keeps jobs per state in a trigger-maintained table and answers the last finish per
state from an index, so the scrape does not grow with the history; the query plans are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_config  # noqa: E402
from bulletproof.models import FailureReason  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402
from bulletproof.store import NewJob  # noqa: E402
from exporter.metrics.registry import BulletproofMetrics  # noqa: E402

PROFILES = ("h264_mp4", "web_720p", "hevc_mkv", "aac_m4a")
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
FAIL_REASONS = [r.value for r in FailureReason if r is not FailureReason.CANCELLED]


def fill_fast(store: SqliteJobStore, n: int, folder: Path, rng: random.Random) -> None:
    """Insert n finished jobs with one executemany on the store's connection (one transaction)."""
    now = time.time()
    rows = []
    for i in range(n):
        finished = now - rng.uniform(0, 30 * 86400)
        started = finished - rng.uniform(1, 600)
        queued = started - rng.uniform(0, 60)
        roll = rng.random()
        profile = PROFILES[i % len(PROFILES)]
        size = rng.randint(1_000_000, 2_000_000_000)
        rel = f"show/season-{i % 12}/episode-{i:07d}.mp4"
        if roll < 0.90:
            state, reason, error, out = "completed", None, None, size // 3
        elif roll < 0.98:
            state, reason, error, out = "failed", rng.choice(FAIL_REASONS), "ffmpeg said no", None
        else:
            state, reason, error, out = "cancelled", "cancelled", "cancelled while running", None
        rows.append((
            str(folder / rel), rel, str(folder), size, 1_700_000_000_000_000_000 + i, profile, "videos",
            str(folder.parent / "processed" / rel), state, 0, float(i + 1), 1, queued, queued, started,
            finished, 1.0 if state == "completed" else rng.random(), size, out,
            rng.uniform(10, 3600), reason, error,
        ))
    db = store._db  # the bench's one shortcut: bulk insert on the store's own connection
    with store._lock:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO jobs (source_path, rel_path, watch_folder, size, mtime_ns, profile, rule, "
            "output_path, state, priority, seq, attempts, created_at, queued_at, started_at, "
            "finished_at, progress, input_bytes, output_bytes, media_duration, reason, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT OR IGNORE INTO done_files VALUES (?, ?, ?)",
            [(r[0], r[3], r[4]) for r in rows if r[8] == "completed"],
        )
        db.execute("COMMIT")
        db.execute("ANALYZE")


def fill_via_store(store: SqliteJobStore, n: int, folder: Path, rng: random.Random) -> None:
    """Insert n finished jobs through the SqliteJobStore API (add, mark_started, mark_completed/failed)."""
    for i in range(n):
        rel = f"show/episode-{i:07d}.mp4"
        job = store.add(NewJob(str(folder / rel), rel, str(folder), 1000 + i, i, PROFILES[i % 4], "videos",
                               str(folder.parent / "processed" / rel)))
        assert job is not None
        now = time.time()
        store.mark_started(job.id, now=now)
        if rng.random() < 0.9:
            store.mark_completed(job.id, now=now + 1, output_bytes=500 + i, media_duration=10.0)
        else:
            store.mark_failed(job.id, now=now + 1, reason=FailureReason.FFMPEG_ERROR, error="x",
                              stderr_tail="", retry_at=None)


def add_queued(store: SqliteJobStore, n: int, folder: Path) -> None:
    for i in range(n):
        rel = f"waiting/clip-{i:04d}.mp4"
        store.add(NewJob(str(folder / rel), rel, str(folder), 1234 + i, i, PROFILES[i % 4], "videos",
                         str(folder.parent / "processed" / rel)))


PLAN_QUERIES = {
    "counts_by_state": "SELECT state, n FROM job_counts",
    "oldest_queued_at": "SELECT MIN(queued_at) FROM jobs WHERE state = 'queued'",
    "last_finished_at": "SELECT MAX(finished_at) FROM jobs WHERE state = 'completed'",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_render(metrics: BulletproofMetrics, accept: str | None, encoding: str | None,
                runs: int) -> tuple[float, float, int]:
    for _ in range(10):
        metrics.render(accept, encoding)
    samples = []
    body = b""
    for _ in range(runs):
        t0 = time.perf_counter()
        body, _, _ = metrics.render(accept, encoding)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), percentile(samples, 0.95), len(body)


def time_queries(metrics: BulletproofMetrics, runs: int) -> dict[str, float]:
    """p50 in ms of each MonitorView read the state collector makes."""
    view = metrics._view
    reads = {
        "counts": view.counts,
        "oldest_queued_at": view.oldest_queued_at,
        "last_finished_at": view.last_finished_at,
        "workers": view.workers,
        "output_volume": view.output_volume,
        "store_id": view.store_id,
        "nodes": view.nodes,
    }
    out = {}
    for name, fn in reads.items():
        samples = []
        for _ in range(max(20, runs // 4)):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
        out[name] = statistics.median(samples)
    return out


async def bench_size(n: int, args: argparse.Namespace) -> dict[str, object]:
    from bulletproof.service import Monitor

    rng = random.Random(n)
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        base = Path(tmp)
        (base / "incoming").mkdir()
        config = bench_config(base, max_workers=args.workers, stability_seconds=1, rescan_interval=3600)
        store = SqliteJobStore(config.database)
        t0 = time.perf_counter()
        (fill_via_store if args.via_store else fill_fast)(store, n, base / "incoming", rng)
        add_queued(store, args.queued, base / "incoming")
        fill_s = time.perf_counter() - t0
        plans = {name: " / ".join(r[3] for r in store._db.execute("EXPLAIN QUERY PLAN " + sql))
                 for name, sql in PLAN_QUERIES.items()}
        store.close()

        monitor = Monitor(config)
        monitor.pause_queue()  # the queued jobs point at files that do not exist: keep them queued
        await monitor.start()
        metrics = BulletproofMetrics(monitor.view, monitor.bus)
        try:
            counts = monitor.view.counts()
            assert sum(counts.values()) == n + args.queued, counts
            text = time_render(metrics, None, None, args.runs)
            om = time_render(metrics, OPENMETRICS, None, args.runs)
            gz = time_render(metrics, None, "gzip", args.runs)
            queries = time_queries(metrics, args.runs)
            series = sum(1 for line in metrics.render(None, None)[0].decode().splitlines()
                         if line and not line.startswith("#"))
        finally:
            metrics.close()
            await monitor.stop()
    return {"n": n, "plans": plans, "fill_s": fill_s, "text": text, "om": om, "gz": gz, "series": series, "queries": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--via-store", action="store_true", help="insert through SqliteJobStore methods (slow)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [asyncio.run(bench_size(n, args)) for n in sizes]
    report(results, args)


def report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"render() over {args.runs} runs, {args.workers} idle worker slots, {args.queued} queued jobs; "
          f"history inserted with {'SqliteJobStore methods' if args.via_store else 'executemany on the store connection'}")
    print()
    header = (f"{'jobs':>8} | {'text p50':>8} {'p95':>7} {'bytes':>7} | {'OM p50':>7} {'p95':>7} {'bytes':>7} | "
              f"{'gzip p50':>8} {'p95':>7} {'bytes':>6} | {'series':>6} | {'fill s':>6}")
    print(header)
    print("-" * len(header))
    for r in results:
        t, o, g = r["text"], r["om"], r["gz"]
        print(f"{r['n']:>8} | {t[0]:>6.2f}ms {t[1]:>5.2f}ms {t[2]:>7} | {o[0]:>5.2f}ms {o[1]:>5.2f}ms {o[2]:>7} | "
              f"{g[0]:>6.2f}ms {g[1]:>5.2f}ms {g[2]:>6} | {r['series']:>6} | {r['fill_s']:>6.1f}")
    print()
    print("p50 of each view read inside the state collector (ms):")
    names = list(results[0]["queries"])
    print(f"{'jobs':>8} | " + " ".join(f"{n:>16}" for n in names))
    for r in results:
        print(f"{r['n']:>8} | " + " ".join(f"{r['queries'][n]:>16.3f}" for n in names))
    print()
    print(f"query plans at {results[-1]['n']} jobs:")
    for name, plan in results[-1]["plans"].items():
        print(f"  {name:<17} {plan}")
    print()


if __name__ == "__main__":
    main()
