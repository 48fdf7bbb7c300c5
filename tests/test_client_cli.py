"""The API's command-line client, run as real subprocesses against `bulletproof run` (a real
monitor with real ffmpeg, serving the API on a loopback port with a token)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulletproof.samples import make_corrupt_clip
from bulletproof.sizes import format_bytes, format_saved
from tests.conftest import write_config
from tests.promstack import free_port, stop_process
from tests.test_cli import billion_laughs, run_measured

CLI = [sys.executable, "-m", "bulletproof"]
TOKEN = "cli-test-token-8c2f0b7e5d1a4e93"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A `bulletproof run` subprocess serving the API."""

    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    config: Path
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def stop(self) -> int | None:
        return stop_process(self.proc, 20)


def start_server(root: Path, **overrides: Any) -> Server:
    port = free_port()
    config = write_config(root, api={"listen": f"127.0.0.1:{port}",
                                     "rate_limit_per_minute": 100_000}, **overrides)
    log = root / "run.log"
    env = {**os.environ, "BULLETPROOF_API_TOKEN": TOKEN}
    proc = subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=root, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", root, config, log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"bulletproof run exited {proc.returncode}:\n{log.read_text()}")
        try:
            if server.get("/healthz") == {"status": "ok"}:
                return server
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"/healthz never answered:\n{log.read_text()}")
        time.sleep(0.1)


def cli_env(url: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULLETPROOF_")}
    env["BULLETPROOF_URL"] = url
    if token is not None:
        env["BULLETPROOF_API_TOKEN"] = token
    env.pop("COLUMNS", None)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ffmpeg_binaries) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("client-cli"))
    yield srv
    assert srv.stop() == 0


