"""GET /ws/updates: the live event stream.

On connect a client gets one `snapshot` message (status, worker slots, the head of the queue),
then every job, queue, config and watch-folder event as `{"type": "<event>", "node": ..., ...}`
the moment the core publishes it (the message models and their `type` names:
`exporter.api.schemas`); on a shared store that includes the other nodes' job events, with
their `node`. Progress
reports are coalesced per job to at most one per `PROGRESS_INTERVAL`. Each client has a bounded
queue of pending messages (shared strings, so the memory is the slowest client's backlog); a
client that falls `QUEUE_SIZE` messages behind, or whose socket accepts nothing for
`SEND_TIMEOUT`, is disconnected (close code 1013) and can reconnect for a fresh snapshot.
aiohttp's heartbeat pings every `HEARTBEAT` seconds and drops peers that stop answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from bulletproof import events as ev
from exporter.api.errors import ApiError
from exporter.api.responses import model_text
from exporter.api.schemas import MESSAGE_MODELS, PongMessage, SnapshotMessage, SnapshotQueue, event_message
from exporter.api.shapes import job_answer, status_model

if TYPE_CHECKING:
    from bulletproof.plugins import PluginContext

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000         # messages a client may fall behind before it is dropped
PROGRESS_INTERVAL = 0.25    # seconds between progress messages for one job
PUMP_INTERVAL = 0.05        # how often coalesced progress is flushed
SEND_TIMEOUT = 10.0         # seconds a send may block on a full socket before the client is dropped
HEARTBEAT = 20.0            # seconds between WebSocket pings
SNAPSHOT_QUEUE_JOBS = 100   # queued jobs in the snapshot (GET /api/v1/queue pages the rest)
_TRY_AGAIN_LATER = 1013


def _job_id(event: ev.Event) -> int | None:
    job = getattr(event, "job", None)
    if job is not None:
        return int(job.id)
    return getattr(event, "job_id", None)


class _Client:
    __slots__ = ("queue", "dropped", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.dropped = False
        self.ws = ws


class EventHub:
    """Fans the monitor's events out to the connected WebSocket clients."""

    def __init__(self, context: PluginContext) -> None:
        self._context = context
        self._clients: set[_Client] = set()
        self._pending: dict[int, str] = {}          # job id -> latest unsent progress message
        self._last_progress: dict[int, float] = {}  # job id -> when progress was last sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self.messages_sent = 0
        self.clients_dropped = 0

    @property
    def client_count(self) -> int:
        """Connected clients."""
        return len(self._clients)

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: subscribe to the bus and run the progress pump while the app runs."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        unsubscribe = self._context.bus.subscribe(self._on_event)
        pump = asyncio.create_task(self._pump(), name="bulletproof-ws-pump")
        try:
            yield
        finally:
            unsubscribe()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def close_all(self, app: web.Application) -> None:
        """on_shutdown: tell every client the server is going away."""
        for client in list(self._clients):
            with contextlib.suppress(Exception):
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # -- events (on the loop thread) ----------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        if self._loop is None or type(event) not in MESSAGE_MODELS:  # detection events are not streamed
            return
        if threading.get_ident() != self._thread:  # not expected, but never touch queues off-loop
            self._loop.call_soon_threadsafe(self._dispatch, event)
        else:
            self._dispatch(event)

    def _dispatch(self, event: ev.Event) -> None:
        if not self._clients:
            self._pending.clear()
            return
        message = event_message(event, node=self._context.view.node_name)
        if message is None:
            return
        text = model_text(message)
        job_id = _job_id(event)
        if isinstance(event, ev.JobProgress):
            now = time.monotonic()
            if now - self._last_progress.get(event.job_id, 0.0) >= PROGRESS_INTERVAL:
                self._last_progress[event.job_id] = now
                self._pending.pop(event.job_id, None)
                self._broadcast(text)
            else:
                self._pending[event.job_id] = text
            return
        if job_id is not None:
            # Keep per-job order: a held-back progress report goes out before what follows it.
            held = self._pending.pop(job_id, None)
            if held is not None:
                self._broadcast(held)
            if isinstance(event, (ev.JobFinished, ev.JobRemoved, ev.JobQueued)):
                self._last_progress.pop(job_id, None)
        self._broadcast(text)

    def _broadcast(self, message: str) -> None:
        for client in list(self._clients):
            if client.dropped:
                continue
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._drop(client, "too far behind")

    def _drop(self, client: _Client, why: str) -> None:
        client.dropped = True
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        self.clients_dropped += 1
        log.warning("websocket client dropped", extra={"reason": why})

    async def _pump(self) -> None:
        while True:
            await asyncio.sleep(PUMP_INTERVAL)
            now = time.monotonic()
            for job_id, message in list(self._pending.items()):
                if now - self._last_progress.get(job_id, 0.0) >= PROGRESS_INTERVAL:
                    del self._pending[job_id]
                    self._last_progress[job_id] = now
                    self._broadcast(message)
            if len(self._last_progress) > 1000:  # jobs that vanished without a final event
                for job_id, at in list(self._last_progress.items()):
                    if now - at > 60 and job_id not in self._pending:
                        del self._last_progress[job_id]

    # -- clients ------------------------------------------------------------------------------

    def register(self, ws: web.WebSocketResponse) -> _Client:
        """Add a client; call `snapshot` right after, with no await in between."""
        client = _Client(ws)
        self._clients.add(client)
        return client

    def unregister(self, client: _Client) -> None:
        """Remove a client."""
        self._clients.discard(client)

    def snapshot(self) -> str:
        """The first message a client gets."""
        view = self._context.view
        status = status_model(view)
        queued = view.queued(limit=SNAPSHOT_QUEUE_JOBS)
        return model_text(SnapshotMessage(
            type="snapshot", at=time.time(), status=status, workers=status.workers.slots,
            queue=SnapshotQueue(jobs=[job_answer(j) for j in queued], total=status.queue.length)))

    async def send_loop(self, client: _Client, request: web.Request) -> None:
        """Send a client's queued messages until it is dropped or disconnects."""
        ws = client.ws
        while True:
            message = await client.queue.get()
            if message is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        ws.close(code=_TRY_AGAIN_LATER, message=b"too slow; reconnect"), 2.0)
                return
            try:
                await asyncio.wait_for(ws.send_str(message), SEND_TIMEOUT)
            except TimeoutError:
                self.clients_dropped += 1
                log.warning("websocket client dropped", extra={"reason": "send timed out"})
                if request.transport is not None:
                    request.transport.abort()
                return
            except (ConnectionError, RuntimeError):  # closed under us
                return
            self.messages_sent += 1


HUB: web.AppKey[EventHub] = web.AppKey("bulletproof.ws_hub", EventHub)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """GET /ws/updates."""
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        raise ApiError(426, "this endpoint speaks WebSocket: send an Upgrade request",
                       code="upgrade_required", headers={"Upgrade": "websocket"})
    await ws.prepare(request)
    client = hub.register(ws)
    sender: asyncio.Task[None] | None = None
    try:
        try:
            first = hub.snapshot()
        except Exception:
            log.exception("websocket snapshot failed")
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"snapshot failed")
            return ws
        await ws.send_str(first)
        sender = asyncio.create_task(hub.send_loop(client, request), name="bulletproof-ws-send")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and _is_ping(msg.data) and not client.dropped:
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(model_text(PongMessage(type="pong", at=time.time())))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.unregister(client)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
    return ws


def _is_ping(text: str) -> bool:
    if text.strip() == "ping":
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "ping"
