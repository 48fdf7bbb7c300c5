"""Benchmark: what taking a job from the queue costs, and the lease sweep, on a long history.

    python bench/bench_claim.py [--sizes 1000,10000,100000] [--queued 200] [--quick]
                                [--claimers 1,4,16] [--jobs 2000] [--postgres-url URL]

For each size it builds a fresh SQLite job store with that many finished jobs (the fast fill of
bench_metrics.py) and `--queued` waiting ones, then measures per job, over the whole queue:

- **claim**: `SqliteJobStore.claim` (pick by priority then FIFO, mark processing, new token and
  lease, in one transaction), then `mark_completed` with the token;
- **read+start**: the same queue taken the way a slot did before claims (`next_queued`, then
  `mark_started` by id, two transactions), then `mark_completed`;
- **sweep**: one `requeue_expired` with every claimed job holding a live lease (nothing to do:
  the cost a store shared by several monitors pays on every sweep).

Goal: claim no slower than read+start, all three flat across history sizes, in the low
milliseconds.

Then **concurrent claimers**: `--jobs` tiny jobs queued, drained by 1, 4 and 16 threads each
doing claim + mark_completed until the queue is empty; claims per second for SQLite (the
threads share the one store a monitor has: SQLite allows one owner) beside PostgreSQL (each
thread its own store instance and connection, as separate monitors would be). PostgreSQL runs
on `--postgres-url` (an empty database; its jobs are deleted between runs) or, without one, on
a throwaway cluster started like the test suite's (needs Debian's PostgreSQL, run as root).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_metrics import add_queued, fill_fast  # noqa: E402
from bulletproof.postgres_store import PostgresJobStore  # noqa: E402 (the postgres extra)
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402
from bulletproof.store import JobStore, NewJob  # noqa: E402
from tests.postgres import remove_cluster, start_cluster  # noqa: E402


def per_job_ms(take: Callable[[], bool]) -> tuple[float, float]:
    """Median and p99 milliseconds of `take()` until it returns False (the queue is empty)."""
    samples = []
    while True:
        t0 = time.perf_counter()
        took = take()
        elapsed = (time.perf_counter() - t0) * 1000
        if not took:
            break
        samples.append(elapsed)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def bench_size(n: int, queued: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        base = Path(tmp)
        store = SqliteJobStore(base / "jobs.db")
        fill_fast(store, n, base / "incoming", random.Random(n))

        def by_claim() -> bool:
            claim = store.claim("bench", now=time.time(), lease_seconds=120)
            if claim is None:
                return False
            store.mark_completed(claim.job.id, now=time.time(), output_bytes=1,
                                 media_duration=None, token=claim.token)
            return True

        def by_read_and_start() -> bool:
            job = store.next_queued(now=time.time())
            if job is None:
                return False
            store.mark_started(job.id, now=time.time())
            store.mark_completed(job.id, now=time.time(), output_bytes=1, media_duration=None)
            return True

        add_queued(store, queued, base / "incoming")
        claim_p50, claim_p99 = per_job_ms(by_claim)
        add_queued(store, queued, base / "again")
        start_p50, start_p99 = per_job_ms(by_read_and_start)
        add_queued(store, queued, base / "held")
        while store.claim("bench", now=time.time(), lease_seconds=3600) is not None:
            pass
        t0 = time.perf_counter()
        assert store.requeue_expired(now=time.time()) == []
        sweep = (time.perf_counter() - t0) * 1000
        store.close()
    return {"n": n, "claim_p50": claim_p50, "claim_p99": claim_p99, "start_p50": start_p50,
            "start_p99": start_p99, "sweep": sweep}


def queue_tiny(store: JobStore, n: int, tag: str) -> None:
    for i in range(n):
        rel = f"{tag}/clip-{i:05d}.mp4"
        store.add(NewJob(f"/in/{rel}", rel, "/in", 1000 + i, i, "h264_mp4", "videos", f"/out/{rel}"))


def drain_rate(stores: list[JobStore]) -> float:
    """Claims per second of one thread per store, each claiming and completing until empty."""
    barrier = threading.Barrier(len(stores) + 1)
    counts = [0] * len(stores)

    def drain(index: int) -> None:
        store = stores[index]
        barrier.wait()
        while (claim := store.claim(f"node-{index}", now=time.time(), lease_seconds=120)) is not None:
            store.mark_completed(claim.job.id, now=time.time(), output_bytes=1,
                                 media_duration=None, token=claim.token)
            counts[index] += 1

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - t0)


def bench_concurrent(claimers: list[int], jobs: int, postgres_url: str | None) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        cluster = None
        if postgres_url is None:
            cluster = start_cluster()
            postgres_url = cluster.database()
        try:
            for n in claimers:
                sqlite = SqliteJobStore(Path(tmp) / f"claim-{n}.db")
                queue_tiny(sqlite, jobs, f"c{n}")
                sqlite_rate = drain_rate([sqlite] * n)
                sqlite.close()
                pg = [PostgresJobStore(postgres_url) for _ in range(n)]
                with pg[0]._tx() as db:  # a bench database: each run starts empty
                    db.execute("TRUNCATE jobs, done_files")
                queue_tiny(pg[0], jobs, f"c{n}")
                pg_rate = drain_rate(pg)
                for store in pg:
                    store.close()
                rows.append({"claimers": n, "sqlite": sqlite_rate, "postgres": pg_rate})
        finally:
            if cluster is not None:
                remove_cluster(cluster)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="jobs of history per run")
    parser.add_argument("--queued", type=int, default=200, help="queued jobs taken per measure")
    parser.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 50 queued")
    parser.add_argument("--claimers", default="1,4,16", help="concurrent claimer threads per run")
    parser.add_argument("--jobs", type=int, default=2000, help="tiny jobs drained per run")
    parser.add_argument("--postgres-url", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    queued = 50 if args.quick else args.queued
    results = [bench_size(n, queued) for n in sizes]
    print(f"{'jobs':>8} {'claim p50 ms':>13} {'claim p99 ms':>13} {'read+start p50':>15} "
          f"{'read+start p99':>15} {'sweep ms':>9}")
    for r in results:
        print(f"{r['n']:>8} {r['claim_p50']:>13.2f} {r['claim_p99']:>13.2f} "
              f"{r['start_p50']:>15.2f} {r['start_p99']:>15.2f} {r['sweep']:>9.2f}")
    jobs = 300 if args.quick else args.jobs
    rows = bench_concurrent([int(c) for c in args.claimers.split(",")], jobs, args.postgres_url)
    print(f"\n{jobs} tiny jobs (claim + complete), drained by concurrent claimers")
    print(f"{'claimers':>8} {'sqlite claims/s':>16} {'postgres claims/s':>18}")
    for r in rows:
        print(f"{r['claimers']:>8} {r['sqlite']:>16.0f} {r['postgres']:>18.0f}")


if __name__ == "__main__":
    main()
