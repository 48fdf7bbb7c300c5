"""Benchmark: what libraries cost: translating a path, and claiming only the jobs a node can run.

    python bench/bench_libraries.py [--history 100000] [--queued 200] [--foreign 0,1000,10000]

- **translate**: microseconds per `PathMap.to_fleet` and `PathMap.to_local` call (a map of
  four libraries), the work added to queueing a file and to each path a worker touches.
- **claim**: per job, `SqliteJobStore.claim` + `mark_completed` over `--queued` jobs of this
  node's library on a history of `--history` finished jobs: without a filter (`within=None`,
  what a monitor without the filter would do), and with the node's prefixes while `--foreign`
  jobs of a library it lacks wait *ahead* of them in the queue (the worst case: each claim
  skips them all).

Goal: translation in microseconds (tens at most); a filtered claim in the low milliseconds
even behind ten thousand foreign jobs.
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

from bench.bench_metrics import fill_fast  # noqa: E402
from bulletproof.libraries import PathMap  # noqa: E402
from bulletproof.sqlite_store import SqliteJobStore  # noqa: E402
from bulletproof.store import NewJob  # noqa: E402

MAP = PathMap({"media": Path("/mnt/nas/media"), "tv": Path("/mnt/nas/tv"),
               "music": Path("/srv/music"), "archive": Path("/archive")})


def translate_us(calls: int) -> tuple[float, float]:
    """Microseconds per to_fleet and per to_local call."""
    local = Path("/mnt/nas/tv/show/season-01/episode-0001.mkv")
    t0 = time.perf_counter()
    for _ in range(calls):
        fleet = MAP.to_fleet(local)
    to_fleet = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    for _ in range(calls):
        MAP.to_local(fleet)
    return to_fleet, (time.perf_counter() - t0) / calls * 1e6


def queue(store: SqliteJobStore, library: str, n: int, tag: str) -> None:
    for i in range(n):
        rel = f"{tag}/clip-{i:05d}.mp4"
        store.add(NewJob(f"{library}:incoming/{rel}", rel, f"{library}:incoming", 1000 + i, i,
                         "h264_mp4", "videos", f"{library}:out/{rel}"))


def claim_ms(store: SqliteJobStore, within: list[str] | None, count: int) -> tuple[float, float]:
    """Median and p99 ms of claim + mark_completed, for `count` claims."""
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        claim = store.claim("bench", now=time.time(), lease_seconds=120, within=within)
        assert claim is not None
        store.mark_completed(claim.job.id, now=time.time(), output_bytes=1, media_duration=None,
                             token=claim.token)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=100_000, help="finished jobs in the store")
    parser.add_argument("--queued", type=int, default=200, help="this node's jobs claimed per run")
    parser.add_argument("--foreign", default="0,1000,10000",
                        help="jobs of a library the node lacks, queued ahead of its own")
    args = parser.parse_args()
    to_fleet, to_local = translate_us(100_000)
    print(f"to_fleet {to_fleet:.2f} us/call, to_local {to_local:.2f} us/call (4 libraries)")
    print(f"\n{args.history} finished jobs; {args.queued} jobs of this node claimed per run")
    print(f"{'foreign ahead':>13} {'within':>14} {'claim p50 ms':>13} {'claim p99 ms':>13}")
    for foreign in [int(f) for f in args.foreign.split(",")]:
        for within in (None, MAP.claim_prefixes()):
            if within is None and foreign:
                continue  # unfiltered, it would take the foreign jobs: nothing to compare
            with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
                store = SqliteJobStore(Path(tmp) / "jobs.db")
                fill_fast(store, args.history, Path(tmp) / "incoming", random.Random(1))
                queue(store, "elsewhere", foreign, "foreign")
                queue(store, "media", args.queued, "own")
                p50, p99 = claim_ms(store, within, args.queued)
                store.close()
            shown = "none" if within is None else f"{len(within)} prefixes"
            print(f"{foreign:>13} {shown:>14} {p50:>13.2f} {p99:>13.2f}")


if __name__ == "__main__":
    main()
