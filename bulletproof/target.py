"""Whether a source already is what a profile would make (publication.KeptSource keeps it)."""

from __future__ import annotations

from pathlib import Path

from bulletproof.ffprobe import MediaInfo
from bulletproof.profiles import Profile

# Encoder names (what a profile asks ffmpeg for) to the codec names ffprobe reports.
_CODEC_OF_ENCODER = {
    "libx264": "h264", "h264_nvenc": "h264", "h264_qsv": "h264", "h264_vaapi": "h264",
    "libx265": "hevc", "hevc_nvenc": "hevc", "hevc_qsv": "hevc", "hevc_vaapi": "hevc",
    "libvpx": "vp8", "libvpx-vp9": "vp9", "libaom-av1": "av1", "libsvtav1": "av1",
    "librav1e": "av1", "mpeg4": "mpeg4", "libopus": "opus", "opus": "opus",
    "libvorbis": "vorbis", "libmp3lame": "mp3", "aac": "aac", "libfdk_aac": "aac",
    "flac": "flac", "ac3": "ac3",
}
# A profile's container to the ffprobe format family a matching source reports.
_FORMAT_FAMILY = {"mp4": "mp4", "mov": "mov", "m4a": "m4a", "mkv": "matroska", "webm": "webm",
                  "mp3": "mp3"}


def _codec_matches(encoder: str | None, codec: str | None) -> bool:
    if encoder is None:
        return codec is None  # the profile drops the stream: the source must not have one
    if codec is None:
        return True  # nothing to convert
    return _CODEC_OF_ENCODER.get(encoder) == codec


def target_mismatch(profile: Profile, info: MediaInfo, source: Path) -> str | None:
    """None when `source` already matches the profile (container, codecs, height), else why not."""
    container = source.suffix.lower().lstrip(".")
    family = _FORMAT_FAMILY[profile.container]
    if container != profile.container or family not in (info.format_name or "").split(","):
        return f"container {container or '?'} ({info.format_name}) is not {profile.container}"
    if not _codec_matches(profile.video_codec, info.video_codec):
        return f"video codec {info.video_codec} is not what {profile.video_codec} makes"
    if not _codec_matches(profile.audio_codec, info.audio_codec):
        return f"audio codec {info.audio_codec} is not what {profile.audio_codec} makes"
    if profile.max_height is not None and info.height is not None and info.height > profile.max_height:
        return f"height {info.height} is over {profile.max_height}"
    return None

