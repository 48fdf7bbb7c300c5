"""The command line, run as a real subprocess: init, check-config, profiles, run with signals."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_config
from tests.processes import ffmpeg_children
from tests.promstack import wait_until

CLI = [sys.executable, "-m", "bulletproof"]


def bp(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    return wait_until(predicate, timeout, 0.1, message=f"waiting for {what}")


def job_rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return conn.execute("SELECT id, state, attempts, rel_path FROM jobs ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the monitor has created the file, not yet its schema
                return []
            raise


def test_init_writes_a_valid_config(tmp_path: Path) -> None:
    result = bp("init", "monitor.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert bp("check-config", "monitor.yaml", cwd=tmp_path).stdout.strip() == "ok"
    again = bp("init", "monitor.yaml", cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    assert bp("init", "monitor.yaml", "--force", cwd=tmp_path).returncode == 0


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("monitor_folder: in\noutput_folder: out\nmax_workers: 0\nextra: 1\n"
                    "rules: [{profile: nope}]\n")
    result = bp("check-config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "max_workers: Input should be greater than or equal to 1" in result.stderr
    assert "extra: unknown key; known keys: monitor_folder," in result.stderr
    assert "rules.0.profile: unknown profile 'nope'" in result.stderr


def test_check_config_reports_a_type_error_and_an_unknown_profile_together(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text("monitor_folders: in\noutput_folder: out\nretry: {retry_on: stalled}\n"
                    "rules: [{profile: h264_mp4x}]\n")
    result = bp("check-config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: invalid config {path}:"
    assert "  monitor_folders: unknown key; did you mean 'monitor_folder'?" in lines
    assert "  retry.retry_on: Input should be a valid list" in lines
    assert any(line.startswith("  rules.0.profile: unknown profile 'h264_mp4x'") for line in lines)


def test_check_config_warns_about_a_missing_watch_folder(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text("monitor_folder: [here, not-yet]\noutput_folder: out\n")
    (tmp_path / "here").mkdir()
    result = bp("check-config", str(path))
    assert result.returncode == 0 and result.stdout == "ok\n"
    assert result.stderr.splitlines() == [
        f"warning: monitor_folder.1.path: {tmp_path / 'not-yet'} does not exist (yet): the monitor "
        "reports it down and watches it once it appears"]


ENCODER_TYPO = ("monitor_folder: in\noutput_folder: out\n"
                "profiles:\n  fast: {video_codec: h264_nvenc_typo, audio_codec: aacc}\n"
                "  spare: {video_codec: libx246}\n  passthrough: {video_codec: copy, audio_codec: copy}\n"
                "rules: [{profile: fast, glob: 'a/**'}, {profile: passthrough}]\n")


def test_check_config_checks_encoders_against_the_ffmpeg_in_use(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(ENCODER_TYPO)
    (tmp_path / "in").mkdir()
    result = bp("check-config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    video = next(line for line in lines if line.startswith("  profiles.fast.video_codec: "))
    assert "unknown video encoder 'h264_nvenc_typo'" in video and video.endswith("close matches: h264_nvenc")
    audio = next(line for line in lines if line.startswith("  profiles.fast.audio_codec: "))
    assert "unknown audio encoder 'aacc'" in audio and "close matches: aac" in audio
    # A profile no rule uses only warns; `copy` passes streams through and is always fine.
    spare = next(line for line in lines if line.startswith("warning: profiles.spare.video_codec: "))
    assert "'libx246'" in spare and "(no rule uses this profile yet)" in spare
    assert not any("passthrough" in line for line in lines)
    path.write_text(ENCODER_TYPO.replace("h264_nvenc_typo", "libx264").replace("aacc", "aac"))
    fixed = bp("check-config", str(path))
    assert fixed.returncode == 0 and fixed.stdout == "ok\n" and "spare" in fixed.stderr


def test_run_refuses_a_profile_whose_encoder_ffmpeg_lacks(tmp_path: Path) -> None:
    path = write_config(tmp_path, api={"enabled": False}, rules=[{"profile": "fast"}],
                        profiles={"fast": {"video_codec": "h264_nvenc_typo"}})
    result = bp("run", "--config", str(path))
    assert result.returncode == 2
    assert f"error: invalid config {path}:" in result.stderr
    assert "profiles.fast.video_codec: unknown video encoder 'h264_nvenc_typo'" in result.stderr
    assert "close matches: h264_nvenc" in result.stderr
    assert not (tmp_path / "state").exists()  # refused before the store or any folder was made


BOMB_RSS_SCRIPT = """
import resource, subprocess, sys
child = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=60)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(child.returncode, peak_kib, sep="\\n")
sys.stderr.write(child.stderr)
"""


def billion_laughs(path: Path) -> Path:
    lines = ['lol0: &lol0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"lol{i}: &lol{i} [{','.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, 10)]
    path.write_text("monitor_folder: in\noutput_folder: out\n" + "\n".join(lines) + "\n")
    return path


def run_measured(*args: str, env: dict[str, str] | None = None) -> tuple[int, int, str]:
    """Run `bulletproof ARGS` under a parent that reports the child's peak RSS (KiB)."""
    done = subprocess.run([sys.executable, "-c", BOMB_RSS_SCRIPT, *CLI, *args],
                          capture_output=True, text=True, timeout=90, env=env)
    code, peak = done.stdout.split()
    return int(code), int(peak), done.stderr


