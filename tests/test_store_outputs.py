"""SqliteJobStore's part in trusted outputs: names reserved race-free across threads, migration.

The reservation rules themselves are in the contract suite (tests/store_contract.py).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from bulletproof.sqlite_store import SCHEMA_VERSION, SqliteJobStore
from bulletproof.store import NewJob


def new(name: str, size: int = 100, mtime: int = 1) -> NewJob:
    return NewJob(source_path=f"/in/{name}", rel_path=name, watch_folder="/in", size=size,
                  mtime_ns=mtime, profile="h264_mp4", rule="videos", output_path=f"/out/{name}")


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
    assert s.get_meta("schema_version") == str(SCHEMA_VERSION) == "5"
    s.close()
    SqliteJobStore(path).close()  # idempotent
