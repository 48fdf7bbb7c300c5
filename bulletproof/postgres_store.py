"""PostgresJobStore: the job queue and history on a PostgreSQL server, a JobStore several monitors share.

One connection behind a lock (the callers are on the monitor's loop thread, and every call is
one short statement or transaction), reopened on the next call after the server went away.
Claims take the next job with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on
each other nor get the same job; a partial unique index makes one unfinished job per file
version a rule of the database; committed changes are sent with NOTIFY and a listener thread
hands other connections' changes to the subscribers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict

from bulletproof.audit import AUDIT_COLUMNS, AuditEntry
from bulletproof.database_url import redact_url, scrub
from bulletproof.errors import JobNotFound, StoreError
from bulletproof.models import Job, JobState
from bulletproof.postgres_schema import migrate
from bulletproof.queries import STORED_COLUMNS, JobQueries, StoreReads, within_prefixes
from bulletproof.store import (
    ATTEMPT_STATES,
    ChangeKind,
    ChangeListener,
    Claim,
    NewJob,
    StoreChange,
    StoreHealth,
    check_fence,
)
from bulletproof.store_writes import StoreWrites

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "bp_job_store"
CONNECT_TIMEOUT_SECONDS = 5
# The advisory lock every output-name reservation takes: two monitors never pick one name.
_RESERVATION_LOCK = 0x6270_6F75  # "bpou"
_LISTEN_RETRY_SECONDS = 5.0  # between the listener's reconnects while the server is away
# A server cut off without a word (a network partition drops packets, nothing resets the
# connection): without these, a statement sent into the void blocks the monitor until the
# kernel gives up (a quarter of an hour). With them it fails as a StoreError within seconds.
# A setting the database URL gives itself is kept.
_LINK_SETTINGS: dict[str, int] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                                  "keepalives_count": 3, "tcp_user_timeout": 10_000}
_UNFINISHED = "('queued', 'processing', 'paused')"
# A publishing transaction holds the job's row while it renames a file: should the process
# freeze inside it (SIGSTOP), the server ends the session after this long, which frees the row
# for the sweep (the frozen node's commit then fails and it publishes nothing more).
_FENCED_IDLE_TIMEOUT = "30s"

_T = TypeVar("_T")


class _Record(tuple):  # type: ignore[type-arg]
    """A result row readable by position and by column name (like sqlite3.Row)."""

    _index: dict[str, int]

    def __new__(cls, values: Iterable[Any], index: dict[str, int]) -> _Record:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


def _record_rows(cursor: Any) -> Callable[[Any], _Record]:
    names = [c.name for c in cursor.description or ()]
    index = {name: i for i, name in enumerate(names)}
    return lambda values: _Record(values, index)


class _WholeNumericLoader(Loader):
    """SUM over bigint is numeric: read whole numbers as int, others as float (JSON-ready)."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


class PostgresJobQueries(JobQueries):
    """The portable reads, with PostgreSQL's bucketing (its CAST to integer rounds)."""

    BUCKET = "CAST(FLOOR((finished_at - ?) / ?) AS INTEGER)"


