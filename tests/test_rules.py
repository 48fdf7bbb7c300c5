"""Rule matching: first match wins, every condition kind, globs across folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletproof.config import parse_config
from bulletproof.rules import RuleMatcher, glob_matches


def matcher(tmp_path: Path, rules: list[dict]) -> RuleMatcher:
    return RuleMatcher(parse_config({"monitor_folder": "in", "output_folder": "out", "rules": rules},
                                    base_dir=tmp_path))


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.mp4", "a.mp4", True),
    ("*.mp4", "deep/er/a.mp4", True),          # no slash: matched against the base name
    ("a/*.mp4", "a/b.mp4", True),
    ("a/*.mp4", "a/b/c.mp4", False),           # * stays inside one folder
    ("a/**", "a/b/c.mp4", True),
    ("**/c.mp4", "c.mp4", True),
    ("**/c.mp4", "x/y/c.mp4", True),
    ("clip-??.mov", "clip-01.mov", True),
    ("clip-??.mov", "clip-1.mov", False),
    ("[!x]*.mp4", "y.mp4", True),
    ("[!x]*.mp4", "x.mp4", False),
    ("odd name\n*.mp4", "odd name\nz.mp4", True),
])
def test_globs(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    m = matcher(tmp_path, [
        {"name": "web", "glob": "web/**", "profile": "web_720p"},
        {"name": "all", "extensions": ["mp4"], "profile": "h264_mp4"},
    ])
    assert m.match("web/a.mp4").profile_name == "web_720p"
    assert m.match("other/a.mp4").rule_name == "all"
    assert m.match("a.txt") is None


def test_every_condition_must_hold(tmp_path: Path) -> None:
    m = matcher(tmp_path, [{"profile": "hevc_mkv", "extensions": [".MKV"], "regex": r"^raw/",
                            "min_size": 100, "max_size": 1000, "priority": 5}])
    hit = m.match("raw/a.mkv", 500)
    assert hit is not None and hit.rule_name == "rule-0" and hit.priority == 5
    assert m.match("raw/a.mkv", 50) is None
    assert m.match("raw/a.mkv", 5000) is None
    assert m.match("cooked/a.mkv", 500) is None
    assert m.match("raw/a.mp4", 500) is None
    assert m.match("raw/a.mkv", None) is not None  # size unknown: size conditions skipped


def test_extension_match_is_case_insensitive_and_needs_a_dot(tmp_path: Path) -> None:
    m = matcher(tmp_path, [{"profile": "h264_mp4", "extensions": ["mp4"]}])
    assert m.match("A.MP4") is not None
    assert m.match("mp4") is None
    assert m.match("folder.mp4/file") is None


def test_user_profile_is_matched(tmp_path: Path) -> None:
    m = RuleMatcher(parse_config({
        "monitor_folder": "in", "output_folder": "out",
        "profiles": {"tiny": {"video_codec": "libx264", "max_height": 144}},
        "rules": [{"profile": "tiny"}]}, base_dir=tmp_path))
    assert m.match("anything").profile.max_height == 144
