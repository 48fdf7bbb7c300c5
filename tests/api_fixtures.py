"""Fixtures for the API tests: a real monitor (real ffmpeg) served by the real app on a socket.

Import the fixtures into a test module (pytest finds them under their names `api` and
`api_factory`): `from tests.api_fixtures import api_factory_fixture, api_fixture  # noqa: F401`.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bulletproof.models import Job, JobState
from bulletproof.service import Monitor
from exporter.api.app import create_app
from tests.conftest import until

# Generous enough that a test never meets the rate limiter (tests/test_security.py covers it).
TEST_API = {"listen": "127.0.0.1:0", "rate_limit_per_minute": 1_000_000}


@dataclass
class Api:
    """A running monitor, its app and an HTTP client on a real socket."""

    client: TestClient
    monitor: Monitor
    config_path: Path
    root: Path
    dropped: list[Path] = field(default_factory=list)

    @property
    def incoming(self) -> Path:
        """The (first) watch folder."""
        return self.root / "incoming"

    def url(self, path: str) -> str:
        """An absolute URL for a path on this server."""
        return str(self.client.make_url(path))

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """Make a request; returns (status, decoded JSON or None)."""
        async with self.client.request(method, path, **kwargs) as resp:
            body = await resp.read()
            data = None
            if body and resp.content_type == "application/json":
                data = await resp.json()
            return resp.status, data

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kwargs)

    def drop(self, source: Path, name: str) -> Path:
        """Copy a file into the watch folder (written aside, then renamed in, like a good copier)."""
        target = self.incoming / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(source, tmp)
        tmp.rename(target)
        self.dropped.append(target)
        return target

    def job_for(self, name: str) -> Job | None:
        """The job of a dropped file, by file name."""
        jobs, _ = self.monitor.view.list_jobs(search=name, limit=10)
        return next((j for j in jobs if j.filename == name), None)

    async def wait_job(self, name: str, *states: JobState, timeout: float = 30.0) -> Job:
        """Wait until the file's job exists (and is in one of `states`, if given)."""
        def check() -> Job | None:
            job = self.job_for(name)
            if job is not None and (not states or job.state in states):
                return job
            return None
        return await until(check, timeout=timeout)


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture(name="api_factory")
async def api_factory_fixture(config_factory, monitor_factory,
                              tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Start a monitor on a test config (with overrides) and serve the app for it."""
    clients: list[TestClient] = []

    async def make(token: str | None = None, **overrides: Any) -> Api:
        overrides.setdefault("api", dict(TEST_API))
        config, path = config_factory(**overrides)
        monitor = await monitor_factory(config, path)
        app = create_app(monitor.context(), token=token)
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return Api(client=client, monitor=monitor, config_path=path, root=tmp_path)

    yield make
    for client in clients:
        await client.close()


@pytest.fixture(name="api")
async def api_fixture(api_factory: ApiFactory) -> Api:
    """The default API: one worker, the test rules, no token (loopback)."""
    return await api_factory()


def garbage_file(folder: Path, name: str = "broken.mp4") -> Path:
    """A file with a video extension that ffprobe cannot read (its job fails: input_invalid)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"this is not a video\n" * 64)
    return path
