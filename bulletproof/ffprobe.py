"""Reading what ffmpeg says: which binaries, a file's media info, progress, failure reasons."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulletproof.config import FfmpegSettings
from bulletproof.errors import FfmpegNotFound, TranscodeError
from bulletproof.models import FailureReason

_VERSION_RE = re.compile(r"version\s+(\S+)")
_FILTER_LINE = re.compile(r"^ [A-Z.|]{3} (\S+) ", re.MULTILINE)
_DURATION_RE = re.compile(r"^\s*Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", re.MULTILINE)
_STREAM_RE = re.compile(r"^\s+Stream #\d+:\d+\S*: (Video|Audio):", re.MULTILINE)
# ffmpeg's words when writing the output failed. It can still exit 0 after these (a full disk
# while writing the trailer), so they are also looked for in the stderr of a "successful" run.
_OUTPUT_IO = (
    "No space left on device", "Disk quota exceeded", "Read-only file system", "File too large",
    "Error writing trailer", "Error closing file", "av_interleaved_write_frame()",
    "Error submitting a packet to the muxer", "Input/output error",
)
# ffmpeg's words for "the input is not media, or lacks the streams the profile needs".
_INPUT_INVALID = (
    "Invalid data found when processing input", "moov atom not found",
    "could not find codec parameters", "does not contain any stream", "matches no streams",
    "no decoder found", "EBML header parsing failed",
)


@dataclass(frozen=True, slots=True)
class FfmpegBinaries:
    """The ffmpeg (and optional ffprobe) this process runs, and where they came from."""

    ffmpeg: str
    ffprobe: str | None
    version: str
    source: str
    filters: frozenset[str] = frozenset()  # what `ffmpeg -filters` lists (ssim, libvmaf...)


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What probing a media file tells us."""

    duration: float | None
    has_video: bool
    has_audio: bool
    video_codec: str | None = None  # ffprobe's codec_name of the first video stream
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    format_name: str | None = None  # e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    audio_duration: float | None = None  # the first audio stream's own duration, when declared


def media_arg(path: Path) -> str:
    """An input/output argument ffmpeg cannot mistake for an option or a protocol."""
    return "file:" + os.path.abspath(path)


