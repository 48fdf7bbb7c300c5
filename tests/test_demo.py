"""`bulletproof demo`, the README's run command, end to end in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.promstack import wait_until


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "bulletproof", "demo", str(folder), "--clips", "3", "--seconds", "1",
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    cells = {cells[1]: cells for line in result.stdout.splitlines()
             if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 9}
    assert cells["notes.txt"][3:] == ["ignored", "-", "-", "-", "-", "no_rule"]
    assert cells["broken.mp4"][3] == "failed" and cells["broken.mp4"][7] == "-"
    assert cells["broken.mp4"][8].startswith("(corrupt on purpose) input_invalid: ")
    assert cells["tone.wav"][3] == "completed" and cells["tone.wav"][5].endswith(" KiB")
    assert cells["tone.wav"][7].endswith("%)")  # space saved, and its ratio
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
    out = " ".join(result.stdout.split())  # rich wraps lines to the width of the pipe
    assert "broken.mp4 is corrupt on purpose" in out
    assert "notes.txt is not media, so no rule matches it and it is ignored (no_rule)" in out
    assert "space saved: " in out and "4 completed jobs)" in out
    assert "what next" in out and f"bulletproof demo {folder} --keep-running" in out
    assert "/metrics" in out and "/api/v1/status" in out and "127.0.0.1:0" not in out


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


@pytest.mark.slow
def test_demo_keeps_running_until_ctrl_c(tmp_path: Path, clip_cache) -> None:
    folder = tmp_path / "demo"
    out = tmp_path / "demo.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulletproof", "demo", str(folder), "--clips", "1", "--seconds", "1",
         "--listen", "127.0.0.1:0", "--keep-running"],
        stdout=out.open("wb"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "press Ctrl-C to stop" in out.read_text(), 120, 0.2,
                   message="the demo batch to finish")
        text = out.read_text()
        assert f"drop files into {folder.resolve() / 'incoming'}" in text
        assert "/metrics" in text and "/api/v1/status" in text
        assert proc.poll() is None  # still watching after the batch
        part = folder / "incoming" / ".mine.mov.part"
        shutil.copyfile(clip_cache(), part)
        part.rename(folder / "incoming" / "mine.mov")

        def mine_state() -> str | None:
            with sqlite3.connect(folder / "bulletproof.db", timeout=5) as conn:
                row = conn.execute("SELECT state FROM jobs WHERE rel_path = 'mine.mov'").fetchone()
            return row[0] if row else None

        wait_until(lambda: mine_state() in ("completed", "failed"), 60, 0.2,
                   message="the dropped file to be transcoded")
        assert mine_state() == "completed"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    text = out.read_text()
    assert "demo OK" in text and "mine.mov" in text.split("demo summary", 1)[1]
    assert (folder / "processed" / "mine.mp4").is_file()
