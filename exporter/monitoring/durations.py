"""Prometheus durations: parse, format, and the numbers the rules print."""

from __future__ import annotations

import re

_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0,
          "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(?:\d+(?:ms|[ywdhms]))+")
_DURATION_PART = re.compile(r"(\d+)(ms|[ywdhms])")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration (``1h30m``, ``5m``, ``500ms``)."""
    text = text.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """A Prometheus duration for ``seconds`` (whole milliseconds; ``0s`` for zero)."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def format_number(value: float) -> str:
    """A number as PromQL prints best: ``300``, ``0.25``."""
    return str(int(value)) if float(value).is_integer() else repr(round(value, 6))


def duration_in_words(text: str) -> str:
    """``2m`` as ``2 minutes``, ``1h`` as ``1 hour`` (for alert descriptions)."""
    seconds = parse_duration(text)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}" + ("s" if n != 1 else "")
    return text
