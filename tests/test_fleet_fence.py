"""The fence around a claim, in a running monitor on a real PostgreSQL: an attempt whose claim was
taken publishes nothing and records nothing, and after a store outage no node sweeps a lease
before the others had the time to renew theirs."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bulletproof.config import Config, load_config
from bulletproof.models import JobState
from bulletproof.postgres_store import PostgresJobStore
from bulletproof.store import NewJob
from tests.conftest import until, write_config
from tests.postgres import PostgresCluster
from tests.processes import ffmpeg_children


def fleet_config(tmp_path: Path, name: str, fleet: dict[str, float], **overrides: object) -> Config:
    return load_config(write_config(tmp_path, **{"node_name": name, "fleet": fleet, **overrides}))


async def test_an_attempt_whose_claim_was_taken_publishes_nothing(
        tmp_path: Path, postgres_url: str, monitor_factory, clip_cache, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bulletproof.workers")
    # A slow heartbeat: the claim is lost behind the node's back, as while it was frozen.
    config = fleet_config(tmp_path, "frozen", {"heartbeat_seconds": 60, "lease_seconds": 180},
                          database=postgres_url)
    monitor = await monitor_factory(config)
    shutil.copy(clip_cache(seconds=20, size="640x480"), config.monitor_folder[0].path / "long.mp4")
    [ffmpeg] = await until(lambda: ffmpeg_children(os.getpid(), naming="long.mp4"), timeout=30, interval=0.02)
    os.kill(ffmpeg, signal.SIGSTOP)  # hold the transcode while the claim changes hands
    other = PostgresJobStore(postgres_url)
    try:
        [job] = monitor.view.list_jobs()[0]
        assert job.state is JobState.PROCESSING and job.claimed_by == "frozen"
        [swept] = other.requeue_expired(now=time.time() + 1000)  # another node's sweep...
        taken = other.claim("taker", now=time.time(), lease_seconds=600)  # ...and its claim
        assert taken is not None and taken.job.id == job.id
        os.kill(ffmpeg, signal.SIGCONT)  # the old attempt's ffmpeg finishes its output
        await until(lambda: monitor.view.busy_workers() == 0, timeout=60)
        output = config.output_folder / "long.mp4"
        assert not output.exists()  # nothing published...
        assert list(config.output_folder.iterdir()) == []  # ...and its temporary is gone
        now = other.get(job.id)  # ...and nothing recorded over the new attempt
        assert (now.state, now.claimed_by, now.attempts) == (JobState.PROCESSING, "taker", 2)
        assert any(r.getMessage() == "the claim on the job was lost; its output is not published"
                   for r in caplog.records)
        # The new claim completes the job; the source is still there for it.
        assert Path(job.source_path).exists()
        done = other.mark_completed(job.id, now=time.time(), output_bytes=1, media_duration=None,
                                    token=taken.token)
        assert done.state is JobState.COMPLETED
    finally:
        other.close()


async def test_after_an_outage_no_lease_is_swept_until_every_node_could_renew(
        tmp_path: Path, postgres_cluster: PostgresCluster, postgres_url: str,
        monitor_factory) -> None:
    lease = 5.0
    fleet = {"heartbeat_seconds": 1, "lease_seconds": lease}
    monitor = await monitor_factory(fleet_config(tmp_path, "sweeper", fleet, database=postgres_url))
    other = PostgresJobStore(postgres_url)  # a node running a job, cut off with the first
    try:
        other.add(NewJob(source_path="/nowhere/x.mp4", rel_path="x.mp4", watch_folder="/nowhere",
                         size=1, mtime_ns=1, profile="h264_mp4", rule="videos",
                         output_path=str(tmp_path / "processed" / "x.mp4")))
        claim = other.claim("runner", now=time.time(), lease_seconds=30)
        assert claim is not None
        await until(lambda: time.time() > monitor.presence.sweeps_from + 1, timeout=10)
        other.renew(claim.job.id, claim.token, until=time.time() + lease)
        postgres_cluster.stop()
        try:
            down_since = time.time()
            await until(lambda: not monitor.store.health().writable, timeout=10)
            await until(lambda: time.time() - down_since > lease + 1, timeout=15)
        finally:
            postgres_cluster.start()
        back = time.time()
        # The sweeper is back first, and every lease in the store has lapsed by now.
        await until(lambda: (monitor.presence.last_beat or 0) > back, timeout=10)
        assert monitor.presence.sweeps_from >= back + lease - 0.1
        assert other.get(claim.job.id).state is JobState.PROCESSING  # not taken at its first beat
        await until(lambda: time.time() > back + lease / 2, timeout=lease)
        other.renew(claim.job.id, claim.token, until=time.time() + lease)  # the runner is back too
        await until(lambda: time.time() > monitor.presence.sweeps_from + 1.5, timeout=lease + 5)
        job = other.get(claim.job.id)
        assert (job.state, job.attempts, job.claimed_by) == (JobState.PROCESSING, 1, "runner")
        # A lease nobody renews is still swept once the hold-off is over.
        await until(lambda: (j := other.get(claim.job.id)).claimed_by != "runner"
                    or j.state is not JobState.PROCESSING, timeout=lease + 10)
    finally:
        other.close()


@pytest.fixture(autouse=True)
def _cluster_left_running(postgres_cluster: PostgresCluster):
    """A failed outage test must not leave the session's server stopped."""
    yield
    try:
        postgres_cluster.start()
    except subprocess.CalledProcessError:  # it runs
        pass
