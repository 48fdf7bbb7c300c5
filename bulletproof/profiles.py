"""Transcode profiles: structured ffmpeg settings, the built-in set, and the argument builder."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bulletproof.ffmpeg_options import check_extra_args

Container = Literal["mp4", "mkv", "mov", "webm", "m4a", "mp3"]

# ffmpeg muxer names: passed with -f so the temporary output name's suffix does not matter.
MUXERS: dict[str, str] = {
    "mp4": "mp4",
    "mkv": "matroska",
    "mov": "mov",
    "webm": "webm",
    "m4a": "ipod",
    "mp3": "mp3",
}


class ProfileVerify(BaseModel):
    """A profile's own verification settings; unset keys follow the config's `verify`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["off", "basic", "decode"] | None = None
    duration: bool = True


class QualityGate(BaseModel):
    """Fail an output whose score against its source is under `min` (ssim 0..1, psnr dB, vmaf 0..100)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["ssim", "psnr", "vmaf"] = "ssim"
    min: float = Field(ge=0)

    @field_validator("min")
    @classmethod
    def _in_range(cls, value: float, info: ValidationInfo) -> float:
        metric = info.data.get("metric", "ssim")
        top = {"ssim": 1.0, "psnr": 100.0, "vmaf": 100.0}[metric]
        if value > top:
            raise ValueError(f"a {metric} score is at most {top:g}")
        return value


class Profile(BaseModel):
    """One ffmpeg recipe; `video_codec: null` makes an audio-only output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    container: Container = "mp4"
    video_codec: str | None = "libx264"
    crf: int | None = Field(default=None, ge=0, le=63)
    video_bitrate: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[kKmM]?$")
    preset: str | None = None
    max_height: int | None = Field(default=None, ge=16, le=8640)
    pixel_format: str | None = None
    audio_codec: str | None = "aac"
    audio_bitrate: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[kKmM]?$")
    extra_args: list[str] = Field(default_factory=list)
    verify: ProfileVerify = Field(default_factory=ProfileVerify)
    skip_if_target: bool = False
    skip_action: Literal["none", "copy", "link"] = "none"
    keep_source_if_larger: bool = False
    quality: QualityGate | None = None

    @field_validator("extra_args")
    @classmethod
    def _allowed_options(cls, args: list[str], info: ValidationInfo) -> list[str]:
        # Inputs, outputs and side files belong to the monitor: only options that cannot name a
        # file or a protocol pass (bulletproof/ffmpeg_options.py).
        check_extra_args(args, scales=info.data.get("max_height") is not None)
        return args

    @field_validator("quality")
    @classmethod
    def _gate_needs_video(cls, value: QualityGate | None, info: ValidationInfo) -> QualityGate | None:
        if value is not None and info.data.get("video_codec", "libx264") is None:
            raise ValueError("a quality gate scores pictures: this profile makes no video")
        return value

    @property
    def extension(self) -> str:
        """File name extension of this profile's output."""
        return self.container

    def output_args(self) -> list[str]:
        """The codec/filter/muxer arguments that go between the input and the output path."""
        args: list[str] = []
        if self.video_codec is None:
            args.append("-vn")
        else:
            args += ["-c:v", self.video_codec]
            if self.crf is not None:
                args += ["-crf", str(self.crf)]
            if self.video_bitrate is not None:
                args += ["-b:v", self.video_bitrate]
            if self.preset is not None:
                args += ["-preset", self.preset]
            if self.max_height is not None:
                # Never upscale; -2 keeps the width even, which most encoders require.
                args += ["-vf", f"scale=-2:'min({self.max_height},ih)'"]
            if self.pixel_format is not None:
                args += ["-pix_fmt", self.pixel_format]
        if self.audio_codec is None:
            args.append("-an")
        else:
            args += ["-c:a", self.audio_codec]
            if self.audio_bitrate is not None:
                args += ["-b:a", self.audio_bitrate]
        if self.container in ("mp4", "mov", "m4a"):
            args += ["-movflags", "+faststart"]
        args += list(self.extra_args)
        args += ["-f", MUXERS[self.container]]
        return args


BUILTIN_PROFILES: dict[str, Profile] = {
    "h264_mp4": Profile(
        description="H.264/AAC in MP4 at the source size",
        container="mp4",
        video_codec="libx264",
        crf=23,
        preset="medium",
        pixel_format="yuv420p",
        audio_codec="aac",
        audio_bitrate="128k",
    ),
    "web_720p": Profile(
        description="H.264/AAC in MP4, at most 720 lines high, for the web",
        container="mp4",
        video_codec="libx264",
        crf=24,
        preset="fast",
        max_height=720,
        pixel_format="yuv420p",
        audio_codec="aac",
        audio_bitrate="128k",
    ),
    "hevc_mkv": Profile(
        description="H.265/HEVC with AAC in Matroska at the source size",
        container="mkv",
        video_codec="libx265",
        crf=28,
        preset="medium",
        pixel_format="yuv420p",
        audio_codec="aac",
        audio_bitrate="128k",
        extra_args=["-x265-params", "log-level=error"],
    ),
    "aac_m4a": Profile(
        description="Audio only: AAC in M4A",
        container="m4a",
        video_codec=None,
        audio_codec="aac",
        audio_bitrate="160k",
    ),
}
