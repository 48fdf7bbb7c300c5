"""Controls: every action a plugin may take on a running monitor, as one typing.Protocol.

`Monitor` implements it; a plugin is handed it through `PluginContext.controls` and never sees
the monitor itself, so what a plugin can change is exactly this list.
"""

from __future__ import annotations

from typing import Any, Protocol

from bulletproof.audit import AuditEntry
from bulletproof.config import Config
from bulletproof.models import Job
from bulletproof.store import NodeInfo


class Controls(Protocol):
    """The control methods of a monitor (each raises the errors of `bulletproof.errors`)."""

    # -- the queue

    def pause_queue(self) -> None:
        """Stop starting new jobs; running ones finish. Idempotent."""

    def resume_queue(self) -> None:
        """Start taking jobs again. Idempotent."""

    def clear_queue(self) -> int:
        """Cancel every queued job; returns how many."""

    def retry_failed(self) -> list[Job]:
        """Queue every failed job again."""

    def enqueue_path(self, path: str, *, profile: str | None = None,
                     priority: int | None = None) -> Job:
        """Queue a file inside a watch folder (absolute, or relative to a watch folder)."""

    # -- one job

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a queued job now, or end a running one (its outcome follows as an event)."""

    def pause_job(self, job_id: int) -> Job:
        """Suspend a running job."""

    def resume_job(self, job_id: int) -> Job:
        """Continue a paused job."""

    def retry_job(self, job_id: int) -> Job:
        """Queue a finished job again."""

    def prioritize_job(self, job_id: int) -> Job:
        """Move a queued job to the front of the queue."""

    def delete_job(self, job_id: int) -> None:
        """Remove a finished job from history."""

    # -- the fleet

    def drain_node(self, name: str, draining: bool = True) -> NodeInfo:
        """Let a node of the store finish its jobs and take no more (or take jobs again)."""

    def advertise_api(self, address: str) -> None:
        """Publish this node's API address (host:port) in the node registry, for discovery."""

    def forget_node(self, name: str) -> None:
        """Remove a node that is not alive from the registry (NodeRunning while it is)."""

    # -- the config

    def validate_config(self, data: Any) -> Config:
        """Validate a submitted config without applying it (raises ConfigError)."""

    async def update_config(self, data: Any) -> Config:
        """Validate, write and apply a submitted config."""

    async def reset_config(self) -> Config:
        """Back to the defaults for what may be changed from outside."""

    # -- the audit trail

    def record_audit(self, entry: AuditEntry) -> int:
        """Keep one audit entry of a control call; returns its id."""