class Runner:
    """Runs `bulletproof ...` against a server, as a real subprocess."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.outputs: list[str] = []

    def __call__(self, *args: str, token: str | None = TOKEN, url: str | None = None,
                 expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL, cwd=self.server.root,
                                env=cli_env(url or self.server.url, token))
        self.outputs += [result.stdout, result.stderr]
        if expect is not None:
            assert result.returncode == expect, (args, result.returncode, result.stdout,
                                                 result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def bp(server: Server) -> Iterator[Runner]:
    runner = Runner(server)
    yield runner
    # The token never shows in what the client prints, whatever happened.
    assert not any(TOKEN in text for text in runner.outputs)


@dataclass
class Workload:
    good: int
    broken: int


@pytest.fixture(scope="module")
def workload(server: Server, clip_cache) -> Workload:
    """One good clip (completes) and one corrupt file (fails: input_invalid)."""
    incoming = server.root / "incoming"
    for name, make in (("good.mp4", lambda p: shutil.copyfile(clip_cache(), p)),
                       ("broken.mp4", make_corrupt_clip)):
        part = incoming / f".{name}.part"
        make(part)
        part.rename(incoming / name)
    deadline = time.monotonic() + 30
    while True:
        jobs = {j["filename"]: j for j in server.get("/api/v1/jobs?limit=100")["jobs"]}
        good, broken = jobs.get("good.mp4"), jobs.get("broken.mp4")
        if good and broken and good["state"] == "completed" and broken["state"] == "failed":
            return Workload(good=good["id"], broken=broken["id"])
        assert time.monotonic() < deadline, f"the workload did not finish: {jobs}"
        time.sleep(0.1)


# -- reads --------------------------------------------------------------------------------------


def test_status_human_and_json(bp: Runner, server: Server) -> None:
    human = bp("status").stdout
    assert "Queue" in human and "running" in human
    assert "busy /" in human and "Watch folder" in human and "(up)" in human
    data = bp.json("status")
    assert data["paused"] is False
    assert set(data["counts"]) == {"queued", "processing", "paused", "completed", "failed",
                                   "cancelled", "skipped"}
    assert f"0 busy / {data['workers']['max']} max" in human


def test_status_shows_the_space_saved(bp: Runner, workload: Workload) -> None:
    summary = json.loads(urllib.request.urlopen(bp.server.url + "/api/v1/stats/summary",
                                                timeout=5).read())
    assert summary["sized_jobs"] >= 1
    line = next(line for line in bp("status").stdout.splitlines() if line.startswith("Space saved"))
    assert line.split(None, 2)[2] == (
        f"{format_saved(summary['input_bytes'], summary['output_bytes'])}: "
        f"{format_bytes(summary['input_bytes'])} in, {format_bytes(summary['output_bytes'])} out "
        f"over {summary['sized_jobs']} completed job{'s' if summary['sized_jobs'] != 1 else ''}")


def test_jobs_with_filters(bp: Runner, workload: Workload) -> None:
    table = bp("jobs").stdout
    header = table.splitlines()[0].split()
    assert header == ["ID", "STATE", "FILE", "PROFILE", "PROGRESS", "ATTEMPTS", "IN", "OUT",
                      "SAVED", "REASON"]
    assert "good.mp4" in table and "broken.mp4" in table
    good = bp.json("job", str(workload.good))
    saved = good["input_bytes"] - good["output_bytes"]
    row = " ".join(next(line for line in table.splitlines() if "good.mp4" in line).split())
    assert row.endswith(f"{format_bytes(good['input_bytes'])} {format_bytes(good['output_bytes'])} "
                        f"{format_bytes(saved)} ({saved / good['input_bytes'] * 100:.0f}%)")
    broken_row = next(line for line in table.splitlines() if "broken.mp4" in line)
    assert "4.0 KiB - - input_invalid" in " ".join(broken_row.split())  # sizes of a failed job

    failed = bp("jobs", "--state", "failed").stdout
    assert "broken.mp4" in failed and "input_invalid" in failed and "good.mp4" not in failed
    row = next(line for line in failed.splitlines() if "broken.mp4" in line).split()
    assert row[:2] == [str(workload.broken), "failed"]

    data = bp.json("jobs", "--state", "completed", "--state", "failed", "--profile", "h264_mp4")
    assert data["total"] == 2 and {j["filename"] for j in data["jobs"]} == {"good.mp4",
                                                                            "broken.mp4"}
    data = bp.json("jobs", "--state", "completed")
    assert [j["id"] for j in data["jobs"]] == [workload.good]
    assert data["jobs"][0]["progress"] == 1.0

    searched = bp("jobs", "--search", "GOOD").stdout  # case-insensitive, on the file path
    assert "good.mp4" in searched and "broken.mp4" not in searched
    assert bp("jobs", "--profile", "aac_m4a").stdout.strip() == "no jobs match"
    page = bp("jobs", "--limit", "1").stdout
    assert page.strip().endswith("1 of 2 jobs; next page: --offset 1")

    bad = bp("jobs", "--state", "bogus", expect=2)
    assert "bogus" in bad.stderr


def test_job_detail(bp: Runner, workload: Workload) -> None:
    human = bp("job", str(workload.broken)).stdout
    assert "broken.mp4" in human and "input_invalid" in human
    assert "ffmpeg stderr (last lines):" in human
    assert "Input size  4.0 KiB" in human and "Space saved" not in human
    good = bp.json("job", str(workload.good))
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
             for line in bp("job", str(workload.good)).stdout.splitlines() if "  " in line}
    assert lines["Input size"] == format_bytes(good["input_bytes"])
    assert lines["Output size"] == format_bytes(good["output_bytes"])
    assert lines["Space saved"] == format_saved(good["input_bytes"], good["output_bytes"])
    data = bp.json("job", str(workload.good))
    assert (data["id"], data["state"], data["filename"]) == (workload.good, "completed", "good.mp4")
    missing = bp("job", "999999", expect=1)
    assert "job 999999 not found" in missing.stderr
    bp("job", "0", expect=2)  # not a job id: a usage error


# -- queue and job actions ----------------------------------------------------------------------


def test_pause_and_resume_show_in_status(bp: Runner) -> None:
    try:
        assert "queue paused" in bp("pause").stdout
        assert "paused since" in bp("status").stdout
        assert bp.json("status")["paused"] is True
    finally:
        assert bp("resume").stdout.strip() == "queue resumed"
    assert bp.json("status")["paused"] is False
    assert "running" in bp("status").stdout


def test_job_actions_and_their_errors(bp: Runner, workload: Workload) -> None:
    good, broken = str(workload.good), str(workload.broken)
    # State conflicts (409) and unknown ids (404): exit 1 with the API's message.
    conflict = bp("cancel", good, expect=1)
    assert f"cannot cancel job {good}: it is completed" in conflict.stderr
    assert f"cannot prioritize job {good}: it is completed" in bp("prioritize", good,
                                                                  expect=1).stderr
    for action in ("cancel", "retry", "prioritize"):
        assert "job 424242 not found" in bp(action, "424242", expect=1).stderr
    as_json = bp("retry", "424242", "--json", expect=1)
    assert json.loads(as_json.stdout)["error"]["code"] == "job_not_found"

    bp("pause")
    try:
        assert f"job {good} (good.mp4) queued again" in bp("retry", good).stdout
        assert f"cannot retry job {good}: it is queued" in bp("retry", good, expect=1).stderr
        assert "moved to the front of the queue" in bp("prioritize", good).stdout
        assert f"job {good} (good.mp4) cancelled" in bp("cancel", good).stdout

        retried = bp("retry-failed").stdout
        assert retried.strip() == f"queued 1 failed job again: {broken}"
        assert bp.json("job", broken)["state"] == "queued"

        refused = bp("clear", expect=2)  # stdin is not a terminal
        assert "--yes" in refused.stderr
        assert bp.json("job", broken)["state"] == "queued"
        assert bp("clear", "--yes").stdout.strip() == "cleared 1 queued job"
        assert bp.json("job", broken)["state"] == "cancelled"
        assert bp.json("clear", "--yes") == {"cleared": 0}
    finally:
        bp("resume")


def test_enqueue(bp: Runner, server: Server, workload: Workload) -> None:
    bp("pause")
    try:
        out = bp("enqueue", "good.mp4", "--profile", "aac_m4a", "--priority", "5").stdout
        assert "queued job" in out and "profile aac_m4a, priority 5" in out
        unknown = bp("enqueue", "good.mp4", "--profile", "nope", expect=2)
        assert "unknown profile 'nope'" in unknown.stderr
        outside = bp("enqueue", str(server.root / "monitor.yaml"), expect=2)
        assert "not inside a watch folder" in outside.stderr
        assert bp.json("clear", "--yes") == {"cleared": 1}
    finally:
        bp("resume")


def wait_job(server: Server, job_id: int, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = server.get(f"/api/v1/jobs/{job_id}")
        if job["state"] == state:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never became {state}: {job}"
        time.sleep(0.1)


def test_pause_and_resume_one_job(bp: Runner, server: Server, workload: Workload,
                                  clip_cache) -> None:
    incoming = server.root / "incoming"
    part = incoming / ".long.mp4.part"
    # Long enough that the one unsuspended stretch (resume, then a status read) ends before it.
    shutil.copyfile(clip_cache(seconds=60, size="640x480"), part)
    part.rename(incoming / "long.mp4")
    deadline = time.monotonic() + 30
    while not (found := server.get("/api/v1/jobs?q=long.mp4")["jobs"]):
        assert time.monotonic() < deadline, "long.mp4 was never queued"
        time.sleep(0.1)
    job_id = found[0]["id"]
    try:
        wait_job(server, job_id, "processing")
        out = bp("pause", str(job_id)).stdout
        assert out.strip() == (f"job {job_id} (long.mp4) paused (its ffmpeg is suspended; "
                               f"`bulletproof resume {job_id}` continues it)")
        assert bp.json("job", str(job_id))["state"] == "paused"
        assert bp.json("status")["paused"] is False  # the queue itself keeps running
        again = bp("pause", str(job_id), expect=1)
        assert f"cannot pause job {job_id}" in again.stderr
        assert bp("resume", str(job_id)).stdout.strip() == f"job {job_id} (long.mp4) resumed"
        assert bp.json("job", str(job_id))["state"] == "processing"
        bp("pause", str(job_id))  # suspended again: the cancel below cannot come after its end
    finally:
        bp("cancel", str(job_id), expect=None)
    wait_job(server, job_id, "cancelled")
    done = bp("resume", str(workload.good), expect=1)
    assert f"cannot resume job {workload.good}: it is " in done.stderr  # finished: not paused
    assert "job 424242 not found" in bp("pause", "424242", expect=1).stderr
    bp("pause", "0", expect=2)  # not a job id: a usage error
    assert "Got unexpected extra argument" in bp("pause", "1", "2", expect=2).stderr


# -- config -------------------------------------------------------------------------------------


def test_config_get_validate_apply(bp: Runner, server: Server, tmp_path: Path) -> None:
    shown = bp("config", "get").stdout
    assert shown.startswith(f"# config in force on {server.url}")
    assert "max_workers: 1" in shown.splitlines()
    data = bp.json("config", "get")
    assert data["config"]["max_workers"] == 1 and data["path"]

    valid = tmp_path / "valid.yaml"
    valid.write_text(shown)  # what `config get` prints is a config file
    result = bp("config", "validate", str(valid))
    assert result.stdout.strip() == "ok"

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(shown.replace("max_workers: 1", "max_workers: 0")
                       + "bogus_key: 1\n")
    result = bp("config", "validate", str(invalid), expect=2)
    assert "max_workers: Input should be greater than or equal to 1" in result.stderr
    assert "bogus_key: unknown key; known keys: monitor_folder, output_folder," in result.stderr
    report = json.loads(bp("config", "validate", str(invalid), "--json", expect=2).stdout)
    assert report["valid"] is False
    assert {e["location"] for e in report["errors"]} == {"max_workers", "bogus_key"}
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump({**data["config"], "retry": {"max_attempts": 0}}))
    assert "retry.max_attempts:" in bp("config", "validate", str(nested), expect=2).stderr
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("rules: [\n")
    assert "not valid YAML" in bp("config", "validate", str(not_yaml), expect=2).stderr
    bp("config", "validate", str(tmp_path / "missing.yaml"), expect=2)

    rejected = bp("config", "apply", str(invalid), expect=2)
    assert "rejected" in rejected.stderr and "max_workers:" in rejected.stderr
    assert bp.json("status")["workers"]["max"] == 1

    two = tmp_path / "two.yaml"
    two.write_text(shown.replace("max_workers: 1", "max_workers: 2"))
    applied = bp("config", "apply", str(two)).stdout
    assert "applied" in applied and ".bak" in applied
    assert bp.json("status")["workers"]["max"] == 2
    assert "0 busy / 2 max" in bp("status").stdout
    assert yaml.safe_load(server.config.read_text())["max_workers"] == 2


def test_config_apply_refuses_a_yaml_alias_bomb_before_sending(tmp_path: Path) -> None:
    bomb = billion_laughs(tmp_path / "bomb.yaml")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: exit 4 would mean it tried
    for command in ("apply", "validate"):
        code, peak_kib, stderr = run_measured("config", command, str(bomb), env=cli_env(closed, TOKEN))
        assert code == 2, stderr
        assert f"error: {bomb} refused (nothing sent): aliases expand to more than 100000 values" in stderr
        assert peak_kib < 200 * 1024


def test_config_apply_keeps_the_files_comments(bp: Runner, server: Server, tmp_path: Path) -> None:
    original = server.config.read_text()
    assert "monitor_folder: incoming\n" in original and "stability_seconds: 0.3\n" in original
    commented = "# operator notes: keep this file small\n" + original.replace(
        "stability_seconds: 0.3\n", "stability_seconds: 0.3   # the test clips land at once\n")
    server.config.write_text(commented)  # the same config, now with comments
    edited = tmp_path / "edited.yaml"
    edited.write_text(bp("config", "get").stdout.replace("rescan_interval: 2.0", "rescan_interval: 3"))
    assert "rescan_interval: 3" in edited.read_text()  # `config get` shows absolute paths, floats
    bp("config", "apply", str(edited))
    written = server.config.read_text()
    assert written.startswith("# operator notes: keep this file small\nmonitor_folder: incoming\n")
    assert "stability_seconds: 0.3   # the test clips land at once\n" in written
    assert "rescan_interval: 3\n" in written and "database: state/bulletproof.db\n" in written
    assert "poll_interval" not in written  # defaults `config get` spells out are not written
    assert (server.config.parent / "monitor.yaml.bak").read_text() == commented
    assert bp.json("config", "get")["config"]["rescan_interval"] == 3


def test_config_apply_of_a_file_only_change_prints_the_refusal(bp: Runner, server: Server,
                                                               tmp_path: Path) -> None:
    shown = bp("config", "get").stdout
    before = server.config.read_text()
    moved = tmp_path / "moved-db.yaml"
    data = yaml.safe_load(shown)
    moved.write_text(yaml.safe_dump({**data, "database": "/etc/bp.db"}))
    rejected = bp("config", "apply", str(moved), expect=2)
    assert "rejected (nothing changed)" in rejected.stderr
    assert "database: set in the config file only; restart to change" in rejected.stderr
    outside = tmp_path / "outside.yaml"
    outside.write_text(yaml.safe_dump({**data, "output_folder": "/etc/cron.d"}))
    rejected = bp("config", "apply", str(outside), expect=2)
    assert "output_folder: outside the folders the operator allows the API to use" in rejected.stderr
    assert server.config.read_text() == before


# -- auth and connection errors -----------------------------------------------------------------


def test_wrong_token_missing_token_and_unreachable(bp: Runner, server: Server) -> None:
    wrong = bp("status", token="not-the-token", expect=5)
    assert "invalid API token" in wrong.stderr
    assert "invalid API token" in bp("pause", token="not-the-token", expect=5).stderr
    assert "authentication required" in bp("pause", token=None, expect=5).stderr
    assert "invalid or missing API token" in bp("jobs", "--follow", token="not-the-token",
                                                expect=5).stderr
    assert bp.json("status")["paused"] is False
    flag = bp("status", "--token", TOKEN, token=None)  # the flag works as well as the variable
    assert "Queue" in flag.stdout

    closed = f"http://127.0.0.1:{free_port()}"
    down = bp("status", url=closed, expect=4)
    assert f"cannot connect to {closed}" in down.stderr
    assert f"cannot connect to {closed}" in bp("jobs", "--follow", url=closed, expect=4).stderr
    assert "invalid API URL" in bp("status", url="localhost:8080", expect=2).stderr


# -- jobs --follow ------------------------------------------------------------------------------


class LineReader:
    """Reads a process's stdout on a thread, so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended without {text!r}: {self.seen}")
            self.seen.append(line)
            if text in line:
                return line


