"""SqliteJobStore: the job queue and history in one SQLite file (WAL), a JobStore for one monitor."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from bulletproof.audit import AUDIT_COLUMNS, AuditEntry
from bulletproof.errors import (
    JobNotFound,
    StoreCorrupt,
    StoreError,
)
from bulletproof.models import Job, JobState
from bulletproof.owner import StateLock
from bulletproof.queries import JobQueries, StoreReads, within_prefixes
from bulletproof.store import (
    ATTEMPT_STATES,
    ChangeListener,
    Claim,
    NewJob,
    StoreHealth,
    check_fence,
)
from bulletproof.store_writes import StoreWrites

_T = TypeVar("_T")

# Columns of the jobs table that are the store's own, not fields of a Job: the queue position
# and the claim (fencing token, node, lease). Every other column is a Job field (JOB_FIELDS).

# 2: skipped jobs, source inodes, quality scores, the audit trail. Older versions must refuse a
# store that may hold states they do not know.
SCHEMA_VERSION = 5
_STEPS_BEFORE_NUMBERING = 2  # steps that re-run on every open (see SqliteJobStore._migrate)

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
-- Space saved in the stats summary: summed from the index alone.
CREATE INDEX IF NOT EXISTS jobs_state_sizes ON jobs (state, input_bytes, output_bytes);
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

# The audit trail of control calls (bulletproof.audit); added without a schema version bump.
# The node registry (schema step 3): one row per monitor that ran on this store.
_NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    name              TEXT PRIMARY KEY,
    instance          TEXT    NOT NULL,
    host              TEXT    NOT NULL,
    pid               INTEGER NOT NULL,
    version           TEXT    NOT NULL,
    workers           INTEGER NOT NULL,
    busy              INTEGER NOT NULL,
    started_at        REAL    NOT NULL,
    last_seen         REAL    NOT NULL,
    heartbeat_seconds REAL    NOT NULL,
    draining          INTEGER NOT NULL DEFAULT 0,
    stopped_at        REAL,
    api_address       TEXT
);
"""
# Step 4: the store's id, made once: the monitor exports it as the `fleet` label of the store's
# gauges, so that Prometheus counts a store's jobs once however many monitors read it.
_STORE_ID_SCHEMA = """
INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
"""

