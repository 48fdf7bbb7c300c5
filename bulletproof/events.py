"""Typed events the core publishes, and the bus plugins subscribe to.

Events are published on the monitor's event-loop thread, synchronously, in the order things
happen (another node's, in the order this node hears of them: `Event.origin`). A subscriber
must be quick (update a counter, put into a queue); one that raises is logged and the others
still run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import time

from bulletproof.models import (
    FailureReason,
    IgnoreReason,
    Job,
    Outcome,
    QueueTrigger,
    SkipReason,
    VerificationResult,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event; `at` is the wall-clock time it happened.

    `origin` is None for what happened on this node; on a shared store, another node's job
    changes are published here too (so every node streams the fleet's jobs) with that node's
    name: counters and transition logs skip them, each node counts only its own work.
    """

    at: float = field(default_factory=time)
    origin: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDetected(Event):
    """A stable file was seen in a watch folder."""

    path: str
    watch_folder: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileIgnored(Event):
    """A file in a watch folder will not be queued, and why."""

    path: str
    reason: IgnoreReason


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQueued(Event):
    """A job entered the queue (new, retried or recovered after a restart)."""

    job: Job
    trigger: QueueTrigger


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(Event):
    """A worker slot started an attempt of a job."""

    job: Job
    worker: int
    queue_wait: float


@dataclass(frozen=True, slots=True, kw_only=True)
class JobProgress(Event):
    """ffmpeg reported progress on a running job."""

    job_id: int
    worker: int
    progress: float
    speed: float | None
    eta_seconds: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPaused(Event):
    """A running job's ffmpeg was stopped (SIGSTOP)."""

    job: Job
    worker: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResumed(Event):
    """A paused job's ffmpeg was continued (SIGCONT)."""

    job: Job
    worker: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished(Event):
    """An attempt ended; `will_retry` is True when it failed and was queued again.

    `reason` is the FailureReason of a failure, the SkipReason of a skip, else None.
    """

    job: Job
    worker: int | None
    outcome: Outcome
    reason: FailureReason | SkipReason | None
    busy_seconds: float
    will_retry: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputConflict(Event):
    """A new job's output name was already taken; `policy` (output_conflict) decided what happened."""

    job: Job
    policy: str
    wanted: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputVerified(Event):
    """A finished output was checked before publishing; `expected`/`actual` are durations."""

    job_id: int
    profile: str
    level: str
    result: VerificationResult
    expected: float | None = None
    actual: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityScored(Event):
    """A profile's quality gate scored an output against its source."""

    job_id: int
    profile: str
    metric: str
    score: float
    threshold: float
    passed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRemoved(Event):
    """A finished job was deleted from history."""

    job_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuePaused(Event):
    """Workers stop taking new jobs (running ones finish)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueResumed(Event):
    """Workers take new jobs again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueCleared(Event):
    """Every queued job was cancelled."""

    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(Event):
    """A config reload was attempted; on failure the old config stays in force."""

    success: bool
    source: str
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchFolderStatus(Event):
    """A watch folder became available or unavailable."""

    folder: str
    up: bool
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRestarted(Event):
    """A worker slot's loop hit an error; the slot carries on after `delay` seconds."""

    worker: int
    error: str
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseExpired(Event):
    """A node's claim on a running job ran out unrenewed (the node died, froze or lost the
    store); this node's sweep put the job back in the queue, or failed it out of attempts."""

    job: Job
    # The node whose lease ran out (not `node`: every WebSocket message names the node it
    # happened on, here the sweeping one, as `node`).
    holder: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStatus(Event):
    """The job store stopped or started taking writes (`corrupt` once SQLite reported damage)."""

    writable: bool
    error: str | None = None
    corrupt: bool = False


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers, in publish order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Deliver an event to every subscriber; a failing subscriber does not stop the rest."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a plugin bug must never stop the monitor
                log.exception("event subscriber %r failed on %s", subscriber, type(event).__name__)
