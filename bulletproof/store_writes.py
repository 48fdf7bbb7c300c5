"""StoreWrites: the `JobStore` writes that are the same SQL in both stores, written once.

Both stores run these through their own transaction (`_tx`: SQLite's BEGIN IMMEDIATE,
PostgreSQL's transaction with its reconnect and NOTIFY) and a `PortableConnection` over it,
which takes the portable `?` SQL the reads use (bulletproof.queries). What really differs
between the stores (claims, inserts that need the new id, advisory locks, sequences, the
fenced publish) stays in each store.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from bulletproof import control_rows, node_rows
from bulletproof.audit import AUDIT_COLUMNS, AUDIT_MAX_AGE_SECONDS, AUDIT_MAX_ROWS, AuditEntry
from bulletproof.errors import InvalidTransition, JobNotFound, NodeNotFound, StaleClaim, StoreError
from bulletproof.models import FailureReason, Job, JobState, SkipReason
from bulletproof.paths import candidate_paths
from bulletproof.queries import JobQueries
from bulletproof.store import (
    ChangeKind,
    ChangeListener,
    ControlAction,
    ControlRequest,
    FileExists,
    NewJob,
    NodeInfo,
    Publish,
    StoreChange,
    StoreHealth,
)

log = logging.getLogger(__name__)

_AUDIT_PRUNE_EVERY = 1000  # audit inserts between two age-based prunes

# Settings upserted by key; `excluded` is the row the INSERT proposed (both dialects).
_SET_META = ("INSERT INTO meta (key, value) VALUES (?, ?) "
             "ON CONFLICT (key) DO UPDATE SET value = excluded.value")


class Cursor(Protocol):
    """What the shared writes read from a statement's result."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next result row, or None."""


class PortableConnection(Protocol):
    """A connection inside a store's open transaction that runs portable `?` SQL."""

    def execute(self, sql: str, params: Iterable[Any] = ..., /) -> Cursor:
        """Run one statement with `?` placeholders."""


