"""JobStore: the interface of the persistent job queue and history, whatever database keeps it.

`SqliteJobStore` (bulletproof.sqlite_store) is the implementation a single monitor runs on.
The interface is written for a fleet too: a worker *claims* a job with a lease and gets a
fencing token; every later write for that attempt carries the token, and the store refuses a
stale one (`StaleClaim`), so a node whose lease expired can never overwrite the job's next
attempt. `tests/store_contract.py` is the behaviour every implementation must show.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from bulletproof.audit import AuditEntry
from bulletproof.errors import StaleClaim
from bulletproof.models import FailureReason, Job, JobState, SkipReason

# Whether something is at a stored output path on this node's file system. The store compares
# stored forms only (bulletproof.libraries): the caller says how to look one up on disk.
FileExists = Callable[[str], bool]

# The keys a job list can be sorted by (the implementations map them to their own columns).
SORT_KEYS: tuple[str, ...] = ("created", "finished", "started", "duration", "size", "id")

_T = TypeVar("_T")

#: The states of a live attempt: what `JobStore.fenced` requires unless told otherwise.
ATTEMPT_STATES: frozenset[JobState] = frozenset({JobState.PROCESSING, JobState.PAUSED})

#: What a fenced write runs inside its transaction (the rename of an output into place...).
Publish = Callable[[], None]


def check_fence(job_id: int, token: int, state: JobState, current: int,
                states: frozenset[JobState], action: str) -> None:
    """StaleClaim unless `token` is the job's `current` claim and its `state` one of `states`."""
    if current != token:
        raise StaleClaim(job_id, token=token, action=action,
                         why=f"the job's claim is now {current}: the lease ran out or it was "
                             "claimed again")
    if state not in states:
        raise StaleClaim(job_id, token=token, action=action, why=f"the job is {state.value}")


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


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a node took from the queue: the attempt is its own while the lease holds.

    `token` fences the attempt: it grows on every claim of the job (and when an expired lease
    is swept), and every write for the attempt that carries it is refused once it is stale.
    """

    job: Job
    token: int
    node: str
    lease_until: float


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One monitor of the store, as its last heartbeat told it (and whether it is draining).

    A lone monitor is a fleet of one: its store lists it too.
    """

    name: str
    instance: str  # this run of the process: a second process under the same name differs
    host: str
    pid: int
    version: str
    workers: int  # worker slots configured
    busy: int  # slots running a job at the last heartbeat
    started_at: float
    last_seen: float  # unix time of the last heartbeat, by the node's clock
    heartbeat_seconds: float  # how often the node beats: readers judge "gone" by it
    draining: bool = False  # takes no new jobs (set by anyone; survives restarts)
    stopped_at: float | None = None  # a clean stop; None while running (or after a crash)
    api_address: str | None = None  # host:port of its API, as the node advertises it

    def alive(self, now: float, *, missed: int = 3) -> bool:
        """Running and heard from within `missed` heartbeats."""
        return self.stopped_at is None and now - self.last_seen <= missed * self.heartbeat_seconds


class ChangeKind(StrEnum):
    """What a store change notification is about."""

    JOB = "job"  # a job was added, changed state, or was deleted (state None)
    META = "meta"  # a persisted setting changed
    NODE = "node"  # a node's registry row changed in a way others act on (draining); key: name
    CONTROL = "control"  # a control was asked of the node running a job; key: that node's name
    PROGRESS = "progress"  # a running job's progress was saved (a shared store: others show it)


@dataclass(frozen=True, slots=True)
class StoreChange:
    """One committed change, told to the store's listeners after the commit."""

    kind: ChangeKind
    job_id: int | None = None
    state: JobState | None = None
    key: str | None = None
    # None: a write of this store instance (this node); else another writer's node name ("" when
    # it did not say), as a shared store's listener hands it on.
    origin: str | None = None


ChangeListener = Callable[[StoreChange], None]