# Control requests (schema step 5): a cancel, pause or resume asked of the node that runs a job
# (bulletproof.control_rows). A lone monitor never addresses another node; the table keeps both
# stores alike.
_CONTROL_REQUESTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS control_requests (
    job_id       INTEGER PRIMARY KEY,
    node         TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    token        INTEGER NOT NULL,
    requested_at REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS control_requests_node ON control_requests (node);
"""

_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             REAL    NOT NULL,
    action         TEXT    NOT NULL,
    method         TEXT    NOT NULL,
    route          TEXT    NOT NULL,
    status         INTEGER NOT NULL,
    result         TEXT    NOT NULL,
    address        TEXT    NOT NULL,
    principal_kind TEXT,
    principal      TEXT,
    role           TEXT,
    job_id         INTEGER,
    code           TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
"""
_CORRUPTION_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is damaged or not a database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPTION_CODES
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _corrupt_message(path: Path, detail: str) -> str:
    return (f"the state database {path} is damaged ({detail}); the monitor does not run on it: "
            "stop it, move the database aside and start again (docs/runbook.md, "
            "\"The state database is damaged\")")


class SqliteJobStore(StoreWrites, StoreReads):
    """Every job the monitor has queued, and its history, in SQLite; safe to call from several threads."""

    _ROW_LOCK = ""  # BEGIN IMMEDIATE holds the whole database's write lock till commit

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._owner: StateLock | None = None
        self._health = StoreHealth()
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Before anything touches the file: a second monitor must change nothing.
                self._owner = StateLock(self.path)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._quick_check()
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash (SIGKILL); only power loss may
            # roll back the last commits, which the rescan then finds again.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._recount()
        except StoreError:
            self._release_owner()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._release_owner()
            if isinstance(exc, sqlite3.Error) and is_corruption(exc):
                raise StoreCorrupt(_corrupt_message(self.path, str(exc)), path=path) from None
            raise StoreError(f"cannot open job store {path}: {exc}", path=path) from None
        self._lock = threading.RLock()
        self._audit_inserts = 0
        self._reads = JobQueries(self._query)
        self._listeners = []
        self._changes = []  # noted inside a transaction, told after its commit (StoreWrites)

    def _migrate(self) -> None:
        """Apply the numbered schema steps the file has not had, then record the version.

        Step n takes the schema from version n-1 to n and runs once. Steps 1 and 2 predate the
        numbering and grew indexes and columns without a version bump, so a file at version 2
        may still lack some: they are idempotent and run on every open.
        """
        steps: tuple[Callable[[], None], ...] = (
            lambda: self._db.executescript(_SCHEMA),  # 1: jobs, done files, meta, job counts
            self._migrate_to_2,  # 2: the audit trail, trusted outputs, claims
            lambda: self._db.executescript(_NODES_SCHEMA),  # 3: the node registry
            lambda: self._db.executescript(_STORE_ID_SCHEMA),  # 4: the store's id (metrics' fleet label)
            lambda: self._db.executescript(_CONTROL_REQUESTS_SCHEMA),  # 5: control requests
        )
        assert len(steps) == SCHEMA_VERSION
        current = self._stored_version()
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"job store {self.path} has schema {current}, newer than this version supports "
                f"({SCHEMA_VERSION})", path=self.path)
        for number, step in enumerate(steps, start=1):
            if number > current or number <= _STEPS_BEFORE_NUMBERING:
                step()
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    def _stored_version(self) -> int:
        """The schema version the file records (0 for a new file)."""
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                            ).fetchone() is None:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row is not None else 0

    def _migrate_to_2(self) -> None:
        self._migrate_audit()
        self._migrate_outputs()
        self._migrate_claims()

    def _migrate_audit(self) -> None:
        """Create the audit table and its index when missing (idempotent, additive)."""
        self._db.executescript(_AUDIT_SCHEMA)

    def _release_owner(self) -> None:
        if self._owner is not None:
            self._owner.release()
            self._owner = None

    def _quick_check(self) -> None:
        """Refuse a damaged file before writing to it (cost grows with the database size)."""
        rows = self._db.execute("PRAGMA quick_check(5)").fetchall()
        found = [str(r[0]) for r in rows]
        if found != ["ok"]:
            raise StoreCorrupt(_corrupt_message(self.path, "; ".join(found)), path=self.path)

    def _migrate_outputs(self) -> None:
        """Columns for trusted outputs: the source's inode as read, the quality score."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in (("source_inode", "INTEGER"), ("quality_score", "REAL")):
            if column not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_output ON jobs (output_path)")

    def _migrate_claims(self) -> None:
        """Columns for claims: the fencing token, the claiming node and its lease."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in (("claim_token", "INTEGER NOT NULL DEFAULT 0"), ("claimed_by", "TEXT"),
                             ("lease_until", "REAL")):
            if column not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_until)")

    def _recount(self) -> None:
        """Rebuild job_counts from the jobs (once per open: cheap, and heals any drift)."""
        self._db.executescript(
            "BEGIN IMMEDIATE; DELETE FROM job_counts; INSERT INTO job_counts (state, n) "
            "SELECT state, COUNT(*) FROM jobs GROUP BY state; COMMIT;")

    def close(self) -> None:
        """Close the database and release the lock on it."""
        with self._lock:
            self._db.close()
            self._release_owner()

    # -- health: every sqlite3 error is a StoreError, and the last write's fate is kept ------

    def _store_error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        message = str(exc)
        if is_corruption(exc):
            self._health.corrupt = message
            return StoreCorrupt(_corrupt_message(self.path, message), path=self.path)
        return StoreError(f"job store {doing} failed: {message}", path=self.path)

    def _portable(self, db: sqlite3.Connection) -> sqlite3.Connection:
        return db  # SQLite's own placeholders are the portable `?`

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._health.corrupt is not None:  # writing on damage can only spread it
                raise StoreCorrupt(_corrupt_message(self.path, self._health.corrupt), path=self.path)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._changes.clear()  # rolled back: nothing happened to tell
                with suppress(sqlite3.Error):  # a failed ROLLBACK must not hide the first error
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    error = self._store_error(exc, "write")
                    self._health.write_failed(str(exc))
                    raise error from None
                raise
            changes, listeners = self._committed()
        # Outside the lock: a listener may read the store (or write to it) without deadlock.
        self._tell(changes, listeners)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener` after each committed job or meta change (in the writing thread)."""
        with self._lock:
            self._listeners.append(listener)
        return self._unsubscriber(listener)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise self._store_error(exc, "query") from None

    # -- writes -------------------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, new: NewJob, output_path: str, now: float,
                *, explicit: bool) -> int:
        """Insert a queued job; its id. `explicit` marks nothing here: only PostgreSQL's unique
        index on unfinished versions needs to tell a job asked for from a found one."""
        cur = db.execute(
            "INSERT INTO jobs (source_path, rel_path, watch_folder, size, mtime_ns, profile, "
            "rule, output_path, state, priority, seq, created_at, queued_at, input_bytes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, "
            "COALESCE((SELECT MAX(seq) FROM jobs), 0) + 1, ?, ?, ?)",
            (new.source_path, new.rel_path, new.watch_folder, new.size, new.mtime_ns,
             new.profile, new.rule, output_path, new.priority, now, now, new.size),
        )
        assert cur.lastrowid is not None
        self._note(cur.lastrowid, JobState.QUEUED)
        return cur.lastrowid

    # -- output names (reserved in the transaction that adds the job) ---------------------------

    @staticmethod
    def _lock_reservations(db: sqlite3.Connection) -> None:
        """Nothing to take: BEGIN IMMEDIATE already lets one writer at a time choose a name."""

    # -- transitions: each one transaction; a given token must be the current claim's ---------

    @staticmethod
    def _ended_before(db: sqlite3.Connection, job_id: int, token: int | None,
                      ends_in: JobState | None, *, publishing: bool) -> bool:
        """True when the claim `token` is still the job's and already ended it in `ends_in`
        (nothing to hold for a publish: BEGIN IMMEDIATE holds the whole database)."""
        if ends_in is None or token is None:
            return False
        row = db.execute("SELECT state, claim_token FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[1] == token and row[0] == ends_in.value

    def fenced(self, job_id: int, token: int, action: Callable[[], _T], *,
               states: frozenset[JobState] = ATTEMPT_STATES, doing: str = "act on") -> _T:
        """Run `action` inside one write transaction (BEGIN IMMEDIATE), only while `token` is
        the job's current claim and the job is in `states`; StaleClaim otherwise."""
        with self._tx() as db:
            row = db.execute("SELECT state, claim_token FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            check_fence(job_id, token, JobState(row[0]), int(row[1]), states, doing)
            return action()

    def claim(self, node: str, *, now: float, lease_seconds: float,
              within: Sequence[str] | None = None) -> Claim | None:
        """Take the next runnable job (priority, then FIFO, honouring backoff) for `node`,
        `within` the path prefixes given (see JobStore.claim)."""
        until = now + lease_seconds
        only, params = within_prefixes(within)
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND (not_before IS NULL OR "
                f"not_before <= ?){only} ORDER BY priority DESC, seq LIMIT 1",
                (now, *params)).fetchone()
            if row is None:
                return None
            job_id = row[0]
            db.execute(f"UPDATE jobs SET {self._START}, claimed_by = ?, lease_until = ? "
                       "WHERE id = ?", (now, node, until, job_id))
            token = db.execute("SELECT claim_token FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            job = self._reads.get(job_id)
            self._note(job_id, job.state)
        return Claim(job=job, token=int(token), node=node, lease_until=until)

    def requeue_expired(self, *, now: float, max_attempts: int | None = None) -> list[Job]:
        """Jobs whose lease ran out go back to the front of the queue (the attempt counted),
        or fail `interrupted` once they had `max_attempts`; their claims become stale."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts, claimed_by FROM jobs WHERE state IN ('processing', 'paused') "
                "AND lease_until IS NOT NULL AND lease_until < ?", (now,)).fetchall()
            return self._requeue_lapsed(db, rows, now=now, max_attempts=max_attempts)

    def requeue(self, job_id: int, *, now: float, reset_attempts: bool = True) -> Job:
        """Put a finished job back into the queue (manual retry)."""
        return self._transition(
            job_id, "retry", {JobState.FAILED, JobState.CANCELLED, JobState.COMPLETED,
                              JobState.SKIPPED},
            "UPDATE jobs SET state = 'queued', queued_at = ?, not_before = NULL, reason = NULL, "
            "error = NULL, stderr_tail = NULL, progress = 0, speed = NULL, eta_seconds = NULL, "
            "started_at = NULL, finished_at = NULL, output_bytes = NULL, quality_score = NULL, "
            "attempts = CASE WHEN ? THEN 0 ELSE attempts END, "
            "seq = COALESCE((SELECT MAX(seq) FROM jobs), 0) + 1 WHERE id = ?",
            (now, reset_attempts),
        )

    def clear_queue(self, *, now: float) -> list[int]:
        """Cancel every queued job; returns their ids."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE state = 'queued'")]
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled', "
                "error = 'queue cleared' WHERE state = 'queued'",
                (now,),
            )
            for job_id in ids:
                self._note(job_id, JobState.CANCELLED)
        return ids

    def recover_interrupted(self, *, now: float, max_attempts: int, retry_interrupted: bool) -> list[Job]:
        """After a crash: jobs left processing or paused go back to the queue (or fail at the limit)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE state IN ('processing', 'paused')"
            ).fetchall()
            return self._recover_rows(db, rows, now=now, max_attempts=max_attempts,
                                      retry_interrupted=retry_interrupted)

    # -- audit trail ----------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> int:
        """Keep one audit entry; returns its id (the oldest go past the retention bounds:
        StoreWrites._prune_audit)."""
        values = [getattr(entry, c) for c in AUDIT_COLUMNS]
        try:
            with self._tx() as db:
                cursor = db.execute(
                    f"INSERT INTO audit ({', '.join(AUDIT_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in AUDIT_COLUMNS)})", values)
                new_id = int(cursor.lastrowid or 0)
                self._prune_audit(db, new_id, entry.at)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot record an audit entry: {exc}", path=self.path) from None
        return new_id
