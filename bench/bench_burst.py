"""Benchmark: a burst of 10,000 small files dropped at once into a watched folder.

    .venv/bin/python bench/bench_burst.py [--files 10000] [--size 1024] [--stability 1]
        [--rescan-interval 60] [--no-restart] [--profile] [--quick]

A real Monitor runs in this process with its queue paused (so nothing transcodes; the watcher
keeps queueing), rule `*.mp4 -> h264_mp4`, no rule for `.txt`. N files of `--size` bytes (half
.mp4, half .txt) are first written into a staging folder beside the watch folder (same
filesystem), then a separate process renames them all into the watch folder as fast as it can.
Measured, from the first rename:

- the time until every file is accounted for: JobQueued (the .mp4 files) + FileIgnored (the
  .txt files, reason no_rule) events, counted from monitor.bus; also from the last rename, and
  that minus the stability window;
- peak RSS of this process during the burst (VmHWM, reset through /proc/self/clear_refs just
  before the burst when the kernel allows, so the figure is the burst's own), its baseline
  before the burst, and ru_maxrss over the whole run;
- the worst event-loop stall during the burst (what an HTTP API in the same loop would feel);
- one full rescan of the N settled files: the watcher's own reconcile step, awaited directly
  (what each periodic rescan costs), and the bare directory walk alone;
- a restart over the same folder and database (unless --no-restart): time from start() until
  all N files are accounted for again (as no_rule / already-queued), and its peak RSS.

Goals: all N queued or ignored within a few seconds past the stability window with no
file missed; bounded memory (tens of MB, not hundreds); a rescan that costs well under a second
for 10k files and keeps the event loop responsive.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import LagProbe, bench_config  # noqa: E402
from bulletproof import events as ev  # noqa: E402
from bulletproof import watcher as watcher_mod  # noqa: E402
from bulletproof.config import FfmpegSettings  # noqa: E402
from bulletproof.ffprobe import find_ffmpeg  # noqa: E402
from bulletproof.service import Monitor  # noqa: E402

RENAMER = r"""
import os, sys, time
src, dst = sys.argv[1], sys.argv[2]
names = sorted(os.listdir(src))
t0 = time.time()
for name in names:
    os.rename(os.path.join(src, name), os.path.join(dst, name))
