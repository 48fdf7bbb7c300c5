"""The quality gate's pieces: reading ffmpeg's scores, which metrics a build has, refusing vmaf."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletproof.config import parse_config
from bulletproof.errors import ConfigError
from bulletproof.quality import PSNR_IDENTICAL_DB, available_metrics, parse_score, unavailable_gates


@pytest.mark.parametrize(("metric", "log", "expected"), [
    ("ssim", "[Parsed_ssim_5 @ 0x1] SSIM Y:0.826311 (7.602288) U:0.919664 (10.950915) "
             "V:0.937480 (12.039776) All:0.860398 (8.551092)", 0.860398),
    ("ssim", "[Parsed_ssim_5 @ 0x1] SSIM Y:1.000000 (inf) U:1.000000 (inf) V:1.000000 (inf) "
             "All:1.000000 (inf)", 1.0),
    ("psnr", "[Parsed_psnr_5 @ 0x1] PSNR y:38.1 u:41.2 v:42.0 average:39.123456 min:35.1 max:44.0",
     39.123456),
    ("psnr", "[Parsed_psnr_5 @ 0x1] PSNR y:inf u:inf v:inf average:inf min:inf max:inf",
     PSNR_IDENTICAL_DB),
    ("vmaf", "[Parsed_libvmaf_5 @ 0x1] VMAF score: 93.482117", 93.482117),
])
def test_scores_are_read_from_ffmpegs_log(metric: str, log: str, expected: float) -> None:
    assert parse_score(metric, f"frame=  50 fps=0.0\n{log}\n") == pytest.approx(expected)


def test_no_score_line_is_none() -> None:
    assert parse_score("ssim", "Error initializing filter 'ssim'\n") is None


def test_available_metrics_follow_the_filters(ffmpeg_binaries) -> None:
    assert available_metrics({"ssim", "psnr", "scale"}) == ["ssim", "psnr"]
    assert available_metrics({"libvmaf", "ssim", "psnr"}) == ["ssim", "psnr", "vmaf"]
    # The real build: ffmpeg -filters was read at discovery.
    assert {"ssim", "psnr"} <= set(available_metrics(ffmpeg_binaries.filters))


def test_a_vmaf_gate_needs_libvmaf(tmp_path: Path) -> None:
    config = parse_config({"monitor_folder": "in", "output_folder": "out",
                           "profiles": {"v": {"quality": {"metric": "vmaf", "min": 90}},
                                        "s": {"quality": {"metric": "ssim", "min": 0.9}}}},
                          base_dir=tmp_path)
    issues = unavailable_gates(config, {"ssim", "psnr"})
    assert [(i.location, i.message) for i in issues] == [(
        "profiles.v.quality.metric",
        "vmaf needs the ffmpeg filter libvmaf, which this ffmpeg lacks; available: psnr, ssim")]
    assert unavailable_gates(config, {"ssim", "psnr", "libvmaf"}) == []


@pytest.mark.parametrize(("gate", "problem"), [
    ({"metric": "ssim", "min": 1.5}, "profiles.p.quality.min: a ssim score is at most 1"),
    ({"metric": "psnr", "min": 120}, "profiles.p.quality.min: a psnr score is at most 100"),
    ({"metric": "ssim"}, "profiles.p.quality.min: Field required"),
    ({"metric": "butteraugli", "min": 1}, "profiles.p.quality.metric: Input should be"),
])
def test_bad_gates_are_refused_with_their_key(gate: dict, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"monitor_folder": "in", "output_folder": "out", "profiles": {"p": {"quality": gate}}},
                     base_dir=tmp_path)
    assert any(str(issue).startswith(problem) for issue in caught.value.issues), caught.value.issues


def test_an_audio_only_profile_cannot_have_a_gate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profiles.a.quality: a quality gate scores pictures"):
        parse_config({"monitor_folder": "in", "output_folder": "out",
                      "profiles": {"a": {"video_codec": None, "quality": {"min": 0.9}}}},
                     base_dir=tmp_path)
