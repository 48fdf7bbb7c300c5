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
        return conn.execute("SELECT id, state, attempts, rel_path FROM jobs ORDER BY id").fetchall()


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
    assert "extra: Extra inputs are not permitted" in result.stderr


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
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"ffmpeg" in cmd:
            found.append(int(entry.name))
    return found


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
