"""Benchmark: what `bulletproof run` costs over running the same ffmpeg commands by hand.

    .venv/bin/python bench/bench_overhead.py [--clips 8] [--workers 2] [--seconds 10]
        [--size 640x360] [--rate 25] [--repeats 3] [--direct both|xargs|pool] [--quick]

One sample clip (testsrc + sine, made once with bulletproof.samples.make_clip and kept in a
cache folder) is copied N times into a staging folder. Each repeat then runs:

1. monitor: a real `python -m bulletproof run --config monitor.yaml` subprocess (max_workers P,
   stability_seconds 0.5, ffmpeg.nice 0, rule *.mp4 -> h264_mp4, api disabled). Once its log says
   the watch folder is up, the N clips are renamed into the watch folder (t0) and the job table
   is polled read-only until all N jobs are completed. Wall time = last finished_at - t0.
2. direct (xargs): the very argument lists the monitor runs (bulletproof.ffmpeg.build_command
   with the same binaries, profile and ffmpeg settings), fed NUL-separated to
   `xargs -0 -n L -P P ffmpeg` (no shell ever sees a file name; ffmpeg's stdout to /dev/null).
3. direct (pool): the same argument lists through a pool of P threads running subprocess.run
   with stdout/stderr on pipes, as the monitor has them; gives each command's own run time.

Reported: the wall times (median over the repeats), the ratio monitor/direct (goal: at most
1.05 for clips of about 10 s), and where the difference goes, from the monitor's job table:
time from the drop to the first job start (stability window + detection), queue wait of the
first P jobs, hand-off gaps (a slot freeing -> the next job starting), each job's busy time
(started_at -> finished_at: probe + ffmpeg + bookkeeping) against the direct per-command time,
ffprobe's own time on one clip, and the CPU the monitor process itself used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from bulletproof.config import load_config  # noqa: E402
from bulletproof.ffmpeg import build_command  # noqa: E402
from bulletproof.ffprobe import find_ffmpeg, probe  # noqa: E402
from bulletproof.samples import make_clip  # noqa: E402

PROFILE = "h264_mp4"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- helpers ---------------------------------------------------------------------------------


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths, strict=False)))
    line = "-" * len(fmt(header))
    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of a live process in seconds: itself, its waited-for children."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_status(pid: int, key: str) -> int:
    """A kB value from /proc/PID/status (e.g. VmHWM), in bytes; 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cached_clip(cache: Path, ffmpeg: str, seconds: float, size: str, rate: int) -> Path:
    path = cache / f"clip-{seconds:g}s-{size}-{rate}fps.mp4"
    if not path.exists():
        print(f"making the sample clip {path} ...", flush=True)
        tmp = path.with_name("partial-" + path.name)
        make_clip(ffmpeg, tmp, seconds=seconds, size=size, rate=rate)
        os.replace(tmp, path)
    return path


# -- the monitor run -------------------------------------------------------------------------


