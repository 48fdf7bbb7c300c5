"""Shared fixtures: real ffmpeg, generated clips, config files in tmp folders, running monitors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulletproof.config import Config, FfmpegSettings, load_config
from tests import postgres


def write_config(folder: Path, **overrides: Any) -> Path:
    """Write a monitor.yaml for tests into `folder` (quick windows, one worker) and return its path."""
    data: dict[str, Any] = {
        "monitor_folder": "incoming",
        "output_folder": "processed",
        "max_workers": 1,
        "stability_seconds": 0.3,
        "rescan_interval": 2,
        "database": "state/bulletproof.db",
        "retry": {"max_attempts": 2, "backoff_seconds": 0.2},
        "ffmpeg": {"nice": 0},
        "rules": [
            {"name": "audio", "extensions": ["wav", "m4a", "mp3"], "profile": "aac_m4a"},
            {"name": "videos", "extensions": ["mp4", "mov", "mkv", "avi"], "profile": "h264_mp4"},
        ],
        "api": {"listen": "127.0.0.1:0"},
    }
    data.update(overrides)
    (folder / "incoming").mkdir(parents=True, exist_ok=True)
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


async def until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def ffmpeg_binaries():
    """The real ffmpeg the tests run."""
    from bulletproof.ffprobe import find_ffmpeg

    return find_ffmpeg(FfmpegSettings())


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory: pytest.TempPathFactory, ffmpeg_binaries) -> Callable[..., Path]:
    """Make (once per session) a small clip with given settings and return its cached path."""
    from bulletproof.samples import make_clip

    folder = tmp_path_factory.mktemp("clips")
    made: dict[tuple, Path] = {}

    def get(seconds: float = 1.0, size: str = "160x120", audio: bool = True, video: bool = True,
            suffix: str = ".mp4") -> Path:
        key = (seconds, size, audio, video, suffix)
        if key not in made:
            path = folder / f"clip-{len(made)}{suffix}"
            make_clip(ffmpeg_binaries.ffmpeg, path, seconds=seconds, size=size, audio=audio, video=video)
            made[key] = path
        return made[key]

    return get


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., tuple[Config, Path]]:
    """Write a test monitor.yaml (with overrides) and load it back."""

    def make(**overrides: Any) -> tuple[Config, Path]:
        path = write_config(tmp_path, **overrides)
        return load_config(path), path

    return make


@pytest.fixture
async def monitor_factory(ffmpeg_binaries) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start real monitors on given configs; they are all stopped at the end of the test."""
    from bulletproof.service import Monitor

    started: list[Monitor] = []

    async def start(config: Config, config_path: Path | None = None) -> Monitor:
        monitor = Monitor(config, config_path=config_path, binaries=ffmpeg_binaries)
        await monitor.start()
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        if not monitor.store_closed:
            await monitor.stop()


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL cluster of its own for the whole session (skips when PostgreSQL is missing)."""
    reason = postgres.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = postgres.start_cluster()
    yield cluster
    postgres.remove_cluster(cluster)


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """The URL of a fresh empty database on the session's cluster."""
    return postgres_cluster.database()
