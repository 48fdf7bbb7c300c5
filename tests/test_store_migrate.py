"""`bulletproof store migrate`: schema upgrades, and a real SQLite history copied into real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bulletproof.audit import AuditEntry
from bulletproof.models import JobState
from bulletproof.postgres_schema import SCHEMA_VERSION as PG_SCHEMA_VERSION
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store_factory import open_store
from tests.conftest import write_config
from tests.store_contract import added, new

pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")


def bulletproof(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bulletproof", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)


def sqlite_history(path: Path) -> dict[str, Any]:
    """A small SQLite history of every kind: finished, queued, claimed, done, audited, settings."""
    store = SqliteJobStore(path)
    done = added(store, new("done.mp4"))
    store.mark_started(done.id, now=10)
    store.mark_completed(done.id, now=20, output_bytes=50, media_duration=1.0)
    deleted = added(store, new("deleted.mp4"))
    store.mark_started(deleted.id, now=11)
    store.mark_completed(deleted.id, now=21, output_bytes=40, media_duration=1.0)
    store.delete(deleted.id)  # its version stays done
    waiting = added(store, new("waiting.mp4", priority=5))
    again = store.add(new("waiting.mp4"), force=True)  # two unfinished jobs of one version
    assert again is not None
    claim = store.claim("node-a", now=30, lease_seconds=60)
    assert claim is not None and claim.job.id == waiting.id
    store.record_audit(AuditEntry(at=40, action="queue.pause", method="POST",
                                  route="/api/v1/queue/pause", status=200, result="ok",
                                  address="192.0.2.1"))
    store.set_meta("queue_paused", "1")
    store_id = store.get_meta("store_id")
    store.close()
    return {"done": done.id, "waiting": waiting.id, "again": again.id, "token": claim.token,
            "store_id": store_id}


def test_a_sqlite_history_is_copied_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    ids = sqlite_history(tmp_path / "old.db")
    config = write_config(tmp_path, database=postgres_url)
    result = bulletproof("store", "migrate", "--config", config, "--from-sqlite", tmp_path / "old.db")
    assert result.returncode == 0, result.stderr
    assert f"schema version {PG_SCHEMA_VERSION}" in result.stdout
    # The settings: the paused queue, and the store's id (its metrics' fleet label).
    assert "3 jobs, 2 done file versions, 1 audit entries, 2 settings" in result.stdout

    store = open_store(postgres_url)
    try:
        assert store.get(ids["done"]).state is JobState.COMPLETED
        assert store.add(new("deleted.mp4")) is None  # the done version came along
        assert store.get(ids["waiting"]).state is JobState.PROCESSING
        assert store.get(ids["again"]).state is JobState.QUEUED
        assert store.get_meta("queue_paused") == "1"
        assert store.get_meta("store_id") == ids["store_id"]  # its series go on under one fleet
        assert [e.action for e in store.audit_entries()] == ["queue.pause"]
        assert store.counts_by_state()[JobState.COMPLETED] == 1
        # The copied claim is still the current one; new jobs and audit entries get new ids.
        store.renew(ids["waiting"], ids["token"], until=200)
        fresh = added(store, new("fresh.mp4"))
        assert fresh.id > ids["again"]
        assert store.queued()[0].id == ids["again"]  # the copied queue runs before the new job
    finally:
        store.close()

    refused = bulletproof("store", "migrate", "--config", config, "--from-sqlite", tmp_path / "old.db")
    assert refused.returncode == 1
    assert "already holds a history" in refused.stderr and "--force" in refused.stderr
    forced = bulletproof("store", "migrate", "--config", config, "--from-sqlite",
                         tmp_path / "old.db", "--force")
    assert forced.returncode == 0, forced.stderr
    store = open_store(postgres_url)
    try:
        assert store.find("/in/fresh.mp4", 100, 1) is None  # replaced, not mixed
    finally:
        store.close()


def test_migrate_creates_the_configured_schema(tmp_path: Path, postgres_url: str) -> None:
    result = bulletproof("store", "migrate", "--config", write_config(tmp_path, database=postgres_url))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"schema version {PG_SCHEMA_VERSION}")
    sqlite = bulletproof("store", "migrate", "--config",
                         write_config(tmp_path, database="state/jobs.db"))
    assert sqlite.returncode == 0, sqlite.stderr
    assert (tmp_path / "state" / "jobs.db").is_file()


def test_copying_needs_a_postgresql_target_and_a_sqlite_source(tmp_path: Path,
                                                                postgres_url: str) -> None:
    into_sqlite = bulletproof("store", "migrate", "--config",
                              write_config(tmp_path, database="state/jobs.db"),
                              "--from-sqlite", tmp_path / "old.db")
    assert into_sqlite.returncode == 1
    assert "copies into a PostgreSQL store" in into_sqlite.stderr
    missing = bulletproof("store", "migrate", "--config",
                          write_config(tmp_path, database=postgres_url),
                          "--from-sqlite", tmp_path / "nothing.db")
    assert missing.returncode == 1
    assert f"no SQLite job store at {tmp_path / 'nothing.db'}" in missing.stderr


def test_a_sqlite_store_in_use_is_not_copied(tmp_path: Path, postgres_url: str) -> None:
    sqlite_history(tmp_path / "old.db")
    running = SqliteJobStore(tmp_path / "old.db")  # a monitor has it open
    try:
        result = bulletproof("store", "migrate", "--config",
                             write_config(tmp_path, database=postgres_url),
                             "--from-sqlite", tmp_path / "old.db")
    finally:
        running.close()
    assert result.returncode == 4
    assert "in use by another monitor" in result.stderr