def on_loop(loop: asyncio.AbstractEventLoop, listener: ChangeListener, *,
            when: Callable[[StoreChange], bool]) -> ChangeListener:
    """A listener that runs `listener` on `loop` for the changes `when` picks.

    Other monitors' changes reach a store's listeners on its listener thread: whatever acts on
    them belongs on the loop. `when` runs in the notifying thread (cheap: it keeps the loop from
    being woken for every change); a change told once the loop closed is dropped.
    """
    def hop(change: StoreChange) -> None:
        if when(change):
            with suppress(RuntimeError):  # the loop closed: nothing is left to act
                loop.call_soon_threadsafe(listener, change)

    return hop


class ControlAction(StrEnum):
    """A control one node asks of the node that runs a job."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A control asked of the node that runs a job, kept in the store until that node acts.

    `token` is the claim it was asked for: a later attempt of the job never takes it.
    """

    job_id: int
    node: str
    action: ControlAction
    token: int
    requested_at: float


@dataclass(slots=True)
class StoreHealth:
    """What the last write to the store did; `corrupt` stays set once the store reported damage."""

    writable: bool = True
    error: str | None = None  # why the last write failed, while it is failing
    last_error: str | None = None  # why a write last failed, kept after recovery
    outages: int = 0  # how many times writes started failing: a poller sees even a short one
    since: float | None = None  # when the store last changed between writable and not
    corrupt: str | None = None
    last_ok: float = field(default_factory=time.monotonic)  # the last committed write

    def write_ok(self) -> None:
        """Record a committed write."""
        self.last_ok = time.monotonic()
        if not self.writable:
            self.writable, self.error, self.since = True, None, time.time()

    def write_failed(self, error: str) -> None:
        """Record a write the database refused."""
        if self.writable:
            self.since = time.time()
            self.outages += 1
        self.writable, self.error, self.last_error = False, error, error


