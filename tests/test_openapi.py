"""The OpenAPI document: valid, in step with the app's routes and docs/api.md, true to the real
responses, and a property-based fuzz of the live API from it (no 5xx, responses as documented)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

# Imported at collection: importing schemathesis' checks deep inside a running test has hit a
# CPython 3.11 bug ("AST constructor recursion depth mismatch").
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from bulletproof.models import JobState
from exporter.api.openapi import openapi_document
from tests.api_fixtures import TEST_API, Api, api_factory_fixture, api_fixture, garbage_file  # noqa: F401 (fixtures)
from tests.conftest import until

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document("test")


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method.upper() in METHODS}


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    try:
        from openapi_spec_validator import validate
    except ImportError:  # the structure is still checked below
        validate = None
    if validate is not None:
        validate(document)
    assert document["openapi"].startswith("3.1")
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema), name
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_every_route_is_documented_and_every_documented_path_is_a_route(
        api: Api, document: dict[str, Any]) -> None:
    routes = {(route.method, route.resource.canonical)
              for route in api.client.app.router.routes()
              if route.method in METHODS and route.resource is not None}
    assert routes == documented_operations(document)


def test_docs_api_md_matches_the_document(document: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} `?(GET|POST|PUT|DELETE|PATCH) (/[^\s`]*)`?", text, re.M))
    assert headings == documented_operations(document)


# -- real responses against the documented schemas ----------------------------------------------


def response_schema(document: dict[str, Any], method: str, template: str, status: int,
                    media: str = "application/json") -> dict[str, Any] | None:
    """The documented schema of a response (None when the response has no body), made a
    standalone JSON Schema whose $refs resolve inside the document's components."""
    responses = document["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, (method, template, status, sorted(responses))
    response = responses[str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content")
    if content is None:
        return None
    return {"components": document["components"], "allOf": [content[media]["schema"]]}


async def test_real_responses_validate_against_the_document(api_factory, clip_cache,
                                                            document: dict[str, Any]) -> None:
    api = await api_factory(max_workers=2)
    # The long job goes first, onto a fresh worker slot (see test_api's xfail on slot reuse).
    api.drop(clip_cache(seconds=60, size="640x360"), "running.mp4")
    running = await api.wait_job("running.mp4", JobState.PROCESSING)
    await until(lambda: any(w.job_id == running.id and w.progress > 0
                            for w in api.monitor.view.workers()))
    api.monitor.pause_job(running.id)
    api.drop(clip_cache(), "done.mp4")
    garbage_file(api.incoming, "broken.mp4")
    done = await api.wait_job("done.mp4", JobState.COMPLETED)
    failed = await api.wait_job("broken.mp4", JobState.FAILED)
    api.monitor.pause_queue()
    api.drop(clip_cache(), "waiting.mp4")
    queued = await api.wait_job("waiting.mp4", JobState.QUEUED)
    config = (await api.get("/api/v1/config"))[1]["config"]
    me = api.monitor.view.node_name

    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/healthz", "/healthz", {}),
        ("GET", "/readyz", "/readyz", {}),
        ("GET", "/api/v1/status", "/api/v1/status", {}),
        ("GET", "/api/v1/stats/summary", "/api/v1/stats/summary", {}),
        ("GET", "/api/v1/stats/history", "/api/v1/stats/history", {}),
        ("GET", "/api/v1/stats/history", "/api/v1/stats/history", {"params": {"step": "30"}}),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", {}),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", {"params": {"state": "paused,failed", "limit": "1"}}),
        ("GET", "/api/v1/jobs", "/api/v1/jobs", {"params": {"sort": "bogus"}}),
        ("GET", "/api/v1/jobs/{id}", f"/api/v1/jobs/{done.id}", {}),
        ("GET", "/api/v1/jobs/{id}", f"/api/v1/jobs/{failed.id}", {}),
        ("GET", "/api/v1/jobs/{id}", f"/api/v1/jobs/{running.id}", {}),
        ("GET", "/api/v1/jobs/{id}", "/api/v1/jobs/9999", {}),
        ("GET", "/api/v1/queue", "/api/v1/queue", {}),
        ("GET", "/api/v1/config", "/api/v1/config", {}),
        ("GET", "/api/v1/profiles", "/api/v1/profiles", {}),
        ("GET", "/api/v1/rules/match", "/api/v1/rules/match", {"params": {"path": "a/b.mov"}}),
        ("GET", "/api/v1/rules/match", "/api/v1/rules/match", {"params": {"path": "b.txt"}}),
        ("GET", "/api/v1/rules/match", "/api/v1/rules/match", {}),
        ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", {}),
        ("GET", "/ws/updates", "/ws/updates", {}),
        ("POST", "/api/v1/jobs/{id}/prioritize", f"/api/v1/jobs/{queued.id}/prioritize", {}),
        ("POST", "/api/v1/jobs/{id}/pause", f"/api/v1/jobs/{running.id}/pause", {}),
        ("POST", "/api/v1/jobs/{id}/resume", f"/api/v1/jobs/{running.id}/resume", {}),
        ("POST", "/api/v1/jobs/{id}/pause", f"/api/v1/jobs/{running.id}/pause", {}),
        ("POST", "/api/v1/jobs/{id}/cancel", f"/api/v1/jobs/{running.id}/cancel", {}),
        ("POST", "/api/v1/jobs/{id}/cancel", f"/api/v1/jobs/{done.id}/cancel", {}),
        ("POST", "/api/v1/jobs/{id}/retry", f"/api/v1/jobs/{done.id}/retry", {}),
        ("POST", "/api/v1/jobs/retry-failed", "/api/v1/jobs/retry-failed", {}),
        ("POST", "/api/v1/jobs", "/api/v1/jobs", {"json": {"path": "nowhere.mp4"}}),
        ("POST", "/api/v1/jobs", "/api/v1/jobs", {"data": b"{"}),
        ("POST", "/api/v1/jobs", "/api/v1/jobs", {"json": {"path": "done.mp4", "x": 1}}),
        ("POST", "/api/v1/queue/clear", "/api/v1/queue/clear", {}),
        ("POST", "/api/v1/jobs", "/api/v1/jobs", {"json": {"path": "done.mp4"}}),
        ("POST", "/api/v1/queue/resume", "/api/v1/queue/resume", {}),
        ("POST", "/api/v1/queue/pause", "/api/v1/queue/pause", {}),
        ("DELETE", "/api/v1/jobs/{id}", f"/api/v1/jobs/{failed.id}", {}),
        ("DELETE", "/api/v1/jobs/{id}", f"/api/v1/jobs/{failed.id}", {}),
        ("POST", "/api/v1/config/validate", "/api/v1/config/validate", {"json": config}),
        ("POST", "/api/v1/config/validate", "/api/v1/config/validate", {"json": {"a": 1}}),
        ("PUT", "/api/v1/config", "/api/v1/config", {"json": {**config, "max_workers": 2}}),
        ("PUT", "/api/v1/config", "/api/v1/config", {"json": {**config, "max_workers": -1}}),
        ("POST", "/api/v1/config/reset", "/api/v1/config/reset", {}),
        ("GET", "/api/v1/nodes", "/api/v1/nodes", {}),
        ("GET", "/api/v1/sd", "/api/v1/sd", {}),
        ("POST", "/api/v1/nodes/{name}/drain", "/api/v1/nodes/nobody/drain", {}),
        ("POST", "/api/v1/nodes/{name}/drain", "/api/v1/nodes/%27%3B%20--/drain", {}),
        ("POST", "/api/v1/nodes/{name}/drain", f"/api/v1/nodes/{me}/drain", {}),
        ("POST", "/api/v1/nodes/{name}/undrain", f"/api/v1/nodes/{me}/undrain", {}),
        ("DELETE", "/api/v1/nodes/{name}", f"/api/v1/nodes/{me}", {}),
        ("DELETE", "/api/v1/nodes/{name}", "/api/v1/nodes/nobody", {}),
    ]
    seen: set[tuple[str, str, int]] = set()
    for method, template, path, kwargs in calls:
        if "data" in kwargs:
            kwargs = {**kwargs, "headers": {"Content-Type": "application/json"}}
        async with api.client.request(method, path, **kwargs) as resp:
            schema = response_schema(document, method, template, resp.status)
            body = await resp.read()
            if schema is None:
                assert body == b"", (method, path)
            else:
                assert resp.content_type == "application/json", (method, path, resp.status)
                jsonschema.validate(await resp.json(), schema,
                                    cls=jsonschema.Draft202012Validator)
            seen.add((method, template, resp.status))
    statuses = {s for _, _, s in seen}
    assert {200, 201, 202, 204, 400, 404, 409, 422, 426} <= statuses, sorted(seen)

    async with api.client.get("/metrics") as resp:
        assert resp.status == 200 and resp.content_type in (
            document["paths"]["/metrics"]["get"]["responses"]["200"]["content"])


