"""Shared by the benchmarks: how badly the event loop stalls while the monitor works."""

from __future__ import annotations

import asyncio
import time


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
