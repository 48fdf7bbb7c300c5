"""The fleet end to end: three real `bulletproof run` processes on one PostgreSQL database, one
watch folder and one output folder, through a node killed, a node frozen past its lease and the
database restarting under them. Every job completes exactly once, every output is whole."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.postgres import PostgresCluster
from tests.processes import ffmpeg_children
from tests.promstack import free_port, wait_until

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the postgres extra)")

from bulletproof.postgres_store import PostgresJobStore  # noqa: E402

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "bulletproof"]
FLEET = {"heartbeat_seconds": 1, "lease_seconds": 5}
LEASE = FLEET["lease_seconds"]


@dataclass
class Node:
    """One `bulletproof run` process of the fleet."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    host: str = "127.0.0.1"

    @property
    def pid(self) -> int:
        """The monitor's own pid (under `ip netns exec`, which execs it, the same process)."""
        return self.proc.pid

    def readyz(self) -> int | None:
        """The status /readyz answers, None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def ffmpeg(self) -> list[int]:
        """The ffmpeg processes this node runs."""
        return ffmpeg_children(self.proc.pid)

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")


@dataclass
class Fleet:
    """Three nodes, their shared folders and database."""

    nodes: dict[str, Node]
    watch: Path
    output: Path
    url: str

    def rows(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
            cur = conn.execute("SELECT id, rel_path, state, attempts, claimed_by, output_path, "
                               "progress, claim_token FROM jobs ORDER BY id")
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def rows_or_none(self) -> list[dict[str, Any]] | None:
        try:
            return self.rows()
        except psycopg.OperationalError:
            return None

    def drain(self, names: list[str], draining: bool = True) -> None:
        """Drain (or undrain) nodes through the store, and wait until each one follows."""
        said = "draining: running jobs finish" if draining else "draining ended"
        before = {name: self.nodes[name].log.read_text(errors="replace").count(said)
                  for name in names}
        store = PostgresJobStore(self.url)
        try:
            for name in names:
                store.set_draining(name, draining)
        finally:
            store.close()
        for name in names:
            node = self.nodes[name]
            self.wait(lambda n=node: n.log.read_text(errors="replace").count(said) > before[n.name],
                      30, f"{node.name} to follow")

    def last_seen(self, name: str) -> float:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute("SELECT last_seen FROM nodes WHERE name = %s", (name,)).fetchone()
        return float(row[0])

    def processing(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["state"] == "processing"]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_until(predicate, timeout, 0.05, message=lambda: f"{what}; jobs: {self.rows_or_none()}")

    def outputs(self) -> list[str]:
        return sorted(p.name for p in self.output.iterdir())


def start_node(root: Path, name: str, fleet: Fleet, *, inside: tuple[str, ...] = (),
               api_host: str = "127.0.0.1") -> Node:
    """Start a node; `inside` prefixes its command (`ip netns exec NS`), its API on `api_host`."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "node_name": name, "fleet": FLEET, "database": fleet.url,
        "monitor_folder": str(fleet.watch), "output_folder": str(fleet.output),
        "max_workers": 1, "stability_seconds": 0.3, "rescan_interval": 2,
        "retry": {"max_attempts": 3, "backoff_seconds": 0.2}, "ffmpeg": {"nice": 0},
        "rules": [{"name": "videos", "extensions": ["mp4"], "profile": "h264_mp4"}],
        "api": {"listen": f"{api_host}:{port}"},
    }
    path = folder / "monitor.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = folder / "run.log"
    proc = subprocess.Popen([*inside, *CLI, "run", "--config", str(path)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, cwd=folder)
    return Node(name=name, proc=proc, port=port, log=log, host=api_host)


def stop_node(node: Node) -> None:
    if node.proc.poll() is None:
        with_signal(node.proc.pid, signal.SIGCONT)  # a frozen node cannot act on SIGTERM
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=10)


