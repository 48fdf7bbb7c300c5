"""ControlRelay: the controls that cross the nodes of a shared store.

- The queue's pause state lives in the store's meta: a node follows another node's pause or
  resume at once on the store's META notification, and reads it again every `POLL_SECONDS`
  (the fallback when a notification is lost: the listener reconnecting, the server restarted).
- A cancel, pause or resume of a job another node runs is a request in the store addressed to
  that node (`JobStore.request_control`); the owning node acts on it at once on the CONTROL
  notification, and looks for its requests every `POLL_SECONDS` too (one indexed read). It acts
  through its worker pool, which records the outcome with the claim's token, then clears it.

Notifications arrive on the store's listener thread: they are handed to the loop with
`call_soon_threadsafe` and acted on there, like every other control.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bulletproof import events as ev
from bulletproof.errors import JobError, StoreError
from bulletproof.state import QueueState
from bulletproof.store import ChangeKind, ControlRequest, JobStore, StoreChange, on_loop
from bulletproof.workers import WorkerPool

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # the fallback: how often a node reads the pause state and its requests


class ControlRelay:
    """Follows the fleet's queue pause and carries out the controls other nodes ask of this one."""

    def __init__(self, store: JobStore, bus: ev.EventBus, pool: WorkerPool, queue: QueueState,
                 *, node: Callable[[], str], shared: bool) -> None:
        self._store = store
        self._bus = bus
        self._pool = pool
        self._queue = queue
        self._node = node
        self._shared = shared  # other nodes write to the store: follow them
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.polled = 0  # poll rounds done (tests wait on it)

    async def start(self) -> None:
        """On a shared store: follow notifications, and poll as the fallback."""
        if not self._shared:
            return
        loop = asyncio.get_running_loop()
        self._unsubscribe = self._store.subscribe(on_loop(loop, self._on_change, when=self._wanted))
        self._task = loop.create_task(self._poll(), name="bulletproof-control-poll")

    async def stop(self) -> None:
        """Stop following the fleet."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- notifications ------------------------------------------------------------------------

    def _wanted(self, change: StoreChange) -> bool:
        """Another node's pause or resume, or a control asked of this node (any thread)."""
        if change.origin is None:  # this node's own write: acted on already
            return False
        if change.kind is ChangeKind.META:
            return change.key in QueueState.KEYS
        return change.kind is ChangeKind.CONTROL and change.key == self._node()

    def _on_change(self, change: StoreChange) -> None:
        try:
            if change.kind is ChangeKind.META:
                self.follow_queue()
            else:
                self.serve_requests()
        except StoreError as exc:  # the poll tries again; the store's health watch reports it
            log.debug("cannot follow the fleet yet", extra={"error": str(exc)})

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.follow_queue()
                self.serve_requests()
            except StoreError as exc:
                log.debug("cannot follow the fleet yet", extra={"error": str(exc)})
            except Exception:  # the fallback must outlive any one bug
                log.exception("following the fleet failed")
            self.polled += 1

    # -- on the loop --------------------------------------------------------------------------

    def follow_queue(self) -> None:
        """Take the queue's pause state from the store; tell this node's bus when it changed."""
        if not self._queue.refresh():
            return
        if self._queue.paused:
            log.info("the queue was paused on another node: running jobs finish, none starts")
            self._bus.publish(ev.QueuePaused())
        else:
            log.info("the queue was resumed on another node")
            self._pool.queue_resumed()
            self._bus.publish(ev.QueueResumed())

    def serve_requests(self) -> None:
        """Carry out the controls asked of this node, then clear them."""
        for request in self._store.control_requests(self._node()):
            self._serve(request)

    def _serve(self, request: ControlRequest) -> None:
        try:
            done = self._pool.apply_control(request)
        except JobError as exc:  # the job changed meanwhile (its attempt ended...)
            done = False
            log.info("a control asked by another node no longer applies",
                     extra={"job": request.job_id, "action": request.action.value, "error": str(exc)})
        if done:
            log.info("carried out a control asked by another node",
                     extra={"job": request.job_id, "action": request.action.value})
        self._store.clear_control(request.job_id, request.token)