# -- fuzz ---------------------------------------------------------------------------------------

# Not fuzzed: PUT /api/v1/config would write generated configs (watch folders, output folders
# anywhere on this machine) and apply them; its validation is what /config/validate runs, which
# is fuzzed. tests/test_api.py covers PUT's happy and error paths.
NOT_FUZZED = {("PUT", "/api/v1/config")}
POSITIVE_EXAMPLES = 50
NEGATIVE_EXAMPLES = 25


class LiveServer:
    """A monitor and its exporter plugin on their own event loop in a thread (schemathesis calls
    the API synchronously)."""

    def __init__(self, config: Any, config_path: Path, binaries: Any) -> None:
        self._config, self._path, self._binaries = config, config_path, binaries
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""
        self.monitor: Any = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced in __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from bulletproof.service import Monitor
        from exporter.plugin import ExporterPlugin

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.monitor = Monitor(self._config, config_path=self._path, binaries=self._binaries)
        await self.monitor.start()
        plugin = ExporterPlugin(self.monitor.context())
        await plugin.start()
        self.base_url = plugin.url or ""
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await plugin.stop()
            await self.monitor.stop()


@pytest.mark.slow
def test_fuzz_the_live_api_from_the_document(config_factory, ffmpeg_binaries, clip_cache) -> None:
    config, path = config_factory(api=dict(TEST_API), max_workers=1)
    (path.parent / "incoming" / "sub").mkdir(parents=True, exist_ok=True)
    clip = clip_cache()
    for name in ("a.mp4", "sub/b.mov", "c.wav"):
        (path.parent / "incoming" / name).write_bytes(clip.read_bytes())
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    started = time.monotonic()
    failures: list[str] = []
    with LiveServer(config, path, ffmpeg_binaries) as server:
        schema = schemathesis.openapi.from_dict(openapi_document(server.monitor.version))
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) == len(documented_operations(openapi_document()))
        for operation in operations:
            if (operation.method.upper(), operation.path) in NOT_FUZZED:
                continue
            for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                                   (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):
                strategy = operation.as_strategy(generation_mode=mode)

                @settings(max_examples=examples, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), derandomize=True)
                @given(case=strategy)
                def run(case: Any) -> None:
                    # A safety net against a hang, not a speed: a loaded CI machine is slow.
                    response = case.call(base_url=server.base_url, timeout=60)
                    case.validate_response(response, checks=checks)

                try:
                    run()
                except Unsatisfiable:  # nothing to make invalid (no parameters, any body)
                    assert mode is GenerationMode.NEGATIVE, operation.path
                except Exception as exc:  # collect every operation's failure, then report
                    failures.append(f"{operation.method.upper()} {operation.path} [{mode.value}]: "
                                    f"{exc}")
    elapsed = time.monotonic() - started
    print(f"fuzzed {len(operations) - len(NOT_FUZZED)} operations in {elapsed:.1f}s")
    assert not failures, "\n\n".join(failures)
    assert elapsed < 120, f"fuzzing took {elapsed:.0f}s"


def test_docs_api_md_names_each_answer_schema(document: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Answer schemas", 1)[1].split("\n### ", 1)[0]
    documented = dict(re.findall(r"^\| `([A-Z]+ /[^`]*)` \| `(\w+)`", section, re.M))
    served = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if code.startswith("2") and "$ref" in schema:
                    served[f"{method.upper()} {path}"] = schema["$ref"].rsplit("/", 1)[1]
    assert documented == served


def test_docs_api_md_describes_every_job_field(document: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## Jobs\n", 1)[1].split("\n### ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", section))
    detail = set(document["components"]["schemas"]["JobDetail"]["properties"])
    listed = set(document["components"]["schemas"]["Job"]["properties"])
    assert listed < detail
    assert detail - named == set(), "docs/api.md's job table misses these fields"
    assert {"status", "completed_at"} & (detail | named) == set()
