"""Benchmark: what a job costs a fleet beyond ffmpeg's own run, on PostgreSQL beside SQLite.

    python bench/bench_fleet.py [--workers 1,4,16] [--jobs 1600] [--postgres-url URL]
                                [--clip-seconds 0.2] [--quick]

The monitor's own share of a job, per job, in two parts measured separately:

1. **Store writes** (the part a shared store changes). Every call a node makes on the job store
   for one job, in the order the monitor makes them, driven through the store's API by
   `--workers` concurrent workers on tiny jobs:

   - *queue*: `add_reserving` (the scanner found a stable file: queued, output name reserved);
   - *again*: `add_reserving` of a file already queued, by another worker (every node watching
     the shared folder finds every file: one such refused attempt per further node; shown apart,
     not in the total);
   - *claim*: `claim` (the next job, a lease and a fencing token);
   - *start*: `reserve_again` (the first claim re-checks the output name), `set_source_inode`,
     `set_media_duration` (after the probe);
   - *renew*: one `renew` of the lease (a worker renews once half of the lease is gone: once a
     minute of transcoding; tiny jobs need none, so it is shown apart and not in the total);
   - *complete*: `mark_completed` with the claim's token (the outcome, the done file version).

   Apart from the jobs, *idle* is what an idle worker slot costs the store per wake-up: an empty
   `claim` and `next_wakeup`, which it repeats every second at most (bulletproof/workers.py's
   idle poll) while the queue is empty, measured with all the workers idle together.

   Each step is shown as its mean over the jobs (what throughput and sizing add up; on a busy
   machine the medians are a half to a third of it, the tail is the machine's). *total* is queue
   + claim + start + complete for one job (the sum of its own calls' latencies while the others
   run concurrently), shown as p50, p99 and mean over the jobs; *jobs/s* is how fast
   the workers together take the queued jobs through claim + start + complete (the queue is
   filled first, by the same workers, concurrently). Progress is not written to the store (it
   goes to the event bus), so it costs nothing here. SQLite: the workers are threads sharing
   the one store of one monitor (SQLite allows one owner). PostgreSQL: each worker is its own
   store and connection, as separate nodes. PostgreSQL runs on `--postgres-url` (an empty
   database; its jobs are deleted between runs) or on a throwaway cluster started like the test
   suite's (Debian's PostgreSQL, run as root; `fsync=off`, `synchronous_commit=off`).

2. **Around ffmpeg** (the same on any store): on a `--clip-seconds` clip, the median wall time of
   ffmpeg's own run for a copy-like job (`-c copy`, the smallest transcode there is) and of the
   `ffprobe` the monitor runs on each source before ffmpeg, to set the store's figures against.

Not measured here: the stability window (a setting, see bench_pickup.py), the event loop's
scheduling (bench_overhead.py measures the whole monitor against plain ffmpeg), the output's
verification (bench_verify.py), and heartbeats and lease sweeps (per node, not per job).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulletproof.config import FfmpegSettings  # noqa: E402
from bulletproof.ffprobe import find_ffmpeg  # noqa: E402
from bulletproof.postgres_store import PostgresJobStore  # noqa: E402 (the postgres extra)
from bulletproof.samples import make_clip  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402
from bulletproof.store import JobStore, NewJob  # noqa: E402
from tests.postgres import remove_cluster, start_cluster  # noqa: E402

STEPS = ("queue", "again", "claim", "start", "renew", "complete")
# Shown apart, not in a job's total: a renewal is per minute of transcoding, a repeated find per
# further node watching the folder.
APART = ("again", "renew")
LEASE_SECONDS = 120.0  # the workers' lease (bulletproof/workers.py)
IDLE_POLLS = 50  # idle wake-ups per worker


@dataclass
class Timings:
    """Per-job milliseconds of each step, keyed by the job's source path."""

    steps: dict[str, dict[str, float]] = field(default_factory=dict)
    idle: list[float] = field(default_factory=list)  # ms of each idle wake-up
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, source: str, step: str, ms: float) -> None:
        with self.lock:
            self.steps.setdefault(source, {})[step] = ms


def timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """`action(*args, **kwargs)`'s result and its wall time in milliseconds."""
    t0 = time.perf_counter()
    result = action(*args, **kwargs)
    return result, (time.perf_counter() - t0) * 1000