def with_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@pytest.fixture
def fleet(tmp_path: Path, postgres_cluster: PostgresCluster) -> Iterator[Fleet]:
    """Three running nodes, all ready, on a fresh database."""
    watch, output = tmp_path / "incoming", tmp_path / "processed"
    watch.mkdir()
    output.mkdir()
    made = Fleet(nodes={}, watch=watch, output=output, url=postgres_cluster.database())
    try:
        for name in ("node-a", "node-b", "node-c"):
            made.nodes[name] = start_node(tmp_path / "nodes", name, made)
        for node in made.nodes.values():
            wait_until(lambda n=node: n.readyz() == 200, 60, 0.1,
                       message=lambda n=node: f"{n.name} ready: {n.log.read_text(errors='replace')}")
        yield made
    finally:
        try:
            postgres_cluster.start()  # a failed outage test must not leave it stopped
        except subprocess.CalledProcessError:
            pass  # it runs
        for node in made.nodes.values():
            stop_node(node)


@pytest.fixture(scope="module")
def clips(clip_cache) -> dict[str, Path]:
    """A short clip for many jobs, and one long enough to catch a node transcoding it."""
    return {"short": clip_cache(seconds=1.0), "long": clip_cache(seconds=20, size="640x480")}


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "default=nw=1:nk=1", str(path)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def drop(clip: Path, folder: Path, name: str) -> None:
    """Copy a clip in under a hidden name, then rename it: the watcher sees it whole."""
    hidden = folder / f".{name}.copying"
    shutil.copy(clip, hidden)
    hidden.rename(folder / name)


def assert_whole(fleet: Fleet, names: dict[str, float]) -> None:
    """The output folder holds exactly these outputs, each of the duration given, nothing else."""
    assert fleet.outputs() == sorted(names)  # no duplicate, no temporary left behind
    for name, seconds in names.items():
        assert abs(duration(fleet.output / name) - seconds) < 0.5, name


def running_on(fleet: Fleet, rel_path: str) -> tuple[Node, int]:
    """The node transcoding `rel_path`, once its ffmpeg runs, and that ffmpeg, held (SIGSTOP)."""
    row = fleet.wait(lambda: next((r for r in fleet.processing() if r["rel_path"] == rel_path),
                                  None), 60, f"{rel_path} processing")
    node = fleet.nodes[row["claimed_by"]]
    [ffmpeg] = fleet.wait(node.ffmpeg, 30, f"{node.name}'s ffmpeg")
    os.kill(ffmpeg, signal.SIGSTOP)  # held: it cannot finish before the test acts
    return node, ffmpeg


def test_thirty_clips_make_thirty_whole_outputs_across_three_nodes(
        fleet: Fleet, clips: dict[str, Path]) -> None:
    names = [f"clip-{i:02d}.mp4" for i in range(30)]
    for name in names:
        drop(clips["short"], fleet.watch, name)
    fleet.wait(lambda: len(rows := fleet.rows()) == 30 and all(r["state"] == "completed"
                                                                for r in rows), 120, "30 jobs done")
    rows = fleet.rows()
    assert sorted(r["rel_path"] for r in rows) == names  # one job per file
    assert all(r["attempts"] == 1 for r in rows)  # nothing ran twice
    assert {r["claimed_by"] for r in rows} == set(fleet.nodes)  # every node did some of it
    assert_whole(fleet, dict.fromkeys(names, 1.0))


def test_a_node_killed_mid_transcode_has_its_job_finished_elsewhere(
        fleet: Fleet, clips: dict[str, Path]) -> None:
    drop(clips["long"], fleet.watch, "long.mp4")
    victim, ffmpeg = running_on(fleet, "long.mp4")
    victim.proc.kill()
    victim.proc.wait(timeout=10)
    fleet.wait(lambda: not Path(f"/proc/{ffmpeg}").exists(), 10, "its ffmpeg to die with it")
    row = fleet.wait(lambda: next((r for r in fleet.rows() if r["state"] == "completed"), None),
                     LEASE * 6 + 60, "the job swept and completed by another node")
    assert row["claimed_by"] != victim.name and row["attempts"] == 2
    assert_whole(fleet, {"long.mp4": 20.0})  # the killed attempt's temporary is gone too


