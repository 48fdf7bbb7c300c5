"""SqliteJobStore on real SQLite files: WAL, the lock, the schema, migrations, SQLite's errors.

What every JobStore must do (queue order, transitions, claims, reads) is in the contract suite
(tests/store_contract.py, run by tests/test_store_contract.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from bulletproof.errors import StoreError, StoreLocked
from bulletproof.models import JOB_FIELDS, FailureReason, JobState
from bulletproof.queries import INTERNAL_COLUMNS
from bulletproof.sqlite_store import SCHEMA_VERSION, SqliteJobStore
from bulletproof.store import JobStore, NewJob


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


def test_the_jobs_table_has_exactly_the_job_fields_and_the_store_columns(store: SqliteJobStore) -> None:
    columns = [row[1] for row in store._query("PRAGMA table_info(jobs)")]
    assert len(columns) == len(set(columns))
    assert set(columns) == set(JOB_FIELDS) | set(INTERNAL_COLUMNS)
    assert not set(JOB_FIELDS) & set(INTERNAL_COLUMNS)


def test_the_interface_declares_every_public_method_of_the_sqlite_store() -> None:
    # Callers hold a JobStore: a method only the SQLite store has would tie them to it.
    public = {name for name in dir(SqliteJobStore) if not name.startswith("_")}
    declared = {name for name in dir(JobStore) if not name.startswith("_")}
    assert public == declared - {"path"}  # path is an attribute of each store


def test_an_older_database_gets_the_claim_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    s = SqliteJobStore(path)
    job = s.add(new("a.mp4"))
    s.mark_started(job.id, now=1)
    s.close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX jobs_lease")
    for column in ("claim_token", "claimed_by", "lease_until"):
        db.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    db.commit()
    db.close()
    s = SqliteJobStore(path)
    assert s.get(job.id).state is JobState.PROCESSING
    s.requeue_interrupted(job.id, now=2)
    claim = s.claim("n1", now=3, lease_seconds=5)
    assert claim is not None and claim.job.id == job.id and claim.token == 1
    s.close()
    SqliteJobStore(path).close()  # idempotent


def test_concurrent_claims_take_each_job_once(store: SqliteJobStore) -> None:
    # Callers on several threads share the one store; each claim is one write transaction.
    ids = {store.add(new(f"{i}.mp4")).id for i in range(20)}
    got: list[int] = []
    barrier = threading.Barrier(4)

    def take() -> None:
        barrier.wait()
        while (claim := store.claim(threading.current_thread().name, now=1, lease_seconds=5)):
            got.append(claim.job.id)

    threads = [threading.Thread(target=take, name=f"node-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


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


def test_space_saved_reads_only_the_index(store: SqliteJobStore) -> None:
    job = store.add(new("a.mp4", size=1000))
    store.mark_started(job.id, now=1000)
    store.mark_completed(job.id, now=1001, output_bytes=400, media_duration=1)
    assert store.space_saved()["saved_bytes"] == 600
    plan = " ".join(str(row[3]) for row in store._query(
        "EXPLAIN QUERY PLAN SELECT COUNT(*), SUM(input_bytes), SUM(output_bytes) FROM jobs "
        "WHERE state = 'completed' AND input_bytes IS NOT NULL AND output_bytes IS NOT NULL"))
    assert "COVERING INDEX jobs_state_sizes" in plan  # cheap on a long history


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
    with pytest.raises(StoreError, match="readonly"):
        s.mark_failed(1, now=1, reason=FailureReason.INTERNAL, error="", stderr_tail="",
                      retry_at=None)
    health = s.health()
    assert not health.writable and health.outages == 1 and "readonly" in (health.error or "")
    assert not s.probe()
    s._db.execute("PRAGMA query_only = 0")
    assert s.probe() and s.health().writable and s.health().outages == 1
    s.close()
    with pytest.raises(StoreError):  # a closed store too: never a bare sqlite3 error
        s.get_meta("queue_paused")


def test_a_file_at_an_older_schema_gets_the_later_steps(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SqliteJobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE audit")  # as a version-1 file was: no audit trail yet
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    store = SqliteJobStore(path)
    try:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert store.audit_count() == 0
        assert store.control_requests("any") == []  # the later steps' tables are there
    finally:
        store.close()
