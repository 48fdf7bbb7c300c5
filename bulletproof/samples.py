"""Sample media made with ffmpeg itself, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

# Suffix -> (video codec args, audio codec args, muxer). Fast encoders: samples are throwaway.
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac"]
_FORMATS: dict[str, tuple[list[str], list[str], str]] = {
    ".mp4": (_X264, _AAC, "mp4"),
    ".m4v": (_X264, _AAC, "mp4"),
    ".mov": (_X264, _AAC, "mov"),
    ".mkv": (_X264, _AAC, "matroska"),
    ".ts": (_X264, _AAC, "mpegts"),
    ".avi": (["-c:v", "mpeg4", "-q:v", "5"], ["-c:a", "libmp3lame"], "avi"),
    ".webm": (["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"],
              ["-c:a", "libopus"], "webm"),
    ".m4a": ([], _AAC, "ipod"),
    ".mp3": ([], ["-c:a", "libmp3lame"], "mp3"),
    ".wav": ([], ["-c:a", "pcm_s16le"], "wav"),
}
_AUDIO_ONLY = {".m4a", ".mp3", ".wav"}


def make_clip(
    ffmpeg: str,
    path: Path,
    *,
    seconds: float = 1.0,
    size: str = "160x120",
    rate: int = 15,
    audio: bool = True,
    video: bool = True,
    faststart: bool = False,
) -> Path:
    """Write a test-pattern clip (testsrc video, sine audio) whose format follows the suffix.

    `faststart` puts an MP4/MOV's index before its data, as web uploads usually have it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    video_args, audio_args, muxer = _FORMATS.get(suffix, _FORMATS[".mp4"])
    video = video and suffix not in _AUDIO_ONLY
    if not (video or audio):
        raise ValueError(f"a clip needs audio or video ({path.name} cannot hold video)")
    inputs: list[str] = []
    codecs: list[str] = []
    if video:
        inputs += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds:g}"]
        codecs += video_args
    if audio:
        sine = f"sine=frequency=440:sample_rate=44100:duration={seconds:g}"
        inputs += ["-f", "lavfi", "-i", sine]
        codecs += audio_args
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *inputs, *codecs, "-t", f"{seconds:g}", *(["-movflags", "+faststart"] if faststart else []),
        "-f", muxer, "file:" + os.path.abspath(path),
    ]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=max(60.0, seconds * 10))
    except (OSError, subprocess.TimeoutExpired) as exc:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not make {path.name}: {exc}") from None
    if done.returncode != 0:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not make {path.name} (exit {done.returncode}): "
                           f"{done.stderr.strip()}")
    return path


def make_corrupt_clip(path: Path, *, size: int = 4096) -> Path:
    """Write `size` deterministic bytes that open like an MP4 (ftyp box) but hold no media."""
    path = Path(path)
    header = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    # An mdat box claiming far more data than follows: a truncated upload, in effect.
    header += (0x7FFFFFFF).to_bytes(4, "big") + b"mdat"
    body = bytearray()
    counter = 0
    while len(header) + len(body) < size:
        body += hashlib.sha256(b"bulletproof-corrupt-%d" % counter).digest()
        counter += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((header + bytes(body))[:size])
    return path


def make_truncated_clip(ffmpeg: str, path: Path, *, seconds: float = 10.0, keep: float = 0.5,
                        size: str = "160x120") -> Path:
    """Write a faststart MP4 cut off after `keep` of its bytes: its index still declares the
    whole duration, but the data ends early (an interrupted upload)."""
    path = Path(path)
    make_clip(ffmpeg, path, seconds=seconds, size=size, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