class StoreWrites:
    """The write methods (and their neighbours: meta, health, the audit reads, change
    notifications) both stores share.

    A store provides `_tx()` (one write transaction, yielding its native connection),
    `_portable(db)` (that connection as a `PortableConnection`), `_insert` (a queued job: the
    new id and the queue position come each store's own way), `_ended_before` (a
    transition's first look at the job, and what it holds for a fenced publish),
    `_lock_reservations` (what serialises the choice of output names), `_query` (a portable
    read), `_reads`, `_lock`, `_health`, the lists `_changes` and `_listeners`, and
    `_ROW_LOCK`: the clause that locks a job's row till commit where the store's transaction
    does not already hold every row (PostgreSQL's `FOR UPDATE`).
    """

    # What every start of an attempt sets (one `?`: the start time); a new claim token.
    _START = ("state = 'processing', attempts = attempts + 1, started_at = ?, finished_at = NULL, "
              "progress = 0, speed = NULL, eta_seconds = NULL, reason = NULL, error = NULL, "
              "not_before = NULL, quality_score = NULL, claim_token = claim_token + 1")
    # The seq that puts a job before every queued one.
    _FRONT = "(SELECT COALESCE(MIN(seq), 0) FROM jobs WHERE state = 'queued') - 1"

    _ROW_LOCK: str
    _changes: list[StoreChange]
    _reads: JobQueries
    _listeners: list[ChangeListener]
    _lock: threading.RLock
    _health: StoreHealth
    _audit_inserts: int
    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[Any]]

    def _portable(self, db: Any) -> PortableConnection:
        raise NotImplementedError

    def _lock_reservations(self, db: Any) -> None:
        raise NotImplementedError

    def _insert(self, db: Any, new: NewJob, output_path: str, now: float,
                *, explicit: bool) -> int | None:
        raise NotImplementedError

    def _ended_before(self, db: Any, job_id: int, token: int | None, ends_in: JobState | None,
                      *, publishing: bool) -> bool:
        raise NotImplementedError

    @contextmanager
    def _portable_tx(self) -> Iterator[PortableConnection]:
        """One write transaction of the store, running portable SQL."""
        with self._tx() as db:
            yield self._portable(db)

    # -- change notifications: noted inside a transaction, told after its commit --------------

    def _note(self, job_id: int, state: JobState | None) -> None:
        """Remember a job change of the open transaction, told to listeners after the commit."""
        self._changes.append(StoreChange(kind=ChangeKind.JOB, job_id=job_id, state=state))

    @staticmethod
    def _tell(changes: list[StoreChange], listeners: list[ChangeListener]) -> None:
        """Hand committed changes to the listeners (outside the store's lock)."""
        for change in changes:
            for listener in listeners:
                try:
                    listener(change)
                except Exception:  # a listener's bug must not undo or hide a committed write
                    log.exception("a store change listener failed", extra={"job": change.job_id})

    def _committed(self) -> tuple[list[StoreChange], list[ChangeListener]]:
        """Under the lock, once a write committed: it went well; its changes and whom to tell."""
        self._health.write_ok()
        changes, self._changes = self._changes, []
        return changes, list(self._listeners)

    def _unsubscriber(self, listener: ChangeListener) -> Callable[[], None]:
        """What `subscribe` returns: a call that stops telling `listener`."""
        def unsubscribe() -> None:
            with self._lock, suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # -- health and meta ------------------------------------------------------------------------

    def health(self) -> StoreHealth:
        """The outcome of the last write (a copy; `probe` refreshes it)."""
        with self._lock:
            return replace(self._health)

    def probe(self) -> bool:
        """A tiny write on a meta row: True when the store takes writes (updates `health`)."""
        try:
            with self._portable_tx() as db:
                db.execute(_SET_META, ("health_probe", repr(time.time())))
        except StoreError:
            return False
        return True

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A persisted setting (e.g. whether the queue is paused)."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        """Persist a setting."""
        with self._portable_tx() as db:
            db.execute(_SET_META, (key, value))
            self._changes.append(StoreChange(kind=ChangeKind.META, key=key))

    # -- the node registry (bulletproof.node_rows) ----------------------------------------------

    def heartbeat(self, node: NodeInfo) -> NodeInfo:
        """Record a node's heartbeat (every field but `draining`, which the row keeps); the row."""
        with self._portable_tx() as db:
            db.execute(node_rows.HEARTBEAT, node_rows.heartbeat_params(node))
        return node_rows.read_node(self._query, node.name)

    def nodes(self) -> list[NodeInfo]:
        """Every node the store knows, by name."""
        return node_rows.read_nodes(self._query)

    def set_draining(self, name: str, draining: bool) -> NodeInfo:
        """Let a node finish its jobs and take no more (or take jobs again); NodeNotFound.

        The other nodes hear it with the change (PostgreSQL: NOTIFY); the node itself also
        reads it at its heartbeat.
        """
        with self._portable_tx() as db:
            if db.execute(node_rows.SET_DRAINING, (draining, name)).rowcount == 0:
                raise NodeNotFound(name)
            self._changes.append(StoreChange(kind=ChangeKind.NODE, key=name))
        return node_rows.read_node(self._query, name)

    def forget_node(self, name: str) -> None:
        """Remove a node from the registry (NodeNotFound when there is none)."""
        with self._portable_tx() as db:
            if db.execute(node_rows.FORGET, (name,)).rowcount == 0:
                raise NodeNotFound(name)
            self._changes.append(StoreChange(kind=ChangeKind.NODE, key=name))

    # -- controls asked of the node that runs a job (bulletproof.control_rows) ----------------

    def request_control(self, job_id: int, action: ControlAction, *, now: float) -> ControlRequest:
        """Ask the node that runs a job to cancel, pause or resume it (replacing an earlier
        request); JobNotFound, InvalidTransition when its state or claim does not allow it.
        The node hears it with the change (PostgreSQL: NOTIFY); it also polls for its requests."""
        with self._portable_tx() as db:
            row = db.execute("SELECT state, claim_token, claimed_by FROM jobs WHERE id = ?"
                             f"{self._ROW_LOCK}", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            request = control_rows.checked_request(job_id, action, state=JobState(row[0]),
                                                   node=row[2], token=int(row[1]), now=now)
            db.execute(control_rows.UPSERT, control_rows.request_params(request))
            self._changes.append(StoreChange(kind=ChangeKind.CONTROL, job_id=job_id,
                                             key=request.node))
        return request

    def control_requests(self, node: str) -> list[ControlRequest]:
        """The requests addressed to `node`, oldest first (an indexed read: nodes poll it)."""
        return [control_rows.request_from_row(r) for r in self._query(control_rows.FOR_NODE, (node,))]

    def clear_control(self, job_id: int, token: int) -> None:
        """Forget the request for this attempt of a job (carried out, or nothing left to do)."""
        with self._portable_tx() as db:
            db.execute(control_rows.CLEAR, (job_id, token))

    # -- the claim check every fenced write makes -----------------------------------------------

    def _state_for(self, db: Any, job_id: int, action: str, token: int | None) -> JobState:
        """The job's state (its row locked till commit), checked against `token` (StaleClaim)
        when one is given. `db` is the store's native connection inside `_tx`."""
        row = self._portable(db).execute(
            f"SELECT state, claim_token FROM jobs WHERE id = ?{self._ROW_LOCK}", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        state = JobState(row[0])
        if token is not None and row[1] != token:
            raise StaleClaim(job_id, token=token, action=action,
                             why=f"the job's claim is now {row[1]}: the lease ran out or it was "
                                 "claimed again")
        if token is not None and not state.is_active:
            raise StaleClaim(job_id, token=token, action=action,
                             why=f"the attempt is over: the job is {state.value}")
        return state

    # -- details of a running attempt: with a token, only the current claim writes them ------

    def _set_detail(self, job_id: int, action: str, token: int | None, sql: str,
                    params: tuple[Any, ...], *, told: ChangeKind | None = None) -> None:
        """One detail of a running attempt; with `token`, only while it is the current claim."""
        with self._tx() as native:
            if token is not None:
                self._state_for(native, job_id, action, token)
            self._portable(native).execute(sql, (*params, job_id))
            if told is not None:
                self._changes.append(StoreChange(kind=told, job_id=job_id))

    def set_progress(self, job_id: int, progress: float, speed: float | None,
                     eta_seconds: float | None, *, token: int | None = None) -> None:
        """Save the last progress report (called at a bounded rate by the monitor)."""
        # Told as a change: other nodes show a running job's progress from these saves.
        self._set_detail(job_id, "record progress of", token,
                         "UPDATE jobs SET progress = ?, speed = ?, eta_seconds = ? WHERE id = ?",
                         (progress, speed, eta_seconds), told=ChangeKind.PROGRESS)

    def set_media_duration(self, job_id: int, seconds: float | None, *,
                           token: int | None = None) -> None:
        """Remember the source's media duration once probed."""
        self._set_detail(job_id, "record the media duration of", token,
                         "UPDATE jobs SET media_duration = ? WHERE id = ?", (seconds,))

    def set_source_inode(self, job_id: int, inode: int, *, token: int | None = None) -> None:
        """Remember which file (inode) the job's attempt read."""
        self._set_detail(job_id, "record the source inode of", token,
                         "UPDATE jobs SET source_inode = ? WHERE id = ?", (inode,))

    def set_quality_score(self, job_id: int, score: float | None, *,
                          token: int | None = None) -> None:
        """Remember the quality score the output got against its source."""
        self._set_detail(job_id, "record the quality score of", token,
                         "UPDATE jobs SET quality_score = ? WHERE id = ?", (score,))

    # -- adding jobs and their output names: the checks both stores make ------------------------

    def add(self, new: NewJob, *, now: float | None = None, force: bool = False) -> Job | None:
        """Queue a job unless this (path, size, mtime) has a job or was done; returns it or None.

        `force` skips the check (an operator asked for this file explicitly). The output path is
        taken as given; the monitor uses `add_reserving`, which makes it unique. None too when
        another monitor queued this version meanwhile (a shared store).
        """
        now = time.time() if now is None else now
        with self._tx() as db:
            if self._known(db, new) and not force:
                return None
            job_id = self._insert(db, new, new.output_path, now, explicit=force)
        return None if job_id is None else self._reads.get(job_id)

    def add_reserving(self, new: NewJob, *, policy: str, now: float | None = None,
                      force: bool = False,
                      file_exists: FileExists = os.path.lexists) -> tuple[Job | None, str | None]:
        """Queue a job as `add` does, with an output name no other source holds.

        `policy` says what happens when `new.output_path` is taken (by another source's job or
        by a file no job of this source wrote): `rename` takes the first free `name (n).ext`,
        `overwrite` keeps the name, `skip` records the job skipped (`output_exists`), `fail`
        records it failed (`output_conflict`). Returns the job (None when already known) and the
        policy applied when there was a clash, else None. Race-free across monitors.
        """
        now = time.time() if now is None else now
        desired = new.output_path
        with self._tx() as native:
            self._lock_reservations(native)
            if self._known(native, new) and not force:
                return None, None
            if not self._output_taken(native, desired, new.source_path, file_exists=file_exists):
                job_id = self._insert(native, new, desired, now, explicit=force)
                return (None if job_id is None else self._reads.get(job_id)), None
            if policy == "rename":
                free = next((str(p) for p in candidate_paths(Path(desired))[1:]
                             if not self._output_taken(native, str(p), new.source_path,
                                                      file_exists=file_exists)), None)
                if free is not None:
                    job_id = self._insert(native, new, free, now, explicit=force)
                    return (None if job_id is None else self._reads.get(job_id)), policy
                policy = "fail"  # ten thousand namesakes: nothing sensible is left
            job_id = self._insert(native, new, desired, now, explicit=force)
            if job_id is None:
                return None, None
            if policy == "skip":
                self._end_added(native, job_id, JobState.SKIPPED, now, SkipReason.OUTPUT_EXISTS.value,
                                f"the output {desired} already exists; output_conflict is skip")
            elif policy == "fail":
                self._end_added(native, job_id, JobState.FAILED, now,
                                FailureReason.OUTPUT_CONFLICT.value,
                                f"the output {desired} already exists or belongs to another source")
            return self._reads.get(job_id), policy

    def add_failed(self, new: NewJob, *, reason: FailureReason, error: str,
                   now: float | None = None, force: bool = False) -> Job | None:
        """Record a job that cannot run at all (say its output path is invalid) as failed."""
        now = time.time() if now is None else now
        with self._tx() as native:
            if self._known(native, new) and not force:
                return None
            job_id = self._insert(native, new, new.output_path, now, explicit=force)
            if job_id is None:
                return None
            self._end_added(native, job_id, JobState.FAILED, now, reason.value, error)
            return self._reads.get(job_id)

    def _end_added(self, db: Any, job_id: int, state: JobState, now: float, reason: str,
                   error: str) -> None:
        """Finish a job just inserted (skipped or failed without running)."""
        self._portable(db).execute(
            "UPDATE jobs SET state = ?, finished_at = ?, reason = ?, error = ? WHERE id = ?",
            (state.value, now, reason, error, job_id))
        self._note(job_id, state)

    def _known(self, db: Any, new: NewJob) -> bool:
        """True when this file version has a job or was done (`db`: the store's native connection)."""
        key = (new.source_path, new.size, new.mtime_ns)
        row = self._portable(db).execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE source_path = ? AND size = ? "
            "AND mtime_ns = ?) OR EXISTS (SELECT 1 FROM done_files WHERE source_path = ? "
            "AND size = ? AND mtime_ns = ?)", (*key, *key)).fetchone()
        return bool(row and row[0])

    def _output_taken(self, db: Any, path: str, source_path: str, job_id: int = -1,
                      file_exists: FileExists = os.path.lexists) -> bool:
        """True when another source's job holds `path`, or a file there belongs to no job of ours."""
        conn = self._portable(db)
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE output_path = ? AND source_path != ? "
            "AND (state IN ('queued', 'processing', 'paused', 'completed') "
            "OR (state = 'skipped' AND output_bytes IS NOT NULL)))",
            (path, source_path)).fetchone()
        if row is not None and row[0]:
            return True
        if not file_exists(path):  # the stored form, asked of this node's file system
            return False
        # A file is there: ours only when an earlier job of this same source wrote to that name.
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE output_path = ? AND source_path = ? "
            "AND id != ? AND COALESCE(reason, '') NOT IN ('output_conflict', 'output_exists'))",
            (path, source_path, job_id)).fetchone()
        return not (row is not None and row[0])

    def reserve_again(self, job_id: int, *, policy: str, path: str | None = None,
                      file_exists: FileExists = os.path.lexists,
                      token: int | None = None) -> tuple[Job, str | None]:
        """On a job's first claim: if a file appeared at its output name since it was queued,
        apply `policy` again (`rename` records the next free name on the job). `path` gives the
        job an output name first (one that could not be made when it was queued). Returns the
        job and the policy applied, or None when the name is free. StaleClaim when `token` is
        given and no longer current."""
        with self._tx() as native:
            if token is not None:
                self._state_for(native, job_id, "reserve an output for", token)
            self._lock_reservations(native)
            db = self._portable(native)
            if path is not None:
                db.execute("UPDATE jobs SET output_path = ? WHERE id = ?", (path, job_id))
            job = self._reads.get(job_id)
            if policy == "overwrite" or not self._output_taken(
                    native, job.output_path, job.source_path, job_id, file_exists):
                return job, None
            if policy == "rename":
                free = next((str(p) for p in candidate_paths(Path(job.output_path))[1:]
                             if not self._output_taken(native, str(p), job.source_path, job_id,
                                                      file_exists)), None)
                if free is None:
                    return job, "fail"
                db.execute("UPDATE jobs SET output_path = ? WHERE id = ?", (free, job_id))
                return self._reads.get(job_id), policy
            return job, policy

    # -- transitions: each one transaction; a given token must be the current claim's ---------

    def _transition(self, job_id: int, action: str, allowed: set[JobState], sql: str,
                    params: tuple[Any, ...], *, token: int | None = None,
                    done: bool = False, publish: Publish | None = None,
                    ends_in: JobState | None = None) -> Job:
        """Check the state (and the claim), run `publish` then `sql`; `done` remembers the file
        version. A token that already took the job to `ends_in` gets the job back unchanged."""
        with self._tx() as native:
            if self._ended_before(native, job_id, token, ends_in, publishing=publish is not None):
                return self._reads.get(job_id)
            state = self._state_for(native, job_id, action, token)
            if state not in allowed:
                raise InvalidTransition(job_id, action=action, state=state)
            if publish is not None:
                publish()  # the claim is current and the store holds the job: nothing can take it
            db = self._portable(native)
            db.execute(sql, (*params, job_id))
            if done:
                db.execute("INSERT INTO done_files (source_path, size, mtime_ns) "
                           "SELECT source_path, size, mtime_ns FROM jobs WHERE id = ? "
                           "ON CONFLICT DO NOTHING", (job_id,))
            job = self._reads.get(job_id)
            self._note(job_id, job.state)
            return job

    def renew(self, job_id: int, token: int, *, until: float) -> None:
        """Extend the lease of a current claim; StaleClaim when the token is not current."""
        with self._tx() as native:
            self._state_for(native, job_id, "renew", token)
            self._portable(native).execute("UPDATE jobs SET lease_until = ? WHERE id = ?",
                                           (until, job_id))

    def mark_started(self, job_id: int, *, now: float) -> Job:
        """Take a queued job by id: processing, one more attempt (held without a lease)."""
        return self._transition(
            job_id, "start", {JobState.QUEUED},
            f"UPDATE jobs SET {self._START}, claimed_by = NULL, lease_until = NULL WHERE id = ?",
            (now,))

    def mark_paused(self, job_id: int, paused: bool, *, token: int | None = None) -> Job:
        """Record that a running job's process was stopped or continued."""
        if paused:
            return self._transition(job_id, "pause", {JobState.PROCESSING},
                                    "UPDATE jobs SET state = 'paused' WHERE id = ?", (), token=token)
        return self._transition(job_id, "resume", {JobState.PAUSED},
                                "UPDATE jobs SET state = 'processing' WHERE id = ?", (), token=token)

    def mark_completed(self, job_id: int, *, now: float, output_bytes: int,
                       media_duration: float | None, stderr_tail: str = "",
                       token: int | None = None, publish: Publish | None = None) -> Job:
        """The attempt succeeded; the file version is remembered as done (one transaction, which
        also runs `publish`: see JobStore.mark_completed)."""
        return self._transition(
            job_id, "complete", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = 'completed', finished_at = ?, progress = 1, "
            "eta_seconds = 0, output_bytes = ?, media_duration = COALESCE(?, media_duration), "
            "stderr_tail = ?, lease_until = NULL WHERE id = ?",
            (now, output_bytes, media_duration, stderr_tail or None), token=token, done=True,
            publish=publish, ends_in=JobState.COMPLETED)

    def mark_skipped(self, job_id: int, *, now: float, reason: SkipReason, message: str,
                     output_bytes: int | None, media_duration: float | None,
                     token: int | None = None, publish: Publish | None = None) -> Job:
        """The job needed no work (or its result was not kept); the version counts as done."""
        return self._transition(
            job_id, "skip", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = 'skipped', finished_at = ?, reason = ?, error = ?, "
            "output_bytes = ?, media_duration = COALESCE(?, media_duration), eta_seconds = NULL, "
            "lease_until = NULL WHERE id = ?",
            (now, reason.value, message, output_bytes, media_duration), token=token, done=True,
            publish=publish, ends_in=JobState.SKIPPED)

    def mark_failed(self, job_id: int, *, now: float, reason: FailureReason, error: str,
                    stderr_tail: str, retry_at: float | None, progress: float | None = None,
                    token: int | None = None) -> Job:
        """The attempt failed: back to the queue after `retry_at`, or failed (cancelled) for good.

        `progress` is what the attempt reached (kept as the job's progress when given).
        """
        if retry_at is not None:
            state = JobState.QUEUED
        elif reason is FailureReason.CANCELLED:
            state = JobState.CANCELLED
        else:
            state = JobState.FAILED
        # Two statements, not a CASE on the parameter: PostgreSQL cannot type a NULL tested there.
        if retry_at is not None:
            sql = ("UPDATE jobs SET state = ?, finished_at = ?, reason = ?, error = ?, "
                   "stderr_tail = ?, not_before = ?, queued_at = ?, "
                   "progress = COALESCE(?, progress), lease_until = NULL WHERE id = ?")
            params: tuple[Any, ...] = (state.value, now, reason.value, error, stderr_tail or None,
                                       retry_at, retry_at, progress)
        else:
            sql = ("UPDATE jobs SET state = ?, finished_at = ?, reason = ?, error = ?, "
                   "stderr_tail = ?, not_before = NULL, progress = COALESCE(?, progress), "
                   "lease_until = NULL WHERE id = ?")
            params = (state.value, now, reason.value, error, stderr_tail or None, progress)
        return self._transition(job_id, "fail", {JobState.PROCESSING, JobState.PAUSED}, sql,
                                params, token=token)

    def requeue_interrupted(self, job_id: int, *, now: float, token: int | None = None) -> Job:
        """A clean shutdown ended a running attempt: back to the front, the attempt not counted."""
        return self._transition(
            job_id, "requeue", {JobState.PROCESSING, JobState.PAUSED},
            "UPDATE jobs SET state = 'queued', queued_at = ?, progress = 0, speed = NULL, "
            "eta_seconds = NULL, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
            f"started_at = NULL, lease_until = NULL, seq = {self._FRONT} WHERE id = ?",
            (now,), token=token)

    def _requeue_lapsed(self, db: Any, rows: list[Any], *, now: float,
                        max_attempts: int | None) -> list[Job]:
        """The attempts `rows` (id, attempts, node) whose lease ran out: back to the front of
        the queue (the attempt counted), or failed `interrupted` at `max_attempts`; their
        claims become stale."""
        conn = self._portable(db)
        for job_id, attempts, node in rows:
            error = f"the lease of {node} ran out during the attempt"
            if max_attempts is None or attempts < max_attempts:
                conn.execute(
                    "UPDATE jobs SET state = 'queued', queued_at = ?, progress = 0, speed = NULL, "
                    "eta_seconds = NULL, reason = 'interrupted', error = ?, lease_until = NULL, "
                    f"claim_token = claim_token + 1, seq = {self._FRONT} WHERE id = ?",
                    (now, error, job_id))
            else:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, reason = 'interrupted', "
                    "error = ?, lease_until = NULL, claim_token = claim_token + 1 WHERE id = ?",
                    (now, error, job_id))
        return self._noted_jobs([r[0] for r in rows])

    def _recover_rows(self, db: Any, rows: list[Any], *, now: float, max_attempts: int,
                      retry_interrupted: bool) -> list[Job]:
        """The attempts `rows` (id, attempts) a crash left running: back to the front of the
        queue, or failed `interrupted` at the limit; their claims become stale."""
        conn = self._portable(db)
        for job_id, attempts in rows:
            if retry_interrupted and attempts < max_attempts:
                conn.execute(
                    "UPDATE jobs SET state = 'queued', queued_at = ?, progress = 0, "
                    "reason = 'interrupted', error = 'the monitor stopped during the attempt', "
                    f"claim_token = claim_token + 1, seq = {self._FRONT} WHERE id = ?",
                    (now, job_id))
            else:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = ?, reason = 'interrupted', "
                    "error = 'the monitor stopped during the last attempt', "
                    "claim_token = claim_token + 1 WHERE id = ?", (now, job_id))
        return self._noted_jobs([r[0] for r in rows])

    def _noted_jobs(self, ids: list[int]) -> list[Job]:
        """The jobs `ids` as they are now, each noted as changed."""
        jobs = [self._reads.get(job_id) for job_id in ids]
        for job in jobs:
            self._note(job.id, job.state)
        return jobs

    def cancel_queued(self, job_id: int, *, now: float) -> Job:
        """Cancel a job that is waiting in the queue."""
        return self._transition(
            job_id, "cancel", {JobState.QUEUED},
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled', "
            "error = 'cancelled while queued' WHERE id = ?", (now,))

    def prioritize(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue."""
        return self._transition(
            job_id, "prioritize", {JobState.QUEUED},
            "UPDATE jobs SET not_before = NULL, "
            "priority = (SELECT COALESCE(MAX(priority), 0) FROM jobs WHERE state = 'queued'), "
            f"seq = {self._FRONT} WHERE id = ?", ())

    def delete(self, job_id: int) -> None:
        """Remove a finished job from history (its file version stays done)."""
        with self._portable_tx() as db:
            row = db.execute(f"SELECT state FROM jobs WHERE id = ?{self._ROW_LOCK}",
                             (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            state = JobState(row[0])
            if not state.is_finished:
                raise InvalidTransition(job_id, action="delete", state=state)
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._note(job_id, None)

    # -- the audit trail: the insert needs the new id (each store's own), the rest is shared ---

    def _prune_audit(self, db: PortableConnection, new_id: int, at: float) -> None:
        """Past AUDIT_MAX_ROWS the oldest entries go; on the first insert and every
        _AUDIT_PRUNE_EVERY after it, entries older than AUDIT_MAX_AGE_SECONDS go too."""
        db.execute("DELETE FROM audit WHERE id <= ?", (new_id - AUDIT_MAX_ROWS,))
        if self._audit_inserts % _AUDIT_PRUNE_EVERY == 0:
            db.execute("DELETE FROM audit WHERE at < ?", (at - AUDIT_MAX_AGE_SECONDS,))
        self._audit_inserts += 1

    def audit_entries(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The newest audit entries first, at most `limit`, with ids below `before` if given."""
        rows = self._query(
            f"SELECT id, {', '.join(AUDIT_COLUMNS)} FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**63 - 1, limit))
        return [AuditEntry(**dict(row)) for row in rows]

    def audit_count(self) -> int:
        """How many audit entries are kept."""
        return int(self._query("SELECT COUNT(*) FROM audit")[0][0])
