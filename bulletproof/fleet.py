"""NodePresence: this monitor in its store's node registry.

Every `fleet.heartbeat_seconds` the node writes its heartbeat (version, workers, busy slots),
renews the leases of the jobs it runs and, on a store several monitors share, returns the jobs
of nodes whose lease ran out to the queue. Whether the node is draining lives in the store, so
anyone may set it; the node follows it at its next beat, or at once on a store notification.

The sweep waits: a node sweeps nobody's lease during its first `fleet.lease_seconds` after it
started, nor after any store outage it saw ended. When the database was away longer than a
lease, every lease in it looks lapsed when it returns; the wait gives every other node (cut off
just the same) the time to renew its leases first, so no running job is taken from a live node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable

from bulletproof import events as ev
from bulletproof.config import Config
from bulletproof.errors import NodeNameTaken, NodeNotFound, StoreError
from bulletproof.models import FailureReason, Job, JobState, QueueTrigger
from bulletproof.store import ChangeKind, JobStore, NodeInfo, StoreChange, on_loop
from bulletproof.workers import WorkerPool

log = logging.getLogger(__name__)


def publish_recovered(bus: ev.EventBus, jobs: Iterable[Job]) -> None:
    """Tell what recovery did to each job: back in the queue, or failed out of attempts."""
    for job in jobs:
        if job.state is JobState.QUEUED:
            bus.publish(ev.JobQueued(job=job, trigger=QueueTrigger.RECOVERED))
        else:
            bus.publish(ev.JobFinished(job=job, worker=None, outcome=ev.Outcome.FAILED,
                                       reason=FailureReason.INTERRUPTED, busy_seconds=0.0))


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class NodePresence:
    """This node's registry row: the heartbeat, its leases, the sweep of lapsed ones, draining."""

    def __init__(self, store: JobStore, bus: ev.EventBus, config: Callable[[], Config],
                 pool: WorkerPool, *, version: str, shared: bool) -> None:
        self._store = store
        self._bus = bus
        self._config = config
        self._pool = pool
        self._version = version
        self._shared = shared  # other monitors run on the store: sweep their lapsed leases
        self.name = config().node_name
        self.instance = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.started_at: float | None = None
        self.api_address: str | None = None
        self.last_beat: float | None = None  # when the store last took this node's heartbeat
        # No sweep before this (unix time): after a start or an outage, others renew first.
        self.sweeps_from = 0.0
        self._outages_seen = store.health().outages
        self._beat_failed = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- the registry row ---------------------------------------------------------------------

    def _info(self, now: float, *, stopped: bool = False) -> NodeInfo:
        return NodeInfo(
            name=self.name, instance=self.instance, host=self.host, pid=os.getpid(),
            version=self._version, workers=self._config().max_workers, busy=self._pool.busy_count(),
            started_at=self.started_at or now, last_seen=now,
            heartbeat_seconds=self._config().fleet.heartbeat_seconds,
            stopped_at=now if stopped else None, api_address=self.api_address)

    def claim_name(self, now: float) -> None:
        """Take this node's name in the registry; NodeNameTaken while another running monitor
        holds it (a process on this host that is gone, or a row gone quiet, is taken over)."""
        self.started_at = now
        self._hold_sweeps(now, "started")
        held = self._own_row()
        if held is not None and held.instance != self.instance and held.alive(now):
            # On this host a process that is gone, or that is us (a container restarted under
            # its old host name and pid 1), held it before: this is its restart.
            earlier_run = held.host == self.host and (held.pid == os.getpid()
                                                      or not _process_running(held.pid))
            if not earlier_run:
                raise NodeNameTaken(held, path=self._store.path, seen_ago=max(0.0, now - held.last_seen))
        self.follow(self._store.heartbeat(self._info(now)))
        if held is not None and held.draining:
            log.info("this node is draining: it takes no new jobs (bulletproof node undrain "
                     f"{self.name} ends it)", extra={"node": self.name})

    def _own_row(self) -> NodeInfo | None:
        """This node's registry row as stored (None before its first heartbeat)."""
        return next((n for n in self._store.nodes() if n.name == self.name), None)

    def beat(self, now: float) -> None:
        """One heartbeat: the row, the leases of running jobs, then the sweep of lapsed ones."""
        try:
            self.follow(self._store.heartbeat(self._info(now)))
        except StoreError:
            self._beat_failed = True
            raise
        self.last_beat = now
        self._pool.renew_leases(now)  # first: our own leases are current before anyone sweeps
        outages = self._store.health().outages
        if self._beat_failed or outages != self._outages_seen:
            self._hold_sweeps(now, "the job store is back")
        self._beat_failed, self._outages_seen = False, outages
        if self._shared:
            self.sweep(now)

    def _hold_sweeps(self, now: float, why: str) -> None:
        """Sweep nothing for one lease: the nodes cut off with this one renew theirs meanwhile."""
        lease = self._config().fleet.lease_seconds
        self.sweeps_from = max(self.sweeps_from, now + lease)
        if self._shared:
            log.info("%s: no lapsed lease is swept for %g s, so that every node can renew its "
                     "own first", why, lease, extra={"node": self.name})

    def sweep(self, now: float) -> list[Job]:
        """Return the jobs whose lease ran out to the queue (or fail them out of attempts);
        nothing before `sweeps_from` (a lease after this node started or its store came back)."""
        if now < self.sweeps_from:
            return []
        jobs = self._store.requeue_expired(now=now, max_attempts=self._config().retry.max_attempts)
        for job in jobs:
            log.warning("a lease ran out: the job goes back to the queue" if job.state is JobState.QUEUED
                        else "a lease ran out and the job is out of attempts",
                        extra={"job": job.id, "error": job.error})
            self._bus.publish(ev.LeaseExpired(job=job, holder=job.claimed_by or ""))
        publish_recovered(self._bus, jobs)
        return jobs

    def follow(self, row: NodeInfo) -> None:
        """Act on this node's registry row as read from the store (draining or not)."""
        if row.draining != self._pool.draining:
            log.info("draining: running jobs finish, no new job starts" if row.draining
                     else "draining ended: taking jobs again", extra={"node": self.name})
        self._pool.set_draining(row.draining)

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Beat every `fleet.heartbeat_seconds`; follow draining changes as they are notified."""
        loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.subscribe(on_loop(
            loop, self._refresh, when=lambda c: c.kind is ChangeKind.NODE and c.key == self.name))
        self._task = loop.create_task(self._run(), name="bulletproof-heartbeat")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config().fleet.heartbeat_seconds)
            try:
                self.beat(time.time())
            except StoreError as exc:  # the store's health watch reports it; the next beat retries
                log.debug("heartbeat not recorded", extra={"error": str(exc)})
            except Exception:  # the heartbeat must outlive any one bug
                log.exception("heartbeat failed")

    def _refresh(self, _change: StoreChange) -> None:
        try:
            row = self._own_row()
        except StoreError:
            return
        if row is not None:
            self.follow(row)

    async def stop(self) -> None:
        """Stop beating and record a clean stop (other nodes then know it left, not died)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.started_at is not None:
            with contextlib.suppress(StoreError, NodeNotFound):
                self._store.heartbeat(self._info(time.time(), stopped=True))