def start_writes(store: JobStore, job_id: int) -> None:
    """What a worker writes as it starts a job: the output name re-checked, inode, duration."""
    store.reserve_again(job_id, policy="rename")
    store.set_source_inode(job_id, 4242 + job_id)
    store.set_media_duration(job_id, 0.2)


def new_job(tag: str, index: int) -> NewJob:
    rel = f"{tag}/clip-{index:06d}.mp4"
    return NewJob(source_path=f"/watch/{rel}", rel_path=rel, watch_folder="/watch",
                  size=1_000_000 + index, mtime_ns=1_700_000_000_000_000_000 + index,
                  profile="h264_mp4", rule="videos", output_path=f"/output/{rel}")


def run_workers(count: int, work: Callable[[int], None]) -> float:
    """Run `work(index)` on `count` threads started together; the wall seconds until all end."""
    barrier = threading.Barrier(count + 1)

    def body(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0


def drive(stores: list[JobStore], jobs: int, tag: str) -> tuple[Timings, float]:
    """Queue `jobs` with the workers, then drain them as nodes do; timings and drain seconds."""
    timings = Timings()
    workers = len(stores)

    def queue(index: int) -> None:
        store = stores[index]
        for i in range(index, jobs, workers):
            new = new_job(tag, i)
            _, ms = timed(store.add_reserving, new, policy="rename")
            timings.add(new.source_path, "queue", ms)

    def drain(index: int) -> None:
        store, node = stores[index], f"node-{index}"
        while True:
            claim, claim_ms = timed(store.claim, node, now=time.time(), lease_seconds=LEASE_SECONDS)
            if claim is None:
                return
            job, token = claim.job, claim.token
            _, start_ms = timed(start_writes, store, job.id)
            _, renew_ms = timed(store.renew, job.id, token, until=time.time() + LEASE_SECONDS)
            _, complete_ms = timed(store.mark_completed, job.id, now=time.time(), output_bytes=50_000,
                                   media_duration=0.2, token=token)
            for step, ms in (("claim", claim_ms), ("start", start_ms), ("renew", renew_ms),
                             ("complete", complete_ms)):
                timings.add(job.source_path, step, ms)

    def again(index: int) -> None:
        store = stores[(index + 1) % workers]  # another node finds the files this one queued
        for i in range(index, jobs, workers):
            new = new_job(tag, i)
            (job, _), ms = timed(store.add_reserving, new, policy="rename")
            assert job is None, "a file already queued was queued twice"
            timings.add(new.source_path, "again", ms)

    def idle(index: int) -> None:
        store, node = stores[index], f"node-{index}"
        for _ in range(IDLE_POLLS):
            t0 = time.perf_counter()
            assert store.claim(node, now=time.time(), lease_seconds=LEASE_SECONDS) is None
            store.next_wakeup()
            with timings.lock:
                timings.idle.append((time.perf_counter() - t0) * 1000)

    run_workers(workers, queue)
    run_workers(workers, again)
    seconds = run_workers(workers, drain)
    run_workers(workers, idle)
    missing = [s for s, steps in timings.steps.items() if set(steps) != set(STEPS)]
    assert len(timings.steps) == jobs and not missing, f"{len(missing)} jobs did not go through"
    return timings, seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summarize(backend: str, workers: int, timings: Timings, seconds: float) -> dict[str, object]:
    per_job = list(timings.steps.values())
    row: dict[str, object] = {"backend": backend, "workers": workers, "jobs_per_s": len(per_job) / seconds}
    for step in STEPS:  # the mean: what the throughput and the sizing add up
        row[step] = statistics.fmean(job[step] for job in per_job)
    totals = [sum(job[s] for s in STEPS if s not in APART) for job in per_job]
    row["total_p50"] = statistics.median(totals)
    row["total_p99"] = percentile(totals, 0.99)
    row["total_mean"] = statistics.fmean(totals)
    row["idle"] = statistics.fmean(timings.idle)
    return row


def bench_stores(workers: list[int], jobs: int, postgres_url: str | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    cluster = None
    if postgres_url is None:
        cluster = start_cluster()
        postgres_url = cluster.database()
    try:
        with tempfile.TemporaryDirectory(prefix="bp-bench-fleet-") as tmp:
            for n in workers:
                sqlite = SqliteJobStore(Path(tmp) / f"fleet-{n}.db")
                timings, seconds = drive([sqlite] * n, jobs, f"w{n}")
                sqlite.close()
                rows.append(summarize("sqlite", n, timings, seconds))
                pg: list[JobStore] = [PostgresJobStore(postgres_url) for _ in range(n)]
                with pg[0]._tx() as db:  # type: ignore[attr-defined] (a bench database: start empty)
                    db.execute("TRUNCATE jobs, done_files")
                timings, seconds = drive(pg, jobs, f"w{n}")
                for store in pg:
                    store.close()
                rows.append(summarize("postgres", n, timings, seconds))
    finally:
        if cluster is not None:
            remove_cluster(cluster)
    return rows


def bench_around_ffmpeg(seconds: float, repeats: int) -> dict[str, float]:
    """Median ms of a copy-like ffmpeg run and of the monitor's ffprobe on a short clip."""
    binaries = find_ffmpeg(FfmpegSettings())
    with tempfile.TemporaryDirectory(prefix="bp-bench-fleet-clip-") as tmp:
        clip = make_clip(binaries.ffmpeg, Path(tmp) / "clip.mp4", seconds=seconds)
        out = Path(tmp) / "out.mp4"
        copy = [binaries.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i",
                str(clip), "-map", "0", "-c", "copy", str(out)]
        times: dict[str, list[float]] = {"ffmpeg_copy": [], "ffprobe": []}
        for _ in range(repeats):
            _, ms = timed(subprocess.run, copy, check=True, capture_output=True)
            times["ffmpeg_copy"].append(ms)
            if binaries.ffprobe:
                probe = [binaries.ffprobe, "-v", "error", "-print_format", "json", "-show_format",
                         "-show_streams", str(clip)]
                _, ms = timed(subprocess.run, probe, check=True, capture_output=True)
                times["ffprobe"].append(ms)
    return {k: statistics.median(v) for k, v in times.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,4,16", help="concurrent workers per run")
    parser.add_argument("--jobs", type=int, default=1600, help="tiny jobs per run")
    parser.add_argument("--postgres-url", default=None, help="an empty PostgreSQL database")
    parser.add_argument("--clip-seconds", type=float, default=0.2, help="the clip for the ffmpeg reference")
    parser.add_argument("--repeats", type=int, default=9, help="runs of ffmpeg and ffprobe")
    parser.add_argument("--quick", action="store_true", help="1 and 4 workers, 200 jobs, 3 repeats")
    args = parser.parse_args()
    workers = [1, 4] if args.quick else [int(w) for w in args.workers.split(",")]
    jobs = 200 if args.quick else args.jobs
    repeats = 3 if args.quick else args.repeats

    rows = bench_stores(workers, jobs, args.postgres_url)
    print(f"{jobs} tiny jobs per run; ms per job: the mean of each step, and the job's total "
          "(queue + claim + start + complete)")
    print(f"{'store':>8} {'workers':>7} {'queue':>7} {'claim':>7} {'start':>7} {'complete':>8} "
          f"{'total p50':>9} {'total p99':>9} {'total mean':>10} {'again':>7} {'renew':>7} "
          f"{'jobs/s':>7} {'idle':>6}")
    for r in rows:
        print(f"{r['backend']:>8} {r['workers']:>7} {r['queue']:>7.2f} {r['claim']:>7.2f} "
              f"{r['start']:>7.2f} {r['complete']:>8.2f} {r['total_p50']:>9.2f} "
              f"{r['total_p99']:>9.2f} {r['total_mean']:>10.2f} {r['again']:>7.2f} {r['renew']:>7.2f} "
              f"{r['jobs_per_s']:>7.0f} {r['idle']:>6.2f}")
    around = bench_around_ffmpeg(args.clip_seconds, repeats)
    print(f"\naround ffmpeg, on a {args.clip_seconds:g} s clip (median of {repeats}): ffmpeg -c copy "
          f"{around['ffmpeg_copy']:.1f} ms" + (f", ffprobe {around['ffprobe']:.1f} ms"
                                               if "ffprobe" in around else ", no ffprobe"))


if __name__ == "__main__":
    main()
