"""Checks of a valid config against the machine: encoders and filters the ffmpeg in use has,
folders that exist.

Issues (`check_against_ffmpeg`) make a config unusable: `check-config` fails on them and the monitor
refuses to start. Warnings (`config_warnings`) are printed and do not fail anything.
"""

from __future__ import annotations

import difflib
import functools
import os
import subprocess
from dataclasses import dataclass

from bulletproof.config import Config
from bulletproof.errors import ConfigIssue, FfmpegNotFound
from bulletproof.ffprobe import FfmpegBinaries
from bulletproof.profiles import BUILTIN_PROFILES
from bulletproof.quality import unavailable_gates

# `-c:v copy` / `-c:a copy` pass a stream through: not an encoder, always available.
PASS_THROUGH = "copy"


@dataclass(frozen=True)
class Encoders:
    """The encoder names one ffmpeg binary lists, by kind."""

    video: frozenset[str]
    audio: frozenset[str]


def parse_encoder_list(text: str) -> Encoders:
    """The names in `ffmpeg -hide_banner -encoders` output (" V....D libx264  description")."""
    video: set[str] = set()
    audio: set[str] = set()
    listing = text.split("------", 1)[-1]
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 2 or len(parts[0]) != 6:
            continue
        if parts[0][0] == "V":
            video.add(parts[1])
        elif parts[0][0] == "A":
            audio.add(parts[1])
    return Encoders(frozenset(video), frozenset(audio))


@functools.lru_cache(maxsize=8)
def _encoders_of(ffmpeg: str, mtime_ns: int) -> Encoders:
    # Keyed on the binary's mtime too, so an upgraded ffmpeg is asked again.
    try:
        done = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FfmpegNotFound(f"{ffmpeg} -encoders cannot be run: {exc}") from None
    if done.returncode != 0:
        raise FfmpegNotFound(f"{ffmpeg} -encoders failed (exit {done.returncode})")
    return parse_encoder_list(done.stdout)


def available_encoders(binaries: FfmpegBinaries) -> Encoders:
    """The encoders of the ffmpeg in use (asked once per binary and process)."""
    try:
        mtime_ns = os.stat(binaries.ffmpeg).st_mtime_ns
    except OSError as exc:
        raise FfmpegNotFound(f"ffmpeg at {binaries.ffmpeg} is gone: {exc.strerror}") from None
    return _encoders_of(binaries.ffmpeg, mtime_ns)


def profiles_in_use(config: Config) -> list[str]:
    """The profiles the rules name, in rule order, each once."""
    return list(dict.fromkeys(rule.profile for rule in config.rules))


def _encoder_issue(location: str, name: str, kind: str, known: frozenset[str],
                   binaries: FfmpegBinaries, builtin: bool) -> ConfigIssue:
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    origin = " (a built-in profile)" if builtin else ""
    return ConfigIssue(location, f"unknown {kind} encoder {name!r}{origin}: the ffmpeg in use "
                                 f"({binaries.ffmpeg}, {binaries.version}) does not have it{hint}")


def _profile_issues(config: Config, names: list[str], encoders: Encoders,
                    binaries: FfmpegBinaries) -> list[ConfigIssue]:
    issues = []
    profiles = config.all_profiles()
    for name in names:
        profile = profiles[name]
        builtin = name not in config.profiles and name in BUILTIN_PROFILES
        for key, codec, kind, known in (("video_codec", profile.video_codec, "video", encoders.video),
                                        ("audio_codec", profile.audio_codec, "audio", encoders.audio)):
            if codec is not None and codec != PASS_THROUGH and codec not in known:
                issues.append(_encoder_issue(f"profiles.{name}.{key}", codec, kind, known,
                                             binaries, builtin))
    return issues


def check_encoders(config: Config, binaries: FfmpegBinaries) -> list[ConfigIssue]:
    """Every encoder a profile in use names that the ffmpeg in use does not have."""
    return _profile_issues(config, profiles_in_use(config), available_encoders(binaries), binaries)


def check_against_ffmpeg(config: Config, binaries: FfmpegBinaries) -> list[ConfigIssue]:
    """Everything in a config the ffmpeg in use cannot do: encoders it lacks, quality gates whose
    filter it lacks."""
    return check_encoders(config, binaries) + unavailable_gates(config, binaries.filters)


def config_warnings(config: Config, binaries: FfmpegBinaries | None = None) -> list[ConfigIssue]:
    """What may be a mistake but does not stop the monitor: missing watch folders, unknown
    encoders in profiles no rule uses (with `binaries`)."""
    warnings = []
    for i, folder in enumerate(config.monitor_folder):
        if not folder.path.exists():
            warnings.append(ConfigIssue(f"monitor_folder.{i}.path",
                                        f"{folder.path} does not exist (yet): the monitor reports "
                                        "it down and watches it once it appears"))
        elif not folder.path.is_dir():
            warnings.append(ConfigIssue(f"monitor_folder.{i}.path",
                                        f"{folder.path} is not a folder"))
    if binaries is not None:
        used = set(profiles_in_use(config))
        unused = [name for name in config.profiles if name not in used]
        for issue in _profile_issues(config, unused, available_encoders(binaries), binaries):
            warnings.append(ConfigIssue(issue.location, f"{issue.message} (no rule uses this "
                                                        "profile yet)"))
    return warnings
