"""Controls across the nodes of one PostgreSQL store: the queue pause everywhere, cancel, pause
and resume of a job another node runs (by notification, and by polling alone), the store's
other operations from any node, and every node streaming the fleet's job events (without
counting them in its own metrics)."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

import bulletproof.postgres_store
from bulletproof import events as ev
from bulletproof.config import load_config
from bulletproof.errors import InvalidTransition, NodeUnavailable
from bulletproof.fleet_events import FleetEvents
from bulletproof.models import FailureReason, Job, JobState, Outcome, QueueTrigger
from bulletproof.postgres_store import PostgresJobStore
from bulletproof.service import Monitor
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.state import QueueState
from bulletproof.store import ChangeKind, NewJob, NodeInfo, StoreChange
from exporter.api.app import create_app
from exporter.client.formatting import event_line
from tests.api_fixtures import TEST_API
from tests.conftest import until, write_config
from tests.processes import ffmpeg_pid, gone, process_state
from tests.test_ws import receive

FAST = {"heartbeat_seconds": 1, "lease_seconds": 5}
Fleet = Callable[..., Awaitable[list[Monitor]]]


@pytest.fixture
async def fleet(tmp_path: Path, postgres_url: str, monitor_factory) -> Fleet:
    """Monitors named as asked on one PostgreSQL store, sharing the watch and output folders."""

    async def start(*names: str) -> list[Monitor]:
        config = load_config(write_config(tmp_path, database=postgres_url, fleet=FAST,
                                          api=dict(TEST_API)))
        return [await monitor_factory(config.model_copy(update={"node_name": name}))
                for name in names]

    return start


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Monitor], Awaitable[TestClient]]]:
    """The real app of a monitor on a real socket."""
    clients: list[TestClient] = []

    async def make(monitor: Monitor) -> TestClient:
        client = TestClient(TestServer(create_app(monitor.context()), host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def drop(monitor: Monitor, clip: Path, name: str) -> Path:
    """Copy a clip into the shared watch folder (aside, then renamed in)."""
    target = monitor.config.monitor_folder[0].path / name
    tmp = target.with_name(f".{name}.part")
    shutil.copyfile(clip, tmp)
    tmp.rename(target)
    return target


def job_named(monitor: Monitor, name: str, *states: JobState) -> Job | None:
    jobs, _ = monitor.view.list_jobs(search=name, limit=10)
    return next((j for j in jobs if j.filename == name and (not states or j.state in states)), None)


async def running_on(owner: Monitor, other: Monitor, clip: Path, name: str) -> tuple[Job, int]:
    """A long job that `owner` runs (`other` drained meanwhile), and its ffmpeg's pid."""
    other.drain_node(other.presence.name)
    drop(owner, clip, name)
    job = await until(lambda: job_named(owner, name, JobState.PROCESSING), timeout=30)
    pid = await until(lambda: ffmpeg_pid(job.id, owner.config.output_folder), timeout=30)
    assert job.claimed_by == owner.presence.name and owner.pool.runs(job.id)
    return job, pid


def events_of(monitor: Monitor) -> list[ev.Event]:
    return events_of_bus(monitor.bus)


# -- the queue pause ----------------------------------------------------------------------------

async def test_a_pause_on_one_node_holds_every_node_and_a_resume_on_another_frees_them(
        fleet: Fleet, clip_cache) -> None:
    a, b = await fleet("a", "b")
    heard_on_b = events_of(b)
    a.pause_queue()
    await until(lambda: b.view.paused, timeout=10)
    assert b.view.paused_since == a.view.paused_since
    assert [type(e) for e in heard_on_b if isinstance(e, ev.QueuePaused | ev.QueueResumed)] == [
        ev.QueuePaused]  # b tells its own bus (its WebSocket, its logs) what happened to its queue
    drop(b, clip_cache(), "held.mp4")
    job = await until(lambda: job_named(a, "held.mp4"), timeout=20)
    polled = b.relay.polled
    await until(lambda: b.relay.polled >= polled + 2 and a.relay.polled >= 2, timeout=10)
    assert a.view.get_job(job.id).state is JobState.QUEUED  # neither node started it
    b.drain_node("b")  # only a may take it now...
    b.resume_queue()  # ...once b resumed the queue of the fleet
    await until(lambda: not a.view.paused, timeout=10)
    done = await until(lambda: (j := a.view.get_job(job.id)).state is JobState.COMPLETED and j,
                       timeout=60)
    assert done.claimed_by == "a"
    assert [type(e) for e in heard_on_b if isinstance(e, ev.QueuePaused | ev.QueueResumed)] == [
        ev.QueuePaused, ev.QueueResumed]


