"""FleetEvents: other nodes' job changes as events on this node's bus.

On a shared store every committed job change is notified to every node. This node turns the
other nodes' (`StoreChange.origin` set) into the events the node itself would have published
for them (queued, started, paused, resumed, finished, removed, progress from the periodic
saves), marked with their origin: the WebSocket streams the whole fleet's jobs, while counters
and transition logs skip them (each node counts and logs only its own work).

A notification says which job changed and to which state; the rest is read from the store on
the loop. What only the other node knew is left out or inferred: its worker slot is -1, a
queued job's trigger is read from the job and the state this node last saw it in (a retry
backoff, an attempt that was running, queued again after it was created), and a resumed job
is told from a started one by that last state too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from bulletproof import events as ev
from bulletproof.errors import JobNotFound, StoreError
from bulletproof.models import FailureReason, Job, JobState, Outcome, QueueTrigger, SkipReason
from bulletproof.store import ChangeKind, JobStore, StoreChange, on_loop

log = logging.getLogger(__name__)

REMOTE_WORKER = -1  # the worker slot of a job another node runs: not known here
_REMEMBERED = 10_000  # jobs whose last seen state is kept (to tell a resume from a start)

_OUTCOMES = {
    JobState.COMPLETED: Outcome.COMPLETED,
    JobState.SKIPPED: Outcome.SKIPPED,
    JobState.FAILED: Outcome.FAILED,
    JobState.CANCELLED: Outcome.CANCELLED,
}


def queue_trigger(job: Job, before: JobState | None) -> QueueTrigger:
    """What (probably) queued a job another node queued, read from the job itself and the state
    this node last saw it in (None: not seen)."""
    if job.not_before is not None and isinstance(job.reason, FailureReason) \
            and job.reason is not FailureReason.INTERRUPTED:
        return QueueTrigger.AUTO_RETRY
    if job.reason is FailureReason.INTERRUPTED or (before is not None and before.is_active):
        return QueueTrigger.RECOVERED  # a lapsed lease swept, or a node's clean stop
    if job.queued_at > job.created_at:
        return QueueTrigger.MANUAL_RETRY
    return QueueTrigger.DETECTED


def _another_nodes_job(change: StoreChange) -> bool:
    """A job change or progress save another node made (any thread)."""
    return change.origin is not None and change.kind in (ChangeKind.JOB, ChangeKind.PROGRESS)


class FleetEvents:
    """Publishes the other nodes' job changes on this node's bus (origin: their node name)."""

    def __init__(self, store: JobStore, bus: ev.EventBus, *, shared: bool) -> None:
        self._store = store
        self._bus = bus
        self._shared = shared
        self._unsubscribe: Callable[[], None] | None = None
        self._seen: OrderedDict[int, JobState] = OrderedDict()

    def start(self) -> None:
        """Follow the store's notifications (on a shared store; call on the loop)."""
        if not self._shared:
            return
        self._unsubscribe = self._store.subscribe(
            on_loop(asyncio.get_running_loop(), self.publish, when=_another_nodes_job))

    def stop(self) -> None:
        """Stop following."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def publish(self, change: StoreChange) -> None:
        """The events of one change another node made (on the loop)."""
        assert change.job_id is not None
        origin = change.origin or ""
        if change.kind is ChangeKind.JOB and change.state is None:
            self._seen.pop(change.job_id, None)
            self._bus.publish(ev.JobRemoved(job_id=change.job_id, origin=origin))
            return
        try:
            job = self._store.get(change.job_id)
        except (JobNotFound, StoreError) as exc:  # deleted meanwhile, or the store is away
            log.debug("cannot read another node's job", extra={"job": change.job_id,
                                                               "error": str(exc)})
            return
        if change.kind is ChangeKind.PROGRESS:
            if job.state is JobState.PROCESSING:
                self._bus.publish(ev.JobProgress(
                    job_id=job.id, worker=REMOTE_WORKER, progress=job.progress, speed=job.speed,
                    eta_seconds=job.eta_seconds, origin=origin))
            return
        assert change.state is not None
        job = replace(job, state=change.state)  # as it was then (it may have moved on since)
        before = self._remember(job.id, change.state)
        for event in self._events(job, before, origin):
            self._bus.publish(event)

    def _remember(self, job_id: int, state: JobState) -> JobState | None:
        before = self._seen.pop(job_id, None)
        if not state.is_finished:
            self._seen[job_id] = state
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
        return before

    @staticmethod
    def _events(job: Job, before: JobState | None, origin: str) -> list[ev.Event]:
        state = job.state
        if state is JobState.QUEUED:
            trigger = queue_trigger(job, before)
            if trigger is QueueTrigger.AUTO_RETRY and isinstance(job.reason, FailureReason):
                finished = ev.JobFinished(job=job, worker=None, outcome=Outcome.FAILED,
                                          reason=job.reason, busy_seconds=_busy(job),
                                          will_retry=True, origin=origin)
                return [finished, ev.JobQueued(job=job, trigger=trigger, origin=origin)]
            return [ev.JobQueued(job=job, trigger=trigger, origin=origin)]
        if state is JobState.PROCESSING:
            if before is JobState.PAUSED:
                return [ev.JobResumed(job=job, worker=REMOTE_WORKER, origin=origin)]
            wait = max(0.0, (job.started_at or job.queued_at) - job.queued_at)
            return [ev.JobStarted(job=job, worker=REMOTE_WORKER, queue_wait=wait, origin=origin)]
        if state is JobState.PAUSED:
            return [ev.JobPaused(job=job, worker=REMOTE_WORKER, origin=origin)]
        outcome = _OUTCOMES[state]
        reason = job.reason if outcome in (Outcome.FAILED, Outcome.SKIPPED) else None
        if outcome is Outcome.FAILED and not isinstance(reason, FailureReason):
            reason = FailureReason.INTERNAL
        if outcome is Outcome.SKIPPED and not isinstance(reason, SkipReason):
            reason = None
        return [ev.JobFinished(job=job, worker=None, outcome=outcome, reason=reason,
                               busy_seconds=_busy(job), origin=origin)]


def _busy(job: Job) -> float:
    """How long the attempt ran, as far as the record tells (pauses included)."""
    if job.started_at is None or job.finished_at is None:
        return 0.0
    return max(0.0, job.finished_at - job.started_at)
