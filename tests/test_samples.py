"""Sample media generation: real ffmpeg, tiny clips."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bulletproof.samples import make_clip, make_corrupt_clip, make_truncated_clip
from bulletproof.verify import readable_seconds

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe")

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or FFPROBE is None,
                                reason="needs ffmpeg and ffprobe on PATH")


def streams(path: Path) -> tuple[list[str], float]:
    """Codec types and duration of a file, read with ffprobe."""
    assert FFPROBE is not None
    done = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "format=duration:stream=codec_type",
         "-of", "json", "file:" + str(path.resolve())],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(done.stdout)
    return [s["codec_type"] for s in data["streams"]], float(data["format"]["duration"])


def test_default_clip_has_video_and_audio(tmp_path: Path) -> None:
    path = make_clip(FFMPEG, tmp_path / "clip.mp4")
    kinds, duration = streams(path)
    assert sorted(kinds) == ["audio", "video"]
    assert duration == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("video.mp4", {"audio": False}, ["video"]),
        ("silent.mkv", {"audio": False, "seconds": 0.5}, ["video"]),
        ("sound.m4a", {}, ["audio"]),
        ("sound.wav", {"video": False}, ["audio"]),
        ("both.ts", {}, ["audio", "video"]),
        ("both.mov", {"size": "64x48", "rate": 10}, ["audio", "video"]),
    ],
)
def test_clip_formats(
    tmp_path: Path, name: str, kwargs: dict[str, object], expected: list[str]
) -> None:
    path = make_clip(FFMPEG, tmp_path / "sub" / name, **kwargs)  # type: ignore[arg-type]
    assert path.is_file()
    assert sorted(streams(path)[0]) == expected


def test_clip_length_follows_seconds(tmp_path: Path) -> None:
    _, duration = streams(make_clip(FFMPEG, tmp_path / "two.mp4", seconds=2.0))
    assert duration == pytest.approx(2.0, abs=0.1)


def test_odd_name_is_not_an_option(tmp_path: Path) -> None:
    path = make_clip(FFMPEG, tmp_path / "-odd: name.mp4")
    assert path.stat().st_size > 0


def test_clip_needs_a_stream(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_clip(FFMPEG, tmp_path / "nothing.mp4", audio=False, video=False)


def test_ffmpeg_failure_raises_runtime_error_with_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="size"):
        make_clip(FFMPEG, tmp_path / "bad.mp4", size="notasize")
    assert not (tmp_path / "bad.mp4").exists()


def test_missing_ffmpeg_raises_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        make_clip(str(tmp_path / "no-ffmpeg"), tmp_path / "x.mp4")


def test_corrupt_clip_is_deterministic_and_not_media(tmp_path: Path) -> None:
    a = make_corrupt_clip(tmp_path / "a.mp4")
    b = make_corrupt_clip(tmp_path / "b.mp4", size=4096)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size == 4096
    assert a.read_bytes()[4:8] == b"ftyp"
    assert make_corrupt_clip(tmp_path / "small.mp4", size=100).stat().st_size == 100
    assert FFPROBE is not None
    done = subprocess.run([FFPROBE, "-v", "error", "file:" + str(a)],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "Invalid data" in done.stderr or "moov atom not found" in done.stderr


async def test_a_truncated_clip_declares_more_than_it_holds(tmp_path: Path, ffmpeg_binaries) -> None:
    path = make_truncated_clip(FFMPEG, tmp_path / "half.mp4", seconds=10, keep=0.5)
    _, declared = streams(path)
    assert declared == pytest.approx(10.0, abs=0.1)  # the index at the front still says 10 s
    readable = await readable_seconds(ffmpeg_binaries, path, declared)
    assert readable is not None and 2.0 < readable < 8.0
    whole = make_clip(FFMPEG, tmp_path / "whole.mp4", seconds=3, faststart=True)
    assert await readable_seconds(ffmpeg_binaries, whole, 3.0) == pytest.approx(3.0, abs=0.2)
