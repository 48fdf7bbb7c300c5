"""Structured logs: logfmt or JSON lines, and one line per job transition with its job id."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from bulletproof import events as ev

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t\\'):
        return json.dumps(text, ensure_ascii=False)
    return text


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=... msg="..." key=value` lines."""

    def format(self, record: logging.LogRecord) -> str:
        pairs: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            pairs["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in pairs.items() if v is not None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "logfmt", level: str = "info", stream: Any = None) -> None:
    """Send the root logger's records to stderr in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_bulletproof", False):
            root.removeHandler(old)
    handler._bulletproof = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


class TransitionLogger:
    """Event subscriber that logs one structured line per job transition."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("bulletproof.jobs")

    def __call__(self, event: ev.Event) -> None:
        """Log the event if it is a transition."""
        if event.origin is not None:  # another node's job: that node logs its own transitions
            return
        if isinstance(event, ev.JobQueued):
            self._job("job queued", event.job, trigger=event.trigger.value)
        elif isinstance(event, ev.JobStarted):
            self._job("job started", event.job, worker=event.worker, attempt=event.job.attempts)
        elif isinstance(event, ev.JobPaused):
            self._job("job paused", event.job, worker=event.worker)
        elif isinstance(event, ev.JobResumed):
            self._job("job resumed", event.job, worker=event.worker)
        elif isinstance(event, ev.JobFinished):
            level = logging.INFO if event.outcome.value != "failed" else logging.WARNING
            self._job(f"job {event.outcome.value}", event.job, level=level,
                      reason=event.reason.value if event.reason else None,
                      will_retry=event.will_retry or None, error=event.job.error,
                      seconds=round(event.busy_seconds, 3))
        elif isinstance(event, ev.JobRemoved):
            self._log.info("job deleted", extra={"job": event.job_id})
        elif isinstance(event, ev.FileIgnored):
            self._log.debug("file ignored", extra={"path": event.path, "reason": event.reason.value})
        elif isinstance(event, (ev.QueuePaused, ev.QueueResumed)):
            self._log.info("queue paused" if isinstance(event, ev.QueuePaused) else "queue resumed")
        elif isinstance(event, ev.QueueCleared):
            self._log.info("queue cleared", extra={"count": event.count})
        elif isinstance(event, ev.ConfigReloaded):
            if event.success:
                self._log.info("config reloaded", extra={"source": event.source})
            else:
                self._log.error("config reload rejected, previous config stays in force",
                                extra={"source": event.source, "error": event.error})
        elif isinstance(event, ev.WatchFolderStatus):
            level = logging.INFO if event.up else logging.ERROR
            self._log.log(level, "watch folder up" if event.up else "watch folder down",
                          extra={"folder": event.folder, "error": event.error})

    def _job(self, msg: str, job: Any, *, level: int = logging.INFO, **fields: Any) -> None:
        extra = {"job": job.id, "file": job.rel_path, "profile": job.profile, "state": job.state.value}
        extra.update({k: v for k, v in fields.items() if v is not None})
        self._log.log(level, msg, extra=extra)