@runtime_checkable
class JobStore(Protocol):
    """The queue and history of jobs; every transition is atomic, every failure a StoreError."""

    @property
    def path(self) -> Path | str:
        """Where the store keeps its data (a file, or a server's address)."""
        ...

    # -- lifecycle and health -------------------------------------------------------------------

    def close(self) -> None:
        """Release the store (connections, locks)."""
        ...

    def health(self) -> StoreHealth:
        """The outcome of the last write (a copy; `probe` refreshes it)."""
        ...

    def probe(self) -> bool:
        """A tiny write: True when the store takes writes (updates `health`)."""
        ...

    def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call `listener` after each committed change; returns the call that unsubscribes."""
        ...

    # -- meta -----------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A persisted setting (e.g. whether the queue is paused)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Persist a setting."""
        ...

    # -- the node registry ----------------------------------------------------------------------

    def heartbeat(self, node: NodeInfo) -> NodeInfo:
        """Record a node's heartbeat (every field but `draining`, which the row keeps); the row."""
        ...

    def nodes(self) -> list[NodeInfo]:
        """Every node the store knows, by name."""
        ...

    def set_draining(self, name: str, draining: bool) -> NodeInfo:
        """Let a node finish its jobs and take no more (or take jobs again); NodeNotFound."""
        ...

    def forget_node(self, name: str) -> None:
        """Remove a node from the registry (NodeNotFound when there is none)."""
        ...

    # -- controls asked of the node that runs a job ---------------------------------------------

    def request_control(self, job_id: int, action: ControlAction, *, now: float) -> ControlRequest:
        """Ask the node that runs a job to cancel, pause or resume it (replacing an earlier
        request); JobNotFound, InvalidTransition when its state or claim does not allow it."""
        ...

    def control_requests(self, node: str) -> list[ControlRequest]:
        """The requests addressed to `node`, oldest first."""
        ...

    def clear_control(self, job_id: int, token: int) -> None:
        """Forget the request for this attempt of a job (carried out, or nothing left to do)."""
        ...

    # -- adding jobs ----------------------------------------------------------------------------

    def add(self, new: NewJob, *, now: float | None = None, force: bool = False) -> Job | None:
        """Queue a job unless this file version has a job or was done (`force` skips the check)."""
        ...

    def add_reserving(self, new: NewJob, *, policy: str, now: float | None = None,
                      force: bool = False,
                      file_exists: FileExists = os.path.lexists) -> tuple[Job | None, str | None]:
        """Queue a job with an output name no other source holds; the job and the policy applied."""
        ...

    def reserve_again(self, job_id: int, *, policy: str, path: str | None = None,
                      file_exists: FileExists = os.path.lexists,
                      token: int | None = None) -> tuple[Job, str | None]:
        """On a job's first claim, apply the output policy again to a name taken since queueing
        (StaleClaim when `token` is given and no longer current)."""
        ...

    def add_failed(self, new: NewJob, *, reason: FailureReason, error: str,
                   now: float | None = None, force: bool = False) -> Job | None:
        """Record a job that cannot run at all as failed."""
        ...

    # -- claims: the queue order, leases, fencing -----------------------------------------------

    def claim(self, node: str, *, now: float, lease_seconds: float,
              within: Sequence[str] | None = None) -> Claim | None:
        """Take the next runnable job (priority, then FIFO, honouring backoff) for `node`;
        `within`: only one whose stored paths start with one of these prefixes (the libraries
        the node mounts; `queries.within_prefixes`), the others are left for other nodes."""
        ...

    def renew(self, job_id: int, token: int, *, until: float) -> None:
        """Extend the lease of a current claim; StaleClaim when the token is not current."""
        ...

    def requeue_expired(self, *, now: float, max_attempts: int | None = None) -> list[Job]:
        """Put jobs whose lease ran out back at the front of the queue (the attempt counted),
        or fail them `interrupted` once they had `max_attempts`."""
        ...

    def next_queued(self, *, now: float, within: Sequence[str] | None = None) -> Job | None:
        """The job a free worker would take now (a read; `claim` takes it)."""
        ...

    def next_wakeup(self) -> float | None:
        """The earliest time a backed-off queued job becomes runnable."""
        ...

    def fenced(self, job_id: int, token: int, action: Callable[[], _T], *,
               states: frozenset[JobState] = ATTEMPT_STATES, doing: str = "act on") -> _T:
        """Run `action` in one transaction that holds the job's row, only while `token` is the
        job's current claim and the job is in `states` (StaleClaim otherwise, its message saying
        `cannot <doing> job N`, and `action` does not run): no sweep, claim or other write
        changes the job while it runs. An exception from `action` rolls the transaction back
        and propagates."""
        ...

    # -- transitions (`token`, when given, must be the current claim's) -------------------------

    def mark_started(self, job_id: int, *, now: float) -> Job:
        """Take a queued job by id: processing, one more attempt."""
        ...

    def mark_paused(self, job_id: int, paused: bool, *, token: int | None = None) -> Job:
        """Record that a running job's process was stopped or continued."""
        ...

    def mark_completed(self, job_id: int, *, now: float, output_bytes: int,
                       media_duration: float | None, stderr_tail: str = "",
                       token: int | None = None, publish: Publish | None = None) -> Job:
        """The attempt succeeded; the file version is remembered as done.

        `publish` (the rename of the output into place) runs inside the same transaction, after
        the claim is checked and while the job's row is held: an output is only ever published
        by the current claim, and a published output is recorded or not published at all. With
        `token`, completing again an attempt this claim already completed returns the job (a
        retry after a commit whose answer was lost) without running `publish`.
        """
        ...

    def mark_skipped(self, job_id: int, *, now: float, reason: SkipReason, message: str,
                     output_bytes: int | None, media_duration: float | None,
                     token: int | None = None, publish: Publish | None = None) -> Job:
        """The job needed no work (or its result was not kept); the version counts as done.

        `publish` (putting the source at the output) runs as in `mark_completed`.
        """
        ...

    def mark_failed(self, job_id: int, *, now: float, reason: FailureReason, error: str,
                    stderr_tail: str, retry_at: float | None, progress: float | None = None,
                    token: int | None = None) -> Job:
        """The attempt failed: back to the queue after `retry_at`, or failed (cancelled) for good."""
        ...

    def requeue_interrupted(self, job_id: int, *, now: float, token: int | None = None) -> Job:
        """A clean stop ended a running attempt: back to the front, the attempt not counted."""
        ...

    def cancel_queued(self, job_id: int, *, now: float) -> Job:
        """Cancel a job that is waiting in the queue."""
        ...

    def requeue(self, job_id: int, *, now: float, reset_attempts: bool = True) -> Job:
        """Put a finished job back into the queue (manual retry)."""
        ...

    def prioritize(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue."""
        ...

    def delete(self, job_id: int) -> None:
        """Remove a finished job from history (its file version stays done)."""
        ...

    def clear_queue(self, *, now: float) -> list[int]:
        """Cancel every queued job; returns their ids."""
        ...

    def recover_interrupted(self, *, now: float, max_attempts: int,
                            retry_interrupted: bool) -> list[Job]:
        """After a crash: jobs left processing or paused go back to the queue (or fail)."""
        ...

    # -- details of a running attempt (`token`, when given, must be the current claim's:
    # StaleClaim otherwise, and nothing is written) ----------------------------------------------

    def set_progress(self, job_id: int, progress: float, speed: float | None,
                     eta_seconds: float | None, *, token: int | None = None) -> None:
        """Save the last progress report."""
        ...

    def set_media_duration(self, job_id: int, seconds: float | None, *,
                           token: int | None = None) -> None:
        """Remember the source's media duration once probed."""
        ...

    def set_source_inode(self, job_id: int, inode: int, *, token: int | None = None) -> None:
        """Remember which file (inode) the job's attempt read."""
        ...

    def set_quality_score(self, job_id: int, score: float | None, *,
                          token: int | None = None) -> None:
        """Remember the quality score the output got against its source."""
        ...

    # -- reads ----------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """One job by id (JobNotFound when there is none)."""
        ...

    def find(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """The newest job for exactly this version of a file, if any."""
        ...

    def unfinished_job(self, source_path: str, size: int, mtime_ns: int) -> Job | None:
        """A job of exactly this version of a file that has not finished (queued, running, paused)."""
        ...

    def seen(self, source_path: str, size: int, mtime_ns: int) -> bool:
        """True when this version of a file has a job, or had one that completed or was skipped."""
        ...

    def queued(self, limit: int = 1000, offset: int = 0) -> list[Job]:
        """Queued jobs in the order they will run."""
        ...

    def list_jobs(self, *, states: list[JobState] | None = None, profile: str | None = None,
                  search: str | None = None, since: float | None = None,
                  until: float | None = None, sort: str = "created", descending: bool = True,
                  limit: int = 100, offset: int = 0) -> tuple[list[Job], int]:
        """A filtered page of jobs sorted by one of SORT_KEYS, and the total matching count."""
        ...

    def counts_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included)."""
        ...

    def oldest_queued_at(self) -> float | None:
        """When the longest-waiting queued job was queued."""
        ...

    def last_finished_at(self) -> dict[JobState, float | None]:
        """The latest finish time per terminal state."""
        ...

    def summary(self, *, now: float) -> dict[str, Any]:
        """Totals, average duration, space saved, and the last 24 h by hour."""
        ...

    def space_saved(self) -> dict[str, Any]:
        """Input, output and saved bytes over completed jobs whose sizes are both known."""
        ...

    def history(self, *, since: float, until: float, step: float) -> list[dict[str, Any]]:
        """Jobs finished per time bucket, by outcome, with their mean duration."""
        ...

    # -- the audit trail ------------------------------------------------------------------------

    def record_audit(self, entry: AuditEntry) -> int:
        """Keep one audit entry (the oldest go past the retention bounds); returns its id."""
        ...

    def audit_entries(self, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """The newest audit entries first, at most `limit`, with ids below `before` if given."""
        ...

    def audit_count(self) -> int:
        """How many audit entries are kept."""
        ...
