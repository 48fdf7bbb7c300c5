"""JobStore: the persistent job queue and history in SQLite (WAL)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulletproof.errors import InvalidTransition, JobNotFound, StoreError
from bulletproof.models import FailureReason, Job, JobState

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    source_path    TEXT    NOT NULL,
    rel_path       TEXT    NOT NULL,
    watch_folder   TEXT    NOT NULL,
    size           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    profile        TEXT    NOT NULL,
    rule           TEXT    NOT NULL,
    output_path    TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    priority       INTEGER NOT NULL DEFAULT 0,
    seq            REAL    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    created_at     REAL    NOT NULL,
    queued_at      REAL    NOT NULL,
    started_at     REAL,
    finished_at    REAL,
    not_before     REAL,
    progress       REAL    NOT NULL DEFAULT 0,
    speed          REAL,
    eta_seconds    REAL,
    input_bytes    INTEGER,
    output_bytes   INTEGER,
    media_duration REAL,
    reason         TEXT,
    error          TEXT,
    stderr_tail    TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_fingerprint ON jobs (source_path, size, mtime_ns);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE INDEX IF NOT EXISTS jobs_state_finished ON jobs (state, finished_at, started_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_state_queued ON jobs (state, queued_at);
-- Jobs per state, kept by triggers: counting rows walks them all, and /metrics reads this on
-- every scrape, so its cost must not grow with the history.
CREATE TABLE IF NOT EXISTS job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF state ON jobs
WHEN OLD.state IS NOT NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
        ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Versions of files that were transcoded successfully; outlives deleting the job from history,
-- so a restart never redoes a file whose job was deleted.
CREATE TABLE IF NOT EXISTS done_files (
    source_path TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    PRIMARY KEY (source_path, size, mtime_ns)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, source_path, rel_path, watch_folder, size, mtime_ns, profile, rule, output_path, state, "
    "priority, attempts, created_at, queued_at, started_at, finished_at, not_before, progress, "
    "speed, eta_seconds, input_bytes, output_bytes, media_duration, reason, error, stderr_tail"
)

SORT_COLUMNS = {
    "created": "created_at",
    "finished": "finished_at",
    "started": "started_at",
    "duration": "(finished_at - started_at)",
    "size": "input_bytes",
    "id": "id",
}
_NULLABLE_SORTS = frozenset({"finished", "started", "duration", "size"})


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the monitor knows about a file when it queues it."""

    source_path: str
    rel_path: str
    watch_folder: str
    size: int
    mtime_ns: int
    profile: str
    rule: str
    output_path: str
    priority: int = 0


def _row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["state"] = JobState(data["state"])
    data["reason"] = FailureReason(data["reason"]) if data["reason"] else None
    return Job(**data)


