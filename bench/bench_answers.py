"""Benchmark: what building the API's answers and WebSocket messages from their models costs.

    python bench/bench_answers.py [--jobs 1000] [--runs 20] [--messages 20000] [--quick]

Times, in one process with no server (pure CPU: the model validation and the JSON), the largest
list answer (a `GET /api/v1/jobs?limit=1000` page: `JobPage` of `Job` built from core `Job`
records and serialized as the handler does), one job's detail (`JobDetail`), and one WebSocket
message of the most frequent event (`job_progress`) and of one carrying a job (`job_queued`).
Best of `--runs` (pages) or the mean over `--messages` (messages).

Goal: a 1000-job page well under the 25 ms API p99 budget; a progress message a few µs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bulletproof import events as ev  # noqa: E402
from bulletproof.models import FailureReason, Job, JobState, QueueTrigger  # noqa: E402
from exporter.api.responses import model_text  # noqa: E402
from exporter.api.schemas import JobPage, event_message  # noqa: E402
from exporter.api.shapes import job_answer  # noqa: E402


def sample_jobs(n: int) -> list[Job]:
    """Finished jobs shaped as the store returns them (2 in 3 failed, with an error)."""
    return [Job(id=i, source_path=f"/in/a/{i}.mp4", rel_path=f"a/{i}.mp4", watch_folder="/in",
                size=10_000_000 + i, mtime_ns=1, profile="h264_mp4", rule="videos",
                output_path=f"/out/a/{i}.mp4",
                state=JobState.FAILED if i % 3 else JobState.COMPLETED, priority=0, attempts=1,
                created_at=1.7e9 + i, queued_at=1.7e9 + i, started_at=1.7e9 + i + 1,
                finished_at=1.7e9 + i + 9, progress=1.0, input_bytes=10_000_000,
                output_bytes=4_000_000, media_duration=60.0,
                reason=FailureReason.FFMPEG_ERROR if i % 3 else None,
                error="ffmpeg exited with 1" if i % 3 else None)
            for i in range(1, n + 1)]


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of `runs` calls, in seconds."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def mean_of(count: int, fn: Callable[[], object]) -> float:
    """The mean of `count` calls, in seconds."""
    fn()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in the page")
    parser.add_argument("--runs", type=int, default=20, help="page runs (the best counts)")
    parser.add_argument("--messages", type=int, default=20000, help="messages per event type")
    parser.add_argument("--quick", action="store_true", help="a short run to check that it works")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.runs, args.messages = 100, 3, 500
    jobs = sample_jobs(args.jobs)

    def page() -> str:
        return model_text(JobPage(jobs=[job_answer(j) for j in jobs], total=len(jobs),
                                  limit=len(jobs), offset=0, next_offset=None))

    page_s = best_of(args.runs, page)
    detail_s = mean_of(args.messages, lambda: model_text(job_answer(jobs[0], detail=True)))
    progress = ev.JobProgress(job_id=7, worker=0, progress=0.5, speed=1.2, eta_seconds=3.0)
    queued = ev.JobQueued(job=jobs[0], trigger=QueueTrigger.DETECTED)
    rows = [
        (f"JobPage of {args.jobs} jobs", page_s * 1e3, "ms", len(page())),
        ("JobDetail", detail_s * 1e6, "µs", len(model_text(job_answer(jobs[0], detail=True)))),
    ]
    for name, event in (("job_progress message", progress), ("job_queued message", queued)):
        message = event_message(event, node="bench")
        assert message is not None
        seconds = mean_of(args.messages, lambda event=event: model_text(event_message(event, node="bench")))
        rows.append((name, seconds * 1e6, "µs", len(model_text(message))))
    print(f"{'answer':28} {'time':>10} {'bytes':>9}")
    for name, value, unit, size in rows:
        print(f"{name:28} {value:7.1f} {unit:2} {size:9d}")


if __name__ == "__main__":
    main()