def write_config(work: Path, workers: int, stability: float) -> Path:
    data = {
        "monitor_folder": "incoming",
        "output_folder": "processed",
        "max_workers": workers,
        "stability_seconds": stability,
        "rescan_interval": 60,
        "database": "state/jobs.db",
        "ffmpeg": {"nice": 0},
        "log": {"level": "info"},
        "rules": [{"name": "videos", "extensions": ["mp4"], "profile": PROFILE}],
        "api": {"enabled": False},
    }
    path = work / "monitor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class LogReader(threading.Thread):
    """Drains the monitor's stderr; flags when the watch folder is up."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.up = threading.Event()

    def run(self) -> None:
        for raw in self.stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "watch folder up" in line or "is up" in line:
                self.up.set()


def run_monitor(work: Path, staged: list[Path], workers: int, stability: float,
                timeout: float) -> dict:
    incoming = work / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    config_path = write_config(work, workers, stability)
    proc = subprocess.Popen([sys.executable, "-m", "bulletproof", "run", "--config", str(config_path)],
                            cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    reader = LogReader(proc.stderr)
    reader.start()
    db_path = work / "state" / "jobs.db"
    try:
        if not reader.up.wait(30) or proc.poll() is not None:
            raise RuntimeError("the monitor did not come up:\n" + "\n".join(reader.lines[-20:]))
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.time()
        for path in staged:
            os.rename(path, incoming / path.name)
        deadline = time.monotonic() + timeout
        db = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the monitor exited:\n" + "\n".join(reader.lines[-20:]))
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for the jobs")
            if db is None and db_path.exists():
                db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            if db is not None:
                counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
                if counts.get("failed") or counts.get("cancelled"):
                    raise RuntimeError(f"jobs failed: {counts}\n" + "\n".join(reader.lines[-20:]))
                if counts.get("completed", 0) >= len(staged):
                    break
            time.sleep(0.05)
        cpu1 = proc_cpu_seconds(proc.pid)
        hwm = proc_status(proc.pid, "VmHWM")
        rows = db.execute("SELECT created_at, started_at, finished_at, media_duration, attempts "
                          "FROM jobs ORDER BY id").fetchall()
        db.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    created = [r[0] for r in rows]
    started = [r[1] for r in rows]
    finished = [r[2] for r in rows]
    return {
        "t0": t0, "created": created, "started": started, "finished": finished,
        "attempts": [r[4] for r in rows], "wall": max(finished) - t0,
        "cpu": cpu1[0] - cpu0[0], "child_cpu": cpu1[1] - cpu0[1], "hwm": hwm,
    }


# -- the direct runs -------------------------------------------------------------------------


def direct_commands(config_path: Path, sources: list[Path], out: Path) -> list[list[str]]:
    config = load_config(config_path)
    binaries = find_ffmpeg(config.ffmpeg)
    profile = config.all_profiles()[PROFILE]
    out.mkdir(parents=True, exist_ok=True)
    return [build_command(binaries, profile, src, out / f"{src.stem}.{profile.extension}", config.ffmpeg)
            for src in sources]


def run_xargs(commands: list[list[str]], workers: int) -> float:
    length = {len(c) for c in commands}
    programs = {c[0] for c in commands}
    assert len(length) == 1 and len(programs) == 1, "xargs -n needs argument lists of one length"
    data = b"".join(os.fsencode(arg) + b"\0" for cmd in commands for arg in cmd[1:])
    argv = ["xargs", "-0", "-r", "-n", str(length.pop() - 1), "-P", str(workers), programs.pop()]
    cpu0 = children_cpu()
    t0 = time.time()
    done = subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.time() - t0
    if done.returncode != 0:
        raise RuntimeError(f"xargs/ffmpeg failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return wall, children_cpu() - cpu0


def run_pool(commands: list[list[str]], workers: int) -> tuple[float, list[float], float]:
    def one(cmd: list[str]) -> float:
        start = time.time()
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        return time.time() - start

    cpu0 = children_cpu()
    t0 = time.time()
    with ThreadPoolExecutor(workers) as pool:
        each = list(pool.map(one, commands))
    return time.time() - t0, each, children_cpu() - cpu0


def time_probe(clip: Path, runs: int = 7) -> tuple[float, float, float]:
    """Median seconds of one ffprobe subprocess (as the worker runs it) and of bulletproof's probe()."""
    from bulletproof.config import FfmpegSettings

    binaries = find_ffmpeg(FfmpegSettings())
    raw, wrapped = [], []
    args = [binaries.ffprobe, "-v", "error", "-show_entries", "format=duration:stream=codec_type",
            "-of", "json", "file:" + str(clip)]
    cpu0 = children_cpu()
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, check=True)
        raw.append(time.perf_counter() - t)
    cpu = (children_cpu() - cpu0) / runs

    async def via_core() -> None:
        for _ in range(runs):
            t = time.perf_counter()
            await probe(binaries, clip)
            wrapped.append(time.perf_counter() - t)

    asyncio.run(via_core())
    return med(raw), med(wrapped), cpu


# -- analysis --------------------------------------------------------------------------------


