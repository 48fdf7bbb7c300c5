"""Faults the monitor must survive: a full, read-only or damaged store, a second instance, SIGKILL.

Real parts only: the state database lives on a small tmpfs (mounted here, as root) that is filled
until ENOSPC and emptied again; pages of a real database file are overwritten; real `bulletproof
run` subprocesses compete for one database. Every test checks the end state: each input has one
complete output (or a failed job with a reason), no job is stuck, no worker slot is gone, and
/readyz is back to 200, without a restart unless a restart is the documented remedy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulletproof import events as ev
from bulletproof.errors import StoreCorrupt, StoreLocked
from bulletproof.models import FailureReason, JobState
from bulletproof.service import Monitor
from bulletproof.sqlite_store import SqliteJobStore
from bulletproof.store import NewJob
from bulletproof.view import COMPONENTS
from tests.api_fixtures import Api, api_factory_fixture  # noqa: F401
from tests.conftest import until, write_config
from tests.test_cli import _ffmpeg_children_of, bp, job_rows, start_run, wait_for

# -- tmpfs ------------------------------------------------------------------------------------

def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A 4 MiB tmpfs for the state database (skipped when it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp(prefix="bp-tmpfs-"))
    mounted = _run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(folder))
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if _run("umount", str(folder)).returncode != 0:
            _run("umount", "-l", str(folder))
        with contextlib.suppress(OSError):
            folder.rmdir()


def fill(folder: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; returns it (delete it to empty)."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * chunk
            try:
                while True:
                    out.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def remount(folder: Path, mode: str) -> None:
    result = _run("mount", "-o", f"remount,{mode}", str(folder))
    assert result.returncode == 0, result.stderr


# -- checks on the end state -----------------------------------------------------------------

def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


async def readyz(api: Api) -> tuple[int, dict]:
    return await api.get("/readyz")


async def until_ready(api: Api, timeout: float = 30.0) -> None:
    """Poll /readyz until it answers 200 (fails the test after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await readyz(api)
        if status == 200:
            assert body == {"status": "ready", "problems": [],
                            "components": dict.fromkeys(COMPONENTS, True)}
            return
        assert time.monotonic() < deadline, f"/readyz still {status}: {body}"
        await asyncio.sleep(0.1)


async def assert_healthy_end(api: Api, inputs: list[str]) -> None:
    """Every input completed once, nothing stuck, every slot alive, /readyz 200."""
    m = api.monitor

    def all_done() -> bool:
        counts = m.view.counts()
        return counts[JobState.COMPLETED] == len(inputs) and not m.view.busy_workers()

    await until(all_done, timeout=90)
    jobs, total = m.view.list_jobs(limit=100)
    assert total == len(inputs) and sorted(j.filename for j in jobs) == sorted(inputs)
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    assert outputs(m.config.output_folder) == sorted(inputs)  # one each, no temporaries
    assert m.pool is not None and m.pool.dead_slots() == []
    await until_ready(api)


def record(api: Api) -> list[ev.Event]:
    seen: list[ev.Event] = []
    api.monitor.bus.subscribe(seen.append)
    return seen


def metric(text: str, name: str) -> float | None:
    """The value of one exact series line (`name` includes any labels) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def scrape(api: Api) -> str:
    async with api.client.get("/metrics") as resp:
        return await resp.text()


# -- a full store -----------------------------------------------------------------------------

async def test_store_full_while_files_arrive_then_everything_is_queued(
        api_factory, tmpfs: Path, clip_cache) -> None:
    api = await api_factory(database=str(tmpfs / "bulletproof.db"))
    seen = record(api)
    filler = fill(tmpfs)
    names = ["one.mp4", "two.mp4", "three.mp4"]
    for name in names:
        api.drop(clip_cache(), name)
    # The watcher saw all three and the store refused each job.
    await until(lambda: len({e.path for e in seen if isinstance(e, ev.FileDetected)}) == 3)
    await until(lambda: not api.monitor.store.health().writable)
    assert api.monitor.view.list_jobs()[1] == 0

    status, body = await api.post("/api/v1/queue/pause")
    assert status == 503 and body["error"]["code"] == "store_unavailable", body
    assert "database or disk is full" in body["error"]["message"]
    assert not api.monitor.view.paused  # a refused pause changed nothing
    status, body = await readyz(api)
    assert status == 503 and body["components"]["store"] is False
    assert any("job store refuses writes: database or disk is full" in p for p in body["problems"])
    text = await scrape(api)
    assert metric(text, "bulletproof_ready") == 0.0
    assert metric(text, 'bulletproof_component_healthy{component="store"}') == 0.0
    assert metric(text, 'bulletproof_component_healthy{component="watcher"}') == 1.0

    filler.unlink()  # space returns: no restart, the rescan finds the three files
    await assert_healthy_end(api, names)
    text = await scrape(api)
    assert metric(text, "bulletproof_ready") == 1.0
    assert any(isinstance(e, ev.StoreStatus) and not e.writable for e in seen)
    assert any(isinstance(e, ev.StoreStatus) and e.writable for e in seen)


async def test_store_full_while_a_job_runs_keeps_the_outcome(
        api_factory, tmpfs: Path, clip_cache) -> None:
    api = await api_factory(database=str(tmpfs / "bulletproof.db"))
    api.drop(clip_cache(seconds=20, size="640x480"), "long.mp4")
    job = await api.wait_job("long.mp4", JobState.PROCESSING)
    children = await until(lambda: _ffmpeg_children_of(os.getpid()))
    for pid in children:  # hold ffmpeg still so the disk is full before it can finish
        os.kill(pid, signal.SIGSTOP)
    try:
        filler = fill(tmpfs)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGCONT)
    pool = api.monitor.pool
    assert pool is not None
    # ffmpeg finished and its output is in place, but the store cannot take the outcome.
    await until(lambda: pool.pending_outcomes(), timeout=60)
    assert (api.monitor.config.output_folder / "long.mp4").is_file()
    status, body = await readyz(api)
    assert status == 503 and body["components"]["store"] is False
    assert any("keeps an outcome the store has not taken" in p for p in body["problems"])
    assert pool.dead_slots() == []

    filler.unlink()
    await assert_healthy_end(api, ["long.mp4"])
    done = api.monitor.view.get_job(job.id)
    assert done.attempts == 1  # recorded, never re-run


async def test_a_slot_that_cannot_claim_backs_off_and_carries_on(
        api_factory, tmpfs: Path, clip_cache) -> None:
    api = await api_factory(database=str(tmpfs / "bulletproof.db"))
    seen = record(api)
    status, _ = await api.post("/api/v1/queue/pause")
    assert status == 200
    api.drop(clip_cache(), "a.mp4")
    await api.wait_job("a.mp4", JobState.QUEUED)
    assert metric(await scrape(api), 'bulletproof_worker_restarts_total{worker="0"}') == 0.0
    filler = fill(tmpfs)
    pool = api.monitor.pool
    assert pool is not None
    api.monitor.queue.paused_since = None  # what resume would do, had the store been able to record it
    pool.wake()
    await until(lambda: [e for e in seen if isinstance(e, ev.WorkerRestarted)])
    status, body = await readyz(api)
    assert status == 503 and body["components"]["workers"] is False
    assert any(p.startswith("worker slot 0 is restarting after an error") for p in body["problems"])
    restarted = metric(await scrape(api), 'bulletproof_worker_restarts_total{worker="0"}')
    assert restarted is not None and restarted >= 1
    assert api.job_for("a.mp4").state is JobState.QUEUED  # a failed claim leaves it queued

    filler.unlink()
    status, _ = await api.post("/api/v1/queue/resume")  # now the store records it too
    assert status == 200 and not api.monitor.view.paused
    await assert_healthy_end(api, ["a.mp4"])


# -- a read-only store ------------------------------------------------------------------------

def test_read_only_store_is_refused_at_start_and_nothing_changes(tmpfs: Path, tmp_path: Path) -> None:
    database = tmpfs / "bulletproof.db"
    store = SqliteJobStore(database)
    store.add(NewJob(source_path=str(tmp_path / "incoming" / "x.mp4"), rel_path="x.mp4",
                     watch_folder=str(tmp_path / "incoming"), size=1, mtime_ns=1,
                     profile="h264_mp4", rule="videos", output_path=str(tmp_path / "out.mp4")))
    store.close()
    before = {p.name: p.read_bytes() for p in tmpfs.iterdir()}
    config = write_config(tmp_path, database=str(database), api={"enabled": False})
    remount(tmpfs, "ro")
    try:
        result = bp("run", "--config", str(config))
    finally:
        remount(tmpfs, "rw")
    assert result.returncode == 1, result.stderr
    assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in tmpfs.iterdir()} == before


# -- a second instance and the start-up order ------------------------------------------------

@pytest.mark.slow
def test_a_second_instance_is_refused_and_the_first_finishes(tmp_path: Path, clip_cache) -> None:
    config = write_config(tmp_path)
    shutil.copy(clip_cache(seconds=20, size="640x480"), tmp_path / "incoming" / "long.mp4")
    db = tmp_path / "state" / "bulletproof.db"
    first = start_run(config, tmp_path / "first.log")
    try:
        wait_for(lambda: any(r[1] == "processing" for r in job_rows(db)), what="the job running")
        temporary = wait_for(lambda: list((tmp_path / "processed").glob(".*bp-tmp-*")),
                             what="its temporary")[0]
        children = wait_for(lambda: _ffmpeg_children_of(first.pid), what="its ffmpeg")
        for pid in children:  # the transcode cannot finish while the second one tries
            os.kill(pid, signal.SIGSTOP)
        try:
            second = bp("run", "--config", str(config))
            assert temporary.exists()  # the second one did not clean up the first one's work
            assert [r[1:3] for r in job_rows(db)] == [("processing", 1)]
        finally:
            for pid in children:
                os.kill(pid, signal.SIGCONT)
        assert second.returncode == 4, second.stderr
        assert f"is in use by another monitor (pid {first.pid} on host {socket.gethostname()}" \
            in second.stderr
        assert "Traceback" not in second.stderr and "starting" not in second.stderr
        wait_for(lambda: [r[1:3] for r in job_rows(db)] == [("completed", 1)], timeout=90,
                 what="the first instance to finish its job")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
    log = (tmp_path / "first.log").read_text()
    assert "worker slot failed" not in log and "removed stale temporary" not in log
    assert outputs(tmp_path / "processed") == ["long.mp4"]


def test_a_taken_port_fails_before_any_recovery(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bulletproof.db"
    store = SqliteJobStore(db)
    job = store.add(NewJob(source_path=str(tmp_path / "incoming" / "x.mp4"), rel_path="x.mp4",
                           watch_folder=str(tmp_path / "incoming"), size=1, mtime_ns=1,
                           profile="h264_mp4", rule="videos",
                           output_path=str(tmp_path / "processed" / "x.mp4")))
    assert job is not None
    store.mark_started(job.id, now=time.time())  # as a monitor killed mid-transcode leaves it
    store.close()
    stale = tmp_path / "processed" / f".x.bp-tmp-{job.id}.mp4"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path, api={"listen": f"127.0.0.1:{taken.getsockname()[1]}"})
        result = bp("run", "--config", str(config))
    assert result.returncode == 1 and "cannot start" in result.stderr, result.stderr
    assert [r[1:3] for r in job_rows(db)] == [("processing", 1)]  # not recovered...
    assert stale.read_bytes() == b"partial"  # ...and nothing deleted


# -- a damaged database -----------------------------------------------------------------------

def overwrite_pages(db: Path, tables: set[str]) -> int:
    """Write garbage over every page of the named tables and their indexes; returns how many."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        marks = ",".join("?" * len(tables))
        names = [r[0] for r in conn.execute(
            f"SELECT name FROM sqlite_master WHERE tbl_name IN ({marks}) AND rootpage > 0",
            sorted(tables))]
        pages = sorted({r[0] for r in conn.execute(
            f"SELECT pageno FROM dbstat WHERE name IN ({','.join('?' * len(names))})", names)})
    conn.close()
    rng = random.Random(7)
    with db.open("r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(rng.randbytes(page_size))
    return len(pages)


def test_a_damaged_page_is_refused_at_start_with_the_remedy(tmp_path: Path) -> None:
    db = tmp_path / "state" / "bulletproof.db"
    store = SqliteJobStore(db)
    for i in range(40):
        store.add(NewJob(source_path=f"/in/{i}.mp4", rel_path=f"{i}.mp4", watch_folder="/in",
                         size=i, mtime_ns=i, profile="h264_mp4", rule="videos",
                         output_path=f"/out/{i}.mp4"))
    store.close()
    assert overwrite_pages(db, {"jobs"}) > 0
    before = db.read_bytes()
    config = write_config(tmp_path, api={"enabled": False})
    result = bp("run", "--config", str(config))
    assert result.returncode == 5, result.stderr
    assert f"the state database {db} is damaged" in result.stderr
    assert "move the database aside" in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before  # refused before writing anything
    # The documented remedy: move it aside and start on a fresh store.
    for path in db.parent.glob(db.name + "*"):
        path.rename(path.with_name(path.name.replace(".db", ".damaged.db")))
    proc = start_run(config, tmp_path / "after.log")
    try:
        wait_for(lambda: "watch folder up" in (tmp_path / "after.log").read_text(), what="start-up")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


async def test_damage_found_at_run_time_stops_new_jobs_and_reports_it(
        api_factory, clip_cache, tmp_path: Path) -> None:
    api = await api_factory()
    api.drop(clip_cache(), "first.mp4")
    await api.wait_job("first.mp4", JobState.COMPLETED)
    db = api.monitor.store.path
    overwrite_pages(db, {"jobs", "job_counts", "done_files"})
    with sqlite3.connect(db) as other:  # another writer: the monitor's page cache is dropped
        other.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('touched', '1')")
    other.close()
    api.drop(clip_cache(), "second.mp4")
    await until(lambda: api.monitor.store.health().corrupt, timeout=20)
    status, body = await readyz(api)
    assert status == 503 and body["components"]["store"] is False
    assert any(p.startswith("job store damaged, no new job starts") for p in body["problems"])
    status, body = await api.post("/api/v1/queue/pause")
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    assert "is damaged" in body["error"]["message"]
    assert api.monitor.pool is not None and api.monitor.pool.dead_slots() == []
    assert api.monitor.view.busy_workers() == 0  # nothing new started on a damaged store
    await api.monitor.stop()
    with pytest.raises(StoreCorrupt):  # and a restart refuses it until it is moved aside
        SqliteJobStore(db)


# -- SIGKILL at random points -----------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path: Path, clip_cache) -> None:
    config = write_config(tmp_path, api={"enabled": False}, retry={"max_attempts": 10})
    names = [f"clip{i}.mp4" for i in range(4)]
    for name in names:
        shutil.copy(clip_cache(seconds=3, size="320x240"), tmp_path / "incoming" / name)
    db = tmp_path / "state" / "bulletproof.db"
    rng = random.Random(20261201)
    for round_ in range(5):
        log = tmp_path / f"run{round_}.log"
        proc = start_run(config, log)
        try:
            # Each start must get the lock the killed one held (the kernel drops it).
            wait_for(lambda log=log, proc=proc: "watch folder up" in log.read_text()
                     or proc.poll() is not None, what="start-up")
            assert proc.poll() is None, log.read_text()
            deadline = time.monotonic() + rng.uniform(0.0, 2.5)  # a kill point, not a speed claim
            while time.monotonic() < deadline:
                time.sleep(0.05)
            children = _ffmpeg_children_of(proc.pid)
        finally:
            proc.kill()
            proc.wait(timeout=10)
        wait_for(lambda children=children: not any(Path(f"/proc/{pid}").exists() for pid in children),
                 timeout=10, what="ffmpeg to die with the monitor")
    proc = start_run(config, tmp_path / "final.log")
    try:
        wait_for(lambda: "watch folder up" in (tmp_path / "final.log").read_text(), what="start-up")
        wait_for(lambda: [r[1] for r in job_rows(db)] == ["completed"] * len(names), timeout=120,
                 what="every job to complete")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    rows = job_rows(db)
    assert sorted(r[3] for r in rows) == names  # one job per input: nothing lost or duplicated
    assert outputs(tmp_path / "processed") == names  # complete outputs only, no temporaries


async def test_two_monitors_cannot_share_an_output_folder(config_factory, monitor_factory,
                                                          tmp_path: Path) -> None:
    config, _ = config_factory()
    first = await monitor_factory(config)
    other_db = tmp_path / "other" / "state.db"
    store = SqliteJobStore(other_db)
    job = store.add(NewJob(source_path=str(tmp_path / "incoming" / "x.mp4"), rel_path="x.mp4",
                           watch_folder=str(tmp_path / "incoming"), size=1, mtime_ns=1,
                           profile="h264_mp4", rule="videos",
                           output_path=str(config.output_folder / "x.mp4")))
    assert job is not None
    store.mark_started(job.id, now=time.time())
    store.close()
    theirs = config.output_folder / f".y.bp-tmp-{job.id}.mp4"  # the first one's work in progress
    theirs.write_bytes(b"partial")
    second = Monitor(config.model_copy(update={"database": other_db}),
                     binaries=first.binaries)
    try:
        with pytest.raises(StoreLocked, match=rf"output folder {config.output_folder} is in use "
                                              rf"by another monitor \(pid {os.getpid()}\)"):
            await second.start()
    finally:
        await second.stop()
    assert theirs.read_bytes() == b"partial"  # not taken for a stale temporary
    assert [r[1:3] for r in job_rows(other_db)] == [("processing", 1)]  # nothing recovered
    assert first.pool is not None and first.pool.dead_slots() == []


async def test_an_error_inside_a_job_fails_it_as_internal_and_the_slot_carries_on(
        api_factory, clip_cache) -> None:
    api = await api_factory()
    m = api.monitor
    # A row no watcher would write (a NUL in the output path): running it raises in the worker.
    source = shutil.copy(clip_cache(), api.root / "outside.mp4")
    hostile = m.store.add(NewJob(
        source_path=str(source), rel_path="outside.mp4", watch_folder=str(api.incoming),
        size=1, mtime_ns=1, profile="h264_mp4", rule="videos",
        output_path=str(m.config.output_folder / "bad\0name.mp4")))
    assert hostile is not None
    m.pool.wake()
    failed = await until(lambda: (j := m.view.get_job(hostile.id)).state is JobState.FAILED and j)
    assert failed.reason is FailureReason.INTERNAL and failed.error.startswith("internal error")
    api.drop(clip_cache(), "after.mp4")  # the same slot takes the next job
    await api.wait_job("after.mp4", JobState.COMPLETED)
    assert m.pool.dead_slots() == []
    await until_ready(api)


def test_a_full_store_volume_at_start_is_a_clear_error(tmpfs: Path, tmp_path: Path) -> None:
    database = tmpfs / "bulletproof.db"
    SqliteJobStore(database).close()
    filler = fill(tmpfs)
    config = write_config(tmp_path, database=str(database), api={"enabled": False})
    result = bp("run", "--config", str(config))
    assert result.returncode == 1, result.stderr
    # Which words SQLite picks depends on the file it first fails to grow (-shm: an I/O error).
    assert f"error: cannot open job store {database}: " in result.stderr
    assert ("database or disk is full" in result.stderr or "disk I/O error" in result.stderr)
    assert "Traceback" not in result.stderr
    filler.unlink()  # with room again, the same command starts
    proc = start_run(config, tmp_path / "run.log")
    try:
        wait_for(lambda: "watch folder up" in (tmp_path / "run.log").read_text(), what="start-up")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
