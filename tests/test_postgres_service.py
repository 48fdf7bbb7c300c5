"""A monitor on a PostgreSQL store: the `database` URL, the shared output folder, a real transcode."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from bulletproof.config import load_config
from bulletproof.database_url import redact_url, store_identity
from bulletproof.errors import ConfigError, StoreLocked
from bulletproof.models import JobState
from bulletproof.owner import FolderLock
from tests.conftest import until, write_config

pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")


def test_a_postgresql_url_selects_the_shared_store(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, database="postgresql://bp:pw@db.example:5433/jobs"))
    assert config.database == "postgresql://bp:pw@db.example:5433/jobs"
    shown = config.model_dump(mode="json")["database"]
    assert shown == "postgresql://bp:***@db.example:5433/jobs"  # the API and logs never see it
    plain = load_config(write_config(tmp_path, database="state/jobs.db"))
    assert plain.database == tmp_path / "state" / "jobs.db"


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://bp:topsecret@db:notaport/jobs", "not a valid PostgreSQL URL"),
    ("postgresql://bp:topsecret@db:5432/", "names no database"),
])
def test_a_bad_database_url_is_refused_without_its_password(tmp_path: Path, url: str,
                                                             says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, database=url))
    assert says in str(refused.value)
    assert "topsecret" not in str(refused.value)


def test_redaction_and_identity() -> None:
    assert redact_url("postgresql://u:p%40ss@h/db?password=x&sslmode=require") == \
        "postgresql://u:***@h/db?password=***&sslmode=require"
    assert store_identity("postgresql://a:b@h:6000/db") == store_identity("postgresql://c@h:6000/db")
    assert store_identity("postgresql://h/db") == "postgresql://h:5432/db"


def test_monitors_share_an_output_folder_only_on_one_shared_store(tmp_path: Path) -> None:
    store = "postgresql://db:5432/jobs"
    first = FolderLock(tmp_path, shared_store=store)
    second = FolderLock(tmp_path, shared_store=store)
    assert first.held and second.held and first.alone and not second.alone
    with pytest.raises(StoreLocked, match="another job store"):
        FolderLock(tmp_path, shared_store="postgresql://db:5432/other")
    with pytest.raises(StoreLocked, match="in use by another monitor"):
        FolderLock(tmp_path)  # a SQLite monitor: never beside others
    first.release()
    second.release()
    alone = FolderLock(tmp_path)
    with pytest.raises(StoreLocked):
        FolderLock(tmp_path, shared_store=store)
    alone.release()


async def test_a_monitor_transcodes_on_a_postgresql_store(tmp_path: Path, postgres_url: str,
                                                          monitor_factory, clip_cache) -> None:
    config = load_config(write_config(tmp_path, database=postgres_url))
    monitor = await monitor_factory(config)
    shutil.copy(clip_cache(), config.monitor_folder[0].path / "clip.mp4")
    await until(lambda: monitor.view.counts()[JobState.COMPLETED] == 1, timeout=60)
    job = monitor.view.list_jobs()[0][0]
    assert job.state is JobState.COMPLETED and Path(job.output_path).exists()
    assert not (tmp_path / "state").exists()  # no SQLite file, no lock file beside one


async def test_two_monitors_on_one_store_share_the_folders_and_do_each_file_once(
        tmp_path: Path, postgres_url: str, monitor_factory, clip_cache) -> None:
    config = load_config(write_config(tmp_path, database=postgres_url))
    first = await monitor_factory(config.model_copy(update={"node_name": "first"}))
    # The same output folder: allowed on one shared store.
    second = await monitor_factory(config.model_copy(update={"node_name": "second"}))
    for i in range(4):
        shutil.copy(clip_cache(), config.monitor_folder[0].path / f"clip-{i}.mp4")
    await until(lambda: first.view.counts()[JobState.COMPLETED] == 4, timeout=90)
    jobs, total = second.view.list_jobs()
    assert total == 4  # each file version queued once, by whichever monitor saw it first
    outputs = sorted(Path(job.output_path).name for job in jobs)
    assert outputs == [f"clip-{i}.mp4" for i in range(4)]
    assert all(Path(job.output_path).exists() for job in jobs)


async def test_a_config_read_and_applied_keeps_the_database_password(
        tmp_path: Path, postgres_cluster, monitor_factory) -> None:
    url = postgres_cluster.database().replace("postgres@", "postgres:pw-kept@")  # trust: any works
    path = write_config(tmp_path, database=url)
    monitor = await monitor_factory(load_config(path), path)
    shown = monitor.config.model_dump(mode="json")  # what GET /api/v1/config answers
    assert "pw-kept" not in str(shown)
    await monitor.update_config({**shown, "max_workers": 2})
    assert monitor.config.max_workers == 2 and monitor.config.database == url
    assert url in path.read_text(encoding="utf-8")  # the file keeps the secret, not ***


def test_nodes_starting_together_all_join_the_shared_output_folder(tmp_path: Path) -> None:
    # The first node holds the folder exclusively for a moment while it marks it with its store;
    # a node starting in that moment waits it out and joins instead of being refused.
    store = "postgresql://db:5432/jobs"
    first = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
    joined: list[FolderLock] = []
    joining = threading.Thread(target=lambda: joined.append(FolderLock(tmp_path, shared_store=store)))
    joining.start()
    time.sleep(0.05)  # the joiner is waiting now (or about to): the first node ends its moment
    fcntl.flock(first, fcntl.LOCK_SH | fcntl.LOCK_NB)
    joining.join(timeout=30)
    assert joined and joined[0].held and not joined[0].alone
    joined[0].release()
    # A monitor that keeps it exclusively (SQLite) is still refused, once the wait is over.
    fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(StoreLocked, match="in use by another monitor"):
        FolderLock(tmp_path, shared_store=store)
    os.close(first)