def follow(server: Server, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "jobs", "--follow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=server.root,
                            env=cli_env(server.url, TOKEN))


def test_follow_prints_events_until_terminated(bp: Runner, server: Server) -> None:
    bp("resume")
    proc = follow(server)
    try:
        reader = LineReader(proc)
        first = reader.wait_for("snapshot")
        assert "queue running" in first
        bp("pause")
        assert reader.wait_for("queue_paused").split()[1] == "queue_paused"
        bp("resume")
        reader.wait_for("queue_resumed")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        bp("resume")


def test_follow_json_lines(bp: Runner, server: Server) -> None:
    proc = follow(server, "--json")
    try:
        reader = LineReader(proc)
        snapshot = json.loads(reader.wait_for('"snapshot"'))
        assert snapshot["status"]["paused"] is False
        bp("pause")
        event = json.loads(reader.wait_for("queue_paused"))
        assert event["type"] == "queue_paused" and isinstance(event["at"], float)
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        bp("resume")


def test_follow_exits_cleanly_when_the_server_stops(tmp_path: Path, ffmpeg_binaries) -> None:
    own = start_server(tmp_path)
    try:
        proc = follow(own)
        try:
            LineReader(proc).wait_for("snapshot")
            assert own.stop() == 0
            assert proc.wait(timeout=10) == 0
            assert proc.stderr is not None
            assert "the server closed the event stream" in proc.stderr.read()
        finally:
            proc.kill()
    finally:
        own.stop()


