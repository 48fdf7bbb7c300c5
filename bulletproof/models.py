"""Value types shared by the core and its plugins: job states, failure reasons, job records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_active(self) -> bool:
        """True while a worker holds the job (processing or paused)."""
        return self in (JobState.PROCESSING, JobState.PAUSED)

    @property
    def is_finished(self) -> bool:
        """True for the terminal states."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED)


class FailureReason(StrEnum):
    """Why a transcode attempt did not complete."""

    INPUT_INVALID = "input_invalid"
    INPUT_MISSING = "input_missing"
    FFMPEG_ERROR = "ffmpeg_error"
    TIMEOUT = "timeout"
    STALLED = "stalled"
    OUTPUT_ERROR = "output_error"
    INTERRUPTED = "interrupted"
    INTERNAL = "internal"
    CANCELLED = "cancelled"
    OUTPUT_PATH_INVALID = "output_path_invalid"
    OUTPUT_CONFLICT = "output_conflict"
    INPUT_TRUNCATED = "input_truncated"
    VERIFICATION_FAILED = "verification_failed"
    QUALITY_BELOW_THRESHOLD = "quality_below_threshold"


class SkipReason(StrEnum):
    """Why a job ended `skipped`: no work was needed, or the result would not be kept."""

    ALREADY_TARGET = "already_target"
    LARGER_OUTPUT = "larger_output"
    OUTPUT_EXISTS = "output_exists"


class VerificationResult(StrEnum):
    """How checking a finished output before publishing it came out."""

    PASSED = "passed"
    FAILED = "failed"
    INPUT_TRUNCATED = "input_truncated"
    DISABLED = "disabled"


class IgnoreReason(StrEnum):
    """Why a file seen in a watch folder was not queued."""

    NO_RULE = "no_rule"
    ALREADY_DONE = "already_done"
    TEMPORARY = "temporary"
    OUTSIDE_WATCH_FOLDER = "outside_watch_folder"  # a symlink (or a folder of one) leading out


class Outcome(StrEnum):
    """How a job attempt ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class QueueTrigger(StrEnum):
    """What put a job (back) into the queue."""

    DETECTED = "detected"
    API = "api"
    AUTO_RETRY = "auto"
    MANUAL_RETRY = "manual"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job as the store knows it."""

    id: int
    source_path: str
    rel_path: str
    watch_folder: str
    size: int
    mtime_ns: int
    profile: str
    rule: str
    output_path: str
    state: JobState
    priority: int
    attempts: int
    created_at: float
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    progress: float = 0.0
    speed: float | None = None
    eta_seconds: float | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    media_duration: float | None = None
    reason: FailureReason | SkipReason | None = None
    error: str | None = None
    stderr_tail: str | None = None
    source_inode: int | None = None
    quality_score: float | None = None
    claimed_by: str | None = None  # the node that holds (or last held) the job's claim

    @property
    def filename(self) -> str:
        """The source file's base name."""
        return self.rel_path.rsplit("/", 1)[-1]

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish of the last attempt, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Job:
        """A Job from a stored record holding every field by name (enums as their values)."""
        data = {name: record[name] for name in JOB_FIELDS}
        data["state"] = state = JobState(data["state"])
        if not data["reason"]:
            data["reason"] = None
        elif state is JobState.SKIPPED:
            data["reason"] = SkipReason(data["reason"])
        else:
            data["reason"] = FailureReason(data["reason"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["reason"] = self.reason.value if self.reason else None
        data["filename"] = self.filename
        data["duration"] = self.duration
        return data


# A job's fields, in order: the one definition the stores' column lists and row mapping use.
JOB_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Job))


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What one worker slot is doing right now."""

    slot: int
    job_id: int | None = None
    filename: str | None = None
    profile: str | None = None
    paused: bool = False
    started_at: float | None = None
    progress: float = 0.0
    speed: float | None = None
    eta_seconds: float | None = None
    last_progress_at: float | None = None
    media_duration: float | None = None

    @property
    def busy(self) -> bool:
        """True while the slot holds a job."""
        return self.job_id is not None
