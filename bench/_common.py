"""Shared by the benchmarks: the monitor config they run, and how badly the event loop stalls."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bulletproof.config import Config, parse_config


def bench_config(base: Path, **overrides: Any) -> Config:
    """A monitor config under `base`: incoming/ -> processed/, .mp4 files to h264_mp4, no API,
    ffmpeg not niced (the benchmarks measure the monitor, not the scheduler)."""
    data: dict[str, Any] = {
        "monitor_folder": "incoming",
        "output_folder": "processed",
        "max_workers": 2,
        "database": "state/jobs.db",
        "ffmpeg": {"nice": 0},
        "rules": [{"name": "videos", "extensions": ["mp4"], "profile": "h264_mp4"}],
        "api": {"enabled": False},
    }
    data.update(overrides)
    return parse_config(data, base_dir=base)


class LagProbe:
    """Worst lateness of a 20 ms sleeper on the running event loop (what an API there feels)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring (resets the worst lateness)."""
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            self.worst = max(self.worst, time.perf_counter() - t - 0.02)

    async def stop(self) -> float:
        """Stop measuring; returns the worst lateness in seconds."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.worst
