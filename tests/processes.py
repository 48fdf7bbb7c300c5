"""Finding ffmpeg processes in /proc and reading their state: what a control or a kill did, as
the kernel sees it (used by the CLI, fault and fleet tests and bench/bench_remote_controls.py)."""

from __future__ import annotations

import os
from pathlib import Path


def ffmpeg_pid(job_id: int, output_folder: Path) -> int | None:
    """The pid of the ffmpeg writing this job's temporary into `output_folder` (None: none
    runs). The folder matters: job ids repeat across stores, other runs' ffmpeg may be about."""
    wanted = str(output_folder).encode() + b"/"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # ffmpeg is handed file:<path> (a name can never be read as a protocol).
        # The temporary is .<name>.bp-tmp-<job>-<attempt's token>.<ext>.
        marker = f".bp-tmp-{job_id}-".encode()
        if any(a.removeprefix(b"file:").startswith(wanted) and marker in a for a in args) \
                and any(a.endswith(b"ffmpeg") for a in args):
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


def ffmpeg_children(parent: int, *, marker: bytes = b"-progress", naming: str = "") -> list[int]:
    """The pids of `parent`'s child processes whose command line holds `marker` (by default
    `-progress`: a transcoding ffmpeg) and, if given, `naming` (e.g. the source's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and marker in command and naming.encode() in command:
            found.append(int(entry.name))
    return found
