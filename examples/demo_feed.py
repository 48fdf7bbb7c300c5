"""Feed generated clips into a watch folder, for the compose stack's `demo` profile.

    docker compose --profile demo up -d

runs this in the Bulletproof image (its ffmpeg, its `bulletproof.samples`), writing into the
monitor's watch folder (/watch, ./videos/incoming on the host). Every DEMO_INTERVAL seconds it
drops one clip, cycling through formats so that every rule of examples/monitor.compose.yaml gets
work: MP4/MOV/MKV videos (rule `videos`), a clip under previews/ (rule `previews`), a WAV
(rule `audio`), and every DEMO_CORRUPT_EVERY-th file a corrupt MP4 that fails with
`input_invalid`, so the failure panels and alerts have something to show.

Each clip is written under a hidden temporary name and renamed into place when complete, the way
a well-behaved uploader does (the monitor ignores hidden and partial files).

Settings (environment):
  WATCH_DIR            where to drop files (default /watch)
  DEMO_INTERVAL        seconds between files (default 20)
  DEMO_SECONDS         length of each clip (default 20)
  DEMO_SIZE            video size (default 640x360)
  DEMO_COUNT           stop after this many files; 0 runs until stopped (default 0)
  DEMO_CORRUPT_EVERY   every n-th file is corrupt; 0 never (default 7)
  DEMO_HEARTBEAT       file touched after every drop, for the health check
                       (default /tmp/demo-feed.alive)

SIGTERM or SIGINT stop it between two files (exit 0).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from bulletproof.samples import make_clip, make_corrupt_clip

# (sub-folder, suffix): the rule each one exercises is in the module docstring.
CYCLE = [("", ".mp4"), ("", ".mov"), ("previews", ".mp4"), ("", ".mkv"), ("", ".wav")]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit(f"demo_feed: {name} must be a number, not {raw!r}")
    if value < 0:
        sys.exit(f"demo_feed: {name} must not be negative")
    return value


def drop(watch: Path, index: int, *, ffmpeg: str, seconds: float, size: str,
         corrupt_every: int) -> Path:
    """Write file number `index` (1-based) into `watch` atomically; return its final path."""
    corrupt = corrupt_every > 0 and index % corrupt_every == 0
    folder, suffix = ("", ".mp4") if corrupt else CYCLE[(index - 1) % len(CYCLE)]
    target_dir = watch / folder if folder else watch
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = f"demo-{index:05d}{'-corrupt' if corrupt else ''}"
    final = target_dir / f"{stem}{suffix}"
    temp = target_dir / f".{stem}.part{suffix}"  # hidden: never picked up half-written
    if corrupt:
        make_corrupt_clip(temp)
    else:
        make_clip(ffmpeg, temp, seconds=seconds, size=size, rate=25)
    os.replace(temp, final)
    return final


def main() -> int:
    watch = Path(os.environ.get("WATCH_DIR", "/watch"))
    interval = _env_number("DEMO_INTERVAL", 20.0)
    seconds = _env_number("DEMO_SECONDS", 20.0) or 1.0
    size = os.environ.get("DEMO_SIZE", "640x360").strip() or "640x360"
    count = int(_env_number("DEMO_COUNT", 0))
    corrupt_every = int(_env_number("DEMO_CORRUPT_EVERY", 7))
    heartbeat = Path(os.environ.get("DEMO_HEARTBEAT", "/tmp/demo-feed.alive"))
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("demo_feed: no ffmpeg on PATH", file=sys.stderr)
        return 3
    if not watch.is_dir():
        print(f"demo_feed: watch folder {watch} does not exist", file=sys.stderr)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    print(f"demo_feed: one clip every {interval:g} s into {watch} "
          f"({'until stopped' if count == 0 else f'{count} files'})", flush=True)
    index = 0
    while not stop.is_set() and (count == 0 or index < count):
        index += 1
        started = time.monotonic()
        try:
            path = drop(watch, index, ffmpeg=ffmpeg, seconds=seconds, size=size,
                        corrupt_every=corrupt_every)
        except (OSError, RuntimeError) as exc:
            print(f"demo_feed: file {index} not written: {exc}", file=sys.stderr, flush=True)
        else:
            print(f"demo_feed: dropped {path.relative_to(watch)}", flush=True)
            heartbeat.touch()
        if count and index >= count:
            break
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    print("demo_feed: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
