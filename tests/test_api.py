"""The control API against a real monitor (real ffmpeg) on a real socket: every route's happy
path and its error paths."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bulletproof.models import JobState
from tests.api_fixtures import Api, api_factory_fixture, api_fixture, garbage_file  # noqa: F401 (fixtures)
from tests.conftest import until

PLAN_JOB_FIELDS = {"id", "filename", "state", "progress", "started_at", "finished_at", "error",
                   "profile"}
REMOVED_JOB_FIELDS = {"status", "completed_at"}  # were copies of state and finished_at
EXTRA_JOB_FIELDS = {"attempts", "reason", "state", "rel_path", "input_bytes", "output_bytes",
                    "media_duration", "duration", "created_at", "queued_at", "speed",
                    "eta_seconds", "rule", "priority", "output_path", "worker", "quality_score"}
# `requested` is set only in a control's answer for another node's job (test_fleet_controls).
DETAIL_ONLY = {"stderr_tail", "source_path", "watch_folder", "mtime_ns", "source_inode", "requested"}


def assert_error(status: int, body: dict, expected_status: int, code: str | None = None) -> dict:
    """An error answer: the status, and the JSON envelope with a code and a message."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def finished_jobs(api: Api, clip_cache, names: list[str]) -> dict[str, dict]:
    """Drop clips and wait for them all to finish; returns the API's view of each, by name."""
    for name in names:
        source = clip_cache(suffix=Path(name).suffix) if not name.startswith("broken") else None
        if source is None:
            garbage_file(api.incoming, name)
        else:
            api.drop(source, name)
    done = {JobState.COMPLETED, JobState.FAILED}
    for name in names:
        await api.wait_job(name, *done)
    status, page = await api.get("/api/v1/jobs", params={"limit": "1000"})
    assert status == 200
    return {j["filename"]: j for j in page["jobs"]}


# -- health, routing ----------------------------------------------------------------------------


async def test_health_ready_and_routing_errors(api: Api) -> None:
    assert await api.get("/healthz") == (200, {"status": "ok"})
    assert await api.get("/readyz") == (200, {"status": "ready", "problems": [], "components": {
        "store": True, "watcher": True, "workers": True, "queue": True}})

    status, body = await api.get("/no/such/route")
    assert_error(status, body, 404, "not_found")

    async with api.client.delete("/api/v1/status") as resp:
        assert resp.status == 405
        assert "GET" in resp.headers["Allow"]
        assert_error(resp.status, await resp.json(), 405, "method_not_allowed")

    for bad in ("abc", "-1", "1.5", "1e3", "%C2%B2", "٣"):
        status, body = await api.get(f"/api/v1/jobs/{bad}")
        assert_error(status, body, 404)
        status, body = await api.post(f"/api/v1/jobs/{bad}/cancel")
        assert_error(status, body, 404)
    for unknown in ("0", "999", "9223372036854775807", "9223372036854775808", "1" * 40):
        status, body = await api.get(f"/api/v1/jobs/{unknown}")
        assert_error(status, body, 404, "job_not_found")
        status, body = await api.post(f"/api/v1/jobs/{unknown}/retry")
        assert_error(status, body, 404, "job_not_found")
        status, body = await api.call("DELETE", f"/api/v1/jobs/{unknown}")
        assert_error(status, body, 404, "job_not_found")