print(t0, time.time(), len(names))
"""


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=False)))
    return "\n".join([fmt(header), "-" * len(fmt(header)), *(fmt(r) for r in rows)])


def status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Tally:
    """Counts JobQueued and FileIgnored events and remembers the last one's time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first_at: float | None = None
        self.last_at = 0.0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.JobQueued):
            key = f"queued ({event.trigger.value})"
        elif isinstance(event, ev.FileIgnored):
            key = f"ignored ({event.reason.value})"
        else:
            return
        self.counts[key] += 1
        self.first_at = self.first_at or event.at
        self.last_at = event.at

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def run(args: argparse.Namespace, base: Path) -> dict:
    staging, incoming = base / "staging", base / "incoming"
    staging.mkdir()
    incoming.mkdir()
    payload = os.urandom(args.size)
    t = time.perf_counter()
    for i in range(args.files):
        ext = "mp4" if i % 2 == 0 else "txt"
        fd = os.open(staging / f"file-{i:06d}.{ext}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    staging_s = time.perf_counter() - t
    config = bench_config(base, stability_seconds=args.stability, rescan_interval=args.rescan_interval)
    binaries = find_ffmpeg(FfmpegSettings(nice=0))
    out: dict = {"staging_s": staging_s}

    # -- the burst ------------------------------------------------------------------------------
    monitor = Monitor(config, binaries=binaries)
    monitor.pause_queue()
    tally = Tally()
    monitor.bus.subscribe(tally)
    await monitor.start()
    await asyncio.sleep(0.2)
    out["rss_base_kb"] = status_kb("VmRSS")
    out["hwm_reset"] = reset_peak()
    lag = LagProbe()
    lag.start()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", RENAMER, str(staging), str(incoming),
                                                stdout=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    t_first, t_last, moved = stdout.split()
    t_first, t_last = float(t_first), float(t_last)
    complete = await wait_for(lambda: tally.total >= args.files, args.timeout)
    settled_at = time.time() if not complete else tally.last_at
    if profiler:
        profiler.disable()
    out.update({
        "moved": int(moved), "rename_s": t_last - t_first, "complete": complete,
        "to_all": settled_at - t_first, "after_last": settled_at - t_last,
        "to_first": (tally.first_at or settled_at) - t_first,
        "counts": dict(tally.counts), "lag": await lag.stop(), "hwm_kb": status_kb("VmHWM"),
        "pending_after": monitor.watcher.pending_count() if monitor.watcher else -1,
    })
    await asyncio.sleep(0.5)
    out["extra_events"] = tally.total - args.files  # anything reported twice shows up here

    # -- one full rescan of the settled folder ------------------------------------------------------
    watcher = monitor.watcher
    assert watcher is not None
    before = tally.total
    lag.start()
    t = time.perf_counter()
    await watcher._reconcile(everything=True)  # the step each periodic rescan runs
    out["rescan_s"] = time.perf_counter() - t
    await asyncio.sleep(args.stability + 0.5)
    out["rescan_lag"] = await lag.stop()
    out["rescan_new_events"] = tally.total - before
    t = time.perf_counter()
    # scan_tree lived in bulletproof.watcher as _scan_tree before it moved to bulletproof.scan
    walk = getattr(watcher_mod, "scan_tree", None) or watcher_mod._scan_tree
    found = await asyncio.to_thread(walk, str(incoming), True, frozenset())
    out["walk_s"] = time.perf_counter() - t
    out["walk_n"] = len(found)
    await monitor.stop()

    if profiler:
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        print("\ncProfile of the burst (event-loop thread), top 25 by cumulative time:")
        stats.print_stats(25)
        print("top 15 by own time:")
        stats.sort_stats("tottime").print_stats(15)

    # -- a restart over the same folder and database --------------------------------------------
    if not args.no_restart:
        monitor = Monitor(config, binaries=binaries)
        tally2 = Tally()
        monitor.bus.subscribe(tally2)
        reset_peak()
        lag.start()
        t0 = time.time()
        await monitor.start()
        started_s = time.time() - t0
        complete2 = await wait_for(lambda: tally2.total >= args.files, args.timeout)
        out["restart"] = {
            "start_s": started_s, "complete": complete2,
            "to_all": (tally2.last_at if complete2 else time.time()) - t0,
            "counts": dict(tally2.counts), "lag": await lag.stop(), "hwm_kb": status_kb("VmHWM"),
        }
        await monitor.stop()
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="files in the burst (default 10000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per file (default 1024)")
    parser.add_argument("--stability", type=float, default=1.0, help="stability_seconds (default 1)")
    parser.add_argument("--rescan-interval", type=float, default=60.0, help="rescan_interval (default 60)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    parser.add_argument("--profile", action="store_true", help="cProfile the burst and print the top")
    parser.add_argument("--quick", action="store_true", help="1000 files")
    args = parser.parse_args()
    if args.quick:
        args.files = 1000
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bp-bench-burst-") as tmp:
        r = asyncio.run(run(args, Path(tmp)))

    n = args.files
    print()
    print(f"{n} files of {args.size} B ({(n + 1) // 2} .mp4 -> rule, {n // 2} .txt -> no rule), renamed in "
          f"from a staging folder on the same filesystem by a separate process; queue paused; "
          f"stability_seconds {args.stability:g}, rescan_interval {args.rescan_interval:g}; "
          f"{os.cpu_count()} CPUs")
    print()
    mib = lambda kb: f"{kb / 1024:.1f} MiB"  # noqa: E731
    rows = [
        ["write the files into staging", f"{r['staging_s']:.3f} s", "(setup, not part of the burst)"],
        ["rename all into the watch folder", f"{r['rename_s']:.3f} s", f"{r['moved']} renames"],
        ["first rename -> first event", f"{r['to_first']:.3f} s", ""],
        ["first rename -> all accounted for", f"{r['to_all']:.3f} s",
         "all queued or ignored" if r["complete"] else "INCOMPLETE at the timeout"],
        ["last rename -> all accounted for", f"{r['after_last']:.3f} s",
         f"of which the window: {args.stability:g} s"],
        ["  beyond the window", f"{r['after_last'] - args.stability:.3f} s", ""],
        ["throughput", f"{n / max(r['to_all'], 1e-9):.0f} files/s", "N / (first rename -> all)"],
        *([f"  events: {k}", str(v), ""] for k, v in sorted(r["counts"].items())),
        ["duplicate events after", str(r["extra_events"]), "must be 0"],
        ["files still pending", str(r["pending_after"]), "must be 0"],
        ["RSS before the burst", mib(r["rss_base_kb"]), "VmRSS, monitor started, folder empty"],
        ["peak RSS during the burst", mib(r["hwm_kb"]),
         "VmHWM" + (" since a reset just before the burst" if r["hwm_reset"]
                    else " (whole process: reset refused)")],
        ["  growth over the baseline", mib(r["hwm_kb"] - r["rss_base_kb"]), ""],
        ["worst event-loop stall, burst", f"{r['lag'] * 1000:.0f} ms",
         "lateness of a 20 ms sleeper; goal < 100 ms"],
        [f"full rescan of {n} settled files", f"{r['rescan_s'] * 1000:.0f} ms",
         "watcher reconcile step (health check + walk + diff)"],
        ["  bare directory walk", f"{r['walk_s'] * 1000:.0f} ms", f"{r['walk_n']} files, scandir + stat"],
        ["  new events from the rescan", str(r["rescan_new_events"]), "must be 0"],
        ["  worst event-loop stall, rescan", f"{r['rescan_lag'] * 1000:.0f} ms", ""],
    ]
    if "restart" in r:
        rs = r["restart"]
        rows += [
            ["restart: start() returns", f"{rs['start_s']:.3f} s", "includes the initial scan"],
            ["restart: all accounted for", f"{rs['to_all']:.3f} s",
             "from start()" if rs["complete"] else "INCOMPLETE at the timeout"],
            *([f"  restart events: {k}", str(v), ""] for k, v in sorted(rs["counts"].items())),
            ["restart: peak RSS", mib(rs["hwm_kb"]), "VmHWM since the restart"],
            ["restart: worst event-loop stall", f"{rs['lag'] * 1000:.0f} ms", ""],
        ]
    rows.append(["ru_maxrss, whole run", mib(r["maxrss_kb"]), "resource.getrusage(RUSAGE_SELF)"])
    print(table(rows, ["burst", "figure", "note"]))


if __name__ == "__main__":
    main()
