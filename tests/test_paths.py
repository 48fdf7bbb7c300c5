"""File-name policy: temporary names, our own temporaries, output and temp paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletproof.config import parse_config
from bulletproof.errors import PathError
from bulletproof.paths import (
    candidate_paths,
    confine,
    has_hidden_part,
    is_own_temporary,
    is_temporary_name,
    is_within,
    output_path_for,
    shorten_name,
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


def test_every_attempt_has_a_temporary_of_its_own(tmp_path: Path) -> None:
    first, second = (temp_path_for(tmp_path / "clip.mp4", 42, attempt=n) for n in (1, 2))
    assert (first.name, second.name) == (".clip.bp-tmp-42-1.mp4", ".clip.bp-tmp-42-2.mp4")
    assert is_own_temporary(first.name) and is_temporary_name(second.name)
    assert not is_own_temporary(".clip.bp-tmp-42-x.mp4")


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


def test_long_names_are_shortened_predictably_on_a_utf8_boundary() -> None:
    name = "é" * 200 + ".mp4"  # 404 bytes
    short = shorten_name(name)
    assert short == shorten_name(name) and len(short.encode()) <= 255 and short.endswith(".mp4")
    assert short.startswith("é" * 100) and "~" in short
    assert shorten_name("other" + name) != short  # the hash tells long namesakes apart
    assert shorten_name("plain.mp4") == "plain.mp4"
    temp = temp_path_for(Path("/out") / ("x" * 250 + ".mp4"), 123456)
    assert len(temp.name.encode()) <= 255 and is_own_temporary(temp.name)


def test_numbered_candidates() -> None:
    first, second, third = candidate_paths(Path("/out/clip_a.mp4"))[:3]
    assert [first.name, second.name, third.name] == ["clip_a.mp4", "clip_a (1).mp4", "clip_a (2).mp4"]


@pytest.mark.parametrize(("rule", "profile"), [("../../etc", "h264_mp4"), ("ok", "a/b"), ("..", "p"),
                                               ("x\0y", "p"), (".hidden", "p")])
def test_hostile_template_values_are_refused(rule: str, profile: str, tmp_path: Path) -> None:
    config = parse_config({"monitor_folder": "in", "output_folder": "out",
                           "output_template": "{rule}{profile}.{ext}"}, base_dir=tmp_path)
    with pytest.raises(PathError):
        output_path_for(config, "a.mov", profile, BUILTIN_PROFILES["h264_mp4"], rule)


def test_confine_refuses_symlinks_and_dot_dot(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    assert confine(out / "a" / "b.mp4", out) == out / "a" / "b.mp4"
    for bad in (out / ".." / "x.mp4", out / "link" / "x.mp4", out / "link" / "deeper" / "x.mp4", out):
        with pytest.raises(PathError):
            confine(bad, out)
