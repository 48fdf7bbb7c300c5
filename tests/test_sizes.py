"""Byte counts for people: binary units and space saved."""

from __future__ import annotations

import pytest

from bulletproof.sizes import format_bytes, format_saved, space_saved


@pytest.mark.parametrize(("value", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * 1024, "1.5 MiB"),
    (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3.0 PiB"), (2 * 1024**6, "2048.0 PiB"),
    (-20 * 1024, "-20.0 KiB"), (None, "-"), ("12", "-"), (True, "-"), (float("nan"), "-"),
])
def test_format_bytes(value: object, text: str) -> None:
    assert format_bytes(value) == text


def test_space_saved_and_its_text() -> None:
    assert space_saved(4 * 1024**2, 1024**2) == (3 * 1024**2, 0.75)
    assert format_saved(4 * 1024**2, 1024**2) == "3.0 MiB (75%)"
    assert format_saved(1000, 1100) == "-100 B (-10%)"  # the output grew
    assert format_saved(0, 0) == "0 B"
    assert format_saved(1000, None) == "-" and space_saved(None, 5) is None
