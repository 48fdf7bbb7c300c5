"""SqliteJobStore on real SQLite files: dedupe, queue order, transitions, recovery, queries."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from bulletproof.errors import InvalidTransition, JobNotFound, StoreError, StoreLocked
from bulletproof.models import FailureReason, JobState
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import NewJob


def new(name: str, size: int = 100, mtime: int = 1, priority: int = 0) -> NewJob:
    return NewJob(source_path=f"/in/{name}", rel_path=name, watch_folder="/in", size=size,
                  mtime_ns=mtime, profile="h264_mp4", rule="videos", output_path=f"/out/{name}",
                  priority=priority)


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    s = SqliteJobStore(tmp_path / "state" / "jobs.db")
    yield s
    s.close()


def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    s = SqliteJobStore(path)
    job = s.add(new("a.mp4"))
    s.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteJobStore(path)
    assert again.get(job.id).rel_path == "a.mp4"
    again.close()


def test_same_file_version_is_queued_once(store: SqliteJobStore) -> None:
    assert store.add(new("a.mp4")) is not None
    assert store.add(new("a.mp4")) is None
    assert store.add(new("a.mp4", mtime=2)) is not None  # changed file: a new job
    assert store.add(new("a.mp4"), force=True) is not None  # explicit request


def test_completed_file_is_not_redone_even_after_deleting_its_job(store: SqliteJobStore) -> None:
    job = store.add(new("a.mp4"))
    store.mark_started(job.id, now=1)
    store.mark_completed(job.id, now=2, output_bytes=10, media_duration=1.0)
    store.delete(job.id)
    assert store.add(new("a.mp4")) is None


def test_fifo_within_priority_and_move_to_front(store: SqliteJobStore) -> None:
    a, b, c = (store.add(new(n)) for n in ("a", "b", "c"))
    urgent = store.add(new("u", priority=5))
    assert [j.id for j in store.queued()] == [urgent.id, a.id, b.id, c.id]
    store.prioritize(c.id)
    assert [j.id for j in store.queued()] == [c.id, urgent.id, a.id, b.id]
    assert store.next_queued(now=0).id == c.id


def test_backoff_delays_a_queued_job(store: SqliteJobStore) -> None:
    job = store.add(new("a"))
    store.mark_started(job.id, now=10)
    store.mark_failed(job.id, now=11, reason=FailureReason.STALLED, error="stalled", stderr_tail="", retry_at=50)
    assert store.get(job.id).state is JobState.QUEUED
    assert store.next_queued(now=49) is None
    assert store.next_queued(now=50).id == job.id
    assert store.next_wakeup() == 50


def test_attempts_and_failure_details(store: SqliteJobStore) -> None:
    job = store.add(new("a"))
    started = store.mark_started(job.id, now=10)
    assert started.attempts == 1 and started.state is JobState.PROCESSING
    failed = store.mark_failed(job.id, now=12, reason=FailureReason.INPUT_INVALID, error="bad",
                               stderr_tail="moov atom not found", retry_at=None)
    assert failed.state is JobState.FAILED and failed.reason is FailureReason.INPUT_INVALID
    assert failed.stderr_tail == "moov atom not found" and failed.duration == 2
    retried = store.requeue(job.id, now=13)
    assert retried.state is JobState.QUEUED and retried.attempts == 0 and retried.reason is None


def test_invalid_transitions_and_unknown_ids(store: SqliteJobStore) -> None:
    job = store.add(new("a"))
    with pytest.raises(InvalidTransition, match="cannot retry job 1: it is queued"):
        store.requeue(job.id, now=1)
    with pytest.raises(InvalidTransition):
        store.delete(job.id)
    with pytest.raises(InvalidTransition):
        store.mark_paused(job.id, True)
    with pytest.raises(JobNotFound, match="job 999 not found"):
        store.get(999)
    with pytest.raises(JobNotFound):
        store.cancel_queued(999, now=1)


def test_cancel_and_clear(store: SqliteJobStore) -> None:
    a, b, c = (store.add(new(n)) for n in ("a", "b", "c"))
    assert store.cancel_queued(a.id, now=1).state is JobState.CANCELLED
    store.mark_started(b.id, now=1)
    assert store.clear_queue(now=2) == [c.id]
    counts = store.counts_by_state()
    assert counts[JobState.CANCELLED] == 2 and counts[JobState.PROCESSING] == 1
    assert counts[JobState.QUEUED] == 0 and set(counts) == set(JobState)


def test_recovery_after_a_crash(store: SqliteJobStore) -> None:
    a, b, c = (store.add(new(n)) for n in ("a", "b", "c"))
    store.mark_started(a.id, now=1)
    store.mark_started(b.id, now=1)
    store.mark_paused(b.id, True)
    for _ in range(2):  # c exhausted its attempts
        store.mark_started(c.id, now=1)
        store.mark_failed(c.id, now=2, reason=FailureReason.STALLED, error="", stderr_tail="", retry_at=2)
    store.mark_started(c.id, now=3)
    recovered = {j.id: j for j in store.recover_interrupted(now=5, max_attempts=3, retry_interrupted=True)}
    assert recovered[a.id].state is JobState.QUEUED and recovered[a.id].attempts == 1
    assert recovered[a.id].reason is FailureReason.INTERRUPTED
    assert recovered[b.id].state is JobState.QUEUED
    assert recovered[c.id].state is JobState.FAILED and recovered[c.id].attempts == 3
    assert store.next_queued(now=6).id in (a.id, b.id)  # interrupted jobs go to the front


def test_clean_shutdown_requeue_does_not_count_the_attempt(store: SqliteJobStore) -> None:
    job = store.add(new("a"))
    store.mark_started(job.id, now=1)
    again = store.requeue_interrupted(job.id, now=2)
    assert again.state is JobState.QUEUED and again.attempts == 0


def test_list_filters_sort_and_pagination(store: SqliteJobStore) -> None:
    for i, name in enumerate(["alpha.mp4", "beta.mov", "gamma_100%.mp4"]):
        job = store.add(new(name, size=100 * (i + 1)))
        store.mark_started(job.id, now=10 * i)
        store.mark_completed(job.id, now=10 * i + i + 1, output_bytes=5, media_duration=1)
    store.add(new("delta.mp4", size=50))
    jobs, total = store.list_jobs(states=[JobState.COMPLETED], sort="duration", descending=True)
    assert total == 3 and [j.rel_path for j in jobs] == ["gamma_100%.mp4", "beta.mov", "alpha.mp4"]
    assert store.list_jobs(search="100%")[1] == 1
    assert store.list_jobs(search="_")[1] == 1  # LIKE wildcards are literal
    page, total = store.list_jobs(sort="size", descending=False, limit=2, offset=1)
    assert total == 4 and [j.size for j in page] == [100, 200]
    assert store.list_jobs(profile="nope")[1] == 0


def test_summary_and_history(store: SqliteJobStore) -> None:
    for i in range(3):
        job = store.add(new(f"{i}"))
        store.mark_started(job.id, now=1000 + i)
        if i < 2:
            store.mark_completed(job.id, now=1004 + i, output_bytes=1, media_duration=1)
        else:
            store.mark_failed(job.id, now=1010, reason=FailureReason.FFMPEG_ERROR, error="x",
                              stderr_tail="", retry_at=None)
    summary = store.summary(now=1100)
    assert (summary["total_jobs"], summary["successful"], summary["failed"]) == (3, 2, 1)
    assert summary["avg_duration"] == 4
    assert len(summary["last_24h"]) == 24
    buckets = store.history(since=1000, until=1020, step=10)
    assert [(b["completed"], b["failed"]) for b in buckets] == [(2, 0), (0, 1)]
    assert store.last_finished_at()[JobState.FAILED] == 1010
    assert store.oldest_queued_at() is None


def test_meta_round_trip(store: SqliteJobStore) -> None:
    assert store.get_meta("queue_paused") is None
    store.set_meta("queue_paused", "1")
    assert store.get_meta("queue_paused") == "1"


def test_unopenable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open job store"):
        SqliteJobStore(tmp_path / "file" / "jobs.db")
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SqliteJobStore(tmp_path / "garbage.db")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    s = SqliteJobStore(tmp_path / "jobs.db")
    s.set_meta("schema_version", "99")
    s.close()
    with pytest.raises(StoreError, match="newer than this version supports"):
        SqliteJobStore(tmp_path / "jobs.db")


def test_space_saved_sums_completed_jobs_only(store: SqliteJobStore) -> None:
    sizes = {"a.mp4": (1000, 400), "b.mp4": (500, 600), "c.mp4": (2000, None)}
    for name, (size, output) in sizes.items():
        job = store.add(new(name, size=size))
        store.mark_started(job.id, now=1000)
        if output is None:
            store.mark_failed(job.id, now=1001, reason=FailureReason.FFMPEG_ERROR, error="x",
                              stderr_tail="", retry_at=None)
        else:
            store.mark_completed(job.id, now=1001, output_bytes=output, media_duration=1)
    store.add(new("d.mp4", size=9000))  # queued: not counted
    summary = store.summary(now=1100)
    assert {k: summary[k] for k in ("sized_jobs", "input_bytes", "output_bytes", "saved_bytes")} == {
        "sized_jobs": 2, "input_bytes": 1500, "output_bytes": 1000, "saved_bytes": 500}
    assert summary["saved_ratio"] == pytest.approx(1 / 3)
    plan = " ".join(str(row[3]) for row in store._query(
        "EXPLAIN QUERY PLAN SELECT COUNT(*), SUM(input_bytes), SUM(output_bytes) FROM jobs "
        "WHERE state = 'completed' AND input_bytes IS NOT NULL AND output_bytes IS NOT NULL"))
    assert "COVERING INDEX jobs_state_sizes" in plan  # cheap on a long history


def test_space_saved_with_no_history(store: SqliteJobStore) -> None:
    assert store.space_saved() == {"sized_jobs": 0, "input_bytes": 0, "output_bytes": 0,
                                   "saved_bytes": 0, "saved_ratio": None}


def test_a_second_store_on_the_same_database_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = SqliteJobStore(path)
    first.add(new("a.mp4"))
    with pytest.raises(StoreLocked) as refused:
        SqliteJobStore(path)
    assert refused.value.holder["pid"] == os.getpid()
    assert f"in use by another monitor (pid {os.getpid()} on host " in str(refused.value)
    assert str(path) + ".lock" in str(refused.value)
    first.close()
    again = SqliteJobStore(path)  # released on close (and by the kernel when a holder dies)
    assert again.counts_by_state()[JobState.QUEUED] == 1
    again.close()


def test_every_sqlite_error_is_a_store_error_and_the_health_says_so(tmp_path: Path) -> None:
    s = SqliteJobStore(tmp_path / "jobs.db")
    assert s.health().writable and s.probe()
    s._db.execute("PRAGMA query_only = 1")  # SQLite itself refuses the writes from here on
    with pytest.raises(StoreError, match="job store write failed: attempt to write a readonly"):
        s.set_meta("queue_paused", "1")
    health = s.health()
    assert not health.writable and health.outages == 1 and "readonly" in (health.error or "")
    assert not s.probe()
    s._db.execute("PRAGMA query_only = 0")
    assert s.probe() and s.health().writable and s.health().outages == 1
    s.close()
    with pytest.raises(StoreError):  # a closed store too: never a bare sqlite3 error
        s.get_meta("queue_paused")
