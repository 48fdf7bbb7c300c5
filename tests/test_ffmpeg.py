"""The ffmpeg layer against real ffmpeg/ffprobe on tiny generated clips."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletproof.config import FfmpegSettings, Timeouts
from bulletproof.errors import FfmpegNotFound, TranscodeError
from bulletproof.ffmpeg import FfmpegRunner, RunningTranscode, build_command, place_output
from bulletproof.ffprobe import (
    FfmpegBinaries,
    MediaInfo,
    Progress,
    ProgressParser,
    classify_failure,
    find_ffmpeg,
    probe,
)
from bulletproof.models import FailureReason
from bulletproof.profiles import BUILTIN_PROFILES, Profile
from bulletproof.samples import make_clip, make_corrupt_clip
from tests.conftest import until

pytestmark = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="needs ffmpeg and ffprobe on PATH",
)

FAST = Profile(video_codec="libx264", preset="ultrafast", pixel_format="yuv420p", audio_codec="aac")
# veryslow x264 on a 640x480 clip keeps ffmpeg busy long enough to pause, cancel or time out.
SLOW = Profile(video_codec="libx264", preset="veryslow", audio_codec="aac")


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def binaries() -> FfmpegBinaries:
    return find_ffmpeg(FfmpegSettings())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, binaries: FfmpegBinaries) -> dict[str, Path]:
    """Clips shared by the module's tests (read-only)."""
    folder = tmp_path_factory.mktemp("media")
    ff = binaries.ffmpeg
    return {
        "clip": make_clip(ff, folder / "clip.mp4"),
        "audio": make_clip(ff, folder / "audio.m4a"),
        "video": make_clip(ff, folder / "video.mp4", audio=False),
        "ts": make_clip(ff, folder / "clip.ts", seconds=2.0, size="320x240"),
        "long": make_clip(ff, folder / "long.mp4", seconds=10.0, size="640x480", rate=25),
        "corrupt": make_corrupt_clip(folder / "corrupt.mp4"),
    }


def runner(binaries: FfmpegBinaries, *, stall: float = 0, job: float = 0) -> FfmpegRunner:
    return FfmpegRunner(binaries, FfmpegSettings(), Timeouts(stall_seconds=stall, job_seconds=job))


async def start(
    run: FfmpegRunner, source: Path, output: Path, profile: Profile = FAST,
    progress: list[Progress] | None = None, duration: float | None = None,
) -> RunningTranscode:
    sink = progress if progress is not None else []
    return await run.start(source=source, output=output,
                           temp_output=output.with_name(f".{output.stem}.bp-tmp-1{output.suffix}"),
                           profile=profile, duration=duration, on_progress=sink.append)


def ffprobe_streams(path: Path) -> list[dict[str, object]]:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe is not None
    done = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "stream=codec_type,codec_name,width,height",
         "-of", "json", "file:" + str(path.resolve())],
        capture_output=True, text=True, check=True,
    )
    streams: list[dict[str, object]] = json.loads(done.stdout)["streams"]
    return streams


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".bp-tmp-" in p.name)


# --- find_ffmpeg ---------------------------------------------------------------------------------

def test_find_ffmpeg_on_path(binaries: FfmpegBinaries) -> None:
    assert binaries.source == "path"
    assert os.path.isabs(binaries.ffmpeg) and os.access(binaries.ffmpeg, os.X_OK)
    assert binaries.ffprobe is not None and os.path.isabs(binaries.ffprobe)
    assert binaries.version[0].isdigit()


def test_find_ffmpeg_from_config(binaries: FfmpegBinaries) -> None:
    found = find_ffmpeg(FfmpegSettings(path=binaries.ffmpeg, ffprobe_path=binaries.ffprobe))
    assert found.source == "config"
    assert found.ffmpeg == binaries.ffmpeg and found.version == binaries.version


