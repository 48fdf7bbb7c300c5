"""Benchmark: what checking an output costs, as a share of the transcode that made it.

    .venv/bin/python bench/bench_verify.py [--seconds 10] [--size 1280x720] [--rate 25]
        [--profile h264_mp4] [--repeats 3] [--quick]

One generated clip (testsrc + sine, bulletproof.samples.make_clip) is transcoded with the
monitor's own FfmpegRunner and the profile given (no check before publishing), then the output is
checked the ways a job can check it, each timed on its own, `--repeats` times (medians reported):

- basic: `verify.level: basic` (probe the output: it opens, has its streams, lasts as long)
- decode: `verify.level: decode` (basic, then decode the whole output with `-f null`)
- ssim: the quality gate's SSIM scoring of the output against the source
- psnr: the same with PSNR

Reported per check: the wall time, and the extra wall time it adds to a job as a ratio of the
transcode time. ffmpeg runs at nice 0 with its default threads; the figures depend on the
machine, the clip size and the encoder preset, so run it on an otherwise idle host.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bulletproof.config import FfmpegSettings, Timeouts, VerifySettings
from bulletproof.ffmpeg import FfmpegRunner
from bulletproof.ffprobe import find_ffmpeg, probe
from bulletproof.paths import temp_path_for
from bulletproof.profiles import BUILTIN_PROFILES
from bulletproof.quality import score
from bulletproof.samples import make_clip
from bulletproof.verify import plan_for, verify_output


async def _timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    binaries = find_ffmpeg(FfmpegSettings())
    profile = BUILTIN_PROFILES[args.profile]
    with tempfile.TemporaryDirectory(prefix="bp-bench-verify-") as tmp:
        folder = Path(tmp)
        source = make_clip(binaries.ffmpeg, folder / "source.mp4", seconds=args.seconds,
                           size=args.size, rate=args.rate)
        info = await probe(binaries, source)
        runner = FfmpegRunner(binaries, FfmpegSettings(nice=0), Timeouts(stall_seconds=0))
        output = folder / "out" / f"output.{profile.extension}"

        async def transcode() -> None:
            running = await runner.start(source=source, output=output,
                                         temp_output=temp_path_for(output, 1), profile=profile,
                                         duration=info.duration, on_progress=lambda p: None)
            await running.wait()

        basic = plan_for(VerifySettings(level="basic"), profile, info)
        decode = plan_for(VerifySettings(level="decode"), profile, info)
        times: dict[str, list[float]] = {k: [] for k in ("transcode", "basic", "decode", "ssim", "psnr")}
        for _ in range(args.repeats):
            times["transcode"].append(await _timed(transcode))
            out_info = await probe(binaries, output)
            assert out_info.width and out_info.height
            times["basic"].append(await _timed(
                lambda: verify_output(binaries, output, basic, source=source, stderr_tail="")))
            times["decode"].append(await _timed(
                lambda: verify_output(binaries, output, decode, source=source, stderr_tail="")))
            for metric in ("ssim", "psnr"):
                times[metric].append(await _timed(
                    lambda m=metric, o=out_info: score(binaries, output, source, m, width=o.width or 0,
                                                       height=o.height or 0, duration=o.duration)))
        medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["transcode"]
    print(f"clip: {args.seconds:g} s {args.size} @ {args.rate} fps, profile {args.profile}, "
          f"ffmpeg {binaries.version}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{args.repeats} repeat(s), medians")
    print(f"{'step':<12} {'wall s':>8} {'x transcode':>12}")
    print(f"{'transcode':<12} {base:8.3f} {1.0:12.3f}")
    for key in ("basic", "decode", "ssim", "psnr"):
        print(f"{key:<12} {medians[key]:8.3f} {medians[key] / base:12.3f}")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmark, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--size", default="1280x720", help="clip picture size")
    parser.add_argument("--rate", type=int, default=25, help="clip frame rate")
    parser.add_argument("--profile", default="h264_mp4", choices=sorted(BUILTIN_PROFILES),
                        help="built-in profile to transcode with")
    parser.add_argument("--repeats", type=int, default=3, help="runs per step (medians)")
    parser.add_argument("--quick", action="store_true", help="3 s 640x360 clip, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.size, args.repeats = 3.0, "640x360", 1
    if BUILTIN_PROFILES[args.profile].video_codec is None:
        parser.error("the quality gate scores video: pick a video profile")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