async def test_a_node_that_has_not_heard_of_a_pause_yet_still_resumes_the_fleet(
        fleet: Fleet, postgres_url: str) -> None:
    a, b = await fleet("a", "b")
    heard_on_a = events_of(a)
    other = PostgresJobStore(postgres_url, node="c")
    try:
        QueueState(other).pause()  # another node pauses...
        a.resume_queue()  # ...and a resumes before its loop could hear of it (no await between)
    finally:
        other.close()
    assert [type(e) for e in heard_on_a] == [ev.QueuePaused, ev.QueueResumed]
    assert not a.view.paused
    await until(lambda: b.relay.polled >= 2, timeout=10)
    assert not b.view.paused and a.store.get_meta("queue_paused") == "0"


# -- one job running on another node ------------------------------------------------------------

async def test_cancel_pause_and_resume_of_a_job_another_node_runs(fleet: Fleet, clip_cache) -> None:
    a, b = await fleet("a", "b")
    job, pid = await running_on(b, a, clip_cache(seconds=60, size="640x360"), "long.mp4")
    heard_on_a = events_of(a)

    started = time.monotonic()
    asked = a.pause_job(job.id)  # a's answer: the job as it still is; b acts on the request
    assert asked.state is JobState.PROCESSING and asked.claimed_by == "b"
    await until(lambda: a.view.get_job(job.id).state is JobState.PAUSED, timeout=10)
    paused_after = time.monotonic() - started
    await until(lambda: process_state(pid) == "T", timeout=5)  # b's ffmpeg is stopped (SIGSTOP)
    with pytest.raises(InvalidTransition, match="it is paused"):
        a.pause_job(job.id)

    a.resume_job(job.id)
    await until(lambda: a.view.get_job(job.id).state is JobState.PROCESSING, timeout=10)
    await until(lambda: process_state(pid) not in ("T", None), timeout=5)

    started = time.monotonic()
    a.cancel_job(job.id)
    cancelled = await until(
        lambda: (j := a.view.get_job(job.id)).state is JobState.CANCELLED and j, timeout=10)
    cancelled_after = time.monotonic() - started
    await until(lambda: gone(pid), timeout=10)  # b's ffmpeg ended
    assert cancelled.claimed_by == "b" and b.store.control_requests("b") == []
    # a heard each step as b's (remote) events, in order.
    mine = [(type(e).__name__, e.origin) for e in heard_on_a
            if isinstance(e, ev.JobPaused | ev.JobResumed | ev.JobFinished)]
    assert mine == [("JobPaused", "b"), ("JobResumed", "b"), ("JobFinished", "b")]
    print(f"remote control delivered: pause {paused_after * 1000:.0f} ms, "
          f"cancel {cancelled_after * 1000:.0f} ms (notification)")


async def test_polling_alone_delivers_a_control_and_the_queue_pause(
        fleet: Fleet, clip_cache, postgres_url: str, monkeypatch) -> None:
    # A lost listener reconnects only after a minute here: whatever arrives meanwhile came by poll.
    monkeypatch.setattr(bulletproof.postgres_store, "_LISTEN_RETRY_SECONDS", 60.0)
    a, b = await fleet("a", "b")
    job, pid = await running_on(b, a, clip_cache(seconds=60, size="640x360"), "polled.mp4")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        def listeners() -> int:
            return admin.execute("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'bulletproof-listen'").fetchone()[0]

        await until(lambda: listeners() == 2, timeout=10)
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'bulletproof-listen'")
        await until(lambda: listeners() == 0, timeout=10)
        started = time.monotonic()
        a.pause_job(job.id)
        await until(lambda: process_state(pid) == "T", timeout=10)
        polled_after = time.monotonic() - started
        a.pause_queue()
        await until(lambda: b.view.paused, timeout=10)
        a.cancel_job(job.id)
        await until(lambda: a.view.get_job(job.id).state is JobState.CANCELLED, timeout=10)
        await until(lambda: gone(pid), timeout=10)
        assert listeners() == 0  # still no listener: the poll carried all three
    print(f"remote pause delivered by polling alone: {polled_after * 1000:.0f} ms")


