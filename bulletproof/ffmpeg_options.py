"""The allow-list for a profile's `extra_args`: ffmpeg output options that cannot name a file, a
device or a protocol, each with a strict check of its value.

Anything not listed here is refused, so a profile (which the control API may change) can never
make ffmpeg read another file into the output, write a side file, or open a URL. Filters
(`-vf`, `-af`) are allowed from a vetted set of filters without file options, parsed strictly:
one plain chain, no graph labels, no escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # names: film, high, yuv420p, 4.1, hvc1
_INT = re.compile(r"-?\d{1,9}")
_NUMBER = re.compile(r"-?\d{1,9}(\.\d{1,6})?")
_BITRATE = re.compile(r"\d{1,9}(\.\d{1,6})?[kKmMgG]?")
_FRAME_RATE = re.compile(r"\d{1,6}(\.\d{1,6})?|\d{1,6}/\d{1,6}|ntsc|pal|film|ntsc-film|qntsc|qpal|sntsc|spal")
_DURATION = re.compile(r"\d{1,9}(\.\d{1,6})?(s|ms|us)?|(\d{1,3}:)?\d{1,2}:\d{1,2}(\.\d{1,6})?")
_ASPECT = re.compile(r"\d{1,5}:\d{1,5}|\d{1,5}(\.\d{1,6})?")

MOVFLAGS = frozenset({
    "faststart", "frag_keyframe", "empty_moov", "default_base_moof", "separate_moof",
    "omit_tfhd_offset", "disable_chpl", "negative_cts_offsets", "write_colr", "write_gama",
    "use_metadata_tags", "dash", "cmaf", "global_sidx", "skip_sidx", "skip_trailer", "delay_moov",
    "frag_discont", "isml", "prefer_icc", "hybrid_fragmented",
})
# Encoder parameters (-x264-params / -x265-params) that read or write a file.
CODEC_PARAM_FILE_KEYS = frozenset({
    "stats", "qpfile", "cqmfile", "dump-yuv", "tcfile-in", "tcfile-out", "opencl-clbin",
    "csv", "analysis-save", "analysis-load", "analysis-reuse-file", "zonefile", "lambda-file",
    "scaling-list", "recon", "dhdr10-info", "dolby-vision-rpu", "film-grain", "aom-film-grain",
    "hist-file", "input", "output", "reconfig-file",
})
_PARAM_KEY = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_.,+()-]{0,100}")

# Filters without any option that opens a file or a URL.
VIDEO_FILTERS = frozenset({
    "scale", "crop", "pad", "fps", "format", "setsar", "setdar", "yadif", "bwdif", "transpose",
    "hflip", "vflip", "hqdn3d", "unsharp", "deband", "setpts", "tonemap", "zscale", "colorspace",
    "null",
})
AUDIO_FILTERS = frozenset({
    "aresample", "aformat", "volume", "loudnorm", "atempo", "highpass", "lowpass", "dynaudnorm",
    "acompressor", "pan", "asetpts", "apad", "anull",
})
_FILTER_NAME = re.compile(r"[a-z0-9_]{1,32}")
_FILTER_FORBIDDEN = frozenset(";[]\\\"\n\r\t")

Check = Callable[[str], str | None]  # a value -> None when fine, else why not


def _matches(pattern: re.Pattern[str], what: str) -> Check:
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else f"not {what}"
    return check


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"not one of {', '.join(choices)}"
    return check


def _movflags(value: str) -> str | None:
    flags = [f for f in re.split(r"[+-]", value) if f]
    if not flags or not re.fullmatch(r"[+-]?[a-z_]+([+-][a-z_]+)*", value):
        return "not a list of flags such as +faststart"
    unknown = [f for f in flags if f not in MOVFLAGS]
    return f"unknown flag(s) {', '.join(unknown)}" if unknown else None


def _codec_params(value: str) -> str | None:
    if not value:
        return "empty"
    for item in value.split(":"):
        key, sep, param = item.partition("=")
        if not _PARAM_KEY.fullmatch(key):
            return f"{item!r} is not key=value"
        if key in CODEC_PARAM_FILE_KEYS:
            return f"{key} names a file and is not allowed"
        if sep and not _PARAM_VALUE.fullmatch(param):
            return f"the value of {key} may hold only letters, digits and _ . , + ( ) -"
    return None


def _split_chain(chain: str) -> list[str] | str:
    """The filters of a chain (top-level commas, single quotes respected), or why it is refused."""
    if any(c in _FILTER_FORBIDDEN for c in chain):
        return "graph labels, ';', escapes and double quotes are not allowed: one plain chain only"
    parts, current, quoted = [], [], False
    for c in chain:
        if c == "'":
            quoted = not quoted
        if c == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    if quoted:
        return "an unclosed quote"
    parts.append("".join(current))
    return parts


def _filters(allowed: frozenset[str]) -> Check:
    def check(value: str) -> str | None:
        parts = _split_chain(value)
        if isinstance(parts, str):
            return parts
        for part in parts:
            name = part.partition("=")[0].strip()
            if not _FILTER_NAME.fullmatch(name) or name not in allowed:
                return f"filter {name!r} is not allowed; allowed: {', '.join(sorted(allowed))}"
        return None
    return check


_token = _matches(_TOKEN, "a plain name")
_integer = _matches(_INT, "an integer")
_number = _matches(_NUMBER, "a number")
_bitrate = _matches(_BITRATE, "a bit rate such as 2500k or 4M")

# option -> check of its value; None for an option that takes no value.
EXTRA_ARGS: dict[str, Check | None] = {
    "-tune": _token, "-preset": _token, "-profile:v": _token, "-profile:a": _token,
    "-level": _token, "-level:v": _token, "-pix_fmt": _token, "-tag:v": _token, "-tag:a": _token,
    "-color_primaries": _token, "-color_trc": _token, "-colorspace": _token, "-color_range": _token,
    "-g": _integer, "-bf": _integer, "-refs": _integer, "-keyint_min": _integer,
    "-sc_threshold": _integer, "-qp": _integer, "-ac": _integer, "-ar": _integer,
    "-crf": _number, "-q:v": _number, "-q:a": _number,
    "-b:v": _bitrate, "-b:a": _bitrate, "-maxrate": _bitrate, "-minrate": _bitrate,
    "-bufsize": _bitrate,
    "-r": _matches(_FRAME_RATE, "a frame rate such as 25, 29.97 or 30000/1001"),
    "-aspect": _matches(_ASPECT, "an aspect ratio such as 16:9"),
    # Trimming on purpose (a profile that does sets `verify.duration: false`).
    "-t": _matches(_DURATION, "a duration such as 30, 1.5, 500ms or 00:01:30"),
    "-fps_mode": _one_of(("passthrough", "cfr", "vfr", "auto")),
    "-strict": _one_of(("very", "strict", "normal", "unofficial", "experimental")),
    "-map_metadata": _one_of(("-1", "0")), "-map_chapters": _one_of(("-1", "0")),
    "-movflags": _movflags,
    "-x264-params": _codec_params, "-x265-params": _codec_params,
    "-vf": _filters(VIDEO_FILTERS), "-af": _filters(AUDIO_FILTERS),
    "-sn": None, "-dn": None,
}


def check_extra_args(args: list[str], *, scales: bool = False) -> None:
    """Raise ValueError naming the first argument that is not an allowed option with a valid value.

    `scales`: the profile already scales (max_height), so its own `-vf` would be replaced.
    """
    i = 0
    while i < len(args):
        option = args[i]
        if option not in EXTRA_ARGS:
            raise ValueError(f"item {i}: {option!r} is not an allowed ffmpeg option "
                             f"(allowed: {' '.join(EXTRA_ARGS)})")
        check = EXTRA_ARGS[option]
        if check is None:
            i += 1
            continue
        if i + 1 >= len(args):
            raise ValueError(f"item {i}: {option} needs a value")
        value = args[i + 1]
        problem = check(value)
        if problem is not None:
            raise ValueError(f"item {i + 1}: {option} {value!r}: {problem}")
        if option == "-vf" and scales:
            raise ValueError(f"item {i}: -vf would replace the scaling max_height sets; "
                             "put scale in the -vf chain instead of max_height")
        i += 2