def test_a_node_frozen_past_its_lease_publishes_nothing_when_it_wakes(
        fleet: Fleet, clips: dict[str, Path]) -> None:
    drop(clips["long"], fleet.watch, "long.mp4")
    frozen, ffmpeg = running_on(fleet, "long.mp4")
    os.kill(frozen.proc.pid, signal.SIGSTOP)  # the node freezes; its ffmpeg does not
    os.kill(ffmpeg, signal.SIGCONT)
    try:
        done = fleet.wait(lambda: next((r for r in fleet.rows() if r["state"] == "completed"),
                                       None), LEASE * 6 + 60, "another node to take and finish it")
        output = fleet.output / "long.mp4"
        before = output.stat()
        fleet.wait(lambda: not Path(f"/proc/{ffmpeg}/stat").exists()
                   or " Z " in Path(f"/proc/{ffmpeg}/stat").read_text(), 30,
                   "the frozen node's ffmpeg to finish its output")
    finally:
        woke = time.time()
        os.kill(frozen.proc.pid, signal.SIGCONT)
    assert done["claimed_by"] != frozen.name and done["attempts"] == 2
    fleet.wait(lambda: fleet.last_seen(frozen.name) > woke + 1, 30, "the woken node to beat")
    fleet.wait(lambda: frozen.said("the claim on the job was lost"), 30, "the loss logged")
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)  # the other node's output, untouched
    [row] = fleet.rows()
    assert (row["state"], row["claimed_by"], row["progress"], row["claim_token"]) == (
        "completed", done["claimed_by"], 1.0, done["claim_token"])  # nothing written over it
    assert_whole(fleet, {"long.mp4": 20.0})
    # The woken node carries on: with the others draining, it takes the next job itself.
    fleet.drain([name for name in fleet.nodes if name != frozen.name])
    drop(clips["short"], fleet.watch, "next.mp4")
    row = fleet.wait(lambda: next((r for r in fleet.rows() if r["rel_path"] == "next.mp4"
                                   and r["state"] == "completed"), None), 60, "the next job")
    assert row["claimed_by"] == frozen.name
    assert_whole(fleet, {"long.mp4": 20.0, "next.mp4": 1.0})


def test_a_database_restart_mid_run_loses_nothing_and_runs_nothing_twice(
        fleet: Fleet, postgres_cluster: PostgresCluster, clips: dict[str, Path]) -> None:
    longs = [f"long-{i}.mp4" for i in range(3)]
    for name in longs:
        drop(clips["long"], fleet.watch, name)
    held = [running_on(fleet, name)[1] for name in longs]  # one on each node
    postgres_cluster.stop()
    down_at = time.time()
    try:
        for pid in held:  # the transcodes go on while the database is away
            os.kill(pid, signal.SIGCONT)
        shorts = [f"short-{i}.mp4" for i in range(3)]
        for name in shorts:
            drop(clips["short"], fleet.watch, name)
        seen: dict[str, set[int | None]] = {name: set() for name in fleet.nodes}
        # Away for longer than a lease: every lease in the database has lapsed when it returns.
        while time.time() - down_at < LEASE + 2:
            for node in fleet.nodes.values():
                seen[node.name].add(node.readyz())
            time.sleep(0.2)
    finally:
        postgres_cluster.start()
    assert all(503 in statuses for statuses in seen.values()), seen
    fleet.wait(lambda: len(rows := fleet.rows()) == 6 and all(r["state"] == "completed"
                                                               for r in rows), 90, "6 jobs done")
    rows = fleet.rows()
    assert all(r["attempts"] == 1 for r in rows), rows  # no live node's job was taken from it
    assert sorted(r["rel_path"] for r in rows) == sorted(longs + shorts)
    assert_whole(fleet, {**dict.fromkeys(longs, 20.0), **dict.fromkeys(shorts, 1.0)})
    for node in fleet.nodes.values():
        wait_until(lambda n=node: n.readyz() == 200, 30, 0.2, message=f"{node.name} ready again")


# -- a node cut off from the database (a network namespace) ------------------------------------


