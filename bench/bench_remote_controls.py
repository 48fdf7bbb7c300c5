"""Benchmark: how soon a control made on one node reaches another node of a PostgreSQL store.

    python bench/bench_remote_controls.py [--rounds 10] [--quick] [--postgres-url URL]

Two monitors, `a` and `b`, share a throwaway PostgreSQL cluster (started like the test
suite's; needs Debian's PostgreSQL, run as root) or `--postgres-url` (an empty database). `b`
transcodes a long clip while `a` is drained (another copy when one is done). Then, `--rounds` times each:

- **job pause / resume**: `a.pause_job` of b's job until b's ffmpeg is stopped (the kernel's
  process state `T` in /proc), then `a.resume_job` until it runs again;
- **queue pause / resume**: `a.pause_queue` until b's queue is paused, and back.

First with the store's notifications (LISTEN/NOTIFY), then by polling alone: both listeners'
connections are ended with `pg_terminate_backend` and kept from reconnecting, so only the
one-second poll carries the controls. Finally one `a.cancel_job` until b's ffmpeg is gone.
Each control but the job pause waits a random part of the poll period first, so polling
shows its spread (about half a period on average, a period at worst).

Goal: with notifications, every delivery well within 1 s (tens of milliseconds); by polling
alone, within the poll period (1 s) plus one query.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402 (the postgres extra)

import bulletproof.postgres_store  # noqa: E402
from bench._common import bench_config  # noqa: E402
from bulletproof.errors import InvalidTransition  # noqa: E402
from bulletproof.ffprobe import find_ffmpeg  # noqa: E402
from bulletproof.fleet_controls import POLL_SECONDS  # noqa: E402
from bulletproof.models import JobState  # noqa: E402
from bulletproof.samples import make_clip  # noqa: E402
from bulletproof.service import Monitor  # noqa: E402
from tests.postgres import remove_cluster, start_cluster  # noqa: E402
from tests.processes import ffmpeg_pid, gone, process_state  # noqa: E402


async def waited(condition: Callable[[], object], timeout: float = 15.0) -> float:
    """Seconds until `condition()` holds (polled every 2 ms); raises after `timeout`."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the control did not arrive")
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


class LongJob:
    """A job b runs, its ffmpeg's pid; a new copy of the clip is dropped when one has ended."""

    def __init__(self, b: Monitor, clip: Path) -> None:
        self._b = b
        self._clip = clip
        self._copies = 0
        self.job_id = 0
        self.pid = 0

    async def ready(self) -> None:
        """Make sure a job runs (not paused) on b, starting a new one if the last ended."""
        if self.pid and not gone(self.pid):
            return
        self._copies += 1
        incoming = self._b.config.monitor_folder[0].path
        part = incoming / f".long-{self._copies}.mp4.part"
        part.write_bytes(self._clip.read_bytes())
        part.rename(incoming / f"long-{self._copies}.mp4")
        deadline = time.monotonic() + 60
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("b did not start the job")
            await asyncio.sleep(0.05)
            running = [j for j in self._b.view.list_jobs(states=[JobState.PROCESSING], limit=5)[0]
                       if j.filename == f"long-{self._copies}.mp4"]
            pid = running and ffmpeg_pid(running[0].id, self._b.config.output_folder)
            if pid:
                self.job_id, self.pid = running[0].id, pid
                return


async def measure(a: Monitor, b: Monitor, job: LongJob, rounds: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {"job pause": [], "job resume": [], "queue pause": [],
                                   "queue resume": []}
    while len(got["job resume"]) < rounds:  # the queue rounds while the job is stopped
        await job.ready()
        pid = job.pid
        try:
            a.pause_job(job.job_id)
        except InvalidTransition:  # it just finished
            continue
        took = await waited(lambda pid=pid: process_state(pid) in ("T", "Z", None))
        if gone(pid):  # it finished before the pause arrived: a new copy, a new round
            continue
        got["job pause"].append(took)
        await asyncio.sleep(random.uniform(0, POLL_SECONDS))  # not in step with the poll
        a.pause_queue()
        got["queue pause"].append(await waited(lambda: b.view.paused))
        await asyncio.sleep(random.uniform(0, POLL_SECONDS))
        a.resume_queue()
        got["queue resume"].append(await waited(lambda: not b.view.paused))
        await asyncio.sleep(random.uniform(0, POLL_SECONDS))
        a.resume_job(job.job_id)
        got["job resume"].append(await waited(lambda pid=pid: process_state(pid) != "T"))
    return got


def row(mode: str, what: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return (f"{mode:<14} {what:<13} {statistics.median(ms):>9.1f} {p95:>9.1f} {ms[-1]:>9.1f}")


async def run(rounds: int, url: str, base: Path) -> None:
    binaries = find_ffmpeg(bench_config(base).ffmpeg)
    clip = base / "long.mp4"
    make_clip(binaries.ffmpeg, clip, seconds=120, size="640x360")
    config = bench_config(base, database=url, max_workers=1,
                          fleet={"heartbeat_seconds": 1, "lease_seconds": 5})
    incoming = config.monitor_folder[0].path
    incoming.mkdir(parents=True, exist_ok=True)
    a = Monitor(config.model_copy(update={"node_name": "a"}), binaries=binaries)
    b = Monitor(config.model_copy(update={"node_name": "b"}), binaries=binaries)
    await a.start()
    await b.start()
    try:
        a.drain_node("a")
        job = LongJob(b, clip)
        results = [("notification", await measure(a, b, job, rounds))]
        # Polling alone: end both listeners' connections and keep them from coming back.
        bulletproof.postgres_store._LISTEN_RETRY_SECONDS = 3600.0
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'bulletproof-listen'")
        await asyncio.sleep(1.0)  # the listener threads notice and start their long wait
        results.append(("polling alone", await measure(a, b, job, rounds)))
        print(f"\n{rounds} rounds, b's ffmpeg observed in /proc; milliseconds")
        print(f"{'delivery':<14} {'control':<13} {'median':>9} {'p95':>9} {'max':>9}")
        for mode, got in results:
            for what, samples in got.items():
                print(row(mode, what, samples))
        await job.ready()
        a.cancel_job(job.job_id)
        cancelled = await waited(lambda: gone(job.pid))
        print(f"{'polling alone':<14} {'job cancel':<13} {cancelled * 1000:>9.1f}  (one sample)")
    finally:
        await a.stop()
        await b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="pause/resume rounds per mode")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--postgres-url", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="bp-bench-") as tmp:
        cluster = None
        url = args.postgres_url
        if url is None:
            cluster = start_cluster()
            url = cluster.database()
        try:
            asyncio.run(run(rounds, url, Path(tmp)))
        finally:
            if cluster is not None:
                remove_cluster(cluster)


if __name__ == "__main__":
    main()
