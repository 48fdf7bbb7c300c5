"""`bulletproof demo`: a workspace, generated clips, real transcodes, live progress, a summary."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from pathlib import Path

import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from bulletproof import events as ev
from bulletproof.config import Config, FfmpegSettings, parse_config
from bulletproof.errors import BulletproofError
from bulletproof.ffprobe import find_ffmpeg
from bulletproof.logs import configure_logging
from bulletproof.models import FailureReason, IgnoreReason, Job, JobState
from bulletproof.runner import serve
from bulletproof.samples import make_clip, make_corrupt_clip
from bulletproof.service import Monitor
from bulletproof.sizes import format_bytes, format_saved, space_saved
from bulletproof.sqlite_store import SqliteJobStore

MARKER = ".bulletproof-demo"
CORRUPT_CLIP = "broken.mp4"
TEXT_FILE = "notes.txt"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_listen(listen: str, console: Console) -> str:
    host, port = listen.rsplit(":", 1)
    if int(port) != 0 and _port_free(host, int(port)):
        return listen
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        free = sock.getsockname()[1]
    if int(port) != 0:  # port 0 asks for any free port: say which, without a warning
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
    make_corrupt_clip(staging / CORRUPT_CLIP)
    (staging / TEXT_FILE).write_text("not a video: no rule matches this file\n")
    return [*names, "tone.wav", CORRUPT_CLIP]


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


def _summary(jobs: list[Job], ignored: dict[str, IgnoreReason], console: Console) -> None:
    table = Table(title="demo summary")
    for col in ("id", "file", "profile", "state", "seconds", "in", "out", "saved", "reason / error"):
        table.add_column(col)
    for job in jobs:
        duration = f"{job.duration:.1f}" if job.duration is not None else "-"
        why = f"{job.reason.value}: {(job.error or '')[:40]}" if job.reason else ""
        if job.rel_path == CORRUPT_CLIP:
            why = f"(corrupt on purpose) {why}"
        saved = (format_saved(job.input_bytes, job.output_bytes)
                 if job.state is JobState.COMPLETED else "-")
        table.add_row(str(job.id), job.rel_path, job.profile, job.state.value, duration,
                      format_bytes(job.input_bytes), format_bytes(job.output_bytes), saved, why)
    for rel_path, reason in sorted(ignored.items()):
        table.add_row("-", rel_path, "-", "ignored", "-", "-", "-", "-", reason.value)
    console.print(table)
    completed = [j for j in jobs if j.state is JobState.COMPLETED
                 and space_saved(j.input_bytes, j.output_bytes) is not None]
    total_in = sum(j.input_bytes or 0 for j in completed)
    total_out = sum(j.output_bytes or 0 for j in completed)
    if completed:
        console.print(f"space saved: {format_saved(total_in, total_out)} "
                      f"({format_bytes(total_in)} in, {format_bytes(total_out)} out, "
                      f"{len(completed)} completed jobs)")
    console.print(f"{CORRUPT_CLIP} is corrupt on purpose: it shows a failure (reason "
                  f"{FailureReason.INPUT_INVALID.value}) that is not retried; {TEXT_FILE} is not "
                  f"media, so no rule matches it and it is ignored ({IgnoreReason.NO_RULE.value}).")


def _next_steps(folder: Path, config: Config, listen: str, console: Console, *,
                running: bool) -> None:
    incoming = config.monitor_folder[0].path
    console.print("[bold]what next[/]")
    if running:
        console.print(f"  the monitor keeps running: drop files into {incoming} "
                      "(web/ → web_720p, hevc/ → hevc_mkv, audio → aac_m4a, other videos → "
                      f"h264_mp4); outputs land in {config.output_folder}")
        console.print(f"  metrics: http://{listen}/metrics   API: http://{listen}/api/v1/status   "
                      f"(or: bulletproof status --url http://{listen})")
        console.print("  press Ctrl-C to stop")
        return
    console.print(f"  keep it running and drop your own files into {incoming}: "
                  f"bulletproof demo {folder} --keep-running (Ctrl-C stops it)")
    console.print(f"  while it runs: metrics at http://{listen}/metrics, the API at "
                  f"http://{listen}/api/v1/status (bulletproof status --url http://{listen})")
    console.print("  for your own folders: bulletproof init monitor.yaml, edit it, then "
                  "bulletproof run --config monitor.yaml")


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
    console.print(f"workspace: {folder.resolve()}  ({len(inputs)} media files, one of them "
                  f"corrupt on purpose, + 1 text file that no rule matches)")
    console.print(f"metrics: http://{listen}/metrics   API: http://{listen}/api/v1/status")
    started = time.time()
    ignored: dict[str, IgnoreReason] = {}
    incoming = config.monitor_folder[0].path

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.FileIgnored):
            ignored[os.path.relpath(event.path, incoming)] = event.reason

    async def until_done(monitor: Monitor) -> None:
        monitor.bus.subscribe(on_event)
        await asyncio.to_thread(_drop, folder)
        announced = False
        with Live(_render(monitor, len(inputs), started), console=console, refresh_per_second=4) as live:
            while True:
                live.update(_render(monitor, len(inputs), started))
                counts = monitor.view.counts()
                finished = counts[JobState.COMPLETED] + counts[JobState.FAILED]
                batch_done = (finished >= len(inputs) and counts[JobState.QUEUED] == 0
                              and TEXT_FILE in ignored)
                if batch_done and not keep_running:
                    return
                if batch_done and not announced:
                    announced = True
                    live.console.print(f"demo batch done in {time.time() - started:.1f}s")
                    _next_steps(folder, config, listen, live.console, running=True)
                await asyncio.sleep(0.25)

    try:
        asyncio.run(serve(config, config_path=folder / "monitor.yaml", until=until_done))
    finally:
        log_file.close()
    store = SqliteJobStore(config.database)
    history, _ = store.list_jobs(sort="id", descending=False, limit=1000)
    store.close()
    _summary(history, ignored, console)
    demo_jobs = [j for j in history if j.rel_path in inputs]
    good = [j for j in demo_jobs if j.rel_path != CORRUPT_CLIP]
    broken = [j for j in demo_jobs if j.rel_path == CORRUPT_CLIP]
    ok = (len(good) == len(inputs) - 1 and all(j.state is JobState.COMPLETED for j in good)
          and bool(broken) and broken[0].reason is FailureReason.INPUT_INVALID
          and ignored.get(TEXT_FILE) is IgnoreReason.NO_RULE)
    console.print(f"outputs in {config.output_folder}; log in {folder / 'bulletproof.log'}; "
                  f"{time.time() - started:.1f}s; "
                  + ("[green]demo OK[/]" if ok else "[red]demo did not go as expected[/]"))
    if not keep_running:
        _next_steps(folder, config, listen, console, running=False)
    return ok
