"""`bulletproof demo`: a workspace, generated clips, real transcodes, live progress, a summary."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from bulletproof.config import Config, FfmpegSettings, parse_config
from bulletproof.errors import BulletproofError
from bulletproof.ffmpeg import find_ffmpeg
from bulletproof.logs import configure_logging
from bulletproof.models import FailureReason, Job, JobState
from bulletproof.runner import serve
from bulletproof.samples import make_clip, make_corrupt_clip
from bulletproof.service import Monitor
from bulletproof.store import JobStore

MARKER = ".bulletproof-demo"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_listen(listen: str, console: Console) -> str:
    host, port = listen.rsplit(":", 1)
    if _port_free(host, int(port)):
        return listen
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        free = sock.getsockname()[1]
    console.print(f"[yellow]{listen} is in use; the API listens on {host}:{free} instead[/]")
    return f"{host}:{free}"


def prepare_workspace(folder: Path) -> None:
    """Create (or reset) a demo workspace; refuses a non-empty folder that is not one."""
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise BulletproofError(f"{folder} is not empty and not a demo workspace; choose another folder")
    for name in ("incoming", "processed", "staging"):
        shutil.rmtree(folder / name, ignore_errors=True)
    for name in ("bulletproof.db", "bulletproof.db-wal", "bulletproof.db-shm"):
        (folder / name).unlink(missing_ok=True)
    for name in ("incoming/web", "incoming/hevc", "processed", "staging"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("created by `bulletproof demo`; safe to delete\n")


def demo_config(folder: Path, listen: str) -> Config:
    """The embedded demo config: quick stability window, a rule per built-in profile."""
    data = {
        "monitor_folder": "incoming",
        "output_folder": "processed",
        "max_workers": 2,
        "stability_seconds": 1,
        "rescan_interval": 10,
        "database": "bulletproof.db",
        "ffmpeg": {"nice": 5},
        "rules": [
            {"name": "web", "glob": "web/**", "profile": "web_720p"},
            {"name": "hevc", "glob": "hevc/**", "profile": "hevc_mkv"},
            {"name": "audio", "extensions": ["wav", "flac", "mp3"], "profile": "aac_m4a"},
            {"name": "videos", "extensions": ["mp4", "mov", "mkv"], "profile": "h264_mp4"},
        ],
        "api": {"listen": listen},
    }
    folder = folder.resolve()
    (folder / "monitor.yaml").write_text(
        "# Written by `bulletproof demo`.\n" + yaml.safe_dump(data, sort_keys=False))
    return parse_config(data, base_dir=folder, source=folder / "monitor.yaml")


def generate_clips(folder: Path, ffmpeg: str, *, clips: int, seconds: float) -> list[str]:
    """Make the demo inputs in staging/; returns their paths relative to incoming/."""
    staging = folder / "staging"
    names = []
    for i in range(clips):
        sub = ("", "web/", "hevc/")[i % 3]
        rel = f"{sub}clip {i + 1:02d}.mp4"
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        make_clip(ffmpeg, staging / rel, seconds=seconds, size="320x240", rate=25)
        names.append(rel)
    make_clip(ffmpeg, staging / "tone.wav", seconds=seconds, video=False)
    make_corrupt_clip(staging / "broken.mp4")
    (staging / "notes.txt").write_text("not a video: no rule matches this file\n")
    return [*names, "tone.wav", "broken.mp4"]


def _drop(folder: Path) -> None:
    staging, incoming = folder / "staging", folder / "incoming"
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = incoming / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)


def _render(monitor: Monitor, expected: int, started: float) -> Group:
    view = monitor.view
    counts = view.counts()
    head = Table.grid(padding=(0, 2))
    head.add_row(*(f"[bold]{s.value}[/] {counts[s]}" for s in JobState),
                 f"[bold]elapsed[/] {time.time() - started:4.1f}s")
    workers = Table(title="workers", expand=True)
    for col in ("slot", "file", "profile", "progress", "speed", "eta"):
        workers.add_column(col)
    for w in view.workers():
        if not w.busy:
            workers.add_row(str(w.slot), "[dim]idle[/]", "", "", "", "")
            continue
        workers.add_row(str(w.slot), w.filename or "", w.profile or "",
                        ProgressBar(total=1.0, completed=w.progress, width=30),
                        f"{w.speed:.2f}x" if w.speed else "-",
                        f"{w.eta_seconds:.0f}s" if w.eta_seconds is not None else "-")
    done = counts[JobState.COMPLETED] + counts[JobState.FAILED] + counts[JobState.CANCELLED]
    return Group(head, workers, f"finished {done} of {expected}")


def _summary(monitor_jobs: list[Job], console: Console) -> None:
    table = Table(title="demo summary")
    for col in ("id", "file", "profile", "state", "seconds", "in", "out", "reason / error"):
        table.add_column(col)
    for job in monitor_jobs:
        duration = f"{job.duration:.1f}" if job.duration is not None else "-"
        why = f"{job.reason.value}: {(job.error or '')[:60]}" if job.reason else ""
        table.add_row(str(job.id), job.rel_path, job.profile, job.state.value, duration,
                      str(job.input_bytes or "-"), str(job.output_bytes or "-"), why)
    console.print(table)


def run_demo(folder: Path, *, clips: int = 6, seconds: float = 4.0, listen: str = "127.0.0.1:8080",
             keep_running: bool = False, console: Console | None = None) -> bool:
    """Run the demo end to end; True when every good clip completed and the corrupt one failed."""
    console = console or Console()
    binaries = find_ffmpeg(FfmpegSettings())
    console.print(f"ffmpeg: {binaries.ffmpeg} ({binaries.source}, {binaries.version})")
    prepare_workspace(folder)
    log_file = (folder / "bulletproof.log").open("w", encoding="utf-8")
    configure_logging("logfmt", "info", log_file)  # the terminal belongs to the live display
    listen = _free_listen(listen, console)
    config = demo_config(folder, listen)
    with console.status("generating demo clips with ffmpeg..."):
        inputs = generate_clips(folder, binaries.ffmpeg, clips=clips, seconds=seconds)
    console.print(f"workspace: {folder.resolve()}  ({len(inputs)} media files + 1 non-video file)")
    console.print(f"metrics: http://{listen}/metrics   API: http://{listen}/api/v1/status")
    started = time.time()

    async def until_done(monitor: Monitor) -> None:
        await asyncio.to_thread(_drop, folder)
        with Live(_render(monitor, len(inputs), started), console=console, refresh_per_second=4) as live:
            while True:
                live.update(_render(monitor, len(inputs), started))
                counts = monitor.view.counts()
                finished = counts[JobState.COMPLETED] + counts[JobState.FAILED]
                if finished >= len(inputs) and counts[JobState.QUEUED] == 0 and not keep_running:
                    return
                await asyncio.sleep(0.25)


    try:
        asyncio.run(serve(config, config_path=folder / "monitor.yaml", until=until_done))
    finally:
        log_file.close()
    store = JobStore(config.database)
    history, _ = store.list_jobs(sort="id", descending=False, limit=1000)
    store.close()
    _summary(history, console)
    good = [j for j in history if j.rel_path != "broken.mp4"]
    broken = [j for j in history if j.rel_path == "broken.mp4"]
    ok = (len(good) == len(inputs) - 1 and all(j.state is JobState.COMPLETED for j in good)
          and bool(broken) and broken[0].reason is FailureReason.INPUT_INVALID)
    console.print(f"outputs in {config.output_folder}; log in {folder / 'bulletproof.log'}; "
                  f"{time.time() - started:.1f}s; "
                  + ("[green]demo OK[/]" if ok else "[red]demo did not go as expected[/]"))
    return ok
