"""Benchmark: what the fenced publish costs a job's completion, and what a sweep meets meanwhile.

    python bench/bench_fence.py [--jobs 400] [--workers 1,4] [--postgres-url URL] [--quick]

Per completed job, two ways of ending an attempt whose output is ready at its temporary name:

- **unfenced**: rename the temporary into place (`os.replace`), then `mark_completed` with the
  claim's token: what the monitor did before the fence (a node frozen between the two replaces
  the next attempt's output);
- **fenced**: `mark_completed(token=, publish=rename)`: the row is locked (`FOR UPDATE` /
  `BEGIN IMMEDIATE`), the token checked, the rename run and the completion recorded in one
  transaction (the monitor's way now).

Each with `--workers` concurrent workers (SQLite: threads sharing the one store of a monitor;
PostgreSQL: each worker its own store and connection, as separate nodes), on tiny files in a
temporary folder. Printed: p50, p99 and mean milliseconds per completion, and completions per
second. Then, on PostgreSQL, **sweep during publishes**: one `requeue_expired` per 10 ms by
another connection while the workers publish with lapsed leases (the sweep passes locked rows
by): its p99, how many publishes were refused (the sweep took the job between its claim and
its publish: nothing was published, the job ran again), and that completed jobs and outputs
are as many (no output without its completion, none from a swept claim).

PostgreSQL runs on `--postgres-url` (an empty database; its jobs are deleted between runs) or on
a throwaway cluster started like the test suite's (Debian's PostgreSQL, run as root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402 (the postgres extra)

from bulletproof.postgres_store import PostgresJobStore  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402
from bulletproof.store import JobStore, NewJob  # noqa: E402
from tests.postgres import remove_cluster, start_cluster  # noqa: E402


def queue(store: JobStore, folder: Path, jobs: int) -> None:
    for i in range(jobs):
        store.add(NewJob(source_path=f"/in/{i}.mp4", rel_path=f"{i}.mp4", watch_folder="/in",
                         size=1, mtime_ns=i, profile="h264_mp4", rule="videos",
                         output_path=str(folder / f"{i}.mp4")))


def drain(stores: list[JobStore], folder: Path, *, fenced: bool,
          lease: float = 600) -> tuple[list[float], float]:
    """Each store's thread claims and completes jobs until none is left; per-completion ms."""
    samples: list[float] = []
    lock = threading.Lock()

    def work(store: JobStore, index: int) -> None:
        mine: list[float] = []
        while (claim := store.claim(f"node-{index}", now=time.time(), lease_seconds=lease)):
            output = Path(claim.job.output_path)
            temp = output.with_name(f".{output.stem}.bp-tmp-{claim.job.id}-{claim.token}.mp4")
            temp.write_bytes(b"x")
            t0 = time.perf_counter()
            if fenced:
                store.mark_completed(claim.job.id, now=time.time(), output_bytes=1,
                                     media_duration=None, token=claim.token,
                                     publish=lambda t=temp, o=output: os.replace(t, o))
            else:
                os.replace(temp, output)
                store.mark_completed(claim.job.id, now=time.time(), output_bytes=1,
                                     media_duration=None, token=claim.token)
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            samples.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, time.perf_counter() - began


def summary(samples: list[float], seconds: float) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"p50 {statistics.median(ordered):6.2f}  p99 {p99:6.2f}  mean "
            f"{statistics.fmean(ordered):6.2f} ms   {len(ordered) / seconds:7.0f}/s")


def run(name: str, open_stores: Callable[[int], list[JobStore]], reset: Callable[[], None],
        folder: Path, jobs: int, workers: list[int]) -> None:
    for count in workers:
        for fenced in (False, True):
            reset()
            for old in folder.iterdir():
                old.unlink()
            stores = open_stores(count)
            queue(stores[0], folder, jobs)
            samples, seconds = drain(stores, folder, fenced=fenced)
            for store in {id(s): s for s in stores}.values():  # SQLite's threads share one
                store.close()
            print(f"{name:10} workers {count:2}  {'fenced' if fenced else 'unfenced':8}  "
                  f"{summary(samples, seconds)}")


def sweep_during_publishes(url: str, reset: Callable[[], None], folder: Path, jobs: int,
                           workers: int) -> None:
    reset()
    for old in folder.iterdir():
        old.unlink()
    stores = [PostgresJobStore(url) for _ in range(workers)]
    sweeper = PostgresJobStore(url)
    queue(stores[0], folder, jobs)
    times: list[float] = []
    stop = threading.Event()

    def sweep() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            # Every lease has lapsed by this clock: only the row locks keep the jobs.
            sweeper.requeue_expired(now=time.time() + 10_000)
            times.append((time.perf_counter() - t0) * 1000)
            stop.wait(0.01)

    thread = threading.Thread(target=sweep)
    thread.start()
    # Leases of 0 s: the sweep may take any job between its claim and its publish (then the
    # publish is refused and the job runs again), never one inside its fenced transaction.
    refused = 0
    lock = threading.Lock()

    def work(store: PostgresJobStore, index: int) -> None:
        nonlocal refused
        while (claim := store.claim(f"node-{index}", now=time.time(), lease_seconds=0)):
            output = Path(claim.job.output_path)
            temp = output.with_name(f".{output.stem}.bp-tmp-{claim.job.id}-{claim.token}.mp4")
            temp.write_bytes(b"x")
            try:
                store.mark_completed(claim.job.id, now=time.time(), output_bytes=1,
                                     media_duration=None, token=claim.token,
                                     publish=lambda t=temp, o=output: os.replace(t, o))
            except Exception:  # StaleClaim: the sweep came first; nothing was published
                temp.unlink()
                with lock:
                    refused += 1

    threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    thread.join()
    check_store = PostgresJobStore(url)
    try:
        completed = sum(1 for j in check_store.list_jobs(limit=jobs * 2)[0] if j.state == "completed")
        outputs = sum(1 for p in folder.iterdir() if not p.name.startswith("."))
    finally:
        check_store.close()
    ordered = sorted(times)
    print(f"sweep during publishes ({workers} workers, {jobs} jobs, leases lapsed at once): "
          f"{len(times)} sweeps, p99 {ordered[int(len(ordered) * 0.99)]:.2f} ms; refused "
          f"publishes {refused} (swept between claim and publish, nothing published); "
          f"completed {completed}, outputs {outputs} (must be equal)")
    for store in (*stores, sweeper):
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--postgres-url")
    parser.add_argument("--quick", action="store_true", help="100 jobs, 1 and 4 workers")
    args = parser.parse_args()
    jobs = 100 if args.quick else args.jobs
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "out")
        folder.mkdir()
        db = Path(tmp, "jobs.db")

        def sqlite_reset() -> None:
            for suffix in ("", "-wal", "-shm", ".lock"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)

        def sqlite_stores(count: int) -> list[JobStore]:
            store = SqliteJobStore(db)
            return [store] * count

        run("SQLite", sqlite_stores, sqlite_reset, folder, jobs, workers)
        cluster = None
        url = args.postgres_url
        if url is None:
            cluster = start_cluster()
            url = cluster.database()
        try:
            PostgresJobStore(url).close()  # the schema

            def pg_reset() -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE jobs, done_files")

            run("PostgreSQL", lambda n: [PostgresJobStore(url) for _ in range(n)], pg_reset,
                folder, jobs, workers)
            sweep_during_publishes(url, pg_reset, folder, jobs, max(workers))
        finally:
            if cluster is not None:
                remove_cluster(cluster)


if __name__ == "__main__":
    main()