async def test_cors_wiring_keeps_every_route(api_factory) -> None:
    from tests.api_fixtures import TEST_API

    api = await api_factory(api={**TEST_API, "cors_origins": ["https://grafana.example"]})
    async with api.client.options("/api/v1/queue/pause", headers={
            "Origin": "https://grafana.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization"}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "https://grafana.example"
    async with api.client.get("/api/v1/jobs/7", headers={"Origin": "https://grafana.example"}) as resp:
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == "https://grafana.example"
        assert (await resp.json())["error"]["code"] == "job_not_found"
    assert (await api.get("/api/v1/status"))[0] == 200


async def test_trusted_proxies_come_from_the_config(api_factory) -> None:
    import ipaddress

    from exporter.api.app import SECURITY
    from tests.api_fixtures import TEST_API

    # A non-loopback peer cannot be made on this machine's loopback-only test network, so this
    # checks the wiring; tests/test_security.py checks what trusted networks do to a request.
    api = await api_factory(api={**TEST_API, "trusted_proxies": ["172.31.247.10/32"]})
    # The list is the whole list: loopback is trusted by default, not on top of it.
    assert api.client.app[SECURITY]._trusted == [ipaddress.ip_network("172.31.247.10/32")]
    # One monitor per database and output folder: the second gets its own.
    default = await api_factory(database="state/second.db", output_folder="processed2")
    assert default.client.app[SECURITY]._trusted == [ipaddress.ip_network("127.0.0.1/32"),
                                                     ipaddress.ip_network("::1/128")]


async def test_readyz_reports_problems_of_a_monitor_that_has_not_started(config_factory) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from bulletproof.service import Monitor
    from exporter.api.app import create_app
    from tests.api_fixtures import TEST_API

    config, path = config_factory(api=dict(TEST_API))
    monitor = Monitor(config, config_path=path)
    client = TestClient(TestServer(create_app(monitor.context()), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        async with client.get("/readyz") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unready"
        assert "the monitor has not started" in body["problems"]
        assert any("watchers" in p for p in body["problems"])
        async with client.get("/healthz") as resp:
            assert resp.status == 200
    finally:
        await client.close()
        monitor.store.close()


# -- status, stats, metrics ---------------------------------------------------------------------


async def test_status_after_a_workload(api: Api, clip_cache) -> None:
    await finished_jobs(api, clip_cache, ["one.mp4", "broken.mp4"])
    status, body = await api.get("/api/v1/status")
    assert status == 200
    assert body["paused"] is False and body["paused_since"] is None
    assert body["workers"]["max"] == 1 and body["workers"]["busy"] == 0
    assert [s["slot"] for s in body["workers"]["slots"]] == [0]
    assert body["counts"] == {"queued": 0, "processing": 0, "paused": 0, "completed": 1,
                              "failed": 1, "cancelled": 0, "skipped": 0}
    assert body["version"] == api.monitor.version
    assert body["ffmpeg_version"] == api.monitor.binaries.version
    assert body["uptime_seconds"] > 0
    assert body["watch_folders"] == [{"path": str(api.incoming), "up": True}]
    assert body["config"]["path"] == str(api.config_path)
    assert body["output_volume"]["free_bytes"] > 0


async def test_stats_summary_and_history(api: Api, clip_cache) -> None:
    await finished_jobs(api, clip_cache, ["a.mp4", "b.mp4", "broken.mp4"])
    status, summary = await api.get("/api/v1/stats/summary")
    assert status == 200
    assert (summary["total_jobs"], summary["successful"], summary["failed"]) == (3, 2, 1)
    assert summary["avg_duration"] > 0
    assert len(summary["last_24h"]) == 24
    assert sum(b["completed"] for b in summary["last_24h"]) == 2
    _, completed = await api.get("/api/v1/jobs?state=completed")
    outputs = sum(Path(j["output_path"]).stat().st_size for j in completed["jobs"])
    inputs = sum(j["input_bytes"] for j in completed["jobs"])
    assert (summary["sized_jobs"], summary["input_bytes"], summary["output_bytes"]) == (2, inputs, outputs)
    assert summary["saved_bytes"] == inputs - outputs
    assert summary["saved_ratio"] == pytest.approx((inputs - outputs) / inputs)

    status, history = await api.get("/api/v1/stats/history")
    assert status == 200
    assert history["step"] == 3600 and len(history["buckets"]) == 24
    assert history["until"] - history["since"] == pytest.approx(86400)
    assert sum(b["completed"] for b in history["buckets"]) == 2
    assert sum(b["failed"] for b in history["buckets"]) == 1
    assert sum(b["total"] for b in history["buckets"]) == 3

    now = datetime.now(UTC).timestamp()
    iso_since = datetime.fromtimestamp(now - 600, UTC).isoformat().replace("+00:00", "Z")
    status, history = await api.get("/api/v1/stats/history",
                                    params={"since": iso_since, "until": str(now + 60), "step": "1m"})
    assert status == 200
    assert len(history["buckets"]) == 11 and history["step"] == 60
    assert sum(b["completed"] for b in history["buckets"]) == 2

    for params, where in [
        ({"since": str(now), "until": str(now - 10)}, "query.since"),
        ({"since": str(now), "until": str(now)}, "query.since"),
        ({"step": "59"}, "query.step"),
        ({"step": "0"}, "query.step"),
        ({"step": "-5m"}, "query.step"),
        ({"step": "nan"}, "query.step"),
        ({"step": "fortnight"}, "query.step"),
        ({"since": "0", "step": "60"}, "query.step"),  # ~29 million buckets
        ({"since": "yesterday"}, "query.since"),
        ({"until": "1e400"}, "query.until"),
        ({"until": "-5"}, "query.until"),
        ({"until": "9999-12-31T23:59:59"}, "query.until"),
    ]:
        status, body = await api.get("/api/v1/stats/history", params=params)
        error = assert_error(status, body, 422, "invalid_parameter")
        assert error["details"][0]["location"] == where, (params, error)


async def test_metrics_endpoint_and_request_metrics(api: Api) -> None:
    await api.get("/api/v1/jobs/42")
    async with api.client.get("/metrics", headers={"Accept-Encoding": "identity"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert "bulletproof_jobs" in text
    assert 'handler="/api/v1/jobs/{id}"' in text  # the route template, never the raw path
    assert "/api/v1/jobs/42" not in text
    async with api.client.get("/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip"}, auto_decompress=False) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.headers.get("Content-Encoding") == "gzip"
        import gzip

        assert gzip.decompress(await resp.read()).rstrip().endswith(b"# EOF")


# -- jobs: listing ------------------------------------------------------------------------------


async def test_job_fields_list_and_detail(api: Api, clip_cache) -> None:
    jobs = await finished_jobs(api, clip_cache, ["clip.mp4", "broken.mp4"])
    done, failed = jobs["clip.mp4"], jobs["broken.mp4"]
    assert PLAN_JOB_FIELDS | EXTRA_JOB_FIELDS <= set(done)
    assert not DETAIL_ONLY & set(done)
    assert not REMOVED_JOB_FIELDS & set(done)
    assert done["state"] == "completed"
    assert done["finished_at"] > done["started_at"]
    assert done["progress"] == 1 and done["error"] is None and done["reason"] is None
    assert done["profile"] == "h264_mp4" and done["rule"] == "videos"
    assert done["output_bytes"] > 0 and done["input_bytes"] > 0 and done["duration"] > 0
    assert done["worker"] is None
    assert failed["state"] == "failed" and failed["reason"] == "input_invalid" and failed["error"]

    status, detail = await api.get(f"/api/v1/jobs/{failed['id']}")
    assert status == 200
    assert DETAIL_ONLY <= set(detail)
    assert detail["source_path"] == str(api.incoming / "broken.mp4")
    assert detail["requested"] is None
    assert {k: v for k, v in detail.items() if k not in DETAIL_ONLY} == failed


async def test_list_filters_sorting_and_pagination(api: Api, clip_cache) -> None:
    names = ["alpha.mp4", "beta.mp4", "gamma.mp4", "tone.wav", "broken.mp4"]
    jobs = await finished_jobs(api, clip_cache, names)
    ids = sorted(j["id"] for j in jobs.values())

    async def page(**params: str) -> dict:
        status, body = await api.get("/api/v1/jobs", params=params)
        assert status == 200, body
        return body

    body = await page()
    assert body["total"] == 5 and body["limit"] == 100 and body["offset"] == 0
    assert body["next_offset"] is None
    assert [j["id"] for j in body["jobs"]] == ids[::-1]  # newest first by default

    assert [j["id"] for j in (await page(sort="id", order="asc"))["jobs"]] == ids
    first = await page(sort="id", order="asc", limit="2")
    assert [j["id"] for j in first["jobs"]] == ids[:2] and first["next_offset"] == 2
    second = await page(sort="id", order="asc", limit="2", offset="2")
    assert [j["id"] for j in second["jobs"]] == ids[2:4] and second["next_offset"] == 4
    last = await page(sort="id", order="asc", limit="2", offset="4")
    assert [j["id"] for j in last["jobs"]] == ids[4:] and last["next_offset"] is None
    assert (await page(offset="50"))["jobs"] == []

    by_size = (await page(sort="size", order="asc"))["jobs"]
    sizes = [j["input_bytes"] for j in by_size]
    assert sizes == sorted(sizes)
    durations = [j["duration"] for j in (await page(sort="duration", order="desc"))["jobs"]]
    assert durations == sorted(durations, reverse=True)
    finished = [j["finished_at"] for j in (await page(sort="finished", order="asc"))["jobs"]]
    assert finished == sorted(finished)

    assert {j["filename"] for j in (await page(state="failed"))["jobs"]} == {"broken.mp4"}
    both = await page(state="failed,completed")
    assert both["total"] == 5
    async with api.client.get("/api/v1/jobs?state=failed&state=cancelled") as resp:
        assert (await resp.json())["total"] == 1
    assert (await page(state="queued"))["total"] == 0
    assert [j["filename"] for j in (await page(profile="aac_m4a"))["jobs"]] == ["tone.wav"]
    assert {j["filename"] for j in (await page(q="MA"))["jobs"]} == {"gamma.mp4"}
    assert (await page(q="%"))["total"] == 0  # LIKE wildcards are literal

    created = sorted(j["created_at"] for j in jobs.values())
    recent = await page(since=str(created[0] - 1))
    assert recent["total"] == 5
    iso = datetime.fromtimestamp(created[0] - 3600, UTC).isoformat()
    assert (await page(until=iso))["total"] == 0

    for params, where in [
        ({"state": "finished"}, "query.state"),
        ({"sort": "name"}, "query.sort"),
        ({"order": "sideways"}, "query.order"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"limit": "²"}, "query.limit"),
        ({"offset": "-1"}, "query.offset"),
        ({"since": "soon"}, "query.since"),
        ({"since": "2", "until": "1"}, "query.since"),
        ({"q": "x" * 501}, "query.q"),
        ({"q": "a\x00b"}, "query.q"),
    ]:
        status, body = await api.get("/api/v1/jobs", params=params)
        error = assert_error(status, body, 422, "invalid_parameter")
        assert error["details"][0]["location"] == where
    async with api.client.get("/api/v1/jobs?limit=1&limit=2") as resp:
        assert resp.status == 422


# -- jobs: queue and actions --------------------------------------------------------------------


async def test_queue_order_and_queue_controls(api: Api, clip_cache) -> None:
    status, body = await api.post("/api/v1/queue/pause")
    assert status == 200 and body["paused"] is True and body["paused_since"] > 0
    assert (await api.post("/api/v1/queue/pause"))[1] == body  # idempotent
    for name in ("q1.mp4", "q2.mp4", "q3.mp4"):
        api.drop(clip_cache(), name)
        await api.wait_job(name, JobState.QUEUED)

    status, queue = await api.get("/api/v1/queue")
    assert status == 200 and queue["paused"] is True and queue["total"] == 3
    order = [j["filename"] for j in queue["jobs"]]
    assert order == ["q1.mp4", "q2.mp4", "q3.mp4"]
    q3 = queue["jobs"][2]["id"]

    status, job = await api.post(f"/api/v1/jobs/{q3}/prioritize")
    assert status == 200 and job["id"] == q3
    assert [j["filename"] for j in (await api.get("/api/v1/queue"))[1]["jobs"]][0] == "q3.mp4"
    page = (await api.get("/api/v1/queue", params={"limit": "1", "offset": "1"}))[1]
    assert [j["filename"] for j in page["jobs"]] == ["q1.mp4"] and page["next_offset"] == 2

    q1 = api.job_for("q1.mp4").id
    status, job = await api.post(f"/api/v1/jobs/{q1}/cancel")
    assert status == 200 and job["state"] == "cancelled"
    status, body = await api.post(f"/api/v1/jobs/{q1}/cancel")
    error = assert_error(status, body, 409, "invalid_state")
    assert error["details"] == {"job_id": q1, "action": "cancel", "state": "cancelled"}
    for action in ("pause", "resume", "prioritize"):
        assert_error(*(await api.post(f"/api/v1/jobs/{q1}/{action}")), 409, "invalid_state")
    q2 = api.job_for("q2.mp4").id
    assert_error(*(await api.post(f"/api/v1/jobs/{q2}/retry")), 409, "invalid_state")
    assert_error(*(await api.post(f"/api/v1/jobs/{q2}/pause")), 409, "invalid_state")
    assert_error(*(await api.call("DELETE", f"/api/v1/jobs/{q2}")), 409, "invalid_state")

    status, job = await api.post(f"/api/v1/jobs/{q1}/retry")
    assert status == 200 and job["state"] == "queued" and job["attempts"] == 0
    status, body = await api.post("/api/v1/queue/clear")
    assert (status, body) == (200, {"cleared": 3})
    assert (await api.get("/api/v1/queue"))[1]["total"] == 0
    status, page = await api.get("/api/v1/jobs", params={"state": "cancelled"})
    assert page["total"] == 3

    status, body = await api.post("/api/v1/queue/resume")
    assert (status, body) == (200, {"paused": False, "paused_since": None})
    assert (await api.get("/api/v1/status"))[1]["paused"] is False


async def test_running_job_live_progress_pause_resume_cancel(api: Api, clip_cache) -> None:
    api.drop(clip_cache(seconds=60, size="640x360"), "long.mp4")
    job = await api.wait_job("long.mp4", JobState.PROCESSING)
    view = api.monitor.view

    def slot():
        return next((w for w in view.workers() if w.job_id == job.id), None)

    await until(lambda: slot() is not None and slot().progress > 0, timeout=30)
    status, paused = await api.post(f"/api/v1/jobs/{job.id}/pause")  # holds the job still
    assert status == 200 and paused["state"] == "paused" and "status" not in paused
    await asyncio.sleep(0.5)  # progress lines already in the pipe are read
    assert_error(*(await api.post(f"/api/v1/jobs/{job.id}/pause")), 409, "invalid_state")
    assert_error(*(await api.call("DELETE", f"/api/v1/jobs/{job.id}")), 409, "invalid_state")
    assert_error(*(await api.post(f"/api/v1/jobs/{job.id}/retry")), 409, "invalid_state")

    live = slot()
    status, detail = await api.get(f"/api/v1/jobs/{job.id}")
    assert status == 200
    assert detail["worker"] == live.slot == 0
    assert detail["progress"] == live.progress > 0  # the worker's, not the store's saved copy
    assert detail["speed"] == live.speed and detail["eta_seconds"] == live.eta_seconds
    assert detail["progress"] >= view.get_job(job.id).progress
    listed = (await api.get("/api/v1/jobs", params={"state": "paused"}))[1]["jobs"]
    assert [(j["id"], j["progress"], j["worker"]) for j in listed] == [(job.id, live.progress, 0)]
    status, body = await api.get("/api/v1/status")
    assert body["workers"]["busy"] == 1 and body["counts"]["paused"] == 1
    assert body["workers"]["slots"][0]["job_id"] == job.id

    status, resumed = await api.post(f"/api/v1/jobs/{job.id}/resume")
    assert status == 200 and resumed["state"] == "processing"
    assert_error(*(await api.post(f"/api/v1/jobs/{job.id}/resume")), 409, "invalid_state")

    status, cancelling = await api.post(f"/api/v1/jobs/{job.id}/cancel")
    assert status == 202 and cancelling["id"] == job.id
    await api.wait_job("long.mp4", JobState.CANCELLED)
    status, detail = await api.get(f"/api/v1/jobs/{job.id}")
    assert detail["state"] == "cancelled" and detail["worker"] is None


async def test_a_slots_second_job_is_live_and_controllable(api: Api, clip_cache) -> None:
    api.drop(clip_cache(), "first.mp4")
    await api.wait_job("first.mp4", JobState.COMPLETED)
    api.drop(clip_cache(seconds=60, size="640x360"), "second.mp4")
    job = await api.wait_job("second.mp4", JobState.PROCESSING)
    await until(lambda: api.monitor.view.busy_workers() == 1, timeout=5)
    status, body = await api.post(f"/api/v1/jobs/{job.id}/pause")
    assert status == 200, body
    status, body = await api.post(f"/api/v1/jobs/{job.id}/cancel")
    assert status == 202, body
    await api.wait_job("second.mp4", JobState.CANCELLED)


async def test_retry_failed_and_delete(api: Api, clip_cache) -> None:
    jobs = await finished_jobs(api, clip_cache, ["ok.mp4", "broken.mp4", "broken2.mp4"])
    failed_ids = sorted(jobs[n]["id"] for n in ("broken.mp4", "broken2.mp4"))
    status, body = await api.post("/api/v1/jobs/retry-failed")
    assert status == 200 and body == {"retried": 2, "ids": failed_ids}
    for name in ("broken.mp4", "broken2.mp4"):
        await api.wait_job(name, JobState.FAILED)
    assert (await api.get(f"/api/v1/jobs/{failed_ids[0]}"))[1]["attempts"] == 1

    status, _ = await api.call("DELETE", f"/api/v1/jobs/{failed_ids[0]}")
    assert status == 204
    assert_error(*(await api.get(f"/api/v1/jobs/{failed_ids[0]}")), 404, "job_not_found")
    assert_error(*(await api.call("DELETE", f"/api/v1/jobs/{failed_ids[0]}")), 404, "job_not_found")
    assert (await api.get("/api/v1/jobs"))[1]["total"] == 2
    status, body = await api.get("/api/v1/jobs/retry-failed")
    assert_error(status, body, 405)


# -- jobs: enqueue ------------------------------------------------------------------------------


async def test_enqueue_paths_and_body_validation(api: Api, clip_cache, tmp_path: Path) -> None:
    await api.post("/api/v1/queue/pause")
    api.drop(clip_cache(), "sub/manual.mp4")
    await api.wait_job("manual.mp4", JobState.QUEUED)
    await api.post("/api/v1/queue/clear")

    status, job = await api.post("/api/v1/jobs", json={"path": "sub/manual.mp4"})
    assert status == 201, job
    assert job["state"] == "queued" and job["rel_path"] == "sub/manual.mp4"
    assert job["source_path"] == str(api.incoming / "sub" / "manual.mp4")
    assert job["profile"] == "h264_mp4" and job["rule"] == "videos"
    async with api.client.post("/api/v1/jobs", json={"path": "sub/manual.mp4"}) as resp:
        assert resp.status == 409  # the same file already waits in the queue
    await api.post("/api/v1/queue/clear")
    absolute = str(api.incoming / "sub" / "manual.mp4")
    async with api.client.post("/api/v1/jobs", json={"path": absolute, "profile": "aac_m4a",
                                                     "priority": 7}) as resp:
        assert resp.status == 201
        assert resp.headers["Location"] == f"/api/v1/jobs/{(await resp.json())['id']}"
        created = await resp.json()
    assert created["profile"] == "aac_m4a" and created["rule"] == "api" and created["priority"] == 7

    outside = tmp_path / "outside.mp4"
    outside.write_bytes((api.incoming / "sub" / "manual.mp4").read_bytes())
    bad_paths = [str(outside), "../outside.mp4", "sub/../../outside.mp4", str(api.incoming),
                 "missing.mp4", "sub", "a\x00b.mp4", "x" * 4000 + ".mp4", "/etc/passwd"]
    for path in bad_paths:
        status, body = await api.post("/api/v1/jobs", json={"path": path})
        assert_error(status, body, 422, "invalid_path")
    assert_error(*(await api.post("/api/v1/jobs", json={"path": "\ud800.mp4"})), 422)
    (api.incoming / "notes.txt").write_text("no rule for this")
    assert_error(*(await api.post("/api/v1/jobs", json={"path": "notes.txt"})), 422, "invalid_path")

    status, body = await api.post("/api/v1/jobs", json={"path": "sub/manual.mp4", "profile": "nope"})
    assert_error(status, body, 422, "unknown_profile")

    for payload, location in [
        ({"path": "sub/manual.mp4", "colour": "red"}, "colour"),
        ({"path": "sub/manual.mp4", "priority": "5"}, "priority"),
        ({"path": "sub/manual.mp4", "priority": 1001}, "priority"),
        ({"path": "sub/manual.mp4", "priority": True}, "priority"),
        ({"path": 5}, "path"),
        ({"path": ""}, "path"),
        ({}, "path"),
        ([], ""),
        ("sub/manual.mp4", ""),
    ]:
        status, body = await api.post("/api/v1/jobs", json=payload)
        error = assert_error(status, body, 422, "invalid_body")
        assert error["details"][0]["location"] == location, (payload, error)

    for data, code in [(b"{", "malformed_json"), (b"", "body_required"), (b"\xff\xfe", "malformed_json"),
                       (b'{"path": NaN}', "malformed_json"), (b"[" * 100_000, "malformed_json")]:
        status, body = await api.post("/api/v1/jobs", data=data,
                                      headers={"Content-Type": "application/json"})
        assert_error(status, body, 400, code)
    status, body = await api.post("/api/v1/jobs", data=b'{"path": "sub/manual.mp4"}',
                                  headers={"Content-Type": "text/plain"})
    assert_error(status, body, 415, "unsupported_media_type")
    big = json.dumps({"path": "x" * (api.monitor.config.api.max_body_bytes + 10)})
    status, body = await api.post("/api/v1/jobs", data=big, headers={"Content-Type": "application/json"})
    assert_error(status, body, 413, "payload_too_large")


# -- config -------------------------------------------------------------------------------------


async def test_config_get_validate_put_reset(api: Api) -> None:
    status, got = await api.get("/api/v1/config")
    assert status == 200
    assert got["path"] == str(api.config_path) and got["last_reload_ok"] is True
    config = got["config"]
    assert config["max_workers"] == 1 and config["monitor_folder"][0]["path"] == str(api.incoming)
    original = api.config_path.read_text()
    mtime = api.config_path.stat().st_mtime_ns

    # Dry run: 200 either way, nothing written.
    status, body = await api.post("/api/v1/config/validate", json={**config, "max_workers": 0})
    assert status == 200 and body["valid"] is False
    assert [e["location"] for e in body["errors"]] == ["max_workers"]
    status, body = await api.post("/api/v1/config/validate", json={**config, "max_workers": 4})
    assert status == 200 and body["valid"] is True and body["config"]["max_workers"] == 4
    status, body = await api.post("/api/v1/config/validate", json=["not", "a", "mapping"])
    assert status == 200 and body["valid"] is False
    assert_error(*(await api.post("/api/v1/config/validate", data=b"{",
                                  headers={"Content-Type": "application/json"})), 400)
    assert api.config_path.read_text() == original and api.config_path.stat().st_mtime_ns == mtime
    assert not api.config_path.with_name("monitor.yaml.bak").exists()
    assert api.monitor.config.max_workers == 1

    # Invalid: 422 with key paths, nothing written.
    bad = {**config, "max_workers": "many", "colour": "red",
           "rules": [{"profile": "nope", "extensions": ["mp4"]}]}
    status, body = await api.call("PUT", "/api/v1/config", json=bad)
    error = assert_error(status, body, 422, "invalid_config")
    locations = {d["location"] for d in error["details"]}
    assert {"max_workers", "colour"} <= locations
    status, body = await api.call("PUT", "/api/v1/config",
                                  json={**config, "rules": [{"profile": "nope"}]})
    assert [d["location"] for d in assert_error(status, body, 422)["details"]] == ["rules.0.profile"]
    assert_error(*(await api.call("PUT", "/api/v1/config", json=[1, 2])), 422, "invalid_config")
    assert api.config_path.read_text() == original

    # Valid: written atomically with a .bak, applied without a restart.
    new = {**config, "max_workers": 3, "stability_seconds": 0.5}
    status, body = await api.call("PUT", "/api/v1/config", json=new)
    assert status == 200, body
    assert body["applied"] is True and body["written"] is True
    assert body["path"] == str(api.config_path)
    assert body["backup"] == str(api.config_path.with_name("monitor.yaml.bak"))
    assert body["restart_required"] == []
    assert body["config"]["max_workers"] == 3
    assert api.config_path.with_name("monitor.yaml.bak").read_text() == original
    assert yaml.safe_load(api.config_path.read_text())["max_workers"] == 3
    status, st = await api.get("/api/v1/status")
    assert st["workers"]["max"] == 3 and len(st["workers"]["slots"]) == 3
    assert (await api.get("/api/v1/config"))[1]["config"]["max_workers"] == 3

    # The api section is the operator's: a change is refused, an unchanged copy is fine.
    status, body = await api.call("PUT", "/api/v1/config",
                                  json={**new, "api": {**new["api"], "rate_limit_per_minute": 5}})
    assert [d["location"] for d in assert_error(status, body, 422, "invalid_config")["details"]] \
        == ["api.rate_limit_per_minute"]

    # Reset: the defaults, same safety.
    before_reset = api.config_path.read_text()
    status, body = await api.post("/api/v1/config/reset")
    assert status == 200, body
    assert body["config"]["max_workers"] == 2
    assert body["restart_required"] == []
    assert body["config"]["database"] == config["database"]  # the file's own, kept
    assert body["config"]["monitor_folder"] == config["monitor_folder"]
    assert api.config_path.with_name("monitor.yaml.bak").read_text() == before_reset
    assert "max_workers: 2" in api.config_path.read_text()
    assert (await api.get("/api/v1/status"))[1]["workers"]["max"] == 2


async def test_profiles_and_rule_matching(api: Api) -> None:
    status, body = await api.get("/api/v1/profiles")
    assert status == 200
    profiles = body["profiles"]
    assert {"h264_mp4", "web_720p", "hevc_mkv", "aac_m4a"} <= set(profiles)
    assert profiles["h264_mp4"]["builtin"] is True and profiles["h264_mp4"]["extension"] == "mp4"
    assert profiles["h264_mp4"]["used_by_rules"] == ["videos"]
    assert profiles["aac_m4a"]["video_codec"] is None

    status, body = await api.get("/api/v1/rules/match", params={"path": "show/ep1.MKV"})
    assert status == 200
    assert body["matched"] is True and body["rule"] == "videos" and body["rule_index"] == 1
    assert body["profile"] == "h264_mp4" and body["path"] == "show/ep1.MKV"
    assert body["output_path"] == str(api.root / "processed" / "show" / "ep1.mp4")
    status, body = await api.get("/api/v1/rules/match",
                                 params={"path": str(api.incoming / "a" / "song.wav"), "size": "100"})
    assert status == 200 and body["path"] == "a/song.wav" and body["profile"] == "aac_m4a"
    assert body["size"] == 100
    status, body = await api.get("/api/v1/rules/match", params={"path": "notes.txt"})
    assert status == 200 and body["matched"] is False and body["profile"] is None

    assert_error(*(await api.get("/api/v1/rules/match")), 422, "invalid_parameter")
    assert_error(*(await api.get("/api/v1/rules/match", params={"path": "../x.mp4"})), 422)
    assert_error(*(await api.get("/api/v1/rules/match", params={"path": "/etc/x.mp4"})), 422,
                 "invalid_path")
    assert_error(*(await api.get("/api/v1/rules/match", params={"path": "a.mp4", "size": "-1"})),
                 422, "invalid_parameter")
    assert_error(*(await api.get("/api/v1/rules/match", params={"path": "a.mp4", "size": "big"})),
                 422, "invalid_parameter")


async def test_bad_input_never_answers_500(api: Api) -> None:
    """A table of hostile inputs across the API: every answer is a JSON 4xx (or 2xx)."""
    weird = ["", "\x00", "%00", "../../etc/passwd", "'; DROP TABLE jobs; --", "💥",
             "9" * 5000, "-0", "1e309", "NaN", "Infinity", "0x10", " 5 "]
    for value in weird:
        for path, name in [("/api/v1/jobs", "limit"), ("/api/v1/jobs", "offset"),
                           ("/api/v1/jobs", "state"), ("/api/v1/jobs", "since"),
                           ("/api/v1/jobs", "sort"), ("/api/v1/jobs", "q"),
                           ("/api/v1/queue", "limit"), ("/api/v1/stats/history", "step"),
                           ("/api/v1/stats/history", "until"), ("/api/v1/rules/match", "path"),
                           ("/api/v1/rules/match", "size")]:
            async with api.client.get(path, params={name: value}) as resp:
                assert resp.status < 500, (path, name, value, resp.status)
                assert resp.content_type == "application/json"
    for body in [b"null", b"1", b'"x"', b"[]", b"{}", b'{"path": {}}', b'{"path": ["a"]}',
                 b'{"a": 1e999}', b"\x00", b'{"path": "\\u0000"}']:
        for method, path in [("POST", "/api/v1/jobs"), ("PUT", "/api/v1/config"),
                             ("POST", "/api/v1/config/validate")]:
            async with api.client.request(method, path, data=body,
                                          headers={"Content-Type": "application/json"}) as resp:
                assert resp.status < 500, (method, path, body, resp.status, await resp.text())
    assert api.config_path.with_name("monitor.yaml.bak").exists() is False


def test_non_finite_numbers_become_null() -> None:
    from exporter.api.responses import dumps

    assert json.loads(dumps({"speed": float("inf"), "eta": [float("nan"), 1.5]})) == {
        "speed": None, "eta": [None, 1.5]}
