"""Byte counts for people: binary units (`1.5 MiB`) and space saved by a transcode."""

from __future__ import annotations

import math
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_bytes(value: Any) -> str:
    """`512 B`, `1.5 MiB`, `-3.0 GiB`; "-" for anything that is not a byte count."""
    if not _is_count(value):
        return "-"
    sign = "-" if value < 0 else ""
    size = float(abs(value))
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # the last unit always returns


def space_saved(input_bytes: Any, output_bytes: Any) -> tuple[int, float | None] | None:
    """(input − output, that over input) or None when a size is unknown; negative: it grew."""
    if not (_is_count(input_bytes) and _is_count(output_bytes)):
        return None
    saved = int(input_bytes - output_bytes)
    return saved, (saved / input_bytes if input_bytes > 0 else None)


def format_saved(input_bytes: Any, output_bytes: Any) -> str:
    """`1.2 MiB (45%)`, `-20.0 KiB (-3%)` when the output is larger; "-" when unknown."""
    found = space_saved(input_bytes, output_bytes)
    if found is None:
        return "-"
    saved, ratio = found
    return format_bytes(saved) + (f" ({ratio * 100:.0f}%)" if ratio is not None else "")
