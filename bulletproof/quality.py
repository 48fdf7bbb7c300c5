"""The quality gate: scoring an output against its source with ffmpeg's ssim, psnr or libvmaf."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

from bulletproof.config import Config
from bulletproof.errors import ConfigIssue, TranscodeError
from bulletproof.ffprobe import FfmpegBinaries, media_arg, run_capture
from bulletproof.models import FailureReason

#: Quality metric -> the ffmpeg filter that computes it.
METRIC_FILTERS: dict[str, str] = {"ssim": "ssim", "psnr": "psnr", "vmaf": "libvmaf"}
#: The score ffmpeg prints for identical pictures (PSNR is infinite) is reported as this.
PSNR_IDENTICAL_DB = 100.0
_SCORE_PATTERNS: dict[str, re.Pattern[str]] = {
    "ssim": re.compile(r"SSIM .*All:([0-9.]+|inf)"),
    "psnr": re.compile(r"PSNR .*average:([0-9.]+|inf)"),
    "vmaf": re.compile(r"VMAF score[:=]\s*([0-9.]+)"),
}
_SCORE_TIMEOUT_FLOOR = 120.0  # seconds a scoring run may take at the least


def available_metrics(filters: Iterable[str]) -> list[str]:
    """The quality metrics an ffmpeg with these filters can compute."""
    have = set(filters)
    return [metric for metric, name in METRIC_FILTERS.items() if name in have]


def unavailable_gates(config: Config, filters: Iterable[str]) -> list[ConfigIssue]:
    """A problem for each profile whose quality gate needs a filter this ffmpeg lacks."""
    have = set(available_metrics(filters))
    return [ConfigIssue(f"profiles.{name}.quality.metric",
                        f"{profile.quality.metric} needs the ffmpeg filter "
                        f"{METRIC_FILTERS[profile.quality.metric]}, which this ffmpeg lacks; "
                        f"available: {', '.join(sorted(have)) or 'none'}")
            for name, profile in sorted(config.all_profiles().items())
            if profile.quality is not None and profile.quality.metric not in have]


def _graph(metric: str, width: int, height: int) -> str:
    # The source is scaled to the output's size: a profile that scales down is judged on the
    # pictures it meant to make. Both sides start at 0 so frames pair up.
    ref = f"[1:v]scale={width}:{height}:flags=bicubic,format=yuv420p,setpts=PTS-STARTPTS[ref]"
    dist = "[0:v]format=yuv420p,setpts=PTS-STARTPTS[dist]"
    return f"{dist};{ref};[dist][ref]{METRIC_FILTERS[metric]}"


def parse_score(metric: str, stderr: str) -> float | None:
    """The overall score from ffmpeg's log of a scoring run; None when it printed none."""
    found = _SCORE_PATTERNS[metric].findall(stderr)
    if not found:
        return None
    value = float(found[-1])
    if math.isinf(value):
        return PSNR_IDENTICAL_DB if metric == "psnr" else 1.0
    return value


async def score(binaries: FfmpegBinaries, output: Path, source: Path, metric: str, *,
                width: int, height: int, duration: float | None) -> float:
    """The output's `metric` score against the source; TranscodeError when it cannot be computed."""
    args = [binaries.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info",
            "-i", media_arg(output), "-i", media_arg(source), "-lavfi", _graph(metric, width, height),
            "-an", "-f", "null", "-"]
    timeout = max(_SCORE_TIMEOUT_FLOOR, 10 * (duration or 0.0))
    try:
        code, _out, err = await run_capture(args, timeout)
    except TimeoutError:
        raise TranscodeError(f"scoring the output ({metric}) took longer than {timeout:g} s",
                             reason=FailureReason.VERIFICATION_FAILED) from None
    value = parse_score(metric, err)
    if code != 0 or value is None:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        raise TranscodeError(f"cannot score the output with {metric}: "
                             f"{lines[-1] if lines else f'ffmpeg exited with {code}'}",
                             reason=FailureReason.VERIFICATION_FAILED,
                             stderr_tail="\n".join(lines[-20:]))
    return value
