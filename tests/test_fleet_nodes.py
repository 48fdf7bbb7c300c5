"""The node registry in a running monitor: heartbeat, one name per running monitor, draining,
and the sweep that returns a dead node's job to the queue (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bulletproof.config import Config, load_config
from bulletproof.errors import NodeNameTaken, NodeNotFound
from bulletproof.models import JobState
from bulletproof.postgres_store import PostgresJobStore
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import NewJob, NodeInfo
from tests.conftest import until, write_config

FAST = {"heartbeat_seconds": 1, "lease_seconds": 5}


def fleet_config(tmp_path: Path, name: str, **overrides: object) -> Config:
    return load_config(write_config(tmp_path, **{"node_name": name, "fleet": FAST, **overrides}))


async def test_a_monitor_lists_itself_and_says_when_it_stopped(tmp_path: Path,
                                                               monitor_factory) -> None:
    monitor = await monitor_factory(fleet_config(tmp_path, "solo", max_workers=2))
    [me] = monitor.view.nodes()
    assert (me.name, me.workers, me.version, me.stopped_at) == ("solo", 2, monitor.version, None)
    assert me.alive(time.time()) and monitor.view.node_name == "solo"
    first_seen = me.last_seen
    await until(lambda: monitor.view.nodes()[0].last_seen > first_seen, timeout=10)  # it beats
    await monitor.stop()
    store = SqliteJobStore(Path(monitor.config.database))
    try:
        [after] = store.nodes()
        assert after.stopped_at is not None and not after.alive(time.time())  # left, not died
    finally:
        store.close()


async def test_a_draining_node_finishes_nothing_new_until_drain_ends(
        tmp_path: Path, monitor_factory, clip_cache) -> None:
    monitor = await monitor_factory(fleet_config(tmp_path, "solo"))
    node = monitor.drain_node("solo")
    assert node.draining and monitor.view.draining
    with pytest.raises(NodeNotFound, match="no node named 'other'"):
        monitor.drain_node("other")
    shutil.copy(clip_cache(), monitor.config.monitor_folder[0].path / "clip.mp4")
    await until(lambda: monitor.view.counts()[JobState.QUEUED] == 1)
    await until(lambda: monitor.view.nodes()[0].last_seen > time.time() - 0.5)  # beats pass...
    assert monitor.view.counts()[JobState.QUEUED] == 1  # ...and the job still waits
    monitor.drain_node("solo", False)
    await until(lambda: monitor.view.counts()[JobState.COMPLETED] == 1, timeout=60)


async def test_a_name_another_running_monitor_holds_is_refused_a_gone_ones_taken_over(
        tmp_path: Path, postgres_url: str, monitor_factory) -> None:
    other = PostgresJobStore(postgres_url)  # another host's monitor, beating now
    try:
        other.heartbeat(replace(node("encoder", last_seen=time.time()), host="elsewhere"))
        with pytest.raises(NodeNameTaken,
                           match="node name 'encoder' is in use by another running monitor"):
            await monitor_factory(fleet_config(tmp_path / "a", "encoder", database=postgres_url))
        # A monitor of this host whose process is gone (a crash, then a restart): taken over.
        dead_pid = _a_dead_pid()
        other.heartbeat(replace(node("crashed", last_seen=time.time()), host=socket.gethostname(),
                                pid=dead_pid))
        restarted = await monitor_factory(fleet_config(tmp_path / "b", "crashed",
                                                       database=postgres_url))
        [row] = [n for n in restarted.view.nodes() if n.name == "crashed"]
        assert row.pid == os.getpid() and row.instance == restarted.presence.instance
    finally:
        other.close()


def _a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def node(name: str, *, last_seen: float) -> NodeInfo:
    return NodeInfo(name=name, instance="other", host="elsewhere", pid=1, version="0.0.1",
                    workers=1, busy=0, started_at=last_seen - 60, last_seen=last_seen,
                    heartbeat_seconds=10.0)


async def test_draining_set_on_one_node_reaches_the_other_at_once(
        tmp_path: Path, postgres_url: str, monitor_factory) -> None:
    first = await monitor_factory(fleet_config(tmp_path / "a", "first", database=postgres_url,
                                               fleet={"heartbeat_seconds": 60,
                                                      "lease_seconds": 180}))
    second = await monitor_factory(fleet_config(tmp_path / "b", "second", database=postgres_url))
    second.drain_node("first")
    # Far sooner than first's next heartbeat (60 s): the store's notification carried it.
    await until(lambda: first.view.draining, timeout=10)
    second.drain_node("first", False)
    await until(lambda: not first.view.draining, timeout=10)


async def test_a_dead_nodes_job_returns_to_the_queue_and_completes_here(
        tmp_path: Path, postgres_url: str, monitor_factory, clip_cache) -> None:
    config = fleet_config(tmp_path, "survivor", database=postgres_url)
    incoming = config.monitor_folder[0].path
    clip = incoming / "orphan.mp4"
    shutil.copy(clip_cache(), clip)
    stat = clip.stat()
    dead = PostgresJobStore(postgres_url)  # a node that claims a job and dies at once
    try:
        dead.add(NewJob(source_path=str(clip), rel_path="orphan.mp4", watch_folder=str(incoming),
                        size=stat.st_size, mtime_ns=stat.st_mtime_ns, profile="h264_mp4",
                        rule="videos", output_path=str(config.output_folder / "orphan.mp4")))
        claim = dead.claim("gone", now=time.time(), lease_seconds=2)
        assert claim is not None
    finally:
        dead.close()
    monitor = await monitor_factory(config)
    job = await until(lambda: (j := monitor.view.get_job(claim.job.id)).state is JobState.COMPLETED
                      and j, timeout=60)
    assert job.attempts == 2 and job.claimed_by == "survivor"
    assert (config.output_folder / "orphan.mp4").exists()