async def test_a_control_for_a_node_that_is_gone_is_refused_clearly(
        fleet: Fleet, postgres_url: str, clip_cache) -> None:
    [a] = await fleet("a")
    a.drain_node("a")
    clip = drop(a, clip_cache(), "orphan.mp4")
    await until(lambda: job_named(a, "orphan.mp4"), timeout=20)
    dead = PostgresJobStore(postgres_url)  # a node that claimed the job and died, unregistered
    try:
        claim = dead.claim("gone", now=time.time(), lease_seconds=600)
        assert claim is not None and claim.job.source_path == str(clip)
    finally:
        dead.close()
    with pytest.raises(NodeUnavailable, match="it runs on node 'gone', which is not running "
                                              r"\(is not in the registry\)"):
        a.cancel_job(claim.job.id)
    assert a.view.get_job(claim.job.id).state is JobState.PROCESSING  # nothing changed
    now = time.time()  # now the registry knows it, silent for 100 heartbeats
    a.store.heartbeat(NodeInfo(name="gone", instance="x", host="elsewhere", pid=1, version="0",
                               workers=1, busy=1, started_at=now - 200, last_seen=now - 100,
                               heartbeat_seconds=1))
    with pytest.raises(NodeUnavailable, match=r"\(was last heard from 100 s ago\); once its "
                                              "lease runs out the job returns to the queue"):
        a.pause_job(claim.job.id)
    assert a.store.control_requests("gone") == []  # nothing left for nobody


# -- store operations from any node -------------------------------------------------------------

async def test_retry_clear_delete_and_prioritize_work_from_any_node(fleet: Fleet,
                                                                    clip_cache) -> None:
    a, b = await fleet("a", "b")
    a.drain_node("a")
    drop(b, clip_cache(), "done.mp4")
    done = await until(lambda: job_named(b, "done.mp4", JobState.COMPLETED), timeout=60)
    assert done.claimed_by == "b"
    b.pause_queue()
    await until(lambda: a.view.paused, timeout=10)
    retried = a.retry_job(done.id)  # a retries what b ran
    assert retried.state is JobState.QUEUED
    drop(b, clip_cache(seconds=2), "second.mp4")
    second = await until(lambda: job_named(b, "second.mp4"), timeout=20)
    assert [j.id for j in b.view.queued()] == [done.id, second.id]
    a.prioritize_job(second.id)
    assert [j.id for j in b.view.queued()] == [second.id, done.id]  # b's queue order too
    assert a.clear_queue() == 2
    assert {j.state for j in b.view.list_jobs(limit=10)[0]} == {JobState.CANCELLED}
    a.delete_job(second.id)
    assert job_named(b, "second.mp4") is None


# -- the fleet's events on every node's WebSocket, counted by their own node only ---------------

async def test_a_nodes_websocket_streams_another_nodes_job_and_its_metrics_do_not_count_it(
        fleet: Fleet, serve, clip_cache) -> None:
    a, b = await fleet("a", "b")
    a.drain_node("a")
    client = await serve(a)
    async with client.ws_connect("/ws/updates") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        drop(b, clip_cache(), "theirs.mp4")
        seen: list[dict] = []
        while not any(m["type"] == "job_finished" for m in seen):
            seen.append(await receive(ws, timeout=60))
    jobs = [m for m in seen if m["type"].startswith("job_")]
    started = next(m for m in jobs if m["type"] == "job_started")
    finished = next(m for m in jobs if m["type"] == "job_finished")
    assert started["node"] == "b" and started["worker"] == -1 and started["job"]["claimed_by"] == "b"
    assert finished["node"] == "b" and finished["outcome"] == "completed"
    assert finished["job_id"] == started["job_id"] and finished["job"]["state"] == "completed"
    async with client.get("/metrics") as response:
        text = await response.text()
    assert 'bulletproof_jobs_completed_total{profile="h264_mp4"} 0.0' in text  # b counts it


async def test_a_remote_cancel_through_the_api_answers_202_with_the_request(
        fleet: Fleet, serve, clip_cache, postgres_url: str) -> None:
    a, b = await fleet("a", "b")
    job, pid = await running_on(b, a, clip_cache(seconds=60, size="640x360"), "api.mp4")
    client = await serve(a)
    async with client.post(f"/api/v1/jobs/{job.id}/pause") as response:
        assert response.status == 202
        body = await response.json()
    assert (body["requested"], body["state"], body["claimed_by"]) == ("pause", "processing", "b")
    await until(lambda: a.view.get_job(job.id).state is JobState.PAUSED, timeout=10)
    async with client.post(f"/api/v1/jobs/{job.id}/cancel") as response:
        assert response.status == 202
        body = await response.json()
    assert (body["requested"], body["id"]) == ("cancel", job.id)
    await until(lambda: a.view.get_job(job.id).state is JobState.CANCELLED, timeout=10)
    await until(lambda: gone(pid), timeout=10)
    async with client.post(f"/api/v1/jobs/{job.id}/cancel") as response:
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "invalid_state"
    # A job held by a node that is gone: refused, saying why.
    b.pause_queue()  # the fleet takes nothing: the job below is the dead node's
    await until(lambda: a.view.paused, timeout=10)
    dead = PostgresJobStore(postgres_url)
    try:
        folder = a.config.monitor_folder[0].path
        stuck = dead.add(NewJob(source_path=str(folder / "stuck.mp4"), rel_path="stuck.mp4",
                                watch_folder=str(folder), size=1, mtime_ns=1, profile="h264_mp4",
                                rule="videos", output_path=str(a.config.output_folder / "stuck.mp4")))
        assert stuck is not None
        claim = dead.claim("gone", now=time.time(), lease_seconds=600)
        assert claim is not None and claim.job.id == stuck.id
    finally:
        dead.close()
    async with client.post(f"/api/v1/jobs/{stuck.id}/cancel") as response:
        assert response.status == 409
        error = (await response.json())["error"]
    assert error["code"] == "node_unavailable" and error["details"]["node"] == "gone"
    assert "which is not running" in error["message"]


