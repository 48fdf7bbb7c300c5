"""Finding a job's ffmpeg in /proc and reading its state: what a remote control did, as the
kernel sees it (used by tests/test_fleet_controls.py and bench/bench_remote_controls.py)."""

from __future__ import annotations

import os
from pathlib import Path


def ffmpeg_pid(job_id: int) -> int | None:
    """The pid of the ffmpeg writing this job's temporary (None: none runs)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if f".bp-tmp-{job_id}.".encode() in cmdline and b"ffmpeg" in cmdline:
            return int(entry)
    return None


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (T: stopped, Z: exited), None when gone."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def gone(pid: int) -> bool:
    """True once the process has exited."""
    return process_state(pid) in (None, "Z")
