"""Control requests' rows in portable SQL (`?` placeholders): both stores keep them alike.

A control (cancel, pause, resume) asked of a job that another node runs is a row addressed to
that node, for the claim it was asked for; the node acts on it and deletes it.
"""

from __future__ import annotations

from typing import Any

from bulletproof.errors import InvalidTransition
from bulletproof.models import JobState
from bulletproof.store import ControlAction, ControlRequest

COLUMNS: tuple[str, ...] = ("job_id", "node", "action", "token", "requested_at")

# One pending request per job: a later one replaces it (cancel after pause: cancel wins).
UPSERT = (
    f"INSERT INTO control_requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (job_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "job_id"))
FOR_NODE = (f"SELECT {', '.join(COLUMNS)} FROM control_requests WHERE node = ? "
            "ORDER BY requested_at, job_id")
CLEAR = "DELETE FROM control_requests WHERE job_id = ? AND token = ?"

# The states a running job's control applies in (as the node that runs it would check).
ALLOWED: dict[ControlAction, frozenset[JobState]] = {
    ControlAction.CANCEL: frozenset({JobState.PROCESSING, JobState.PAUSED}),
    ControlAction.PAUSE: frozenset({JobState.PROCESSING}),
    ControlAction.RESUME: frozenset({JobState.PAUSED}),
}


def checked_request(job_id: int, action: ControlAction, *, state: JobState, node: str | None,
                    token: int, now: float) -> ControlRequest:
    """The request to keep for a job in `state` claimed by `node`; InvalidTransition when the
    job cannot take the action (not running, or held by no node)."""
    if state not in ALLOWED[action] or not node:
        raise InvalidTransition(job_id, action=action.value, state=state)
    return ControlRequest(job_id=job_id, node=node, action=action, token=token, requested_at=now)


def request_params(request: ControlRequest) -> tuple[Any, ...]:
    """The UPSERT statement's parameters."""
    return (request.job_id, request.node, request.action.value, request.token, request.requested_at)


def request_from_row(row: Any) -> ControlRequest:
    """A row as a ControlRequest."""
    values = dict(zip(COLUMNS, row, strict=True))
    return ControlRequest(job_id=int(values["job_id"]), node=values["node"],
                          action=ControlAction(values["action"]), token=int(values["token"]),
                          requested_at=float(values["requested_at"]))