def test_find_ffmpeg_bad_configured_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ffmpeg"
    with pytest.raises(FfmpegNotFound, match="no-such-ffmpeg"):
        find_ffmpeg(FfmpegSettings(path=str(missing)))
    plain = tmp_path / "not-executable"
    plain.write_text("hello")
    with pytest.raises(FfmpegNotFound, match="not-executable"):
        find_ffmpeg(FfmpegSettings(path=str(plain)))


def test_find_ffmpeg_bad_ffprobe_path(tmp_path: Path) -> None:
    with pytest.raises(FfmpegNotFound, match="nope-probe"):
        find_ffmpeg(FfmpegSettings(ffprobe_path=str(tmp_path / "nope-probe")))


def test_find_ffmpeg_binary_that_is_not_ffmpeg(tmp_path: Path) -> None:
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` binary")
    with pytest.raises(FfmpegNotFound, match="-version"):
        find_ffmpeg(FfmpegSettings(path=false))


def test_find_ffmpeg_nothing_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        pytest.skip("the bundled ffmpeg extra is installed")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FfmpegNotFound) as info:
        find_ffmpeg(FfmpegSettings())
    message = str(info.value)
    assert "PATH" in message and "bundled" in message and "ffmpeg.path" in message


# --- probe ---------------------------------------------------------------------------------------

async def test_probe_clip(binaries: FfmpegBinaries, media: dict[str, Path]) -> None:
    info = await probe(binaries, media["clip"])
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(1.0, abs=0.1)


async def test_probe_audio_only(binaries: FfmpegBinaries, media: dict[str, Path]) -> None:
    info = await probe(binaries, media["audio"])
    assert (info.has_video, info.has_audio) == (False, True)
    assert info.duration == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("with_ffprobe", [True, False], ids=["ffprobe", "ffmpeg-only"])
async def test_probe_not_media(binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path,
                               with_ffprobe: bool) -> None:
    bins = binaries if with_ffprobe else dataclasses.replace(binaries, ffprobe=None)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("just some words\n" * 20)
    for path in (empty, text, media["corrupt"]):
        with pytest.raises(TranscodeError) as info:
            await probe(bins, path)
        assert info.value.reason is FailureReason.INPUT_INVALID, path
        assert str(info.value).startswith("not a media file: "), str(info.value)
        assert "Invalid data found when processing input" in str(info.value)
        assert info.value.stderr_tail
        assert str(path) not in str(info.value)  # the message is ffmpeg's words, not our path


async def test_probe_missing(binaries: FfmpegBinaries, tmp_path: Path) -> None:
    with pytest.raises(TranscodeError) as info:
        await probe(binaries, tmp_path / "gone.mp4")
    assert info.value.reason is FailureReason.INPUT_MISSING


async def test_probe_without_ffprobe(binaries: FfmpegBinaries, media: dict[str, Path]) -> None:
    bins = dataclasses.replace(binaries, ffprobe=None)
    info = await probe(bins, media["clip"])
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert await probe(bins, media["audio"]) == MediaInfo(info.duration, False, True)


# --- progress parsing ----------------------------------------------------------------------------

CAPTURED = """\
frame=0
fps=0.00
stream_0_0_q=0.0
bitrate=N/A
total_size=N/A
out_time_us=N/A
out_time_ms=N/A
out_time=N/A
dup_frames=0
drop_frames=0
speed=N/A
progress=continue
frame=30
fps=0.00
stream_0_0_q=28.0
bitrate= 136.0kbits/s
total_size=17000
out_time_us=2000000
out_time_ms=2000000
out_time=00:00:02.000000
dup_frames=0
drop_frames=0
speed=2.00x
progress=continue
frame=60
total_size=34000
out_time_us=3000000
out_time=00:00:03.000000
speed=4x
progress=end
"""


def test_progress_parser_on_captured_lines() -> None:
    parser = ProgressParser(duration=4.0)
    results = [p for line in CAPTURED.splitlines() if (p := parser.feed(line)) is not None]
    assert results[0] == Progress(ratio=0.0, speed=None, eta_seconds=None, out_time_seconds=0.0)
    assert results[1] == Progress(ratio=0.5, speed=2.0, eta_seconds=1.0, out_time_seconds=2.0)
    assert results[2].ratio == 1.0 and results[2].eta_seconds == 0.0
    assert len(results) == 3


def test_progress_parser_edge_values() -> None:
    parser = ProgressParser(duration=None)
    for line in ["out_time=-577014:32:22.775808", "speed=N/A", "garbage without equals", ""]:
        assert parser.feed(line) is None
    first = parser.feed("progress=continue")
    assert first == Progress(0.0, None, None, 0.0)  # unknown duration: ratio 0, no ETA
    assert not parser.advanced
    parser.feed("out_time=00:01:30.500000")
    parser.feed("frame=12")
    later = parser.feed("progress=continue")
    assert later is not None and later.out_time_seconds == pytest.approx(90.5)
    assert parser.advanced
    parser.feed("frame=12")
    parser.feed("progress=continue")
    assert not parser.advanced  # same frame count and no time: no headway
    clamped = ProgressParser(duration=1.0)
    clamped.feed("out_time_us=5000000")
    clamped.feed("speed=0x")
    over = clamped.feed("progress=continue")
    assert over is not None and over.ratio == 1.0 and over.eta_seconds is None


async def test_progress_on_a_real_run(binaries: FfmpegBinaries, media: dict[str, Path],
                                      tmp_path: Path) -> None:
    seen: list[Progress] = []
    job = await start(runner(binaries), media["ts"], tmp_path / "out.mp4",
                      progress=seen, duration=2.0)
    result = await job.wait()
    assert result.output_bytes > 0
    assert seen and seen[-1].ratio == 1.0
    ratios = [p.ratio for p in seen]
    assert ratios == sorted(ratios) and all(0.0 <= r <= 1.0 for r in ratios)
    assert seen[-1].out_time_seconds == pytest.approx(2.0, abs=0.2)


# --- build_command / classify_failure -----------------------------------------------------------

def test_build_command(binaries: FfmpegBinaries) -> None:
    cmd = build_command(binaries, BUILTIN_PROFILES["h264_mp4"], Path("-in put.mp4"),
                        Path("/o/.x.bp-tmp-1.mp4"), FfmpegSettings(threads=2))
    assert cmd[0] == binaries.ffmpeg
    for flag in ("-nostdin", "-y", "-nostats", "-hide_banner"):
        assert flag in cmd
    assert cmd[cmd.index("-progress") + 1] == "pipe:1"
    assert cmd[cmd.index("-i") + 1] == "file:" + os.path.abspath("-in put.mp4")
    assert cmd[-1] == "file:/o/.x.bp-tmp-1.mp4"
    assert cmd.count("-threads") == 2
    assert "-threads" not in build_command(binaries, FAST, Path("a"), Path("b"), FfmpegSettings())


@pytest.mark.parametrize(
    ("returncode", "stderr", "reason"),
    [
        (1, "Error writing trailer of file:/o/x.mp4: No space left on device",
         FailureReason.OUTPUT_ERROR),
        (0, "av_interleaved_write_frame(): Invalid argument", FailureReason.OUTPUT_ERROR),
        (1, "file:/o/x.mp4: Read-only file system", FailureReason.OUTPUT_ERROR),
        (1, "file:/o/x.mp4: Disk quota exceeded", FailureReason.OUTPUT_ERROR),
        (1, "file:/o/x.mp4: Permission denied", FailureReason.OUTPUT_ERROR),
        (1, "file:/in/a.mp4: Invalid data found when processing input",
         FailureReason.INPUT_INVALID),
        (1, "[mov,mp4 @ 0x1] moov atom not found\nfile:a.mp4: Invalid data",
         FailureReason.INPUT_INVALID),
        (1, "Could not find codec parameters for stream 0", FailureReason.INPUT_INVALID),
        (1, "[x] could not find codec parameters for stream 0", FailureReason.INPUT_INVALID),
        (1, "Output file #0 does not contain any stream", FailureReason.INPUT_INVALID),
        (1, "file:/in/a.mp4: No such file or directory", FailureReason.INPUT_MISSING),
        (1, "Unknown encoder 'libfoo'", FailureReason.FFMPEG_ERROR),
        (-11, "", FailureReason.FFMPEG_ERROR),
        (None, "", FailureReason.FFMPEG_ERROR),
    ],
)
def test_classify_failure(returncode: int | None, stderr: str, reason: FailureReason) -> None:
    assert classify_failure(returncode, stderr) is reason


def test_classify_failure_uses_paths() -> None:
    src, out = Path("/in/a.mp4"), Path("/out/.a.bp-tmp-1.mp4")
    line = "file:/in/a.mp4: Permission denied"
    assert classify_failure(1, line, source=src) is FailureReason.INPUT_INVALID
    line = "file:/out/.a.bp-tmp-1.mp4: No such file or directory"
    assert classify_failure(1, line, source=src, output=out) is FailureReason.OUTPUT_ERROR
    line = "file:/in/a.mp4: Input/output error"
    assert classify_failure(1, line, source=src) is FailureReason.FFMPEG_ERROR


# --- transcoding ---------------------------------------------------------------------------------

EXPECTED_CODECS = {
    "h264_mp4": {"video": "h264", "audio": "aac"},
    "web_720p": {"video": "h264", "audio": "aac"},
    "hevc_mkv": {"video": "hevc", "audio": "aac"},
    "aac_m4a": {"audio": "aac"},
}


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
async def test_builtin_profiles(binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path,
                                name: str) -> None:
    profile = BUILTIN_PROFILES[name]
    output = tmp_path / "out" / f"clip.{profile.extension}"
    job = await start(runner(binaries), media["clip"], output, profile, duration=1.0)
    result = await job.wait()
    assert result.output_path == output and output.is_file()
    assert result.output_bytes == output.stat().st_size > 0
    assert result.elapsed_seconds > 0
    assert leftovers(output.parent) == []
    streams = ffprobe_streams(output)
    assert {str(s["codec_type"]): s["codec_name"] for s in streams} == EXPECTED_CODECS[name]
    if name == "web_720p":
        video = next(s for s in streams if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (160, 120)  # never upscaled


@pytest.mark.parametrize("name", ["with space.mp4", "ünïcødé 日本.mp4", "new\nline.mp4",
                                  "-leading.mp4", "co:lon.mp4", "file:fake.mp4"])
async def test_odd_file_names(binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path,
                              name: str) -> None:
    source = tmp_path / name
    shutil.copy(media["clip"], source)
    info = await probe(binaries, source)
    assert info.has_video
    output = tmp_path / "out" / ("x" + name)
    result = await (await start(runner(binaries), source, output, duration=info.duration)).wait()
    assert result.output_path.is_file() and result.output_bytes > 0
    assert leftovers(output.parent) == []


@pytest.mark.parametrize("kind", ["corrupt", "empty"])
async def test_invalid_input_fails(binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path,
                                   kind: str) -> None:
    source = media["corrupt"] if kind == "corrupt" else tmp_path / "empty.mp4"
    if kind == "empty":
        source.touch()
    output = tmp_path / "out.mp4"
    job = await start(runner(binaries), source, output)
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.INPUT_INVALID
    assert info.value.returncode not in (0, None)
    assert "Invalid data found" in info.value.stderr_tail
    assert not output.exists() and leftovers(tmp_path) == []


async def test_profile_needing_missing_streams(binaries: FfmpegBinaries, media: dict[str, Path],
                                               tmp_path: Path) -> None:
    job = await start(runner(binaries), media["video"], tmp_path / "a.m4a",
                      BUILTIN_PROFILES["aac_m4a"])
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.INPUT_INVALID
    assert "does not contain any stream" in info.value.stderr_tail


async def test_missing_source_does_not_start(binaries: FfmpegBinaries, tmp_path: Path) -> None:
    with pytest.raises(TranscodeError) as info:
        await start(runner(binaries), tmp_path / "gone.mp4", tmp_path / "out.mp4")
    assert info.value.reason is FailureReason.INPUT_MISSING
    assert list(tmp_path.iterdir()) == []


async def test_output_folder_cannot_be_created(binaries: FfmpegBinaries, media: dict[str, Path],
                                               tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TranscodeError) as info:
        await start(runner(binaries), media["clip"], blocker / "sub" / "out.mp4")
    assert info.value.reason is FailureReason.OUTPUT_ERROR


async def test_cancel_mid_run(binaries: FfmpegBinaries, media: dict[str, Path],
                              tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    progress: list[Progress] = []
    job = await start(runner(binaries), media["long"], output, SLOW, progress, duration=10.0)
    assert job.pid is not None
    await until(lambda: progress)  # mid-run for sure: ffmpeg has reported
    job.cancel()
    began = time.monotonic()
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.CANCELLED
    assert time.monotonic() - began < 6.0  # SIGTERM, at worst SIGKILL after the grace period
    assert job.pid is None
    assert not output.exists() and leftovers(tmp_path) == []


async def test_cancel_while_paused(binaries: FfmpegBinaries, media: dict[str, Path],
                                   tmp_path: Path) -> None:
    progress: list[Progress] = []
    job = await start(runner(binaries), media["long"], tmp_path / "out.mp4", SLOW, progress)
    await until(lambda: progress)
    job.pause()
    job.cancel()
    assert not job.paused
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.CANCELLED
    assert leftovers(tmp_path) == []


def proc_state(pid: int) -> tuple[str, int]:
    """(state letter, nice value) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[16])


async def test_pause_resume_does_not_stall(binaries: FfmpegBinaries, media: dict[str, Path],
                                           tmp_path: Path) -> None:
    seen: list[Progress] = []
    holder: list[RunningTranscode] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress)
        if progress.out_time_seconds > 0 and len(holder) == 1:
            holder[0].pause()  # mid-run for sure: the output clock has started moving
            holder.append(holder[0])  # once only
            seen.append(Progress(-1, None, None, 0))  # marks the pause

    output = tmp_path / "out.mp4"
    began = time.monotonic()
    job = await runner(binaries, stall=1).start(
        source=media["long"], output=output, temp_output=tmp_path / ".out.bp-tmp-1.mp4",
        profile=FAST, duration=10.0, on_progress=on_progress)
    holder.append(job)
    await until(lambda: job.paused, interval=0.02)
    pid = job.pid
    assert pid is not None
    state, nice = await until(lambda: (got := proc_state(pid))[0] == "T" and got)
    assert state == "T" and nice == FfmpegSettings().nice  # stopped, and reniced by preexec_fn
    count = len(seen)
    await asyncio.sleep(2.0)
    assert len(seen) == count and job.stopping is None  # no progress, yet no stall
    job.resume()
    assert not job.paused
    result = await job.wait()
    wall = time.monotonic() - began
    assert result.output_path.is_file()
    assert result.elapsed_seconds < wall - 2.0  # the paused time is not counted
    assert seen[-1].ratio == 1.0
    marks = [i for i, p in enumerate(seen) if p.ratio == -1]
    assert len(marks) == 1 and marks[0] < len(seen) - 2  # progress went on after the pause


@pytest.fixture
def stalled_fifo(tmp_path: Path, media: dict[str, Path]) -> Iterator[Path]:
    """A FIFO whose writer sends half a clip, then holds it open without writing."""
    fifo = tmp_path / "stuck.ts"
    os.mkfifo(fifo)
    data = media["ts"].read_bytes()
    release = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until ffmpeg opens it
        try:
            os.write(fd, data[: len(data) // 2])
            release.wait(30)
        except OSError:
            pass
        finally:
            os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield fifo
    release.set()
    if thread.is_alive():
        # If ffmpeg never opened the FIFO the writer is stuck in open(): open the other end.
        unblock = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(5)
        os.close(unblock)
    thread.join(5)


async def test_stall_is_detected(binaries: FfmpegBinaries, stalled_fifo: Path,
                                 tmp_path: Path) -> None:
    output = tmp_path / "out" / "out.mp4"
    job = await start(runner(binaries, stall=1), stalled_fifo, output, FAST, duration=2.0)
    # A temp file that keeps changing counts as headway (ffmpeg's +faststart rewrite prints no
    # progress): keep it moving for twice the stall limit, then let it rest.
    temp = output.with_name(".out.bp-tmp-1.mp4")
    for _ in range(10):
        with open(temp, "ab") as handle:
            handle.write(b"x")
        await asyncio.sleep(0.2)
    assert job.stopping is None and job.pid is not None
    began = time.monotonic()
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.STALLED
    assert job.stopping is FailureReason.STALLED
    assert 3.0 < time.monotonic() - began < 8  # a FIFO read ignores SIGTERM: SIGKILL after 3 s
    assert not output.exists() and leftovers(output.parent) == []


async def test_timeout(binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    began = time.monotonic()
    job = await start(runner(binaries, job=0.5), media["long"], output, SLOW, duration=10.0)
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.TIMEOUT
    assert time.monotonic() - began < 4
    assert not output.exists() and leftovers(tmp_path) == []


async def test_waiter_cancelled_kills_ffmpeg(binaries: FfmpegBinaries, media: dict[str, Path],
                                             tmp_path: Path) -> None:
    progress: list[Progress] = []
    job = await start(runner(binaries), media["long"], tmp_path / "out.mp4", SLOW, progress)
    pid = job.pid
    assert pid is not None
    waiter = asyncio.create_task(job.wait())
    await until(lambda: progress)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert leftovers(tmp_path) == []
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.INTERRUPTED
    assert job.pid is None and leftovers(tmp_path) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, when this process may mount one."""
    mount = shutil.which("mount")
    folder = tmp_path / "tiny"
    folder.mkdir()
    if mount is None:
        pytest.skip("no mount command")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


async def test_full_disk_is_an_output_error(binaries: FfmpegBinaries, media: dict[str, Path],
                                            tiny_disk: Path) -> None:
    output = tiny_disk / "out.mp4"
    job = await start(runner(binaries), media["long"], output, FAST, duration=10.0)
    with pytest.raises(TranscodeError) as info:
        await job.wait()
    assert info.value.reason is FailureReason.OUTPUT_ERROR
    assert "No space left on device" in str(info.value) + info.value.stderr_tail
    assert list(tiny_disk.iterdir()) == []


async def test_a_deferred_publish_leaves_the_checked_output_to_the_caller(
        binaries: FfmpegBinaries, media: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "out.mp4"
    temp = tmp_path / ".out.bp-tmp-1-3.mp4"
    job = await runner(binaries).start(source=media["video"], output=output, temp_output=temp,
                                       profile=FAST, duration=1.0, on_progress=lambda p: None,
                                       defer_publish=True)
    result = await job.wait()
    assert result.published and result.temp_output == temp
    assert not output.exists() and temp.stat().st_size == result.output_bytes > 0
    place_output(temp, output, replace_existing=False)
    assert output.exists() and not temp.exists()
    temp.write_bytes(b"another")
    with pytest.raises(TranscodeError, match="appeared while the job ran") as refused:
        place_output(temp, output, replace_existing=False)
    assert refused.value.reason is FailureReason.OUTPUT_CONFLICT and temp.exists()