def _executable(candidate: str) -> str | None:
    """The absolute path of `candidate` (a path or a bare command name) if it can be run."""
    if os.sep not in candidate:
        return shutil.which(candidate)
    path = os.path.abspath(os.path.expanduser(candidate))
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _version_of(ffmpeg: str) -> str:
    """Run `ffmpeg -version`; raises FfmpegNotFound when the binary does not answer."""
    try:
        done = subprocess.run(
            [ffmpeg, "-hide_banner", "-version"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=15,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise FfmpegNotFound(f"ffmpeg at {ffmpeg} cannot be run: {exc}") from None
    match = _VERSION_RE.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise FfmpegNotFound(f"{ffmpeg} -version failed (exit {done.returncode}); is it ffmpeg?")
    return match.group(1)


def _bundled_ffmpeg(tried: list[str]) -> str | None:
    """The imageio-ffmpeg build, when that optional extra is installed."""
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found]  # optional extra
    except ImportError:
        tried.append("the bundled build (imageio-ffmpeg is not installed)")
        return None
    try:
        found = _executable(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception as exc:  # it raises RuntimeError when its platform binary is missing
        tried.append(f"the bundled build ({exc})")
        return None
    if found is None:
        tried.append("the bundled build (not executable)")
    return found


def _find_ffprobe(settings: FfmpegSettings, ffmpeg: str) -> str | None:
    """settings.ffprobe_path, else the ffprobe beside ffmpeg, else the one on PATH, else None."""
    if settings.ffprobe_path:
        found = _executable(settings.ffprobe_path)
        if found is None:
            raise FfmpegNotFound(
                f"ffmpeg.ffprobe_path {settings.ffprobe_path!r} is not an executable file"
            )
        return found
    beside = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
    return _executable(beside) or shutil.which("ffprobe")


def find_ffmpeg(settings: FfmpegSettings) -> FfmpegBinaries:
    """Locate ffmpeg (config, then PATH, then the bundled build) and ffprobe; check it runs."""
    if settings.path:
        ffmpeg = _executable(settings.path)
        if ffmpeg is None:
            raise FfmpegNotFound(f"ffmpeg.path {settings.path!r} is not an executable file")
        source = "config"
    else:
        tried = ["ffmpeg.path in the config (not set)"]
        ffmpeg = shutil.which("ffmpeg")
        source = "path"
        if ffmpeg is None:
            tried.append("`ffmpeg` on PATH (not found)")
            ffmpeg = _bundled_ffmpeg(tried)
            source = "bundled"
        if ffmpeg is None:
            raise FfmpegNotFound(
                "no ffmpeg found; tried " + "; ".join(tried)
                + ". Install ffmpeg, set ffmpeg.path, or install bulletproof[bundled-ffmpeg]."
            )
    version = _version_of(ffmpeg)
    return FfmpegBinaries(ffmpeg, _find_ffprobe(settings, ffmpeg), version, source,
                          filters=ffmpeg_filters(ffmpeg))


def ffmpeg_filters(ffmpeg: str) -> frozenset[str]:
    """The filter names this ffmpeg build has (`ffmpeg -filters`); empty when it cannot tell."""
    try:
        done = subprocess.run([ffmpeg, "-hide_banner", "-filters"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=15)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(_FILTER_LINE.findall(done.stdout))


async def run_capture(args: list[str], timeout: float) -> tuple[int, str, str]:
    """Run a short-lived command; returns (returncode, stdout, stderr). Kills it on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        # A timeout or a cancelled caller must not leave the prober running.
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _invalid(path: Path, stderr: str, fallback: str) -> TranscodeError:
    """An INPUT_INVALID error whose message is ffmpeg's last line, without the path prefix."""
    # Drop the "file:/path: " prefix first: a path may itself hold a newline.
    text = stderr.replace(media_arg(path) + ": ", "")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else fallback
    tail = "\n".join(stderr.strip().splitlines()[-20:])
    if any(hint in stderr for hint in _INPUT_INVALID):
        return TranscodeError(
            f"not a media file: {last}", reason=FailureReason.INPUT_INVALID, stderr_tail=tail
        )
    return TranscodeError(
        f"cannot read media: {last}", reason=FailureReason.INPUT_INVALID, stderr_tail=tail
    )


def _float_or_none(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None  # ffprobe writes "N/A" or leaves the key out
    return result if result >= 0 else None


def _first(streams: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    # Cover art is a video stream too; it is not what a profile's video settings are about.
    return next((s for s in streams if s.get("codec_type") == kind
                 and not (s.get("disposition") or {}).get("attached_pic")), None)


def _parse_ffprobe(stdout: str) -> MediaInfo:
    data = json.loads(stdout or "{}")
    streams = data.get("streams", [])
    kinds = {s.get("codec_type") for s in streams}
    fmt = data.get("format", {})
    duration = _float_or_none(fmt.get("duration"))
    video, audio = _first(streams, "video"), _first(streams, "audio")
    width = video.get("width") if video else None
    height = video.get("height") if video else None
    return MediaInfo(duration, "video" in kinds, "audio" in kinds,
                     video_codec=video.get("codec_name") if video else None,
                     audio_codec=audio.get("codec_name") if audio else None,
                     width=width if isinstance(width, int) else None,
                     height=height if isinstance(height, int) else None,
                     format_name=fmt.get("format_name"),
                     audio_duration=_float_or_none(audio.get("duration")) if audio else None)


def _parse_ffmpeg_header(stderr: str) -> MediaInfo:
    match = _DURATION_RE.search(stderr)
    duration = None
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    kinds = set(_STREAM_RE.findall(stderr))
    return MediaInfo(duration, "Video" in kinds, "Audio" in kinds)


async def probe(binaries: FfmpegBinaries, path: Path, *, timeout: float = 30.0) -> MediaInfo:
    """Duration and stream kinds of a media file; TranscodeError when it is missing or not media."""
    path = Path(path)
    if not path.exists():
        raise TranscodeError(f"input file is missing: {path}", reason=FailureReason.INPUT_MISSING)
    if not path.is_file():
        raise TranscodeError(f"not a regular file: {path}", reason=FailureReason.INPUT_INVALID)
    if binaries.ffprobe is not None:
        args = [binaries.ffprobe, "-v", "error", "-of", "json",
                "-show_entries",
                "format=duration,format_name:stream=codec_type,codec_name,width,height,duration:stream_disposition=attached_pic",
                media_arg(path)]
    else:
        args = [binaries.ffmpeg, "-hide_banner", "-nostdin", "-i", media_arg(path)]
    try:
        code, out, err = await run_capture(args, timeout)
    except TimeoutError:
        raise TranscodeError(
            f"probing took longer than {timeout:g} s", reason=FailureReason.TIMEOUT
        ) from None
    except OSError as exc:
        raise TranscodeError(
            f"cannot run the prober: {exc}", reason=FailureReason.FFMPEG_ERROR
        ) from None
    if "No such file or directory" in err and not path.exists():
        raise TranscodeError(f"input file is missing: {path}", reason=FailureReason.INPUT_MISSING)
    if binaries.ffprobe is not None:
        if code != 0:
            raise _invalid(path, err, f"ffprobe exited with {code}")
        try:
            info = _parse_ffprobe(out)
        except (ValueError, AttributeError) as exc:
            raise TranscodeError(f"unreadable ffprobe output: {exc}",
                                 reason=FailureReason.FFMPEG_ERROR) from None
    else:
        # Without an output ffmpeg always exits 1; only a missing "Input #0" header means failure.
        if "Input #0" not in err:
            raise _invalid(path, err, f"ffmpeg exited with {code}")
        info = _parse_ffmpeg_header(err)
    if not (info.has_video or info.has_audio):
        raise TranscodeError("not a media file: it has no audio or video stream",
                             reason=FailureReason.INPUT_INVALID, stderr_tail=err.strip()[-2000:])
    return info


@dataclass(frozen=True, slots=True)
class Progress:
    """One `-progress` block, interpreted."""

    ratio: float
    speed: float | None
    eta_seconds: float | None
    out_time_seconds: float
    ended: bool = False  # from ffmpeg's final `progress=end` block (also printed when it is stopped)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # "N/A"


def _clock_seconds(value: str | None) -> float | None:
    """`HH:MM:SS.micro` to seconds; None for N/A or the negative value ffmpeg prints early on."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", (value or "").strip())
    if match is None:
        return None
    return int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3])


def _speed(value: str | None) -> float | None:
    try:
        speed = float((value or "").strip().rstrip("x"))
    except ValueError:
        return None
    return speed if speed >= 0 else None


class ProgressParser:
    """Parses `-progress pipe:1` key=value blocks; values can be N/A."""

    def __init__(self, duration: float | None) -> None:
        self.duration = duration if duration is not None and duration > 0 else None
        self.advanced = False  # whether the last block showed headway (time, frames or bytes grew)
        self._block: dict[str, str] = {}
        self._out_time = 0.0
        self._high: dict[str, int] = {}

    def feed(self, line: str) -> Progress | None:
        """Take one line; returns a Progress at the end of each block, else None."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key, value = key.strip(), value.strip()
        if key != "progress":
            self._block[key] = value
            return None
        block, self._block = self._block, {}
        return self._interpret(block, ended=value == "end")

    def _out_time_seconds(self, block: dict[str, str]) -> float | None:
        # out_time_ms is microseconds too (a long-standing ffmpeg quirk).
        for key in ("out_time_us", "out_time_ms"):
            micros = _int_or_none(block.get(key))
            if micros is not None:
                return micros / 1_000_000 if micros >= 0 else None
        return _clock_seconds(block.get("out_time"))

    def _note_headway(self, block: dict[str, str]) -> None:
        self.advanced = False
        for key in ("out_time_us", "out_time_ms", "frame", "total_size"):
            value = _int_or_none(block.get(key))
            if value is not None and value > self._high.get(key, 0):
                self._high[key] = value
                self.advanced = True

    def _interpret(self, block: dict[str, str], *, ended: bool) -> Progress:
        self._note_headway(block)
        out_time = self._out_time_seconds(block)
        if out_time is not None:
            self._out_time = out_time
        speed = _speed(block.get("speed"))
        if ended:
            return Progress(1.0, speed, 0.0, self._out_time, ended=True)
        if self.duration is None:
            return Progress(0.0, speed, None, self._out_time)
        ratio = min(1.0, max(0.0, self._out_time / self.duration))
        eta = max(0.0, self.duration - self._out_time) / speed if speed else None
        return Progress(ratio, speed, eta, self._out_time)


def _names(line: str, path: Path | None) -> bool:
    return path is not None and media_arg(path) in line


def is_output_io_error(line: str, *, source: Path | None = None) -> bool:
    """True when a stderr line reports failing to write the output."""
    return not _names(line, source) and any(p in line for p in _OUTPUT_IO)


def classify_failure(
    returncode: int | None,
    stderr_tail: str,
    *,
    source: Path | None = None,
    output: Path | None = None,
) -> FailureReason:
    """Map a failed run's exit code and stderr to a FailureReason (paths sharpen the guess)."""
    lines = stderr_tail.splitlines()
    if any(is_output_io_error(line, source=source) for line in lines):
        return FailureReason.OUTPUT_ERROR
    # Unless a line names the path, "denied" is taken to be the output and "missing" the input.
    reason = FailureReason
    for line in lines:
        if "Permission denied" in line:
            return reason.INPUT_INVALID if _names(line, source) else reason.OUTPUT_ERROR
    for line in lines:
        if "No such file or directory" in line:
            return reason.OUTPUT_ERROR if _names(line, output) else reason.INPUT_MISSING
    lowered = stderr_tail.lower()
    if any(hint.lower() in lowered for hint in _INPUT_INVALID):
        return FailureReason.INPUT_INVALID
    return FailureReason.FFMPEG_ERROR


def failure_message(returncode: int | None, stderr_tail: str) -> str:
    """A one-line summary of a failed run: how it ended and ffmpeg's last words."""
    if returncode is not None and returncode < 0:
        head = f"ffmpeg was killed by signal {-returncode}"
    else:
        head = f"ffmpeg exited with status {returncode}"
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    return f"{head}: {lines[-1]}" if lines else head