def test_check_config_refuses_a_yaml_alias_bomb_in_little_memory(tmp_path: Path) -> None:
    code, peak_kib, stderr = run_measured("check-config", str(billion_laughs(tmp_path / "bomb.yaml")))
    assert code == 2
    assert "invalid YAML: aliases expand to more than 100000 values; refusing the document" in stderr
    assert peak_kib < 200 * 1024


def test_run_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("monitor_folder: in\n")
    result = bp("run", "--config", str(path))
    assert result.returncode == 2 and "output_folder" in result.stderr


def test_profiles_lists_builtin_and_config_ones(tmp_path: Path) -> None:
    bp("init", "monitor.yaml", cwd=tmp_path)
    out = bp("profiles", cwd=tmp_path).stdout
    for name in ("h264_mp4", "web_720p", "hevc_mkv", "aac_m4a", "small_h264"):
        assert name in out
    assert "config" in next(line for line in out.splitlines() if line.startswith("small_h264"))


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=config.parent)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_requeues_the_running_job(tmp_path: Path, clip_cache) -> None:
    config = write_config(tmp_path, api={"enabled": False})
    shutil.copy(clip_cache(seconds=20, size="640x480"), tmp_path / "incoming" / "long.mp4")
    proc = start_run(config, tmp_path / "run.log")
    try:
        db = tmp_path / "state" / "bulletproof.db"
        wait_for(lambda: any(r[1] == "processing" for r in job_rows(db)), what="a running job")
        wait_for(lambda: list((tmp_path / "processed").glob(".*bp-tmp-*")), what="a temporary output")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    (job_id, state, attempts, _), = job_rows(db)
    assert (state, attempts) == ("queued", 0)  # a clean stop does not spend an attempt
    assert list((tmp_path / "processed").iterdir()) == []
    assert "job started" in (tmp_path / "run.log").read_text()


@pytest.mark.slow
def test_sigkill_mid_transcode_then_restart(tmp_path: Path, clip_cache) -> None:
    config = write_config(tmp_path, api={"enabled": False}, retry={"max_attempts": 3})
    shutil.copy(clip_cache(seconds=20, size="640x480"), tmp_path / "incoming" / "long.mp4")
    shutil.copy(clip_cache(), tmp_path / "incoming" / "short.mp4")
    db = tmp_path / "state" / "bulletproof.db"
    proc = start_run(config, tmp_path / "run1.log")
    try:
        wait_for(lambda: any(r[1] == "processing" and r[3] == "long.mp4" for r in job_rows(db))
                 or any(r[1] == "completed" for r in job_rows(db)), what="the long job running")
        wait_for(lambda: list((tmp_path / "processed").glob(".long*bp-tmp-*")), what="a temporary")
        children = wait_for(lambda: _ffmpeg_children_of(proc.pid), what="the ffmpeg process")
        for pid in children:  # a stopped ffmpeg ignores its broken pipe: only PDEATHSIG ends it
            os.kill(pid, signal.SIGSTOP)
        proc.kill()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    # ffmpeg dies with its parent (PR_SET_PDEATHSIG), so nothing goes on writing.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10,
             what="ffmpeg to die")
    proc = start_run(config, tmp_path / "run2.log")
    try:
        wait_for(lambda: [r[1] for r in job_rows(db)] == ["completed", "completed"]
                 or [r[1] for r in job_rows(db)] == ["completed"] * 2, timeout=90,
                 what="both jobs to complete after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    rows = {r[3]: r for r in job_rows(db)}
    assert len(rows) == 2  # nothing lost, nothing duplicated
    assert rows["long.mp4"][2] == 2  # the interrupted attempt was recorded
    names = sorted(p.name for p in (tmp_path / "processed").iterdir())
    assert names == ["long.mp4", "short.mp4"]  # only complete files, no temporaries


def _ffmpeg_children_of(pid: int) -> list[int]:
    return ffmpeg_children(pid, marker=b"ffmpeg")


@pytest.mark.slow
def test_sighup_reloads_and_rejects_a_bad_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, api={"enabled": False})
    proc = start_run(config, tmp_path / "run.log")
    log = tmp_path / "run.log"
    try:
        wait_for(lambda: "watch folder up" in log.read_text(), what="start-up")
        data = yaml.safe_load(config.read_text())
        config.write_text(yaml.safe_dump({**data, "max_workers": "many"}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reload rejected" in log.read_text(), what="the rejection")
        config.write_text(yaml.safe_dump({**data, "max_workers": 2}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'msg="config reloaded"' in log.read_text(), what="the reload")
        assert proc.poll() is None  # still running after a bad config
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_json_logs(tmp_path: Path) -> None:
    config = write_config(tmp_path, api={"enabled": False}, log={"format": "json", "level": "info"})
    proc = start_run(config, tmp_path / "run.log")
    try:
        wait_for(lambda: "watch folder up" in (tmp_path / "run.log").read_text(), what="start-up")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    import json

    lines = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines() if line.startswith("{")]
    assert any(rec["msg"] == "starting" and rec["ffmpeg_version"] for rec in lines)


def test_no_ffmpeg_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, ffmpeg={"path": str(tmp_path / "no-ffmpeg")}, api={"enabled": False})
    result = bp("run", "--config", str(config))
    assert result.returncode == 3 and "no-ffmpeg" in result.stderr


def test_version() -> None:
    from bulletproof import __version__

    assert bp("--version").stdout.strip().endswith(__version__)




def test_a_taken_api_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, api={"listen": f"127.0.0.1:{port}"})
        result = bp("run", "--config", str(config))
    assert result.returncode == 1
    assert "error: plugin 'exporter' cannot start" in result.stderr and "Traceback" not in result.stderr
