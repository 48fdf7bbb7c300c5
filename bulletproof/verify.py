"""Checking a finished output before it is published: it opens, has its streams, lasts as long.

A source cut off in the middle (a truncated upload whose index still declares the full length)
makes ffmpeg exit 0 with a short output. Comparing the output's duration with the source's
declared one catches it; reading (not decoding) the source to its end tells a truncated input
from a bad output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bulletproof.config import VerifySettings
from bulletproof.errors import TranscodeError
from bulletproof.ffprobe import (
    FfmpegBinaries,
    MediaInfo,
    ProgressParser,
    media_arg,
    probe,
    run_capture,
)
from bulletproof.models import FailureReason, VerificationResult
from bulletproof.profiles import Profile

# ffmpeg's words while reading an input that ends before its index says it should.
_TRUNCATION_HINTS = ("partial file", "Truncat", "corrupt input packet", "End of file",
                     "moov atom not found", "Packet corrupt")
_DECODE_TIMEOUT_FLOOR = 120.0  # seconds a whole-output decode may take at the least


@dataclass(frozen=True, slots=True)
class VerifyPlan:
    """What to check on one job's output."""

    level: str  # off | basic | decode
    check_duration: bool
    need_video: bool
    need_audio: bool
    expected_duration: float | None
    tolerance: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verification that passed (or was off), with the output's measured duration."""

    result: VerificationResult
    actual_duration: float | None
    output: MediaInfo | None = None  # what probing the output found (None when off)


def plan_for(settings: VerifySettings, profile: Profile, source: MediaInfo) -> VerifyPlan:
    """The checks for an output of `profile` made from `source` (the profile's own keys win)."""
    level = profile.verify.level or settings.level
    expected = source.duration
    if profile.video_codec is None and source.audio_duration is not None:
        expected = source.audio_duration  # an audio-only output lasts as long as the sound
    return VerifyPlan(
        level=level,
        check_duration=profile.verify.duration and expected is not None,
        need_video=profile.video_codec is not None and source.has_video,
        need_audio=profile.audio_codec is not None and source.has_audio,
        expected_duration=expected,
        tolerance=settings.tolerance(expected or 0.0),
    )


async def readable_seconds(binaries: FfmpegBinaries, source: Path, expected: float | None) -> float | None:
    """How many seconds of `source` can actually be read (demuxed, no decoding); None if unknown."""
    args = [binaries.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-progress", "pipe:1",
            "-nostats", "-i", media_arg(source), "-map", "0:v?", "-map", "0:a?", "-c", "copy",
            "-f", "null", "-"]
    try:
        _code, out, _err = await run_capture(args, max(_DECODE_TIMEOUT_FLOOR, expected or 0.0))
    except (TimeoutError, OSError):
        return None
    parser = ProgressParser(expected)
    reached = 0.0
    for line in out.splitlines():
        progress = parser.feed(line)
        if progress is not None:
            reached = progress.out_time_seconds
    return reached or None  # no media time at all: the demuxer told nothing, not "0 s"


async def _is_truncated(binaries: FfmpegBinaries, source: Path, plan: VerifyPlan,
                        stderr_tail: str) -> bool:
    """True when the source holds less media than it declares (or ffmpeg said its data ended)."""
    assert plan.expected_duration is not None
    readable = await readable_seconds(binaries, source, plan.expected_duration)
    if readable is not None:
        return readable < plan.expected_duration - plan.tolerance
    return any(hint in stderr_tail for hint in _TRUNCATION_HINTS)


async def _decode_all(binaries: FfmpegBinaries, path: Path, expected: float | None) -> None:
    """Decode every frame of `path`; TranscodeError(VERIFICATION_FAILED) on any decode error."""
    args = [binaries.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", media_arg(path),
            "-f", "null", "-"]
    timeout = max(_DECODE_TIMEOUT_FLOOR, 4 * (expected or 0.0))
    try:
        code, _out, err = await run_capture(args, timeout)
    except TimeoutError:
        raise TranscodeError(f"decoding the output took longer than {timeout:g} s",
                             reason=FailureReason.VERIFICATION_FAILED) from None
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if code != 0 or lines:
        last = lines[-1] if lines else f"ffmpeg exited with status {code}"
        raise TranscodeError(f"the output does not decode cleanly: {last}",
                             reason=FailureReason.VERIFICATION_FAILED,
                             stderr_tail="\n".join(lines[-20:]))


async def verify_output(binaries: FfmpegBinaries, path: Path, plan: VerifyPlan, *,
                        source: Path, stderr_tail: str) -> Verdict:
    """Check the output at `path` against `plan`; TranscodeError with the reason when it fails.

    A short output is blamed on the input (`input_truncated`) when `source` itself holds less
    media than it declares; `stderr_tail` is what ffmpeg said while transcoding.
    """
    if plan.level == "off":
        return Verdict(VerificationResult.DISABLED, None)
    try:
        info = await probe(binaries, path)
    except TranscodeError as exc:
        raise TranscodeError(f"the output does not open: {exc}",
                             reason=FailureReason.VERIFICATION_FAILED,
                             stderr_tail=exc.stderr_tail) from None
    missing = [kind for kind, need, has in (("video", plan.need_video, info.has_video),
                                            ("audio", plan.need_audio, info.has_audio))
               if need and not has]
    if missing:
        raise TranscodeError(f"the output has no {' or '.join(missing)} stream",
                             reason=FailureReason.VERIFICATION_FAILED)
    if plan.check_duration:
        expected, actual = plan.expected_duration, info.duration
        assert expected is not None
        if actual is None:
            raise TranscodeError("the output declares no duration",
                                 reason=FailureReason.VERIFICATION_FAILED)
        if abs(actual - expected) > plan.tolerance:
            truncated = actual < expected and await _is_truncated(binaries, source, plan, stderr_tail)
            what = "the input ends early" if truncated else "the output's duration is wrong"
            raise TranscodeError(
                f"{what}: expected {expected:.2f} s (declared by the source), got {actual:.2f} s "
                f"(tolerance {plan.tolerance:.2f} s)",
                reason=FailureReason.INPUT_TRUNCATED if truncated else FailureReason.VERIFICATION_FAILED)
    if plan.level == "decode":
        await _decode_all(binaries, path, plan.expected_duration)
    return Verdict(VerificationResult.PASSED, info.duration, info)


def result_of(exc: TranscodeError) -> VerificationResult:
    """The verification result a failed check stands for."""
    if exc.reason is FailureReason.INPUT_TRUNCATED:
        return VerificationResult.INPUT_TRUNCATED
    return VerificationResult.FAILED
