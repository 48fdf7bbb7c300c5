"""SqliteJobStore's part in trusted outputs: output names reserved race-free, skipped jobs, migration."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bulletproof.models import FailureReason, JobState, SkipReason
from bulletproof.sqlite_store import SCHEMA_VERSION, SqliteJobStore
from bulletproof.store import NewJob


def new(name: str, size: int = 100, mtime: int = 1) -> NewJob:
    return NewJob(source_path=f"/in/{name}", rel_path=name, watch_folder="/in", size=size,
                  mtime_ns=mtime, profile="h264_mp4", rule="videos", output_path=f"/out/{name}")


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    s = SqliteJobStore(tmp_path / "state" / "jobs.db")
    yield s
    s.close()


def _namesake(name: str, out: Path, size: int = 100) -> NewJob:
    return NewJob(source_path=f"/in/{name}", rel_path=name, watch_folder="/in", size=size,
                  mtime_ns=1, profile="h264_mp4", rule="videos", output_path=str(out / "clip_a.mp4"))


def test_output_names_are_reserved_race_free_across_threads(tmp_path: Path) -> None:
    # One store per database (a second one is refused by its lock): callers on several threads
    # (the loop, scans, the API) share it, and each reservation is one write transaction.
    path, out = tmp_path / "jobs.db", tmp_path / "out"
    store = SqliteJobStore(path)
    got: list[str] = []
    barrier = threading.Barrier(4)

    def add(i: int) -> None:
        barrier.wait()
        job, _ = store.add_reserving(_namesake(f"clip_a.{i}", out), policy="rename")
        assert job is not None
        got.append(Path(job.output_path).name)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == ["clip_a (1).mp4", "clip_a (2).mp4", "clip_a (3).mp4", "clip_a.mp4"]
    store.close()


def test_a_new_version_of_the_same_source_keeps_its_name(store: SqliteJobStore, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first, _ = store.add_reserving(_namesake("clip_a.mp4", out), policy="rename")
    assert first is not None
    store.mark_started(first.id, now=1.0)
    store.mark_completed(first.id, now=2.0, output_bytes=1, media_duration=1.0)
    out.mkdir()
    Path(first.output_path).write_bytes(b"our own output")
    again, applied = store.add_reserving(_namesake("clip_a.mp4", out, size=200), policy="rename")
    assert again is not None and again.output_path == first.output_path and applied is None
    other, applied = store.add_reserving(_namesake("clip_a.mkv", out), policy="fail")
    assert other is not None and applied == "fail"
    assert (other.state, other.reason) == (JobState.FAILED, FailureReason.OUTPUT_CONFLICT)


def test_skipped_jobs_count_and_are_done(store: SqliteJobStore) -> None:
    job = store.add(new("a.mp4"))
    assert job is not None
    store.mark_started(job.id, now=1.0)
    skipped = store.mark_skipped(job.id, now=2.0, reason=SkipReason.ALREADY_TARGET, message="m",
                                 output_bytes=None, media_duration=1.0)
    assert (skipped.state, skipped.reason) == (JobState.SKIPPED, SkipReason.ALREADY_TARGET)
    assert store.counts_by_state()[JobState.SKIPPED] == 1
    assert store.last_finished_at()[JobState.SKIPPED] == 2.0
    store.delete(job.id)
    assert store.add(new("a.mp4")) is None  # remembered as done


def test_migration_adds_the_output_columns_to_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    s = SqliteJobStore(path)
    s.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE jobs DROP COLUMN source_inode")
    db.execute("ALTER TABLE jobs DROP COLUMN quality_score")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    s = SqliteJobStore(path)
    job = s.add(new("a.mp4"))
    assert job is not None and job.source_inode is None
    s.set_source_inode(job.id, 42)
    assert s.get(job.id).source_inode == 42
    assert s.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
    s.close()
    SqliteJobStore(path).close()  # idempotent