class Forwarder:
    """TCP from an address of ours to the database server, in threads: the way the node in the
    network namespace reaches it (and, for one identity of the store, every node does)."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


@dataclass
class Namespace:
    """A network namespace linked to ours by a veth pair: `cut` takes its end of the link down."""

    name: str
    link: str
    host_address: str
    address: str

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "ip", *args], check=True,
                       capture_output=True)

    def cut(self) -> None:
        self.ip("link", "set", self.link, "down")

    def mend(self) -> None:
        self.ip("link", "set", self.link, "up")


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A network namespace of its own (skips when `ip netns` cannot be used here)."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = os.getpid() % 100_000
    net = f"10.{200 + tag % 50}.{tag % 250}"
    ns = Namespace(name=f"bp-fence-{tag}", link=f"bpfn{tag}", host_address=f"{net}.1",
                   address=f"{net}.2")
    host_link = f"bpfh{tag}"
    steps = [["ip", "netns", "add", ns.name],
             ["ip", "link", "add", host_link, "type", "veth", "peer", "name", ns.link],
             ["ip", "link", "set", ns.link, "netns", ns.name],
             ["ip", "addr", "add", f"{ns.host_address}/30", "dev", host_link],
             ["ip", "link", "set", host_link, "up"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, text=True)
        ns.ip("addr", "add", f"{ns.address}/30", "dev", ns.link)
        ns.ip("link", "set", ns.link, "up")
        ns.ip("link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_link], capture_output=True)
        pytest.skip(f"ip netns is not usable here: {(exc.stderr or '').strip()}")
    yield ns
    subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)  # takes the pair along
    subprocess.run(["ip", "link", "del", host_link], capture_output=True)


def test_a_node_cut_off_from_the_database_publishes_nothing_when_it_is_back(
        tmp_path: Path, postgres_cluster: PostgresCluster, namespace: Namespace,
        clips: dict[str, Path]) -> None:
    forwarder = Forwarder(namespace.host_address, ("127.0.0.1", postgres_cluster.port))
    database = postgres_cluster.database().rsplit("/", 1)[1]
    watch, output = tmp_path / "incoming", tmp_path / "processed"
    watch.mkdir()
    output.mkdir()
    # Every node reaches the server through the forwarder: one address, so one store identity.
    url = f"postgresql://postgres@{namespace.host_address}:{forwarder.port}/{database}"
    fleet = Fleet(nodes={}, watch=watch, output=output, url=url)
    try:
        for name in ("node-a", "node-b"):
            fleet.nodes[name] = start_node(tmp_path / "nodes", name, fleet)
        fleet.nodes["island"] = island = start_node(
            tmp_path / "nodes", "island", fleet, inside=("ip", "netns", "exec", namespace.name),
            api_host=namespace.address)
        for node in fleet.nodes.values():
            wait_until(lambda n=node: n.readyz() == 200, 60, 0.1,
                       message=lambda n=node: f"{n.name} ready: {n.log.read_text(errors='replace')}")
        fleet.drain(["node-a", "node-b"])  # the island takes the job
        drop(clips["long"], watch, "long.mp4")
        node, ffmpeg = running_on(fleet, "long.mp4")
        assert node is island
        fleet.drain(["node-a", "node-b"], False)
        namespace.cut()  # the island goes on transcoding, out of reach of the database
        os.kill(ffmpeg, signal.SIGCONT)
        try:
            done = fleet.wait(lambda: next((r for r in fleet.rows() if r["state"] == "completed"),
                                           None), LEASE * 6 + 60, "another node to take and finish it")
            before = (output / "long.mp4").stat()
            fleet.wait(lambda: not Path(f"/proc/{ffmpeg}/stat").exists()
                       or " Z " in Path(f"/proc/{ffmpeg}/stat").read_text(), 30,
                       "the island's ffmpeg to finish its output")
            # Its statements do not hang in the void: they fail (TCP user timeout) and say so.
            fleet.wait(lambda: island.said("the job store refuses writes"), 60,
                       "the island to notice the database is out of reach")
        finally:
            namespace.mend()
        mended = time.time()
        assert done["claimed_by"] != island.name and done["attempts"] == 2
        fleet.wait(lambda: fleet.last_seen(island.name) > mended, 60, "the island to beat again")
        fleet.wait(lambda: island.said("the claim on the job was lost"), 30, "the loss logged")
        after = (output / "long.mp4").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        [row] = fleet.rows()
        assert (row["state"], row["claimed_by"], row["progress"], row["claim_token"]) == (
            "completed", done["claimed_by"], 1.0, done["claim_token"])
        assert_whole(fleet, {"long.mp4": 20.0})
        fleet.drain(["node-a", "node-b"])  # and the island carries on
        drop(clips["short"], watch, "next.mp4")
        row = fleet.wait(lambda: next((r for r in fleet.rows() if r["rel_path"] == "next.mp4"
                                       and r["state"] == "completed"), None), 60, "the next job")
        assert row["claimed_by"] == island.name
    finally:
        for node in fleet.nodes.values():
            stop_node(node)
        forwarder.close()
