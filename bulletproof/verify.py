"""Checking a finished output before it is published: it opens, has its streams, lasts as long.

A source cut off in the middle (a truncated upload whose index still declares the full length)
makes ffmpeg exit 0 with a short output. Comparing the output's duration with the source's
declared one, and with how far ffmpeg itself got, tells a truncated input from a bad output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bulletproof.config import VerifySettings
from bulletproof.errors import TranscodeError
from bulletproof.ffprobe import FfmpegBinaries, MediaInfo, media_arg, probe, run_capture
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


def plan_for(settings: VerifySettings, profile: Profile, source: MediaInfo) -> VerifyPlan:
    """The checks for an output of `profile` made from `source` (the profile's own keys win)."""
    level = profile.verify.level or settings.level
    expected = source.duration
    return VerifyPlan(
        level=level,
        check_duration=profile.verify.duration and expected is not None,
        need_video=profile.video_codec is not None and source.has_video,
        need_audio=profile.audio_codec is not None and source.has_audio,
        expected_duration=expected,
        tolerance=settings.tolerance(expected or 0.0),
    )


def _looks_truncated(read_seconds: float | None, plan: VerifyPlan, stderr_tail: str) -> bool:
    """True when ffmpeg itself got less far than the source declares, or said the input ended."""
    assert plan.expected_duration is not None
    if read_seconds is not None and read_seconds < plan.expected_duration - plan.tolerance:
        return True
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
                        read_seconds: float | None, stderr_tail: str) -> Verdict:
    """Check the output at `path` against `plan`; TranscodeError with the reason when it fails.

    `read_seconds` is the last media time ffmpeg reported, `stderr_tail` what it said.
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
            truncated = actual < expected and _looks_truncated(read_seconds, plan, stderr_tail)
            what = "the input ends early" if truncated else "the output's duration is wrong"
            raise TranscodeError(
                f"{what}: expected {expected:.2f} s (declared by the source), got {actual:.2f} s "
                f"(tolerance {plan.tolerance:.2f} s)",
                reason=FailureReason.INPUT_TRUNCATED if truncated else FailureReason.VERIFICATION_FAILED)
    if plan.level == "decode":
        await _decode_all(binaries, path, plan.expected_duration)
    return Verdict(VerificationResult.PASSED, info.duration)


def result_of(exc: TranscodeError) -> VerificationResult:
    """The verification result a failed check stands for."""
    if exc.reason is FailureReason.INPUT_TRUNCATED:
        return VerificationResult.INPUT_TRUNCATED
    return VerificationResult.FAILED
