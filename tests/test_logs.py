"""Structured logs: logfmt and JSON, one line per job transition with the job id."""

from __future__ import annotations

import io
import json
import logging

from bulletproof import events as ev
from bulletproof.logs import TransitionLogger, configure_logging
from bulletproof.models import FailureReason, Job, JobState, Outcome, QueueTrigger


def job(state: JobState = JobState.QUEUED) -> Job:
    return Job(id=7, source_path="/in/my clip.mp4", rel_path="my clip.mp4", watch_folder="/in",
               size=1, mtime_ns=1, profile="h264_mp4", rule="videos", output_path="/out/x.mp4",
               state=state, priority=0, attempts=1, created_at=0, queued_at=0, error="bad data")


def capture(fmt: str) -> tuple[io.StringIO, TransitionLogger]:
    stream = io.StringIO()
    configure_logging(fmt, "info", stream)
    return stream, TransitionLogger()


def test_logfmt_line_per_transition() -> None:
    stream, logger = capture("logfmt")
    logger(ev.JobQueued(job=job(), trigger=QueueTrigger.DETECTED))
    logger(ev.JobFinished(job=job(JobState.FAILED), worker=0, outcome=Outcome.FAILED,
                          reason=FailureReason.INPUT_INVALID, busy_seconds=1.5))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert 'msg="job queued"' in lines[0] and "job=7" in lines[0] and 'file="my clip.mp4"' in lines[0]
    assert "level=warning" in lines[1] and "reason=input_invalid" in lines[1]


def test_json_lines_parse() -> None:
    stream, logger = capture("json")
    logger(ev.JobStarted(job=job(JobState.PROCESSING), worker=1, queue_wait=0.1))
    record = json.loads(stream.getvalue())
    assert record["msg"] == "job started" and record["job"] == 7 and record["worker"] == 1


def test_config_reload_failure_is_an_error_line() -> None:
    stream, logger = capture("logfmt")
    logger(ev.ConfigReloaded(success=False, source="m.yaml", error="max_workers: bad"))
    assert "level=error" in stream.getvalue() and 'error="max_workers: bad"' in stream.getvalue()


def teardown_module() -> None:
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_bulletproof", False):
            logging.getLogger().removeHandler(handler)


def test_another_nodes_transitions_are_not_logged_as_this_nodes() -> None:
    stream, logger = capture("logfmt")
    logger(ev.JobStarted(job=job(JobState.PROCESSING), worker=-1, queue_wait=0.1, origin="b"))
    logger(ev.JobRemoved(job_id=7, origin="b"))
    assert stream.getvalue() == ""  # node b logs its own
    logger(ev.JobStarted(job=job(JobState.PROCESSING), worker=0, queue_wait=0.1))
    assert 'msg="job started"' in stream.getvalue()