class JobStore:
    """Every job the monitor has queued, and its history; safe to call from several threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash (SIGKILL); only power loss may
            # roll back the last commits, which the rescan then finds again.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._check_version()
            self._recount()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open job store {path}: {exc}", path=path) from None
        self._lock = threading.RLock()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"job store {self.path} has schema {row[0]}, newer than this version supports "
                f"({SCHEMA_VERSION})",
                path=self.path,
            )

    def _recount(self) -> None:
        """Rebuild job_counts from the jobs (once per open: cheap, and heals any drift)."""
        self._db.executescript(
            "BEGIN IMMEDIATE; DELETE FROM job_counts; INSERT INTO job_counts (state, n) "
            "SELECT state, COUNT(*) FROM jobs GROUP BY state; COMMIT;")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"job store query failed: {exc}", path=self.path) from None

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A persisted setting (e.g. whether the queue is paused)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        """Persist a setting."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- writes -------------------------------------------------------------------------------

    def add(self, new: NewJob, *, now: float | None = None, force: bool = False) -> Job | None:
        """Queue a job unless this (path, size, mtime) has a job or was done; returns it or None.

        `force` skips the check (an operator asked for this file explicitly).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            known = db.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE source_path = ?1 AND size = ?2 "
                "AND mtime_ns = ?3) OR EXISTS (SELECT 1 FROM done_files WHERE source_path = ?1 "
                "AND size = ?2 AND mtime_ns = ?3)",
                (new.source_path, new.size, new.mtime_ns),
            ).fetchone()[0]
            if known and not force:
                return None
            cur = db.execute(
                "INSERT INTO jobs (source_path, rel_path, watch_folder, size, mtime_ns, profile, "
                "rule, output_path, state, priority, seq, created_at, queued_at, input_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, "
                "COALESCE((SELECT MAX(seq) FROM jobs), 0) + 1, ?, ?, ?)",
                (new.source_path, new.rel_path, new.watch_folder, new.size, new.mtime_ns,
                 new.profile, new.rule, new.output_path, new.priority, now, now, new.size),
            )
            job_id = cur.lastrowid
        assert job_id is not None
        return self.get(job_id)

    def _transition(self, job_id: int, action: str, allowed: set[JobState], sql: str,
                    params: tuple[Any, ...]) -> Job:
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            state = JobState(row[0])
            if state not in allowed:
                raise InvalidTransition(job_id, action=action, state=state)
            db.execute(sql, (*params, job_id))
        return self.get(job_id)

    def mark_started(self, job_id: int, *, now: float) -> Job:
        """A worker took the job: processing, one more attempt."""
        return self._transition(
            job_id, "start", {JobState.QUEUED},
            "UPDATE jobs SET state = 'processing', attempts = attempts + 1, started_at = ?, "
            "finished_at = NULL, progress = 0, speed = NULL, eta_seconds = NULL, reason = NULL, "
            "error = NULL, not_before = NULL WHERE id = ?",
            (now,),
        )

    def mark_paused(self, job_id: int, paused: bool) -> Job:
        """Record that a running job's process was stopped or continued."""
        if paused:
            return self._transition(job_id, "pause", {JobState.PROCESSING},
                                    "UPDATE jobs SET state = 'paused' WHERE id = ?", ())
        return self._transition(job_id, "resume", {JobState.PAUSED},
                                "UPDATE jobs SET state = 'processing' WHERE id = ?", ())

    def mark_completed(self, job_id: int, *, now: float, output_bytes: int,
                       media_duration: float | None, stderr_tail: str = "") -> Job:
        """The attempt succeeded; the file version is remembered as done."""
        job = self._transition(
            job_id, "complete", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = 'completed', finished_at = ?, progress = 1, eta_seconds = 0, "
            "output_bytes = ?, media_duration = COALESCE(?, media_duration), stderr_tail = ? "
            "WHERE id = ?",
            (now, output_bytes, media_duration, stderr_tail or None),
        )
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO done_files VALUES (?, ?, ?)",
                       (job.source_path, job.size, job.mtime_ns))
        return job

    def mark_failed(self, job_id: int, *, now: float, reason: FailureReason, error: str,
                    stderr_tail: str, retry_at: float | None) -> Job:
        """The attempt failed: back to the queue after `retry_at`, or failed (cancelled) for good."""
        if retry_at is not None:
            state = JobState.QUEUED
        elif reason is FailureReason.CANCELLED:
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED
        return self._transition(
            job_id, "fail", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = ?, finished_at = ?, reason = ?, error = ?, stderr_tail = ?, "
            "not_before = ?, queued_at = CASE WHEN ? IS NULL THEN queued_at ELSE ? END WHERE id = ?",
            (state.value, now, reason.value, error, stderr_tail or None, retry_at, retry_at,
             retry_at if retry_at is not None else now),
        )

    def set_progress(self, job_id: int, progress: float, speed: float | None,
                     eta_seconds: float | None) -> None:
        """Save the last progress report (called at a bounded rate by the monitor)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET progress = ?, speed = ?, eta_seconds = ? WHERE id = ?",
                       (progress, speed, eta_seconds, job_id))

    def set_media_duration(self, job_id: int, seconds: float | None) -> None:
        """Remember the source's media duration once probed."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET media_duration = ? WHERE id = ?", (seconds, job_id))

    def cancel_queued(self, job_id: int, *, now: float) -> Job:
        """Cancel a job that is waiting in the queue."""
        return self._transition(
            job_id, "cancel", {JobState.QUEUED},
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled', "
            "error = 'cancelled while queued' WHERE id = ?",
            (now,),
        )

    def requeue(self, job_id: int, *, now: float, reset_attempts: bool = True) -> Job:
        """Put a finished job back into the queue (manual retry)."""
        return self._transition(
            job_id, "retry", {JobState.FAILED, JobState.CANCELLED, JobState.COMPLETED},
            "UPDATE jobs SET state = 'queued', queued_at = ?, not_before = NULL, reason = NULL, "
            "error = NULL, stderr_tail = NULL, progress = 0, speed = NULL, eta_seconds = NULL, "
            "started_at = NULL, finished_at = NULL, output_bytes = NULL, "
            "attempts = CASE WHEN ? THEN 0 ELSE attempts END, "
            "seq = COALESCE((SELECT MAX(seq) FROM jobs), 0) + 1 WHERE id = ?",
            (now, reset_attempts),
        )

    def prioritize(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue."""
        return self._transition(
            job_id, "prioritize", {JobState.QUEUED},
            "UPDATE jobs SET not_before = NULL, "
            "priority = (SELECT COALESCE(MAX(priority), 0) FROM jobs WHERE state = 'queued'), "
            "seq = (SELECT COALESCE(MIN(seq), 0) FROM jobs WHERE state = 'queued') - 1 WHERE id = ?",
            (),
        )

    def delete(self, job_id: int) -> None:
        """Remove a finished job from history."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            state = JobState(row[0])
            if not state.is_finished:
                raise InvalidTransition(job_id, action="delete", state=state)
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def clear_queue(self, *, now: float) -> list[int]:
        """Cancel every queued job; returns their ids."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'queued'")]
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled', "
                "error = 'queue cleared' WHERE state = 'queued'",
                (now,),
            )
        return ids

    def recover_interrupted(self, *, now: float, max_attempts: int, retry_interrupted: bool) -> list[Job]:
        """After a crash: jobs left processing or paused go back to the queue (or fail at the limit)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE state IN ('processing', 'paused')"
            ).fetchall()
            for job_id, attempts in rows:
                if retry_interrupted and attempts < max_attempts:
                    db.execute(
                        "UPDATE jobs SET state = 'queued', queued_at = ?, progress = 0, "
                        "reason = 'interrupted', error = 'the monitor stopped during the attempt', "
                        "seq = (SELECT COALESCE(MIN(seq), 0) FROM jobs WHERE state = 'queued') - 1 "
                        "WHERE id = ?",
                        (now, job_id),
                    )
                else:
                    db.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, reason = 'interrupted', "
                        "error = 'the monitor stopped during the last attempt' WHERE id = ?",
                        (now, job_id),
                    )
        return [self.get(r[0]) for r in rows]

    def requeue_interrupted(self, job_id: int, *, now: float) -> Job:
        """A clean shutdown ended a running attempt: back to the front, the attempt not counted."""
        return self._transition(
            job_id, "requeue", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = 'queued', queued_at = ?, progress = 0, speed = NULL, "
            "eta_seconds = NULL, attempts = MAX(attempts - 1, 0), started_at = NULL, "
            "seq = (SELECT COALESCE(MIN(seq), 0) FROM jobs WHERE state = 'queued') - 1 WHERE id = ?",
            (now,),
        )

    # -- reads --------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """One job by id."""
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return _row_to_job(rows[0])

    def find(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """The newest job for exactly this version of a file, if any."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM jobs WHERE source_path = ? AND size = ? AND mtime_ns = ? "
            "ORDER BY id DESC LIMIT 1",
            (source_path, size, mtime_ns),
        )
        return _row_to_job(rows[0]) if rows else None

    def next_queued(self, *, now: float) -> Job | None:
        """The job a free worker should take now (FIFO within priority, honouring backoff)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' "
            "AND (not_before IS NULL OR not_before <= ?) ORDER BY priority DESC, seq LIMIT 1",
            (now,),
        )
        return _row_to_job(rows[0]) if rows else None

    def next_wakeup(self) -> float | None:
        """The earliest time a backed-off queued job becomes runnable."""
        rows = self._query("SELECT MIN(not_before) FROM jobs WHERE state = 'queued'")
        return rows[0][0]

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in the order they will run."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' "
            "ORDER BY priority DESC, seq LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [_row_to_job(r) for r in rows]

    def list_jobs(
        self,
        *,
        states: list[JobState] | None = None,
        profile: str | None = None,
        search: str | None = None,
        since: float | None = None,
        until: float | None = None,
        sort: str = "created",
        descending: bool = True,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """A filtered, sorted page of jobs and the total matching count."""
        where, params = [], []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params += [s.value for s in states]
        if profile:
            where.append("profile = ?")
            params.append(profile)
        if search:
            where.append("rel_path LIKE ? ESCAPE '\\'")
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        if since is not None:
            where.append("COALESCE(finished_at, created_at) >= ?")
            params.append(since)
        if until is not None:
            where.append("COALESCE(finished_at, created_at) < ?")
            params.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        column = SORT_COLUMNS[sort]
        direction = "DESC" if descending else "ASC"
        # Unfinished jobs have no finish time: they sort last either way. The extra term would
        # keep SQLite from walking an index, so only nullable sort keys get it.
        nulls_last = f"{column} IS NULL, " if sort in _NULLABLE_SORTS else ""
        total = self._query(f"SELECT COUNT(*) FROM jobs {clause}", params)[0][0]
        rows = self._query(
            f"SELECT {_COLUMNS} FROM jobs {clause} "
            f"ORDER BY {nulls_last}{column} {direction}, id {direction} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_row_to_job(r) for r in rows], total

    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        counts = dict.fromkeys(JobState, 0)
        for state, count in self._query("SELECT state, n FROM job_counts"):
            counts[JobState(state)] = count
        return counts

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        return self._query("SELECT MIN(queued_at) FROM jobs WHERE state = 'queued'")[0][0]

    def last_finished_at(self) -> dict[JobState, float | None]:
        """The latest finish time per terminal state (three index lookups)."""
        row = self._query(
            "SELECT (SELECT MAX(finished_at) FROM jobs WHERE state = 'completed'), "
            "(SELECT MAX(finished_at) FROM jobs WHERE state = 'failed'), "
            "(SELECT MAX(finished_at) FROM jobs WHERE state = 'cancelled')")[0]
        return {JobState.COMPLETED: row[0], JobState.FAILED: row[1], JobState.CANCELLED: row[2]}

    def summary(self, *, now: float) -> dict[str, Any]:
        """The plan's Stats model: totals, average duration, and the last 24 h by hour."""
        counts = self.counts_by_state()
        # Covered by the (state, finished_at, started_at) index: no table rows are read.
        avg = self._query(
            "SELECT AVG(finished_at - started_at) FROM jobs WHERE state = 'completed'")[0][0]
        return {
            "total_jobs": sum(counts.values()),
            "successful": counts[JobState.COMPLETED],
            "failed": counts[JobState.FAILED],
            "cancelled": counts[JobState.CANCELLED],
            "avg_duration": avg,
            "last_24h": self.history(since=now - 86400, until=now, step=3600),
        }

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per time bucket, by outcome, with their mean duration."""
        buckets: dict[int, dict[str, Any]] = {}
        count = max(1, int((until - since + step - 1e-9) // step))
        for i in range(count):
            buckets[i] = {"start": since + i * step, "completed": 0, "failed": 0,
                          "cancelled": 0, "avg_duration": None}
        rows = self._query(
            "SELECT CAST((finished_at - ?) / ? AS INTEGER) AS b, state, COUNT(*), "
            "AVG(finished_at - started_at) FROM jobs WHERE finished_at >= ? AND finished_at < ? "
            "AND state IN ('completed', 'failed', 'cancelled') GROUP BY b, state",
            (since, step, since, until),
        )
        for bucket, state, n, avg in rows:
            if bucket in buckets:
                buckets[bucket][state] = n
                if state == "completed":
                    buckets[bucket]["avg_duration"] = avg
        return list(buckets.values())