# -- in-process: the command set, event lines, start-up cost ------------------------------------


def test_register_adds_the_commands_without_replacing_core_ones() -> None:
    import click

    from exporter.client.cli import register

    @click.group()
    def group() -> None:
        pass

    @group.command("status")
    def own_status() -> None:
        pass

    register(group)
    assert group.commands["status"] is own_status
    for name in ("jobs", "job", "pause", "resume", "clear", "cancel", "retry", "retry-failed",
                 "prioritize", "enqueue", "config"):
        assert name in group.commands
    assert set(group.commands["config"].commands) == {"get", "validate", "apply"}  # type: ignore[attr-defined]


def test_event_lines_and_filters() -> None:
    from exporter.client.cli import EventFilter, event_line

    job = {"id": 7, "rel_path": "shows/ep1.mov", "profile": "h264_mp4", "state": "queued",
           "priority": 0, "attempts": 0}
    queued = {"type": "job_queued", "at": 0.0, "job_id": 7, "job": job, "trigger": "detected"}
    line = event_line(queued)
    assert "job_queued" in line and "#7 shows/ep1.mov" in line and "trigger=detected" in line
    finished = {"type": "job_finished", "at": 0.0, "job_id": 7, "outcome": "failed",
                "reason": "input_invalid", "busy_seconds": 0.5, "will_retry": True,
                "job": {**job, "state": "queued"}}
    assert "failed (input_invalid) in 0.5s will retry" in event_line(finished)
    progress = {"type": "job_progress", "at": 0.0, "job_id": 7, "worker": 0, "progress": 0.42,
                "speed": 3.1, "eta_seconds": 4.0}
    assert "#7 42% speed=3.10x eta=4.0s" in event_line(progress)
    assert event_line({"type": "something_new", "at": 0.0, "x": 1}).endswith('{"x":1}')

    flt = EventFilter((), None, "EP1")
    other = {**queued, "job_id": 8, "job": {**job, "id": 8, "rel_path": "b.mov"}}
    assert flt.passes(queued) and not flt.passes(other)
    assert flt.passes(progress)  # its job matched
    assert not flt.passes({**progress, "job_id": 8})
    assert flt.passes({"type": "queue_paused", "at": 0.0})


def test_loading_the_commands_does_not_import_aiohttp() -> None:
    code = ("import sys; from bulletproof.cli import _add_plugin_commands, cli; "
            "_add_plugin_commands(); assert 'jobs' in cli.commands; "
            "print('aiohttp' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