def _qmark_to_format(sql: str) -> str:
    """SQLite-style `?` placeholders as psycopg's `%s` (the portable reads use `?`)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _QmarkConnection:
    """A connection inside an open transaction that runs the portable `?` SQL (StoreWrites)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Iterable[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement with `?` placeholders."""
        return self._conn.execute(_qmark_to_format(sql), tuple(params))


class PostgresJobStore(StoreWrites, StoreReads):
    """Every job of a fleet, and its history, on one PostgreSQL database; safe from several threads."""

    _ROW_LOCK = " FOR UPDATE"  # the row a check read stays as read until the commit

    def __init__(self, url: str, *, migrate_schema: bool = True, node: str | None = None) -> None:
        self._url = url
        self._node = node  # the writer's name in every NOTIFY: other nodes mark events with it
        self.path = redact_url(url)
        self._link = _link_settings(url)
        self._health = StoreHealth()
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._audit_inserts = 0
        self._reads = PostgresJobQueries(self._query)
        self._listeners = []
        self._changes = []  # noted inside a transaction, told after its commit (StoreWrites)
        self._listener_thread: threading.Thread | None = None
        self._stop = threading.Event()
        try:
            conn = self._connection()
            if migrate_schema:
                migrate(conn, self.path)
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"cannot open job store {self.path}: {self._message(exc)}",
                             path=self.path) from None
        except StoreError:
            self.close()
            raise

    # -- the connection: opened lazily, reopened after the server went away --------------------

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                               application_name="bulletproof", row_factory=_record_rows,
                               **self._link)
        conn.adapters.register_loader("numeric", _WholeNumericLoader)
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
            self._conn = self._connect()
        return self._conn

    def _message(self, exc: BaseException) -> str:
        """The driver's message, one line, without credentials."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        return scrub(text, self._url)

    def close(self) -> None:
        """Stop the listener thread and close the connection."""
        self._stop.set()
        thread, self._listener_thread = self._listener_thread, None
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            if self._conn is not None:
                with suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    # -- transactions, health and change notifications ----------------------------------------

    @contextmanager
    def _begun(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside a new transaction. A connection the server ended meanwhile (a
        restart) is only found out by using it: its BEGIN fails, and is tried once more on a new
        connection (nothing was done on the old one)."""
        with ExitStack() as stack:
            conn = self._connection()
            try:
                stack.enter_context(conn.transaction())
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
                conn = self._connection()
                stack.enter_context(conn.transaction())
            yield conn

    def _fresh_read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """One read; like BEGIN, retried once on a new connection when the old one was ended."""
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if not conn.broken:
                raise
            return self._connection().execute(sql, params).fetchall()

    def _portable(self, db: psycopg.Connection[Any]) -> _QmarkConnection:
        return _QmarkConnection(db)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                with self._begun() as conn:
                    yield conn
                    for change in self._changes:  # delivered by the server after the commit
                        conn.execute("SELECT pg_notify(%s, %s)",
                                     (NOTIFY_CHANNEL, _change_payload(change, self._node)))
            except BaseException as exc:
                self._changes.clear()  # rolled back: nothing happened to tell
                if isinstance(exc, psycopg.Error):
                    message = self._message(exc)
                    self._health.write_failed(message)
                    raise StoreError(f"job store write failed: {message}", path=self.path) from None
                raise
            changes, listeners = self._committed()
        # Outside the lock: a listener may read the store (or write to it) without deadlock.
        self._tell(changes, listeners)

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener` after each committed change: this store's in the writing thread,
        other connections' (other monitors') in the store's listener thread."""
        with self._lock:
            self._listeners.append(listener)
            if self._listener_thread is None and not self._stop.is_set():
                self._listener_thread = threading.Thread(
                    target=self._listen, name="bulletproof-store-listen", daemon=True)
                self._listener_thread.start()
        return self._unsubscriber(listener)

    def _own_pid(self) -> int | None:
        with self._lock:
            conn = self._conn
            return None if conn is None or conn.closed else conn.info.backend_pid

    def _listen(self) -> None:
        """LISTEN on a connection of its own; hand other connections' changes to the listeners."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True,
                                     connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                     application_name="bulletproof-listen", **self._link) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            if notify.pid == self._own_pid():
                                continue  # our own commit: told already, in the writing thread
                            change = _change_from_payload(notify.payload)
                            if change is not None:
                                with self._lock:
                                    listeners = list(self._listeners)
                                self._tell([change], listeners)
            except psycopg.Error as exc:
                log.warning("the store's change listener lost its connection; retrying",
                            extra={"database": self.path, "error": self._message(exc)})
                self._stop.wait(_LISTEN_RETRY_SECONDS)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return self._execute(_qmark_to_format(sql), params)

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._fresh_read(sql, tuple(params))
            except psycopg.Error as exc:
                raise StoreError(f"job store query failed: {self._message(exc)}",
                                 path=self.path) from None

    # -- adding jobs ----------------------------------------------------------------------------

    def _insert(self, db: psycopg.Connection[Any], new: NewJob, output_path: str, now: float,
                *, explicit: bool) -> int | None:
        """Insert a queued job; None when another connection queued this version meanwhile
        (the partial unique index refuses a second unfinished job that was not asked for)."""
        row = db.execute(
            "INSERT INTO jobs (source_path, rel_path, watch_folder, size, mtime_ns, profile, "
            "rule, output_path, state, priority, created_at, queued_at, input_bytes, explicit) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s) "
            f"ON CONFLICT (source_path, size, mtime_ns) WHERE state IN {_UNFINISHED} "
            "AND NOT explicit DO NOTHING RETURNING id",
            (new.source_path, new.rel_path, new.watch_folder, new.size, new.mtime_ns,
             new.profile, new.rule, output_path, new.priority, now, now, new.size, explicit),
        ).fetchone()
        if row is None:
            return None
        self._note(row[0], JobState.QUEUED)
        return int(row[0])

    @staticmethod
    def _lock_reservations(db: psycopg.Connection[Any]) -> None:
        """Serialise output-name choices across every connection until this transaction ends."""
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_RESERVATION_LOCK,))

    # -- claims -----------------------------------------------------------------------------------

    def claim(self, node: str, *, now: float, lease_seconds: float,
              within: Sequence[str] | None = None) -> Claim | None:
        """Take the next runnable job (priority, then FIFO, honouring backoff) for `node`,
        `within` the path prefixes given (see JobStore.claim); rows another claimer holds are
        skipped, not waited for."""
        until = now + lease_seconds
        only, params = within_prefixes(within, mark="%s")
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND (not_before IS NULL OR "
                f"not_before <= %s){only} ORDER BY priority DESC, seq, id LIMIT 1 "
                "FOR UPDATE SKIP LOCKED", (now, *params)).fetchone()
            if row is None:
                return None
            job_id = row[0]
            token = self._portable(db).execute(
                f"UPDATE jobs SET {self._START}, claimed_by = ?, lease_until = ? "
                "WHERE id = ? RETURNING claim_token", (now, node, until, job_id)).fetchone()[0]
            job = self._reads.get(job_id)
            self._note(job_id, job.state)
        return Claim(job=job, token=int(token), node=node, lease_until=until)

    @staticmethod
    def _hold_row(db: psycopg.Connection[Any], job_id: int, *,
                  bounded: bool = True) -> tuple[JobState, int]:
        """Lock the job's row till commit (a sweep's SKIP LOCKED passes it by); state and token.
        `bounded`: the server ends the transaction should the process freeze inside it."""
        if bounded:
            db.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{_FENCED_IDLE_TIMEOUT}'")
        row = db.execute("SELECT state, claim_token FROM jobs WHERE id = %s FOR UPDATE",
                         (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return JobState(row[0]), int(row[1])

    def fenced(self, job_id: int, token: int, action: Callable[[], _T], *,
               states: frozenset[JobState] = ATTEMPT_STATES, doing: str = "act on") -> _T:
        """Run `action` in one transaction holding the job's row (`FOR UPDATE`), only while
        `token` is its current claim and the job is in `states`; StaleClaim otherwise. Not
        bounded in time: the action may be slow (a source moved to another file system)."""
        with self._tx() as db:
            state, current = self._hold_row(db, job_id, bounded=False)
            check_fence(job_id, token, state, current, states, doing)
            return action()

    def requeue_expired(self, *, now: float, max_attempts: int | None = None) -> list[Job]:
        """Jobs whose lease ran out go back to the front of the queue (the attempt counted), or
        fail `interrupted` at `max_attempts`; their claims become stale. Rows another
        connection is writing are left to the next sweep."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts, claimed_by FROM jobs WHERE state IN ('processing', 'paused') "
                "AND lease_until IS NOT NULL AND lease_until < %s FOR UPDATE SKIP LOCKED",
                (now,)).fetchall()
            return self._requeue_lapsed(db, rows, now=now, max_attempts=max_attempts)

    # -- transitions ----------------------------------------------------------------------------

    def _ended_before(self, db: psycopg.Connection[Any], job_id: int, token: int | None,
                      ends_in: JobState | None, *, publishing: bool) -> bool:
        """True when the claim `token` is still the job's and already ended it in `ends_in`.
        Before a publish, or that check, the job's row is locked till commit (bounded in time:
        `_hold_row`), so no sweep takes the job while its output is published."""
        if not publishing and (ends_in is None or token is None):
            return False
        held, current = self._hold_row(db, job_id)
        return ends_in is not None and token == current and held is ends_in

    def requeue(self, job_id: int, *, now: float, reset_attempts: bool = True) -> Job:
        """Put a finished job back into the queue (manual retry: an explicit request, so another
        unfinished job of the version does not refuse it)."""
        return self._transition(
            job_id, "retry", {JobState.FAILED, JobState.CANCELLED, JobState.COMPLETED,
                              JobState.SKIPPED},
            "UPDATE jobs SET state = 'queued', queued_at = ?, not_before = NULL, reason = NULL, "
            "error = NULL, stderr_tail = NULL, progress = 0, speed = NULL, eta_seconds = NULL, "
            "started_at = NULL, finished_at = NULL, output_bytes = NULL, quality_score = NULL, "
            "attempts = CASE WHEN ? THEN 0 ELSE attempts END, explicit = TRUE, "
            "seq = nextval('jobs_seq_counter') WHERE id = ?",
            (now, reset_attempts))

    def clear_queue(self, *, now: float) -> list[int]:
        """Cancel every queued job; returns their ids."""
        with self._tx() as db:
            rows = db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = %s, reason = 'cancelled', "
                "error = 'queue cleared' WHERE state = 'queued' RETURNING id", (now,)).fetchall()
            ids = sorted(int(r[0]) for r in rows)
            for job_id in ids:
                self._note(job_id, JobState.CANCELLED)
        return ids

    def recover_interrupted(self, *, now: float, max_attempts: int,
                            retry_interrupted: bool) -> list[Job]:
        """After a crash: jobs left processing or paused go back to the queue (or fail).

        On a shared store this takes every unfinished attempt, a fleet's too: a monitor that
        shares one recovers by lease (`requeue_expired`) instead.
        """
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, attempts FROM jobs WHERE state IN ('processing', 'paused') "
                "ORDER BY id FOR UPDATE").fetchall()
            return self._recover_rows(db, rows, now=now, max_attempts=max_attempts,
                                      retry_interrupted=retry_interrupted)

    # -- the audit trail ------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> int:
        """Keep one audit entry; returns its id (the oldest go past the retention bounds)."""
        columns = AUDIT_COLUMNS
        with self._tx() as db:
            row = db.execute(
                f"INSERT INTO audit ({', '.join(columns)}) "
                f"VALUES ({', '.join('%s' for _ in columns)}) RETURNING id",
                [getattr(entry, c) for c in columns]).fetchone()
            new_id = int(row[0])
            self._prune_audit(self._portable(db), new_id, entry.at)
        return new_id

    # -- copying a history in (bulletproof store migrate --from-sqlite) -------------------------

    def is_empty(self) -> bool:
        """True when the store holds no job, done file version or audit entry."""
        row = self._execute("SELECT EXISTS (SELECT 1 FROM jobs) OR EXISTS (SELECT 1 FROM done_files) "
                            "OR EXISTS (SELECT 1 FROM audit)")
        return not row[0][0]

    def import_history(self, *, jobs: list[dict[str, Any]], done_files: list[tuple[str, int, int]],
                       audit: list[dict[str, Any]], meta: dict[str, str],
                       replace_existing: bool = False) -> None:
        """Copy another store's history in, in one transaction, ids kept. A store that holds
        anything is refused (StoreError) unless `replace_existing`, which empties it first."""
        with self._tx() as db:
            db.execute("LOCK TABLE jobs, done_files, audit, meta IN EXCLUSIVE MODE")
            if not replace_existing and not self.is_empty():
                raise StoreError(f"job store {self.path} already holds a history; copying into it "
                                 "would mix two (--force replaces it)", path=self.path)
            db.execute("TRUNCATE jobs, done_files, audit")
            unfinished: set[tuple[str, int, int]] = set()
            with db.cursor() as cur:
                for job in sorted(jobs, key=lambda j: j["id"]):
                    version = (job["source_path"], job["size"], job["mtime_ns"])
                    # The first unfinished job of a version holds it; any later one (queued on
                    # request beside it) is explicit, as force would have made it here.
                    explicit = job["state"] in ("queued", "processing", "paused") and \
                        version in unfinished
                    if job["state"] in ("queued", "processing", "paused"):
                        unfinished.add(version)
                    cur.execute(
                        f"INSERT INTO jobs ({', '.join(STORED_COLUMNS)}, explicit) "
                        f"VALUES ({', '.join('%s' for _ in STORED_COLUMNS)}, %s)",
                        [*(job[c] for c in STORED_COLUMNS), explicit])
                cur.executemany("INSERT INTO done_files (source_path, size, mtime_ns) "
                                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", done_files)
                cur.executemany(
                    f"INSERT INTO audit (id, {', '.join(AUDIT_COLUMNS)}) "
                    f"VALUES (%s, {', '.join('%s' for _ in AUDIT_COLUMNS)})",
                    [[a["id"], *(a[c] for c in AUDIT_COLUMNS)] for a in audit])
                for key, value in meta.items():
                    if key not in LOCAL_META_KEYS:
                        cur.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT "
                                    "(key) DO UPDATE SET value = EXCLUDED.value", (key, value))
            # New rows continue after the copied ones.
            db.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), "
                       "COALESCE((SELECT MAX(id) FROM jobs), 0) + 1, false)")
            db.execute("SELECT setval(pg_get_serial_sequence('audit', 'id'), "
                       "COALESCE((SELECT MAX(id) FROM audit), 0) + 1, false)")
            db.execute("SELECT setval('jobs_seq_counter', "
                       "CAST(GREATEST(CEIL(COALESCE((SELECT MAX(seq) FROM jobs), 0)), 0) AS BIGINT) + 1, false)")


# The jobs table's columns a copied history carries: a Job's fields and the claim columns.
# Settings that belong to one database, never copied from another.
LOCAL_META_KEYS = frozenset({"schema_version", "health_probe"})




def _link_settings(url: str) -> dict[str, int]:
    """The TCP settings to connect with: ours, but for those the URL sets itself."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}  # the connect itself reports a malformed URL
    return {key: value for key, value in _LINK_SETTINGS.items() if key not in given}


def _change_payload(change: StoreChange, node: str | None) -> str:
    return json.dumps({"kind": change.kind.value, "job_id": change.job_id,
                       "state": change.state.value if change.state else None, "key": change.key,
                       "node": node})


def _change_from_payload(payload: str) -> StoreChange | None:
    """The change a NOTIFY payload describes (None for one this version cannot read)."""
    try:
        data = json.loads(payload)
        # Another writer's change: its origin is the node it names ("" when it names none).
        return StoreChange(kind=ChangeKind(data["kind"]), job_id=data.get("job_id"),
                           state=JobState(data["state"]) if data.get("state") else None,
                           key=data.get("key"), origin=str(data.get("node") or ""))
    except (ValueError, KeyError, TypeError):
        return None
