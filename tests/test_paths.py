"""File-name policy: temporary names, our own temporaries, output and temp paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletproof.config import parse_config
from bulletproof.paths import (
    has_hidden_part,
    is_own_temporary,
    is_temporary_name,
    is_within,
    output_path_for,
    temp_path_for,
)
from bulletproof.profiles import BUILTIN_PROFILES


@pytest.mark.parametrize("name", [
    ".hidden.mp4", "movie.mp4.part", "movie.mp4.crdownload", "a.tmp", "a.mp4~", ".a.mp4.Xy12Ab",
    "~$doc", "#autosave#", "x.partial", "x.filepart", "",
])
def test_temporary_names(name: str) -> None:
    assert is_temporary_name(name)


@pytest.mark.parametrize("name", ["movie.mp4", "-leading.mp4", "spaces in name.mov", "ünï.mkv", "a\nb.mp4"])
def test_real_names(name: str) -> None:
    assert not is_temporary_name(name)


def test_own_temporary_round_trip(tmp_path: Path) -> None:
    temp = temp_path_for(tmp_path / "out" / "clip 1.mp4", 42)
    assert temp.parent == tmp_path / "out" and temp.name == ".clip 1.bp-tmp-42.mp4"
    assert is_own_temporary(temp.name) and is_temporary_name(temp.name)
    assert not is_own_temporary("clip.bp-tmp-42.mp4")


def test_hidden_folders() -> None:
    assert has_hidden_part(".sync/a.mp4") and has_hidden_part("a/.Trash-1000/b.mp4")
    assert not has_hidden_part("a/b.mp4")


def test_is_within() -> None:
    assert is_within(Path("/a/b/c"), Path("/a/b"))
    assert is_within(Path("/a/b"), Path("/a/b"))
    assert not is_within(Path("/a/bc"), Path("/a/b"))
    assert not is_within(Path("/a/b/../c"), Path("/a/b"))


def test_output_path_keeps_sub_folders_and_uses_the_template(tmp_path: Path) -> None:
    config = parse_config({"monitor_folder": "in", "output_folder": "out",
                           "output_template": "{stem}-{profile}-{rule}.{ext}"}, base_dir=tmp_path)
    out = output_path_for(config, "shows/s01/ep 1.mov", "hevc_mkv", BUILTIN_PROFILES["hevc_mkv"], "tv")
    assert out == tmp_path / "out" / "shows" / "s01" / "ep 1-hevc_mkv-tv.mkv"
