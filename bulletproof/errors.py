"""The error tree. Context travels in keyword attributes; only the CLI maps errors to exit codes.

BulletproofError
├── ConfigError            a config file or value is invalid (carries every issue found)
├── StoreError             the state database cannot be opened or written
│   ├── StoreLocked        another monitor holds the database or the output folder
│   │   └── NodeNameTaken  another running monitor of the store has this node name
│   └── StoreCorrupt       the database file is damaged (quick_check or a "malformed" error)
├── JobError               a control call names a job that cannot take it
│   ├── JobNotFound        no job has that id
│   ├── InvalidTransition  the job's state does not allow the action
│   ├── StaleClaim         a write for an attempt whose claim is no longer current
│   └── NodeUnavailable    the job runs on another node that is not running now
├── NodeNotFound           no node of that name is in the store's registry
├── NodeRunning            a node that is still running cannot be forgotten
├── PathError              a path is outside the watch folders, missing, or not a file
│   ├── UnknownProfile     a request names a profile the config does not have
│   └── UnknownLibrary     a fleet path names a library this node does not mount
├── FfmpegNotFound         neither PATH nor the bundled build has an ffmpeg
├── PluginError            a plugin could not start (e.g. its port is taken)
└── TranscodeError         one transcode attempt failed (carries the FailureReason)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulletproof.models import FailureReason, JobState
    from bulletproof.store import NodeInfo


class BulletproofError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (dotted key path) and why."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(BulletproofError):
    """A config is invalid; `issues` lists every problem with its key path."""

    def __init__(self, issues: list[ConfigIssue], *, source: Path | str | None = None) -> None:
        self.issues = list(issues)
        self.source = str(source) if source is not None else None
        where = f"{self.source}: " if self.source else ""
        lines = "; ".join(str(i) for i in self.issues) or "invalid config"
        super().__init__(f"{where}{lines}")


class StoreError(BulletproofError):
    """The job store cannot be opened, migrated or written."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(message)


class StoreLocked(StoreError):
    """Another monitor holds the state database or the output folder; `holder` says who."""

    def __init__(self, message: str, *, path: Path | str, holder: dict[str, object]) -> None:
        self.holder = dict(holder)
        super().__init__(message, path=path)


class StoreCorrupt(StoreError):
    """The state database file is damaged; the monitor does not run on it."""


class JobError(BulletproofError):
    """A control call cannot be applied to a job."""

    def __init__(self, message: str, *, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobNotFound(JobError):
    """No job has the given id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found", job_id=job_id)


class InvalidTransition(JobError):
    """The job's current state does not allow the requested action."""

    def __init__(self, job_id: int, *, action: str, state: JobState) -> None:
        self.action = action
        self.state = state
        super().__init__(f"cannot {action} job {job_id}: it is {state.value}", job_id=job_id)


class StaleClaim(JobError):
    """A write carried a fencing token that is no longer current: the lease expired or the job
    was claimed again, so this attempt's outcome must not be recorded."""

    def __init__(self, job_id: int, *, token: int, action: str, why: str) -> None:
        self.token = token
        self.action = action
        super().__init__(f"cannot {action} job {job_id}: claim {token} is stale ({why})",
                         job_id=job_id)


class NodeUnavailable(JobError):
    """A control was asked of a job whose node is not running (stopped, or silent past three
    heartbeats): nobody would act on it. The job's lease runs out and the sweep returns it to
    the queue, where the control applies."""

    def __init__(self, job_id: int, *, action: str, node: str, seen_ago: float | None) -> None:
        self.action = action
        self.node = node
        heard = "is not in the registry" if seen_ago is None else \
            f"was last heard from {seen_ago:.0f} s ago"
        super().__init__(
            f"cannot {action} job {job_id}: it runs on node {node!r}, which is not running "
            f"({heard}); once its lease runs out the job returns to the queue", job_id=job_id)


class NodeNotFound(BulletproofError):
    """No node of that name is in the store's registry."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no node named {name!r} is known to the job store")
        self.name = name


class NodeRunning(BulletproofError):
    """The node is alive (running and heard from): it cannot be removed from the registry."""

    def __init__(self, name: str) -> None:
        super().__init__(f"node {name!r} is running; stop it first")
        self.name = name


class NodeNameTaken(StoreLocked):
    """Another running monitor already uses this node name on the same store."""

    def __init__(self, node: NodeInfo, *, path: Path | str, seen_ago: float) -> None:
        super().__init__(
            f"node name {node.name!r} is in use by another running monitor on {path} (host "
            f"{node.host}, pid {node.pid}, last seen {seen_ago:.0f} s ago); give each monitor "
            "its own node_name in monitor.yaml",
            path=path, holder={"node": node.name, "host": node.host, "pid": node.pid})
        self.node = node


class PathError(BulletproofError):
    """A path given to the monitor is not acceptable (outside the watch folders, missing...)."""

    def __init__(self, message: str, *, path: str) -> None:
        self.path = path
        super().__init__(message)


class UnknownProfile(PathError):
    """A file was to be queued with a profile the config does not have; `known` lists them."""

    def __init__(self, profile: str, *, path: str, known: list[str]) -> None:
        self.profile = profile
        self.known = list(known)
        super().__init__(f"unknown profile {profile[:200]!r}", path=path)


class UnknownLibrary(PathError):
    """A fleet path (`media:incoming/a.mp4`) names a library this node's config does not have."""

    def __init__(self, library: str, *, path: str, known: list[str]) -> None:
        self.library = library
        self.known = list(known)
        here = ", ".join(self.known) or "none"
        super().__init__(f"the library {library!r} of {path} is not configured on this node "
                         f"(its libraries: {here}); add it under `libraries` to use the path here",
                         path=path)


class FfmpegNotFound(BulletproofError):
    """No usable ffmpeg binary was found."""


class PluginError(BulletproofError):
    """A plugin could not start; the monitor does not run without the plugins it was asked for."""

    def __init__(self, message: str, *, plugin: str) -> None:
        self.plugin = plugin
        super().__init__(message)


class TranscodeError(BulletproofError):
    """One transcode attempt failed; `reason` classifies it, `stderr_tail` is ffmpeg's own words."""

    def __init__(
        self,
        message: str,
        *,
        reason: FailureReason,
        returncode: int | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.reason = reason
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(message)