def breakdown(m: dict, workers: int) -> dict:
    t0, created, started, finished = m["t0"], m["created"], m["started"], m["finished"]
    starts, finishes = sorted(started), sorted(finished)
    first_wait = [s - c for c, s in sorted(zip(created, started, strict=False), key=lambda x: x[1])[:workers]]
    handoff = [starts[k] - finishes[k - workers] for k in range(workers, len(starts))]
    busy = [f - s for s, f in zip(started, finished, strict=False)]
    return {
        "detect_first": min(created) - t0,
        "detect_last": max(created) - t0,
        "first_start": min(started) - t0,
        "first_wait": med(first_wait),
        "handoff": med(handoff) if handoff else 0.0,
        "handoff_sum": sum(handoff) / workers if handoff else 0.0,
        "handoff_max": max(handoff) if handoff else 0.0,
        "busy": med(busy),
        "steady": finishes[-1] - starts[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="N clips per run (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="parallelism P (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    parser.add_argument("--size", default="640x360", help="clip frame size (default 640x360)")
    parser.add_argument("--rate", type=int, default=25, help="clip frame rate (default 25)")
    parser.add_argument("--stability", type=float, default=0.5, help="stability_seconds (default 0.5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; medians reported")
    parser.add_argument("--direct", choices=["both", "xargs", "pool"], default="both")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bulletproof-bench-cache",
                        help="where the sample clip is kept between runs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per monitor run")
    parser.add_argument("--quick", action="store_true", help="4 clips of 4 s, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.seconds, args.repeats = 4, 4.0, 1

    binaries = find_ffmpeg(load_config_defaults())
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    clip = cached_clip(args.cache_dir, binaries.ffmpeg, args.seconds, args.size, args.rate)
    probe_raw, probe_core, probe_cpu = time_probe(clip)
    load_before = os.getloadavg()

    monitor_runs, xargs_walls, pool_walls, pool_each = [], [], [], []
    xargs_cpu, pool_cpu = [], []
    with tempfile.TemporaryDirectory(prefix="bp-bench-overhead-") as tmp:
        # One uncounted direct run first: warms the page cache, the binaries and the CPU clocks.
        warm = Path(tmp) / "warm"
        warm.mkdir()
        warm_src = [warm / f"w{i}.mp4" for i in range(args.workers)]
        for path in warm_src:
            shutil.copyfile(clip, path)
        write_config(warm, args.workers, args.stability)
        run_pool(direct_commands(warm / "monitor.yaml", warm_src, warm / "out"), args.workers)
        sides = ["monitor"] + [s for s in ("xargs", "pool") if args.direct in ("both", s)]
        for rep in range(args.repeats):
            work = Path(tmp) / f"run-{rep}"
            staging, direct_src = work / "staging", work / "direct-src"
            staging.mkdir(parents=True)
            direct_src.mkdir()
            staged, sources = [], []
            for i in range(args.clips):
                for folder, out in ((staging, staged), (direct_src, sources)):
                    dst = folder / f"clip-{i:03d}.mp4"
                    shutil.copyfile(clip, dst)
                    out.append(dst)
            config_path = write_config(work, args.workers, args.stability)
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]  # rotate who goes first
            for side in order:
                if side == "monitor":
                    monitor_runs.append(run_monitor(work, staged, args.workers, args.stability, args.timeout))
                elif side == "xargs":
                    cmds = direct_commands(config_path, sources, work / "direct-xargs")
                    wall, cpu = run_xargs(cmds, args.workers)
                    xargs_walls.append(wall)
                    xargs_cpu.append(cpu)
                else:
                    cmds = direct_commands(config_path, sources, work / "direct-pool")
                    wall, each, cpu = run_pool(cmds, args.workers)
                    pool_walls.append(wall)
                    pool_cpu.append(cpu)
                    pool_each += each
            m = monitor_runs[-1]
            ref = xargs_walls[-1] if xargs_walls else pool_walls[-1]
            directs = (("xargs", xargs_walls), ("pool", pool_walls))
            print(f"repeat {rep + 1}/{args.repeats} (order {', '.join(order)}): "
                  f"monitor {m['wall']:.2f} s, direct "
                  + ", ".join(f"{n} {w[-1]:.2f} s" for n, w in directs if w)
                  + f", ratio {m['wall'] / ref:.3f}", flush=True)
        # Show one real command line, as the monitor runs it.
        example = direct_commands(config_path, sources[:1], work / "x")[0]
    load_after = os.getloadavg()
    # -- report ------------------------------------------------------------------------------
    bds = [breakdown(m, args.workers) for m in monitor_runs]
    mon_wall = med([m["wall"] for m in monitor_runs])
    bd = {k: med([b[k] for b in bds]) for k in bds[0]}
    cpu = med([m["cpu"] for m in monitor_runs])
    print()
    print(f"{args.clips} clips of {args.seconds:g} s {args.size}@{args.rate} testsrc+sine "
          f"({clip.stat().st_size / 1e6:.2f} MB), profile {PROFILE}, P={args.workers}, "
          f"stability_seconds {args.stability:g}, {args.repeats} repeat(s), {os.cpu_count()} CPUs")
    print("command: " + " ".join(example[:1] + [a if " " not in a else repr(a) for a in example[1:]]))
    print()
    rows = [["bulletproof run", f"{mon_wall:.2f}", "", "drop -> last job finished"]]
    ref_name, ref_wall = None, None
    for name, walls, what in (("xargs -0 -P", xargs_walls, "same argv, stdout to /dev/null"),
                              ("subprocess pool", pool_walls, "same argv, stdout/stderr piped")):
        if walls:
            w = med(walls)
            ref_name, ref_wall = (ref_name, ref_wall) if ref_wall else (name, w)
            rows.append([name, f"{w:.2f}", f"{mon_wall / w:.3f}", what])
    rows.append(["bulletproof, steady part", f"{bd['steady']:.2f}", f"{bd['steady'] / ref_wall:.3f}",
                 "first job start -> last finish"])
    print(table(rows, ["run", "wall s", "ratio", "what"]))
    best_ref = min(xargs_walls or pool_walls)
    best_mon = min(m["wall"] for m in monitor_runs)
    print(f"(medians over the repeats; best-of-{args.repeats}: bulletproof {best_mon:.2f} s,"
          f" {ref_name} {best_ref:.2f} s, ratio {best_mon / best_ref:.3f};"
          f" load average 1 min {load_before[0]:.2f} before, {load_after[0]:.2f} after:"
          f" other load on the machine makes single runs noisy)")
    print(f"(ratio = bulletproof / direct; goal <= 1.05 for clips of about 10 s; "
          f"per-repeat ratios vs {ref_name}: "
          + ", ".join(f"{m['wall'] / w:.3f}"
                      for m, w in zip(monitor_runs, xargs_walls or pool_walls, strict=True)) + ")")
    print()
    delta = mon_wall - ref_wall
    rounds = -(-args.clips // args.workers)
    per_job_extra = bd["busy"] - med(pool_each) if pool_each else float("nan")
    steady_extra = bd["steady"] - ref_wall
    rest = steady_extra - bd["handoff_sum"] - (rounds * per_job_extra if pool_each else 0.0)
    rows = [
        ["difference to direct", f"{delta:.3f}", "monitor wall - direct wall"],
        ["drop -> first job queued", f"{bd['detect_first']:.3f}",
         f"stability window {args.stability:g} s + event/tick/stat"],
        ["drop -> last job queued", f"{bd['detect_last']:.3f}", "all N files settled"],
        ["drop -> first job started", f"{bd['first_start']:.3f}", "(a) the part before any ffmpeg runs"],
        ["steady part - direct wall", f"{steady_extra:.3f}", "(b) = difference - (a); split below"],
        ["queue wait, first P jobs", f"{bd['first_wait'] * 1000:.1f} ms", "created_at -> started_at"],
        ["hand-off gap (median)", f"{bd['handoff'] * 1000:.1f} ms",
         "a slot's job finished_at -> next started_at"],
        ["hand-off gap (max)", f"{bd['handoff_max'] * 1000:.1f} ms", ""],
        [f"hand-off gaps per slot ({rounds - 1} rounds)", f"{bd['handoff_sum']:.3f}", "part of (b)"],
        ["job busy time (median)", f"{bd['busy']:.3f}", "started_at -> finished_at (probe+ffmpeg+DB)"],
        ["direct ffmpeg time (median)", f"{med(pool_each):.3f}" if pool_each else "n/a",
         "per command, subprocess pool"],
        ["busy - direct, per job", f"{per_job_extra:.3f}",
         f"x {rounds} rounds = {rounds * per_job_extra:.3f} s of (b)"],
        ["ffprobe on one clip", f"{probe_raw * 1000:.1f} ms", "subprocess, median of 7"],
        ["bulletproof probe() on one clip", f"{probe_core * 1000:.1f} ms", "asyncio subprocess + parse"],
        ["rest of (b)", f"{rest:.3f}", "(b) - gaps - per-job excess: noise, slot imbalance"],
        ["monitor process CPU", f"{cpu:.3f}",
         f"utime+stime of the Python process over the batch ({100 * cpu / mon_wall:.1f} % of one CPU)"],
        ["monitor peak RSS", f"{med([m['hwm'] for m in monitor_runs]) / 2**20:.1f} MiB", "VmHWM"],
    ]
    print(table(rows, ["where the difference goes", "seconds", "note"]))
    print()
    # CPU seconds are far less sensitive to other load on the machine than wall times.
    self_cpu = med([m["cpu"] for m in monitor_runs])
    child = med([m["child_cpu"] for m in monitor_runs])
    direct_cpu = med(xargs_cpu or pool_cpu)
    rows = [
        ["bulletproof: Python process", f"{self_cpu:.2f}", ""],
        ["bulletproof: children", f"{child:.2f}", "ffmpeg + ffprobe (cutime+cstime)"],
        ["bulletproof: total", f"{self_cpu + child:.2f}", f"{(self_cpu + child) / direct_cpu:.3f}"],
    ]
    for name, cpus in (("xargs -0 -P", xargs_cpu), ("subprocess pool", pool_cpu)):
        if cpus:
            rows.append([f"direct, {name}", f"{med(cpus):.2f}", f"{med(cpus) / direct_cpu:.3f}"])
    rows.append(["ffprobe CPU, N probes", f"{args.clips * probe_cpu:.2f}",
                 f"{probe_cpu * 1000:.0f} ms per probe (measured) x N"])
    print(table(rows, ["CPU seconds over the batch (median)", "CPU s", "ratio"]))


def load_config_defaults():
    from bulletproof.config import FfmpegSettings

    return FfmpegSettings(nice=0)


if __name__ == "__main__":
    main()
