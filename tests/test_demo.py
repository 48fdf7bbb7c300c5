"""`bulletproof demo`, the README's run command, end to end in a subprocess."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "bulletproof", "demo", str(folder), "--clips", "3", "--seconds", "1",
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    with sqlite3.connect(folder / "bulletproof.db") as conn:
        rows = dict(conn.execute("SELECT rel_path, state || ':' || COALESCE(reason, '') FROM jobs"))
    assert rows == {
        "clip 01.mp4": "completed:", "web/clip 02.mp4": "completed:", "hevc/clip 03.mp4": "completed:",
        "tone.wav": "completed:", "broken.mp4": "failed:input_invalid",
    }
    outputs = sorted(p.relative_to(folder / "processed").as_posix()
                     for p in (folder / "processed").rglob("*") if p.is_file())
    assert outputs == ["clip 01.mp4", "hevc/clip 03.mkv", "tone.m4a", "web/clip 02.mp4"]
    assert "job started" in (folder / "bulletproof.log").read_text()


def test_demo_refuses_a_folder_that_is_not_a_demo_workspace(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "bulletproof", "demo", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "not a demo workspace" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_demo_with_only_the_bundled_ffmpeg(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="the bundled-ffmpeg extra is not installed")
    folder = tmp_path / "demo"
    env = {"PATH": str(tmp_path / "empty-path"), "HOME": str(tmp_path)}  # no ffmpeg or ffprobe on PATH
    result = subprocess.run(
        [sys.executable, "-m", "bulletproof", "demo", str(folder), "--clips", "1", "--seconds", "1",
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(bundled," in result.stdout and "demo OK" in result.stdout
