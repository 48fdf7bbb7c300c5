"""Benchmark: control API latency under load while every worker transcodes, and WebSocket event
latency.

    python bench/bench_api.py [--rate 200] [--duration 20] [--ws-events 200] [--workers 2]
                              [--clip-seconds 60] [--clip-size 1280x720] [--nice 10]

Set-up: a real Monitor (max_workers=2 by default, ffmpeg niced to 10 through the config's
`ffmpeg.nice`) and its exporter plugin on 127.0.0.1, on one event loop, as `bulletproof run`
serves them. Generated clips (testsrc, long enough to keep every worker busy for the whole run)
are dropped into the watch folder; the bench starts once every worker transcodes.

Load: a separate process (its own interpreter and event loop, so the client does not share the
server's CPU time slice) runs an aiohttp client issuing requests on a fixed schedule (open loop,
one every 1/rate seconds, whatever the answers do) for `--duration` seconds; the mix per 20
requests: 8 x GET /api/v1/status, 5 x GET /api/v1/jobs?limit=50, 5 x GET /api/v1/queue, and
POST /api/v1/queue/pause + /resume. Latency is from just before a request is sent until its body
has been read.

WebSocket: the same process then connects to /ws/updates and, `--ws-events` times, POSTs
/api/v1/queue/pause or /resume and times how long the matching queue_paused/queue_resumed event
takes to arrive (the control call's start to the event's arrival), while progress events of the
running transcodes flow on the same socket.

Goals: API p99 under 25 ms; WebSocket event p99 under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIX = (["GET /api/v1/status"] * 8 + ["GET /api/v1/jobs?limit=50"] * 5
       + ["GET /api/v1/queue"] * 5 + ["POST /api/v1/queue/pause", "POST /api/v1/queue/resume"])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


# -- the load generator (runs in a child process) -----------------------------------------------


def run_load(url: str, rate: float, duration: float, ws_events: int) -> dict[str, Any]:
    """Entry point of the load process."""
    return asyncio.run(_load(url, rate, duration, ws_events))


async def _load(url: str, rate: float, duration: float, ws_events: int) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(spec: str) -> tuple[str, int, float]:
            method, path = spec.split(" ", 1)
            start = time.perf_counter()
            try:
                async with session.request(method, url + path) as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError:
                status = 0
            return spec, status, (time.perf_counter() - start) * 1000

        for spec in MIX:  # warm up connections and code paths
            await one(spec)

        loop = asyncio.get_running_loop()
        count = int(rate * duration)
        t0 = loop.time() + 0.2
        tasks = []
        lags = []
        for i in range(count):
            target = t0 + i / rate
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append((loop.time() - target) * 1000)
            tasks.append(asyncio.ensure_future(one(MIX[i % len(MIX)])))
        results = await asyncio.gather(*tasks)
        wall = loop.time() - t0
        await one("POST /api/v1/queue/resume")

        ws_latencies: list[float] = []
        other_messages = 0
        async with session.ws_connect(url + "/ws/updates") as ws:
            snapshot = await ws.receive_json(timeout=10)
            assert snapshot["type"] == "snapshot"
            paused = snapshot["status"]["paused"]
            for _ in range(ws_events):
                action = "resume" if paused else "pause"
                expected = "queue_resumed" if paused else "queue_paused"

                async def arrival(expected: str = expected) -> float:
                    nonlocal other_messages
                    while True:
                        message = await ws.receive_json(timeout=10)
                        if message["type"] == expected:
                            return time.perf_counter()
                        other_messages += 1

                waiter = asyncio.ensure_future(arrival())
                start = time.perf_counter()
                async with session.post(f"{url}/api/v1/queue/{action}") as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()
                ws_latencies.append((await waiter - start) * 1000)
                paused = not paused
                await asyncio.sleep(0.02)
        if paused:
            await one("POST /api/v1/queue/resume")
    return {"results": results, "lags": lags, "wall": wall, "ws": ws_latencies,
            "ws_other": other_messages}


# -- the server side (this process) -------------------------------------------------------------


def write_config(root: Path, workers: int, nice: int) -> Path:
    import yaml

    (root / "incoming").mkdir(parents=True, exist_ok=True)
    data = {
        "monitor_folder": "incoming",
        "output_folder": "processed",
        "max_workers": workers,
        "stability_seconds": 0.5,
        "database": "state/bulletproof.db",
        "ffmpeg": {"nice": nice},
        "rules": [{"name": "videos", "extensions": ["mp4"], "profile": "h264_mp4"}],
        "api": {"listen": "127.0.0.1:0", "rate_limit_per_minute": 1_000_000},
    }
    path = root / "monitor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


async def bench(args: argparse.Namespace) -> None:
    from bulletproof.config import load_config
    from bulletproof.ffprobe import find_ffmpeg
    from bulletproof.samples import make_clip
    from bulletproof.service import Monitor
    from exporter.plugin import ExporterPlugin

    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        config_path = write_config(root, args.workers, args.nice)
        config = load_config(config_path)
        binaries = find_ffmpeg(config.ffmpeg)
        clip = root / "clip.mp4"
        print(f"generating a {args.clip_seconds:g} s {args.clip_size} clip ...", flush=True)
        await asyncio.to_thread(make_clip, binaries.ffmpeg, clip, seconds=args.clip_seconds,
                                size=args.clip_size, rate=25)

        # Server-side view, for reading the client's figures: the time each request spent in
        # the app (from the request-metrics middleware's own measurement), and how late the
        # server's event loop wakes up (time the process waits for a CPU, or a blocking call).
        from exporter.metrics.registry import BulletproofMetrics

        handler_ms: list[float] = []
        slowest: list[tuple[float, str]] = []
        observe = BulletproofMetrics.observe_request

        def recording(self: Any, handler: str, method: str, code: int, seconds: float) -> None:
            handler_ms.append(seconds * 1000)
            slowest.append((seconds * 1000, f"{method} {handler}"))
            observe(self, handler, method, code, seconds)

        BulletproofMetrics.observe_request = recording  # type: ignore[method-assign]

        monitor = Monitor(config, config_path=config_path, binaries=binaries)
        await monitor.start()
        plugin = ExporterPlugin(monitor.context())
        await plugin.start()
        try:
            for i in range(args.workers * 3):
                tmp = root / "incoming" / f".clip-{i}.part"
                shutil.copyfile(clip, tmp)
                tmp.rename(root / "incoming" / f"clip-{i}.mp4")
            deadline = time.monotonic() + 60
            while monitor.view.busy_workers() < args.workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the workers did not all start transcoding")
                await asyncio.sleep(0.1)

            busy_samples: list[int] = []

            loop_lag_ms: list[float] = []

            async def sample_busy() -> None:
                while True:
                    busy_samples.append(monitor.view.busy_workers())
                    await asyncio.sleep(0.25)

            async def sample_lag() -> None:
                while True:
                    start = time.perf_counter()
                    await asyncio.sleep(0.005)
                    loop_lag_ms.append((time.perf_counter() - start) * 1000 - 5)

            sampler = asyncio.ensure_future(sample_busy())
            lag_sampler = asyncio.ensure_future(sample_lag())
            handler_ms.clear()
            slowest.clear()
            load_before = os.getloadavg()[0]
            print(f"{args.workers}/{args.workers} workers transcoding (ffmpeg nice {args.nice}); "
                  f"load: {args.rate:g} req/s for {args.duration:g} s, then {args.ws_events} "
                  f"WebSocket events, from a separate process", flush=True)
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                out = await asyncio.get_running_loop().run_in_executor(
                    pool, run_load, plugin.url, args.rate, args.duration, args.ws_events)
            sampler.cancel()
            lag_sampler.cancel()
            report(args, out, busy_samples, monitor, (load_before, os.getloadavg()[0]))
            print(f"server side: time in the app per request p50 {statistics.median(handler_ms):.2f} "
                  f"ms, p99 {pct(handler_ms, 99):.2f} ms, max {max(handler_ms):.2f} ms "
                  f"({len(handler_ms)} requests); event-loop wake-up lag p50 "
                  f"{statistics.median(loop_lag_ms):.2f} ms, p99 {pct(loop_lag_ms, 99):.2f} ms, "
                  f"max {max(loop_lag_ms):.2f} ms")
            top = sorted(slowest, reverse=True)[:5]
            print("  slowest in the app: " + ", ".join(f"{name} {ms:.1f} ms" for ms, name in top))
        finally:
            await plugin.stop()
            await monitor.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(args: argparse.Namespace, out: dict[str, Any], busy: list[int], monitor: Any,
           load: tuple[float, float]) -> None:
    results = out["results"]
    latencies = [ms for _, _, ms in results]
    errors = sum(1 for _, status, _ in results if status != 200)
    print()
    print(f"control API: {len(results)} requests in {out['wall']:.1f} s "
          f"({len(results) / out['wall']:.0f} req/s achieved), errors (non-200): {errors}; "
          f"workers busy during the run: min {min(busy)}, max {max(busy)} of {args.workers}; "
          f"client schedule lag p99 {pct(out['lags'], 99):.1f} ms")
    print(f"  {'request':34} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    groups: dict[str, list[float]] = {}
    for spec, _, ms in results:
        groups.setdefault(spec, []).append(ms)
    rows = [("all", latencies), *sorted(groups.items())]
    for name, values in rows:
        print(f"  {name:34} {len(values):6d} {statistics.median(values):8.2f} "
              f"{pct(values, 90):8.2f} {pct(values, 99):8.2f} {max(values):8.2f}")
    ws = out["ws"]
    print(f"WebSocket event latency (control call -> event at the client), {len(ws)} events, "
          f"{out['ws_other']} other messages (progress...) on the socket meanwhile:")
    print(f"  p50 {statistics.median(ws):.2f} ms, p90 {pct(ws, 90):.2f} ms, "
          f"p99 {pct(ws, 99):.2f} ms, max {max(ws):.2f} ms")
    api_ok = pct(latencies, 99) < 25
    ws_ok = pct(ws, 99) < 500
    print(f"goals: API p99 < 25 ms: {'PASS' if api_ok else 'FAIL'} "
          f"({pct(latencies, 99):.2f} ms); WS p99 < 500 ms: {'PASS' if ws_ok else 'FAIL'} "
          f"({pct(ws, 99):.2f} ms)")
    print(f"host: {os.cpu_count()} CPUs, 1-min load average {load[0]:.1f} before and "
          f"{load[1]:.1f} after the run (this bench alone adds ~{args.workers + 2}), "
          f"Python {sys.version.split()[0]}, ffmpeg {monitor.view.ffmpeg_version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--ws-events", type=int, default=200, help="WebSocket events to time")
    parser.add_argument("--workers", type=int, default=2, help="max_workers")
    parser.add_argument("--clip-seconds", type=float, default=60.0, help="length of each clip")
    parser.add_argument("--clip-size", default="1280x720", help="frame size of the clips")
    from bulletproof.config import FfmpegSettings

    parser.add_argument("--nice", type=int, default=FfmpegSettings().nice, help="ffmpeg.nice (default: the config default)")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
