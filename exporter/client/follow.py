"""`bulletproof jobs --follow`: the event stream, filtered like `jobs`, one line per event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

from exporter.client.api_client import JSON, StreamClosed
from exporter.client.command import EXIT_ERROR, Api, fail
from exporter.client.formatting import event_line


class EventFilter:
    """The `jobs` filters, applied to job events (other events always pass)."""

    def __init__(self, states: tuple[str, ...], profile: str | None, search: str | None) -> None:
        self.states = set(states)
        self.profile = profile
        self.search = search.lower() if search else None
        self.active = bool(states or profile or search)
        self._matching: set[int] = set()

    def passes(self, message: JSON) -> bool:
        """True if the message is to be shown (job events as their job last matched)."""
        if not self.active:
            return True
        job = message.get("job")
        if isinstance(job, dict):
            ok = ((not self.states or job.get("state") in self.states)
                  and (self.profile is None or job.get("profile") == self.profile)
                  and (self.search is None or self.search in str(job.get("rel_path", "")).lower()))
            job_id = job.get("id")
            if isinstance(job_id, int):
                (self._matching.add if ok else self._matching.discard)(job_id)
            return ok
        job_id = message.get("job_id")
        if job_id is not None:  # progress or removal: as the job was last seen
            return job_id in self._matching
        return True


def follow_events(api: Api, flt: EventFilter) -> None:
    """Print the stream's messages that pass `flt` until Ctrl-C, SIGTERM or the server's close."""
    out = api.out

    def show(message: JSON) -> None:
        if message.get("type") == "pong" or not flt.passes(message):
            return
        if out.as_json:
            out.line(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
        else:
            out.line(event_line(message))

    async def run() -> bool:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            async for message in api.client.events():
                show(message)
        except asyncio.CancelledError:
            return False
        return True

    try:
        closed_by_server = asyncio.run(run())
    except KeyboardInterrupt:
        return
    except StreamClosed as exc:
        fail(out, exc.message, EXIT_ERROR)
    if closed_by_server:
        out.error("the server closed the event stream")

