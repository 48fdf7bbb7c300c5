"""`extra_args` is an allow-list: options that cannot name a file or a protocol, values checked;
what passes really runs in ffmpeg, what names a file is refused at validation (422 by the API)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from bulletproof.ffmpeg_options import EXTRA_ARGS, check_extra_args
from bulletproof.ffprobe import FfmpegBinaries
from bulletproof.profiles import BUILTIN_PROFILES, Profile
from tests.api_fixtures import Api, api_factory_fixture, api_fixture  # noqa: F401 (fixtures)
from tests.test_api import assert_error
from tests.test_ffmpeg import binaries, media, runner, start  # noqa: F401 (fixtures)

ALLOWED = [
    ["-tune", "film"], ["-profile:v", "high"], ["-level", "4.1"], ["-g", "48"], ["-bf", "2"],
    ["-pix_fmt", "yuv420p"], ["-movflags", "+faststart+use_metadata_tags"],
    ["-x264-params", "keyint=48:min-keyint=24:psy-rd=1.0,0.15"], ["-maxrate", "2M"],
    ["-bufsize", "4M"], ["-b:v", "2500k"], ["-b:a", "128k"], ["-ac", "2"], ["-ar", "48000"],
    ["-r", "30000/1001"], ["-map_metadata", "-1"], ["-sn"], ["-t", "30"], ["-t", "00:01:30.5"],
    ["-vf", "yadif,scale=-2:'min(720,ih)',format=yuv420p"], ["-af", "loudnorm,aresample=48000"],
    ["-x265-params", "log-level=error:master-display=G(13250,34500)B(7500,3000)"],
]

REFUSED = [
    (["-i", "/etc/passwd"], "not an allowed ffmpeg option"),
    (["-attach", "/etc/passwd"], "not an allowed ffmpeg option"),
    (["-filter_complex", "movie=/etc/passwd"], "not an allowed ffmpeg option"),
    (["-passlogfile", "/tmp/x"], "not an allowed ffmpeg option"),
    (["-vstats_file", "/tmp/x"], "not an allowed ffmpeg option"),
    (["-y"], "not an allowed ffmpeg option"),
    (["-f", "null"], "not an allowed ffmpeg option"),
    (["-progress", "http://evil/"], "not an allowed ffmpeg option"),
    (["-vf", "movie=/etc/passwd"], "filter 'movie' is not allowed"),
    (["-vf", "scale=2:2,subtitles=/etc/passwd"], "filter 'subtitles' is not allowed"),
    (["-vf", "lut3d=file=/etc/passwd"], "filter 'lut3d' is not allowed"),
    (["-af", "amovie=/etc/passwd"], "filter 'amovie' is not allowed"),
    (["-vf", "[in]scale=2:2[out]"], "one plain chain only"),
    (["-vf", "scale=2:2;movie=x"], "one plain chain only"),
    (["-vf", "scale=2:2\\,movie=x"], "one plain chain only"),
    (["-vf", "scale='2:2"], "unclosed quote"),
    (["-x264-params", "stats=/tmp/x.log"], "stats names a file"),
    (["-x265-params", "csv=out.csv"], "csv names a file"),
    (["-x264-params", "keyint=/etc/passwd"], "may hold only"),
    (["-movflags", "+faststart+frag_custom_file"], "unknown flag"),
    (["-tune", "film", "-g"], "needs a value"),
    (["-tune", "-i"], "not a plain name"),
    (["-b:v", "file:/etc/passwd"], "not a bit rate"),
    (["-t", "/etc/passwd"], "not a duration"),
]


@pytest.mark.parametrize("args", ALLOWED)
def test_allowed_options_pass(args: list[str]) -> None:
    check_extra_args(args)
    Profile(extra_args=args)


@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_options_that_can_name_files_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="item") as info:
        check_extra_args(args)
    assert message in str(info.value)


def test_vf_would_replace_the_max_height_scaling() -> None:
    with pytest.raises(ValidationError) as info:
        Profile(max_height=480, extra_args=["-vf", "yadif"])
    assert "max_height" in str(info.value)
    Profile(max_height=480, extra_args=["-af", "loudnorm"])


def test_the_builtin_profiles_pass_their_own_checks() -> None:
    for profile in BUILTIN_PROFILES.values():
        check_extra_args(profile.extra_args, scales=profile.max_height is not None)
    assert "-i" not in EXTRA_ARGS and "-filter_complex" not in EXTRA_ARGS


async def test_a_profile_using_the_allow_list_really_transcodes(binaries: FfmpegBinaries,  # noqa: F811
                                                                 media: dict[str, Path],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    profile = Profile(video_codec="libx264", preset="ultrafast", audio_codec="aac", extra_args=[
        "-tune", "film", "-profile:v", "high", "-g", "24", "-bf", "2", "-pix_fmt", "yuv420p",
        "-maxrate", "1M", "-bufsize", "2M", "-ac", "1", "-ar", "44100", "-r", "25",
        "-x264-params", "keyint=24:min-keyint=12", "-vf", "scale=80:-2,format=yuv420p",
        "-af", "aresample=44100,volume=0.5", "-map_metadata", "-1", "-sn"])
    output = tmp_path / "out" / "clip.mp4"
    result = await (await start(runner(binaries), media["clip"], output, profile, duration=1.0)).wait()
    assert result.output_bytes > 0
    done = subprocess.run(
        [binaries.ffprobe or "ffprobe", "-v", "error", "-show_entries",
         "stream=codec_type,width,profile,channels,sample_rate", "-of", "json", str(output)],
        capture_output=True, text=True, check=True)
    streams = {s["codec_type"]: s for s in json.loads(done.stdout)["streams"]}
    assert streams["video"]["width"] == 80
    assert int(streams["audio"]["channels"]) == 1 and streams["audio"]["sample_rate"] == "44100"


async def test_the_api_refuses_a_profile_reading_another_file(api: Api) -> None:
    status, body = await api.get("/api/v1/config")
    config = body["config"]
    for args in (["-vf", "movie=/etc/passwd"], ["-i", "/etc/passwd"], ["-x264-params", "stats=x"]):
        data = {**config, "profiles": {"evil": {"extra_args": args}},
                "rules": [{"profile": "evil"}]}
        status, body = await api.call("PUT", "/api/v1/config", json=data)
        error = assert_error(status, body, 422, "invalid_config")
        assert [d["location"] for d in error["details"]] == ["profiles.evil.extra_args"], error
    assert "evil" not in api.monitor.config.profiles
