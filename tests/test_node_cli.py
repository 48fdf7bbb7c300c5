"""`bulletproof node list | drain [--wait] | undrain | forget` and the nodes in `bulletproof
status`, as real subprocesses against `bulletproof run` (real ffmpeg) on a loopback port."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from exporter.client.command import Output
from exporter.client.formatting import nodes_table
from tests.test_client_cli import CLI, TOKEN, LineReader, Runner, Server, cli_env, start_server

NAME = "encoder-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ffmpeg_binaries) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("node-cli"), node_name=NAME,
                       fleet={"heartbeat_seconds": 1, "lease_seconds": 5})
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def bp(server: Server) -> Runner:
    return Runner(server)


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not true within {timeout}s: {check}"
        time.sleep(0.1)
    return value


def job_of(server: Server, filename: str) -> dict | None:
    jobs = server.get("/api/v1/jobs?limit=100")["jobs"]
    return next((j for j in jobs if j["filename"] == filename), None)


def test_node_list_and_status_show_the_node(bp: Runner) -> None:
    table = bp("node", "list").stdout.splitlines()
    assert table[0].split() == ["NODE", "STATE", "BUSY", "HOST", "VERSION", "LAST", "SEEN", "API"]
    assert table[1].split()[:4] == [NAME, "*", "up", "0/1"]
    assert table[1].split()[-1] == bp.server.url.removeprefix("http://")  # the advertised API
    data = bp.json("node", "list")
    assert data["node"] == NAME and [n["name"] for n in data["nodes"]] == [NAME]
    status = bp("status").stdout
    assert any(line.split() == ["Node", NAME] for line in status.splitlines())
    assert bp.json("status")["nodes"][0]["alive"] is True


def test_drain_wait_returns_once_the_node_runs_no_job(bp: Runner, server: Server,
                                                      clip_cache) -> None:
    incoming = server.root / "incoming"
    shutil.copy(clip_cache(seconds=60, size="640x360"), incoming / "long.mp4")
    job = wait_for(lambda: (j := job_of(server, "long.mp4")) and j["state"] == "processing" and j)
    bp("pause", str(job["id"]))  # it holds its worker slot until it is cancelled below
    waiter = subprocess.Popen([*CLI, "node", "drain", NAME, "--wait"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=server.root,
                              env=cli_env(server.url, TOKEN))
    try:
        lines = LineReader(waiter)
        assert lines.wait_for("draining").strip() == (
            f"node {NAME} draining: its running jobs finish, it takes no new ones "
            f"(`bulletproof node undrain {NAME}` ends it)")
        assert lines.wait_for("waiting").strip() == f"waiting: node {NAME} runs 1 job ({job['id']})"
        assert waiter.poll() is None  # still waiting: the job holds its slot
        bp("cancel", str(job["id"]))
        assert lines.wait_for("drained").strip() == f"node {NAME} drained: it runs no job"
        assert waiter.wait(10) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.wait()
    assert job_of(server, "long.mp4")["state"] == "cancelled"

    # Draining: a new file is queued, and stays queued over several heartbeats.
    shutil.copy(clip_cache(), incoming / "later.mp4")
    wait_for(lambda: (j := job_of(server, "later.mp4")) and j["state"] == "queued")
    seen = server.get("/api/v1/nodes")["nodes"][0]["last_seen"]
    wait_for(lambda: server.get("/api/v1/nodes")["nodes"][0]["last_seen"] > seen + 2)
    assert job_of(server, "later.mp4")["state"] == "queued"
    listed = bp("node", "list").stdout.splitlines()[1].split()
    assert listed[:3] == [NAME, "*", "draining"]
    assert any(line.split()[:3] == ["Node", NAME, "(draining:"]
               for line in bp("status").stdout.splitlines())

    undrained = bp.json("node", "undrain", NAME)
    assert undrained["name"] == NAME and undrained["draining"] is False
    assert bp("node", "undrain", NAME).stdout.strip() == f"node {NAME} takes jobs again"
    wait_for(lambda: job_of(server, "later.mp4")["state"] == "completed", timeout=60)


def test_node_errors_say_what_is_wrong(bp: Runner) -> None:
    running = bp("node", "forget", NAME, expect=1)
    assert running.stderr.strip() == f"error: node '{NAME}' is running; stop it first"
    unknown = bp("node", "drain", "nobody", expect=1)
    assert unknown.stderr.strip() == "error: no node named 'nobody' is known to the job store"
    assert bp("node", "undrain", "nobody", expect=1).stderr == unknown.stderr
    hostile = bp("node", "drain", "'; DROP TABLE nodes; --", expect=2)
    assert hostile.stderr.strip() == (
        "error: invalid node name \"'; DROP TABLE nodes; --\": must be 1 to 63 letters, digits, "
        "'.', '_' or '-', starting with a letter or digit")
    body = json.loads(bp("node", "forget", "nobody", "--json", expect=1).stdout)
    assert body["error"]["code"] == "node_not_found"
    assert bp.json("node", "list")["nodes"][0]["name"] == NAME  # the registry is intact
    assert "authentication required" in bp("node", "drain", NAME, token=None, expect=5).stderr


def test_the_nodes_table_marks_draining_gone_and_stopped_nodes() -> None:
    now = time.time()
    base = {"host": "h", "version": "1", "workers": 2, "busy": 0, "started_at": now - 60,
            "last_seen": now, "alive": True, "draining": False, "stopped_at": None,
            "api_address": None}
    nodes = [{**base, "name": "up-1", "busy": 1, "api_address": "up-1.lan:8080"},
             {**base, "name": "drain-1", "draining": True},
             {**base, "name": "gone-1", "alive": False, "last_seen": now - 45},
             {**base, "name": "gone-2", "alive": False, "draining": True, "last_seen": now - 7200},
             {**base, "name": "stop-1", "alive": False, "stopped_at": now}]
    out = Output(as_json=False)
    with out.console.capture() as capture:
        out.console.print(nodes_table(nodes, this="up-1"))
    rows = [line.split() for line in capture.get().splitlines()[1:]]
    assert rows[0][:6] == ["up-1", "*", "up", "1/2", "h", "1"]
    assert re.fullmatch(r"\d+s", rows[0][6]) and rows[0][7:] == ["ago", "up-1.lan:8080"]
    assert rows[1][:3] == ["drain-1", "draining", "0/2"] and rows[1][-1] == "-"
    assert rows[2][:2] == ["gone-1", "GONE"] and re.fullmatch(r"4\d+s", rows[2][5]) \
        and rows[2][6] == "ago"
    assert rows[3][:3] == ["gone-2", "GONE", "(draining)"]
    assert rows[3][6] == time.strftime("%Y-%m-%d", time.localtime(now - 7200))
    assert rows[4][:2] == ["stop-1", "stopped"]