def test_the_follow_line_names_the_node_and_a_slot_only_when_it_is_known() -> None:
    job = {"id": 7, "rel_path": "a.mp4", "attempts": 1}
    remote = event_line({"type": "job_started", "at": 0, "node": "b", "worker": -1,
                         "queue_wait": 1.0, "job": job})
    local = event_line({"type": "job_paused", "at": 0, "node": "a", "worker": 0, "job": job})
    assert "node=b" in remote and "worker" not in remote
    assert "node=a worker=0" in local


# -- another node's changes as events (the translation alone, on a real SQLite store) ------------

def test_another_nodes_changes_become_the_events_it_published(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    bus = ev.EventBus()
    heard = events_of_bus(bus)
    events = FleetEvents(store, bus, shared=True)

    def told(job_id: int, state: JobState | None, kind: ChangeKind = ChangeKind.JOB) -> list[tuple]:
        heard.clear()
        events.publish(StoreChange(kind=kind, job_id=job_id, state=state, origin="b"))
        assert all(e.origin == "b" for e in heard)
        return [(type(e).__name__, getattr(e, "trigger", None) or getattr(e, "outcome", None))
                for e in heard]

    try:
        job = store.add(NewJob(source_path="/in/a.mp4", rel_path="a.mp4", watch_folder="/in",
                               size=1, mtime_ns=1, profile="h264_mp4", rule="videos",
                               output_path="/out/a.mp4"), now=1)
        assert job is not None
        assert told(job.id, JobState.QUEUED) == [("JobQueued", QueueTrigger.DETECTED)]
        claim = store.claim("b", now=2, lease_seconds=30)
        assert claim is not None
        assert told(job.id, JobState.PROCESSING) == [("JobStarted", None)]
        assert heard[0].worker == -1 and heard[0].queue_wait == 1
        store.set_progress(job.id, 0.5, 2.0, 10.0)
        assert told(job.id, None, ChangeKind.PROGRESS) == [("JobProgress", None)]
        assert (heard[0].progress, heard[0].speed, heard[0].eta_seconds) == (0.5, 2.0, 10.0)
        store.mark_paused(job.id, True, token=claim.token)
        assert told(job.id, JobState.PAUSED) == [("JobPaused", None)]
        store.mark_paused(job.id, False, token=claim.token)
        assert told(job.id, JobState.PROCESSING) == [("JobResumed", None)]
        store.mark_failed(job.id, now=5, reason=FailureReason.FFMPEG_ERROR, error="x",
                          stderr_tail="", retry_at=6, token=claim.token)
        assert told(job.id, JobState.QUEUED) == [("JobFinished", Outcome.FAILED),
                                                 ("JobQueued", QueueTrigger.AUTO_RETRY)]
        assert heard[0].will_retry and heard[0].reason is FailureReason.FFMPEG_ERROR
        claim = store.claim("b", now=7, lease_seconds=30)
        assert claim is not None
        told(job.id, JobState.PROCESSING)
        store.requeue_interrupted(job.id, now=8, token=claim.token)  # b stopped cleanly
        assert told(job.id, JobState.QUEUED) == [("JobQueued", QueueTrigger.RECOVERED)]
        store.cancel_queued(job.id, now=9)
        assert told(job.id, JobState.CANCELLED) == [("JobFinished", Outcome.CANCELLED)]
        store.requeue(job.id, now=10)
        assert told(job.id, JobState.QUEUED) == [("JobQueued", QueueTrigger.MANUAL_RETRY)]
        store.cancel_queued(job.id, now=11)
        store.delete(job.id)
        assert told(job.id, None) == [("JobRemoved", None)]
        assert told(job.id, JobState.QUEUED) == []  # gone meanwhile: nothing to tell
    finally:
        store.close()


def events_of_bus(bus: ev.EventBus) -> list[ev.Event]:
    seen: list[ev.Event] = []
    bus.subscribe(seen.append)
    return seen
