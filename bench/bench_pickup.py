"""Benchmark: pickup latency, from a file's last write to its job being queued and started.

    .venv/bin/python bench/bench_pickup.py [--files 30] [--stability 1,5] [--watch inotify,polling]
        [--poll-interval 1] [--workers 2] [--quick]

For each (watch kind, stability window) pair, a real Monitor runs in this process (queue running,
real ffmpeg) over an empty watch folder. A writer thread then writes M files one at a time, at
random intervals, each in a few chunks with short pauses (a slow copy: the chunk pauses are
shorter than the window, so a correct monitor never picks a file up mid-copy). Each file holds a
real 1 s clip, so its job starts, transcodes and completes. The time of each file's last write
is time.time() right after its final write + close; the job's JobQueued and JobStarted events
(subscribed on monitor.bus) carry their own `at` timestamps.

Why in-process: the events give the exact moment of each transition without parsing logs or
polling the database, and the writer thread is the only other thing in the process. (The same
code path runs under `bulletproof run`; the CLI adds only logging.)

Reported per case: p50 / p95 / max of write -> queued and write -> started, the minimum (which
must be at least the window: a lower figure would be a file picked up while still changing),
the queued -> started gap, how many jobs did not complete, and the worst event-loop stall seen.
Goal: write -> started within the window plus the watcher's check interval (tick = window/4,
at most 0.5 s, so at most window + 2 ticks), plus one poll interval for a polling folder.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import LagProbe, bench_config  # noqa: E402
from bulletproof import events as ev  # noqa: E402
from bulletproof.config import FfmpegSettings  # noqa: E402
from bulletproof.ffprobe import find_ffmpeg  # noqa: E402
from bulletproof.models import Outcome  # noqa: E402
from bulletproof.samples import make_clip  # noqa: E402
from bulletproof.service import Monitor  # noqa: E402


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=False)))
    return "\n".join([fmt(header), "-" * len(fmt(header)), *(fmt(r) for r in rows)])


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..1)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def write_files(folder: Path, data: bytes, args: argparse.Namespace, seed: int,
                last_write: dict[str, float], done: threading.Event) -> None:
    """Writer thread: M files, one at a time, random gaps, each in chunks with short pauses."""
    rng = random.Random(seed)
    n_chunks = max(1, args.chunks)
    step = -(-len(data) // n_chunks)
    try:
        for i in range(args.files):
            time.sleep(rng.uniform(args.gap_min, args.gap_max))
            path = folder / f"upload-{i:04d}.mp4"
            with open(path, "wb", buffering=0) as fh:
                for c in range(n_chunks):
                    if c:
                        time.sleep(rng.uniform(0, args.chunk_pause))
                    fh.write(data[c * step:(c + 1) * step])
            last_write[str(path)] = time.time()
    finally:
        done.set()


async def run_case(watch: str, stability: float, args: argparse.Namespace, data: bytes,
                   binaries) -> dict:
    with tempfile.TemporaryDirectory(prefix="bp-bench-pickup-") as tmp:
        base = Path(tmp)
        (base / "incoming").mkdir()
        config = bench_config(
            base, monitor_folder=[{"path": "incoming", "polling": watch == "polling",
                                   "poll_interval": args.poll_interval}],
            max_workers=args.workers, stability_seconds=stability, rescan_interval=args.rescan_interval)
        monitor = Monitor(config, binaries=binaries)
        queued: dict[str, float] = {}
        started: dict[str, float] = {}
        outcome: dict[str, Outcome] = {}

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.JobQueued):
                queued.setdefault(event.job.source_path, event.at)
            elif isinstance(event, ev.JobStarted):
                started.setdefault(event.job.source_path, event.at)
            elif isinstance(event, ev.JobFinished) and not event.will_retry:
                outcome[event.job.source_path] = event.outcome

        monitor.bus.subscribe(on_event)
        await monitor.start()
        lag = LagProbe()
        lag.start()
        last_write: dict[str, float] = {}
        done = threading.Event()
        seed = args.seed + int(stability * 1000) + (7 if watch == "polling" else 0)
        t_start = time.monotonic()
        try:
            await asyncio.to_thread(write_files, base / "incoming", data, args, seed, last_write, done)
            deadline = time.monotonic() + stability + args.poll_interval + 60
            while len(outcome) < args.files and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            await lag.stop()
            await monitor.stop()
        elapsed = time.monotonic() - t_start
    paths = sorted(last_write)
    to_q = [queued[p] - last_write[p] for p in paths if p in queued]
    to_s = [started[p] - last_write[p] for p in paths if p in started]
    q_to_s = [started[p] - queued[p] for p in paths if p in started and p in queued]
    tick = max(0.05, min(0.5, stability / 4))
    bound = stability + 2 * tick + (args.poll_interval if watch == "polling" else 0.0)
    return {
        "watch": watch, "stability": stability, "files": len(paths), "to_q": to_q, "to_s": to_s,
        "q_to_s": q_to_s, "early": sum(1 for x in to_q if x < stability),
        "missing": len(paths) - len(to_s),
        "not_completed": sum(1 for p in paths if outcome.get(p) is not Outcome.COMPLETED),
        "lag": lag.worst, "bound": bound, "elapsed": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=30, help="M files per case (default 30)")
    parser.add_argument("--stability", default="1,5", help="stability windows to try, seconds (default 1,5)")
    parser.add_argument("--watch", default="inotify,polling", help="watch kinds: inotify, polling")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="poll_interval of polling folders")
    parser.add_argument("--rescan-interval", type=float, default=600,
                        help="rescan_interval (long, so only events and polling count)")
    parser.add_argument("--workers", type=int, default=2, help="max_workers")
    parser.add_argument("--gap-min", type=float, default=0.1, help="min pause between files, s")
    parser.add_argument("--gap-max", type=float, default=1.0, help="max pause between files, s")
    parser.add_argument("--chunks", type=int, default=4, help="writes per file")
    parser.add_argument("--chunk-pause", type=float, default=0.25, help="max pause between writes, s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bulletproof-bench-cache")
    parser.add_argument("--quick", action="store_true", help="8 files per case")
    args = parser.parse_args()
    if args.quick:
        args.files = 8
    logging.basicConfig(level=logging.WARNING)
    stabilities = [float(s) for s in args.stability.split(",")]
    watches = [w.strip() for w in args.watch.split(",")]
    if any(w not in ("inotify", "polling") for w in watches):
        parser.error("--watch takes inotify and/or polling")
    if any(s < args.chunk_pause for s in stabilities):
        print("note: a window shorter than --chunk-pause may legitimately pick a file up mid-copy")

    binaries = find_ffmpeg(FfmpegSettings(nice=0))
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    clip = args.cache_dir / "pickup-clip-1s-160x120.mp4"
    if not clip.exists():
        make_clip(binaries.ffmpeg, clip, seconds=1, size="160x120")
    data = clip.read_bytes()

    results = []
    for watch in watches:
        for stability in stabilities:
            print(f"running {watch}, stability_seconds {stability:g} ...", flush=True)
            results.append(asyncio.run(run_case(watch, stability, args, data, binaries)))

    print()
    print(f"{args.files} files per case, {len(data)} bytes each in {args.chunks} writes "
          f"(pauses <= {args.chunk_pause:g} s), {args.gap_min:g}-{args.gap_max:g} s between files, "
          f"max_workers {args.workers}; polling folders poll every {args.poll_interval:g} s")
    print("seconds from the last write+close of a file to its JobQueued / JobStarted event")
    print()
    rows = []
    for r in results:
        q, s = r["to_q"], r["to_s"]
        rows.append([
            r["watch"], f"{r['stability']:g}", str(r["files"]),
            f"{pct(q, .5):.3f}", f"{pct(q, .95):.3f}", f"{max(q, default=float('nan')):.3f}",
            f"{min(q, default=float('nan')):.3f}",
            f"{pct(s, .5):.3f}", f"{pct(s, .95):.3f}", f"{max(s, default=float('nan')):.3f}",
            f"{max(r['q_to_s'], default=float('nan')) * 1000:.0f}",
            f"{r['bound']:.2f}", "yes" if max(s, default=1e9) <= r["bound"] else "NO",
            str(r["early"]), str(r["not_completed"]), f"{r['lag'] * 1000:.0f}",
        ])
    print(table(rows, ["watch", "window", "n", "queued p50", "p95", "max", "min",
                       "started p50", "p95", "max", "q->s max ms", "goal <=", "met",
                       "early", "not done", "loop lag ms"]))
    print()
    print("window = stability_seconds; goal = window + 2 x check tick (window/4, <= 0.5 s) "
          "[+ poll_interval when polling]; min must be >= window; early = picked up within the "
          "window of its last write (must be 0); not done = jobs that did not complete; "
          "loop lag = worst event-loop stall")


if __name__ == "__main__":
    main()
