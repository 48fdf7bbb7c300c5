"""GET /ws/updates: snapshot on connect, every job and queue event in order, within 500 ms."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import jsonschema
import pytest

import exporter.api.ws
from bulletproof import events as ev
from bulletproof.models import JobState
from exporter.api import schemas
from exporter.api.openapi import openapi_document
from exporter.api.ws import HUB
from tests.api_fixtures import Api, api_factory_fixture, api_fixture, garbage_file  # noqa: F401 (fixtures)
from tests.conftest import until


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15.0) -> dict[str, Any]:
    """The next JSON message."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def receive_until(ws: aiohttp.ClientWebSocketResponse, done: Any,
                        timeout: float = 30.0) -> list[dict[str, Any]]:
    """Messages up to and including the first for which `done(message)` is true."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = await receive(ws, max(0.1, deadline - time.monotonic()))
        out.append(message)
        if done(message):
            return out


async def test_snapshot_on_connect(api: Api, clip_cache) -> None:
    await api.post("/api/v1/queue/pause")
    for name in ("first.mp4", "second.mp4"):
        api.drop(clip_cache(), name)
        await api.wait_job(name, JobState.QUEUED)
    async with api.client.ws_connect("/ws/updates") as ws:
        snap = await receive(ws)
        assert snap["type"] == "snapshot" and snap["at"] > 0
        assert snap["status"]["paused"] is True
        assert snap["status"]["counts"]["queued"] == 2
        assert snap["workers"] == snap["status"]["workers"]["slots"]
        assert [w["slot"] for w in snap["workers"]] == [0]
        assert snap["queue"]["total"] == 2
        assert [j["filename"] for j in snap["queue"]["jobs"]] == ["first.mp4", "second.mp4"]
        assert api.client.app[HUB].client_count == 1
    await until(lambda: api.client.app[HUB].client_count == 0, timeout=5)


async def test_events_of_a_job_life_in_order(api: Api, clip_cache) -> None:
    async with api.client.ws_connect("/ws/updates") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        api.drop(clip_cache(seconds=3), "life.mp4")
        messages = await receive_until(ws, lambda m: m["type"] == "job_finished")
        types = [m["type"] for m in messages if m["type"] != "job_progress"]
        assert types == ["job_queued", "job_started", "output_verified", "job_finished"], types
        queued, started, verified, finished = (m for m in messages if m["type"] != "job_progress")
        assert verified["result"] == "passed" and verified["expected"] == pytest.approx(3.0, abs=0.2)
        job_id = queued["job_id"]
        assert queued["job"]["filename"] == "life.mp4" and queued["trigger"] == "detected"
        assert started["job_id"] == job_id and started["worker"] == 0
        assert started["job"]["state"] == "processing" and started["queue_wait"] >= 0
        assert finished["job_id"] == job_id and finished["outcome"] == "completed"
        assert finished["job"]["state"] == "completed" and finished["job"]["output_bytes"] > 0
        progress = [m for m in messages if m["type"] == "job_progress"]
        assert all(p["job_id"] == job_id and 0 <= p["progress"] <= 1 for p in progress)
        ratios = [p["progress"] for p in progress]
        assert ratios == sorted(ratios)
        ats = [m["at"] for m in messages]
        assert ats == sorted(ats)

        # A failure carries its reason; a manual retry, the queue and history controls follow.
        garbage_file(api.incoming, "broken.mp4")
        messages = await receive_until(ws, lambda m: m["type"] == "job_finished")
        failed = messages[-1]
        assert failed["outcome"] == "failed" and failed["reason"] == "input_invalid"
        assert failed["will_retry"] is False and failed["job"]["error"]

        await api.post("/api/v1/queue/pause")
        assert (await receive(ws))["type"] == "queue_paused"
        await api.post(f"/api/v1/jobs/{failed['job_id']}/retry")
        retried = await receive(ws)
        assert (retried["type"], retried["trigger"], retried["job_id"]) == (
            "job_queued", "manual", failed["job_id"])
        await api.post("/api/v1/queue/clear")
        cancelled = await receive(ws)
        assert (cancelled["type"], cancelled["outcome"]) == ("job_finished", "cancelled")
        node = api.monitor.view.node_name  # every message names the node it happened on
        assert (await receive(ws)) | {"at": 0} == {"type": "queue_cleared", "count": 1, "at": 0,
                                                    "node": node}
        await api.call("DELETE", f"/api/v1/jobs/{job_id}")
        assert (await receive(ws))["type"] == "job_removed"
        await api.post("/api/v1/queue/resume")
        assert (await receive(ws))["type"] == "queue_resumed"
        config = (await api.get("/api/v1/config"))[1]["config"]
        await api.call("PUT", "/api/v1/config", json=config)
        reloaded = await receive(ws)
        assert reloaded["type"] == "config_reloaded" and reloaded["success"] is True


async def test_queue_pause_event_latency_under_500ms(api: Api) -> None:
    async with api.client.ws_connect("/ws/updates") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        latencies = []
        for i in range(20):
            action = "pause" if i % 2 == 0 else "resume"
            start = time.perf_counter()
            status, _ = await api.post(f"/api/v1/queue/{action}")
            assert status == 200
            message = await receive(ws, timeout=2)
            latencies.append(time.perf_counter() - start)
            assert message["type"] == f"queue_{action}d"
    assert max(latencies) < 0.5, latencies
    print(f"ws pause/resume latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")


async def test_progress_is_coalesced_per_job(api: Api) -> None:
    bus = api.monitor.bus
    async with api.client.ws_connect("/ws/updates") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        start = time.monotonic()
        for i in range(1, 101):  # 100 reports per job over ~1 s, for two jobs
            for job_id in (1001, 1002):
                bus.publish(ev.JobProgress(job_id=job_id, worker=0, progress=i / 100, speed=1.0,
                                           eta_seconds=None))
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - start
        bus.publish(ev.QueuePaused())  # a marker after the last flush
        await asyncio.sleep(exporter.api.ws.PROGRESS_INTERVAL + 0.2)
        bus.publish(ev.QueueResumed())
        got = await receive_until(ws, lambda m: m["type"] == "queue_resumed", timeout=5)
    for job_id in (1001, 1002):
        reports = [m["progress"] for m in got if m.get("job_id") == job_id]
        allowed = elapsed / exporter.api.ws.PROGRESS_INTERVAL + 2
        assert 2 <= len(reports) <= allowed, (job_id, len(reports), allowed)
        assert reports == sorted(reports) and reports[-1] == 1.0  # the latest always arrives


async def test_a_client_that_falls_behind_is_dropped(api: Api, monkeypatch) -> None:
    monkeypatch.setattr(exporter.api.ws, "QUEUE_SIZE", 20)
    hub = api.client.app[HUB]
    async with api.client.ws_connect("/ws/updates") as slow, \
            api.client.ws_connect("/ws/updates") as other:
        assert (await receive(slow))["type"] == "snapshot"
        assert (await receive(other))["type"] == "snapshot"
        for _ in range(100):  # one burst, faster than any socket: both fall behind
            api.monitor.bus.publish(ev.QueuePaused())
        msg = await slow.receive(timeout=5)
        while msg.type == aiohttp.WSMsgType.TEXT:  # whatever was sent before the drop
            msg = await slow.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1013
    assert hub.clients_dropped >= 1
    await until(lambda: hub.client_count == 0, timeout=5)
    async with api.client.ws_connect("/ws/updates") as again:  # reconnecting works
        assert (await receive(again))["type"] == "snapshot"


async def test_ping_pong_and_plain_http(api: Api) -> None:
    async with api.client.ws_connect("/ws/updates") as ws:
        assert (await receive(ws))["type"] == "snapshot"
        await ws.send_str(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
        await ws.send_str("ping")
        assert (await receive(ws))["type"] == "pong"
        await ws.send_str("something else")  # ignored
        await ws.send_bytes(b"\x00\x01")
        api.monitor.pause_queue()
        assert (await receive(ws))["type"] == "queue_paused"
    async with api.client.get("/ws/updates") as resp:
        assert resp.status == 426
        assert resp.headers["Upgrade"] == "websocket"
        assert (await resp.json())["error"]["code"] == "upgrade_required"


@pytest.mark.parametrize("clients", [3])
async def test_every_client_gets_every_event(api: Api, clients: int) -> None:
    sockets = [await api.client.ws_connect("/ws/updates") for _ in range(clients)]
    try:
        for ws in sockets:
            assert (await receive(ws))["type"] == "snapshot"
        for _ in range(5):
            api.monitor.pause_queue()
            api.monitor.resume_queue()
        for ws in sockets:
            got = [(await receive(ws))["type"] for _ in range(10)]
            assert got == ["queue_paused", "queue_resumed"] * 5
    finally:
        for ws in sockets:
            await ws.close()


# The wire names of the message types, as the stream has always sent them: a renamed class or
# model must not change them.
WIRE_TYPES = [
    "snapshot", "pong", "job_queued", "job_started", "job_progress", "job_paused", "job_resumed",
    "job_finished", "output_conflict", "output_verified", "quality_scored", "job_removed",
    "queue_paused", "queue_resumed", "queue_cleared", "config_reloaded", "watch_folder_status",
    "worker_restarted", "store_status", "lease_expired",
]
NOT_STREAMED = {ev.FileDetected, ev.FileIgnored}  # a rescan reports thousands (counted in /metrics)


def test_the_message_type_names_are_pinned() -> None:
    assert list(schemas.WS_TYPES) == WIRE_TYPES
    for model, wire in zip(schemas.WS_MESSAGES, schemas.WS_TYPES, strict=True):
        assert model.model_json_schema()["properties"]["type"]["const"] == wire, model
    events = {cls for cls in vars(ev).values()
              if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event}
    assert set(schemas.EVENT_TYPES) == events - NOT_STREAMED, "every core event needs a wire name"


async def test_messages_match_their_documented_schemas(api: Api, clip_cache) -> None:
    components = openapi_document("test")["components"]
    schema_of = {wire: model.__name__ for model, wire in
                 zip(schemas.WS_MESSAGES, schemas.WS_TYPES, strict=True)}
    async with api.client.ws_connect("/ws/updates") as ws:
        messages = [await receive(ws)]
        await ws.send_str("ping")
        messages.append(await receive(ws))
        api.drop(clip_cache(), "shape.mp4")
        messages += await receive_until(ws, lambda m: m["type"] == "job_finished")
        await api.post("/api/v1/queue/pause")
        messages.append(await receive(ws))
    seen = [m["type"] for m in messages]
    assert {"snapshot", "pong", "job_queued", "job_started", "job_finished", "queue_paused"} <= set(seen)
    for message in messages:
        assert "status" not in message.get("job", {}) and "completed_at" not in message.get("job", {})
        schema = {"components": components,
                  "allOf": [{"$ref": f"#/components/schemas/{schema_of[message['type']]}"}]}
        jsonschema.validate(message, schema, cls=jsonschema.Draft202012Validator)
